"""Tiers A-D from scores: versioned policies, score or capacity mode, preview and re-tiering.

Score mode: A if the 1-99 rank score >= thresholds["A"], else B if >= thresholds["B"], else C if
>= ["C"], else D. Likelihood mode: the same on the calibrated probability in percent
(``tiers set --likelihood A=30 B=15 C=5``). Capacity mode ("top 10 % are A, the next 20 % B,
the next 30 % C"): the shares are cut on the distribution of all current scores, ranked by
calibrated probability (finer than the 1-99 score, so ties are rare); equal values always get
the same tier. Exactly one policy is active; changing it creates a new version and re-tiers
current scores without retraining.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from config.app_config import TierConfig, validate_thresholds
from config.errors import LeadscoreError
from scoring.hooks import TierChangeHook
from store.models import Lead, LeadScore, ModelVersion, TierPolicy

TIERS: tuple[str, ...] = ("A", "B", "C", "D")
PREVIEW_SNAPSHOT_DAYS = 7


class TierPolicyError(LeadscoreError):
    """Tier thresholds that cannot be used; the message names the offending key."""


class PolicyLike(Protocol):
    """Anything with a tier mode and thresholds (a stored ``TierPolicy`` or a :class:`Policy`)."""

    @property
    def mode(self) -> str: ...

    @property
    def thresholds(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class Policy:
    """An unsaved policy (what ``preview`` evaluates)."""

    mode: str
    thresholds: Mapping[str, float]


def probability_to_score(probability: np.ndarray) -> np.ndarray:
    """``round(100 × calibrated probability)``, clipped to 0-100: the likelihood in whole percent.

    The score reps see is the rank (:func:`scoring.reference.rank`); this is only the fallback
    for a model version without a reference and the unit of capacity cut-offs in previews.
    """
    p = np.nan_to_num(np.asarray(probability, dtype="float64"), nan=0.0)
    return np.clip(np.rint(100.0 * p), 0, 100).astype("int64")


def likelihood_percent(probability: np.ndarray) -> np.ndarray:
    """The calibrated probability in percent with one decimal (the likelihood field)."""
    p = np.nan_to_num(np.asarray(probability, dtype="float64"), nan=0.0)
    return np.round(np.clip(100.0 * p, 0.0, 100.0), 1)


def check_policy(mode: str, thresholds: Mapping[str, Any]) -> dict[str, float]:
    """Validated thresholds as floats; raises :class:`TierPolicyError` naming the offending key."""
    if mode not in ("score", "likelihood", "capacity"):
        raise TierPolicyError(f"tiers.mode: unknown mode {mode!r} (use 'score', 'likelihood' or 'capacity')")
    values: dict[str, float] = {}
    for key, raw in thresholds.items():
        try:
            values[str(key)] = float(raw)
        except (TypeError, ValueError) as exc:
            raise TierPolicyError(f"tiers.thresholds.{key}: {raw!r} is not a number") from exc
    try:
        validate_thresholds(mode, values)
    except ValueError as exc:
        raise TierPolicyError(f"tiers.thresholds: {exc}") from exc
    return {t: values[t] for t in ("A", "B", "C")}


def parse_threshold_args(args: Sequence[str], *, capacity: bool) -> dict[str, float]:
    """Parse CLI arguments ``A=80 B=60 C=35`` (or ``A=10% ...`` in capacity mode).

    Raises ValueError (bad usage) for malformed arguments; range checks are :func:`check_policy`'s.
    """
    out: dict[str, float] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.strip().upper()
        if not sep or not key:
            raise ValueError(f"{arg!r}: expected TIER=VALUE, e.g. A=80" + ("%" if capacity else ""))
        text = value.strip()
        if text.endswith("%"):
            if not capacity:
                raise ValueError(f"{arg!r}: percentages are for --capacity; score thresholds are 0-100")
            text = text[:-1]
        if key in out:
            raise ValueError(f"{arg!r}: tier {key} given twice")
        try:
            out[key] = float(text)
        except ValueError as exc:
            raise ValueError(f"{arg!r}: {value!r} is not a number") from exc
    return out


def capacity_cutoffs(reference: np.ndarray, shares: Mapping[str, float]) -> dict[str, float]:
    """The lowest value that still makes each of A, B, C when shares are cut on ``reference``."""
    ref = np.sort(np.asarray(reference, dtype="float64"))[::-1]
    n = len(ref)
    cutoffs: dict[str, float] = {}
    taken = 0
    for tier in ("A", "B", "C"):
        taken += int(round(n * float(shares[tier]) / 100.0))
        cutoffs[tier] = float(ref[min(taken, n) - 1]) if taken > 0 and n else float("inf")
    return cutoffs


def assign_tiers(
    scores: np.ndarray, policy: PolicyLike, *, reference: np.ndarray | None = None
) -> list[str]:
    """Tier of each value under ``policy``.

    Score and likelihood modes: ``scores`` are compared with the thresholds. Capacity mode:
    ``scores`` are ranked values (the service passes probabilities); the shares are cut on
    ``reference`` (default: ``scores`` themselves), the distribution of all current scores.
    """
    values = np.asarray(scores, dtype="float64")
    if policy.mode == "capacity":
        cut = capacity_cutoffs(values if reference is None else reference, policy.thresholds)
    else:
        cut = {t: float(policy.thresholds[t]) for t in ("A", "B", "C")}
    out = np.full(values.shape, "D", dtype=object)
    for tier in ("C", "B", "A"):  # later (higher) tiers overwrite
        out[values >= cut[tier]] = tier
    return [str(t) for t in out]


# ------------------------------------------------------------------------------ policies


def find_active_policy(session: Session) -> TierPolicy | None:
    """The active tier policy, or None before the first one is created."""
    return session.scalars(select(TierPolicy).where(TierPolicy.is_active.is_(True))).first()


def active_policy(session: Session, default: TierConfig | None = None) -> TierPolicy:
    """The active tier policy; creates version 1 from ``default`` (the YAML ``tiers``) if none exists."""
    policy = find_active_policy(session)
    if policy is not None:
        return policy
    cfg = default or TierConfig()
    return set_policy(session, cfg.mode, dict(cfg.thresholds), created_by="config")


def set_policy(session: Session, mode: str, thresholds: Mapping[str, Any], created_by: str | None) -> TierPolicy:
    """Validate and activate a new policy version (the previous one stays, inactive).

    Does not re-tier: call :func:`retier` with the result (the CLI's ``tiers set`` does both).
    """
    values = check_policy(mode, thresholds)
    session.execute(update(TierPolicy).where(TierPolicy.is_active.is_(True)).values(is_active=False))
    version = (session.scalar(select(func.max(TierPolicy.version))) or 0) + 1
    policy = TierPolicy(
        version=version, mode=mode, thresholds=values, is_active=True, created_by=created_by,
        created_at=datetime.now(UTC),
    )
    session.add(policy)
    session.flush()
    return policy


# ------------------------------------------------------------------------------ current scores


def current_scores(session: Session) -> pd.DataFrame:
    """Current scores of non-deleted leads: score_id, lead_id, probability, score, tier, model_version_id."""
    stmt = (
        select(LeadScore.id, LeadScore.lead_id, LeadScore.probability, LeadScore.score, LeadScore.tier,
               LeadScore.model_version_id)
        .join(Lead, Lead.id == LeadScore.lead_id)
        .where(LeadScore.is_current.is_(True), Lead.is_deleted.is_(False))
        .order_by(LeadScore.lead_id)
    )
    rows = [tuple(r) for r in session.execute(stmt).all()]
    df = pd.DataFrame(rows, columns=["score_id", "lead_id", "probability", "score", "tier", "model_version_id"])
    df["probability"] = df["probability"].astype("float64")
    return df


def tiers_for(
    policy: PolicyLike,
    probability: np.ndarray,
    *,
    scores: np.ndarray | Sequence[int] | None = None,
    reference: np.ndarray | None = None,
) -> list[str]:
    """Tiers of leads: on their 1-99 rank ``scores`` (score mode), on the probability in percent
    (likelihood mode) or on the probability ranked against ``reference`` (capacity mode).

    Without ``scores`` the score mode ranks the probabilities against ``reference`` (default:
    themselves), which is what scoring does when they are the champion's reference leads."""
    if policy.mode == "capacity":
        return assign_tiers(probability, policy, reference=reference)
    if policy.mode == "likelihood":
        return assign_tiers(likelihood_percent(probability), policy)
    if scores is None:
        from scoring.reference import rank

        probs = np.asarray(probability, dtype="float64")
        scores = rank(probs, np.sort(probs if reference is None else np.asarray(reference, dtype="float64")))
    return assign_tiers(np.asarray(scores, dtype="float64"), policy)


def champion_scores(session: Session, probability: np.ndarray) -> np.ndarray:
    """1-99 rank scores of probabilities against the global champion's reference leads."""
    from scoring.reference import rank
    from scoring.registry import champion
    from scoring.service import ensure_score_reference

    mv = champion(session)
    if mv is None:
        return probability_to_score(probability)
    return rank(probability, ensure_score_reference(session, mv)["probability"])


def preview(
    session: Session,
    mode: str,
    thresholds: Mapping[str, Any],
    *,
    recent_days: int = 180,
    as_of: datetime | None = None,
    horizon_days: int = 90,
    recent: RecentLabelled | None = None,
) -> dict[str, Any]:
    """What a policy would do, changing nothing.

    ``recent``: the :func:`recent_labelled` leads when the caller already has them (they do not
    depend on the thresholds: a live preview computes them once per champion and sync).

    ``tiers[T]["leads"]``: current leads the tier would hold (exactly what :func:`retier` then
    produces); ``tiers[T]["recent_conversion_rate"]``: conversion within ``horizon_days`` of the
    leads created in the ``recent_days`` before the last labelled day, scored by the champion as
    they looked one week after creation (point in time, so no post-outcome activity inflates it).
    """
    values = check_policy(mode, thresholds)
    policy = Policy(mode=mode, thresholds=values)
    current = current_scores(session)
    probs = current["probability"].to_numpy()
    new_tiers = tiers_for(policy, probs, scores=current["score"].to_numpy())
    counts = {t: 0 for t in TIERS}
    for t in new_tiers:
        counts[t] += 1
    total = len(new_tiers)
    changes = int(sum(1 for old, new in zip(current["tier"], new_tiers, strict=True) if old != new))
    out: dict[str, Any] = {
        "mode": mode,
        "thresholds": values,
        "current_leads": total,
        "changes": changes,
        "tiers": {
            t: {"leads": counts[t], "share": (counts[t] / total) if total else 0.0,
                "recent_leads": 0, "recent_conversion_rate": None}
            for t in TIERS
        },
    }
    if mode == "capacity" and total:
        cut = capacity_cutoffs(probs, values)
        finite = [t for t in ("A", "B", "C") if np.isfinite(cut[t])]
        ranked = champion_scores(session, np.array([cut[t] for t in finite]))
        out["score_cutoffs"] = {t: int(v) for t, v in zip(finite, ranked, strict=True)}
    out["recent"] = _recent_conversion(
        session, policy, reference=probs, recent_days=recent_days, as_of=as_of, horizon_days=horizon_days,
        recent=recent,
    )
    for tier, row in out["recent"].pop("by_tier", {}).items():
        out["tiers"][tier]["recent_leads"] = row["leads"]
        out["tiers"][tier]["recent_conversion_rate"] = row["conversion_rate"]
    return out


@dataclass(frozen=True)
class RecentLabelled:
    """Recent leads with a known outcome, scored by the champion as they looked one week in."""

    window: dict[str, Any]
    probabilities: np.ndarray
    converted: np.ndarray
    note: str | None = None
    scores: np.ndarray | None = None  # 1-99 ranks against the champion's reference leads

    def rank_scores(self) -> np.ndarray:
        """The leads' 1-99 scores (what score-mode thresholds cut), or an empty array."""
        return self.scores if self.scores is not None else np.zeros(len(self.probabilities), dtype="int64")


def recent_labelled(
    session: Session, *, recent_days: int = 180, as_of: datetime | None = None, horizon_days: int = 90
) -> RecentLabelled:
    """The leads created in the ``recent_days`` before the last labelled day, their outcome within
    ``horizon_days`` and the champion's probability for them at ``PREVIEW_SNAPSHOT_DAYS`` (point in
    time, so no post-outcome activity inflates it). Empty arrays (and ``note``) without a champion."""
    from scoring.dataset import label_examples
    from scoring.features import align_to_spec, build_feature_frame, load_activities_frame, load_leads_frame
    from scoring.registry import champion, load_model
    from scoring.service import crm_now

    empty = np.zeros(0, dtype="float64")
    mv = champion(session)
    if mv is None:
        return RecentLabelled({}, empty, empty, note="no champion model yet: no recent conversion rates")
    now = as_of or crm_now(session)
    last_created = now - timedelta(days=horizon_days + PREVIEW_SNAPSHOT_DAYS)
    first_created = last_created - timedelta(days=recent_days)
    ids = list(session.scalars(
        select(Lead.id).where(Lead.is_deleted.is_(False), Lead.crm_created_at >= first_created,
                              Lead.crm_created_at <= last_created)
    ))
    window = {"created_from": first_created.isoformat(), "created_to": last_created.isoformat(),
              "snapshot_days": PREVIEW_SNAPSHOT_DAYS, "model": mv.version}
    if not ids:
        return RecentLabelled(window, empty, empty)
    leads = load_leads_frame(session, ids)
    examples, _ = label_examples(leads, as_of=now, horizon_days=horizon_days, offsets=(PREVIEW_SNAPSHOT_DAYS,))
    if examples.empty:
        return RecentLabelled(window, empty, empty)
    activities = load_activities_frame(session, ids, before=last_created + timedelta(days=PREVIEW_SNAPSHOT_DAYS))
    model = load_model(mv)
    frame = align_to_spec(build_feature_frame(examples, activities, examples["snapshot_at"]), model.spec)
    probs = np.asarray(model.predict_proba(frame), dtype="float64")
    return RecentLabelled(window, probs, examples["converted"].to_numpy(dtype="float64"),
                          scores=champion_scores(session, probs))


def _recent_conversion(
    session: Session,
    policy: PolicyLike,
    *,
    reference: np.ndarray,
    recent_days: int,
    as_of: datetime | None,
    horizon_days: int,
    recent: RecentLabelled | None = None,
) -> dict[str, Any]:
    from scoring.metrics import conversion_by_tier

    if recent is None:
        recent = recent_labelled(session, recent_days=recent_days, as_of=as_of, horizon_days=horizon_days)
    if recent.note is not None:
        return {"note": recent.note, "leads": 0}
    if not len(recent.converted):
        return {**recent.window, "leads": 0}
    tiers = tiers_for(policy, recent.probabilities, scores=recent.rank_scores(),
                      reference=reference if len(reference) else None)
    y = recent.converted
    return {**recent.window, "leads": len(y), "conversion_rate": float(y.mean()),
            "by_tier": conversion_by_tier(y, tiers)}


def retier(
    session: Session,
    policy: TierPolicy,
    *,
    tier_change_hook: TierChangeHook | None = None,
) -> int:
    """Re-tier every current score under ``policy`` without retraining; returns leads whose tier changed.

    A changed lead gets a new current ``LeadScore`` (same probability, score, reasons and model),
    an outbox row and a ``tier_change_hook`` call, exactly as scoring would.
    """
    from scoring.service import NewScore, write_scores

    current = current_scores(session)
    if current.empty:
        return 0
    new_tiers = tiers_for(policy, current["probability"].to_numpy(), scores=current["score"].to_numpy())
    changed = [i for i, (old, new) in enumerate(zip(current["tier"], new_tiers, strict=True)) if old != new]
    if not changed:
        return 0
    ids = current["score_id"].to_numpy()[changed].tolist()
    previous = {s.id: s for s in session.scalars(select(LeadScore).where(LeadScore.id.in_(ids)))}
    versions = {mv.id: mv.version for mv in session.scalars(select(ModelVersion))}
    rows = []
    for i in changed:
        old = previous[int(current["score_id"].iloc[i])]
        rows.append(NewScore(
            lead_id=old.lead_id, probability=old.probability, score=old.score, tier=new_tiers[i],
            reasons=list(old.reasons or []), model_version_id=old.model_version_id,
            model_version=versions.get(old.model_version_id or -1, ""), inputs_hash=old.inputs_hash,
            fit_score=old.fit_score, engagement_score=old.engagement_score, as_of=old.as_of,
            next_aging_at=old.next_aging_at,
        ))
    write_scores(session, rows, policy_id=policy.id, tier_change_hook=tier_change_hook)
    return len(rows)
