"""What a tier policy change does: preview it on current and recent labelled leads, re-tier.

Split from :mod:`scoring.tiers` (policies and tier assignment), which the scoring service uses:
these functions use the scoring service, so keeping them apart keeps the import graph acyclic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from scoring.champions import ensure_score_reference
from scoring.dataset import SPLIT_COLUMN, label_examples
from scoring.features import align_to_spec, build_feature_frame, load_activities_frame, load_leads_frame
from scoring.hooks import TierChangeHook
from scoring.inputs import crm_now
from scoring.metrics import conversion_by_tier
from scoring.reference import rank
from scoring.registry import champion, load_model
from scoring.score_writes import retier_current
from scoring.tiers import (
    TIERS,
    Policy,
    PolicyLike,
    TierPolicyError,
    capacity_cutoffs,
    check_policy,
    current_scores,
    empty_capacity_tiers,
    probability_to_score,
    tiers_for,
)
from store.models import Lead, TierPolicy

PREVIEW_SNAPSHOT_DAYS = 7


def champion_scores(session: Session, probability: np.ndarray) -> np.ndarray:
    """1-99 rank scores of probabilities against the global champion's reference leads."""

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
    scores = current["score"].to_numpy(dtype="float64")
    new_tiers = tiers_for(policy, probs, scores=scores)
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
        cut = capacity_cutoffs(scores, values)
        out["score_cutoffs"] = {t: int(cut[t]) for t in ("A", "B", "C") if np.isfinite(cut[t])}
        # Tiers the shares leave without a lead (``tiers set`` and the console refuse such shares).
        out["empty_tiers"] = empty_capacity_tiers(scores, values)
    out["recent"] = _recent_conversion(
        session, policy, reference=scores, recent_days=recent_days, as_of=as_of, horizon_days=horizon_days,
        recent=recent,
    )
    for tier, row in out["recent"].pop("by_tier", {}).items():
        out["tiers"][tier]["recent_leads"] = row["leads"]
        out["tiers"][tier]["recent_converted"] = row["converted"]
        out["tiers"][tier]["recent_conversion_rate"] = row["conversion_rate"]
    return out


def refuse_empty_tiers(session: Session, mode: str, thresholds: Mapping[str, float]) -> None:
    """Raise :class:`TierPolicyError` when capacity shares would leave A, B or C without a lead
    among the open leads' current scores (a share under one lead, or one whose leads tie with the
    tier above): a policy saved so would route nobody as hot. Score and likelihood thresholds may
    leave a tier empty today (no lead is that likely yet): they pass."""
    if mode != "capacity":
        return
    empty = empty_capacity_tiers(current_scores(session)["score"].to_numpy(dtype="float64"), thresholds)
    if empty:
        tier, why = next(iter(empty.items()))
        others = list(empty)[1:]
        more = (f" ({'tiers' if len(others) > 1 else 'tier'} {', '.join(others)} too: `leadscore tiers preview`"
                " shows why)") if others else ""
        raise TierPolicyError(f"tier {tier} would hold no lead: {why}{more}")


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
    # The leads the champion learnt from or was chosen on (before its test period): their tiers'
    # conversion reads better than it will live (a trial's window was mostly the training window).
    test_from = ((mv.params or {}).get("split") or {}).get("test_from")
    if test_from and SPLIT_COLUMN in examples:
        start = pd.Timestamp(str(test_from))
        before = pd.to_datetime(examples[SPLIT_COLUMN], utc=True) < start
        # ISO 8601 as the window's other times (the split stores "2026-01-29 02:38:32+00:00").
        window = {**window, "test_from": start.isoformat(), "before_test": int(before.sum())}
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

    if recent is None:
        recent = recent_labelled(session, recent_days=recent_days, as_of=as_of, horizon_days=horizon_days)
    if recent.note is not None:
        return {"note": recent.note, "leads": 0}
    if not len(recent.converted):
        return {**recent.window, "leads": 0}
    tiers = tiers_for(policy, recent.probabilities, scores=recent.rank_scores(),
                      reference=reference if len(reference) else None)
    y = recent.converted
    by_tier = conversion_by_tier(y, tiers)
    out = {**recent.window, "leads": len(y), "conversion_rate": float(y.mean()), "by_tier": by_tier}
    cautions = [c for c in (few_conversions_caution(by_tier), _trained_on(recent.window, len(y))) if c]
    if cautions:
        out["caution"] = "; ".join(cautions)
    return out


def _trained_on(window: Mapping[str, Any], leads: int) -> str | None:
    """The caution for recent leads the champion was trained or chosen on (created before its test
    period): their conversion by tier can read better than the model will do live."""
    before = int(window.get("before_test") or 0)
    if not before:
        return None
    return (f"{before:,} of these {leads:,} leads came before the champion's test period (from "
            f"{str(window.get('test_from'))[:10]}): it was trained or chosen on them, so their tiers' conversion "
            "can read better than it will live")


# Conversions a tier's recent rate needs before it says anything about the tier: with 2 and 4
# conversions a crmsim trial's preview showed B converting 4.3 % below C's 7.4 %, without a word.
MIN_TIER_CONVERSIONS = 10


def few_conversions_caution(by_tier: Mapping[str, Mapping[str, Any]], what: str = "recent conversion") -> str | None:
    """The caution for tiers whose ``what`` (the tier preview's recent conversion, the monitor's
    conversion of elapsed leads) rests on fewer than :data:`MIN_TIER_CONVERSIONS` conversions
    (tiers without leads are not named)."""
    few = [(t, int(row["converted"])) for t, row in sorted(by_tier.items())
           if int(row["leads"]) and int(row["converted"]) < MIN_TIER_CONVERSIONS]
    if not few:
        return None
    named = [f"{t} ({n} conversion{'s' if n != 1 else ''})" for t, n in few]
    if len(named) == 1:
        return (f"the {what} of tier {named[0]} rests on fewer than {MIN_TIER_CONVERSIONS} "
                "conversions: too few to compare it with the other tiers")
    return (f"the {what} of tiers {', '.join(named[:-1])} and {named[-1]} rests on fewer than "
            f"{MIN_TIER_CONVERSIONS} conversions each: too few to compare tiers by it")


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
    return retier_current(
        session, policy.id,
        lambda current: tiers_for(policy, current["probability"].to_numpy(), scores=current["score"].to_numpy()),
        tier_change_hook=tier_change_hook,
    ).scores
