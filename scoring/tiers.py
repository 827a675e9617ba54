"""Tiers A-D from scores: versioned policies in score, likelihood or capacity mode.

Score mode: A if the 1-99 rank score >= thresholds["A"], else B if >= thresholds["B"], else C if
>= ["C"], else D. Likelihood mode: the same on the calibrated probability in percent
(``tiers set --likelihood A=30 B=15 C=5``). Capacity mode ("top 10 % are A, the next 20 % B,
the next 30 % C"): the shares are cut on the distribution of all current 1-99 scores (what the
CRM shows, so one score is one tier on every lead); equal scores always get the same tier, so a
tier can be a little over or under its share (:func:`capacity_cutoffs`). Exactly one policy is
active; changing it creates a new version and re-tiers current scores without retraining
(:mod:`scoring.tier_changes`: preview and re-tiering, which need the champion and the scoring
service; this module needs neither).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from config.app_config import TierConfig, validate_thresholds
from config.errors import LeadscoreError
from store.models import Lead, LeadLifecycle, LeadScore, TierPolicy

TIERS: tuple[str, ...] = ("A", "B", "C", "D")


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
    for a model version without a reference.
    """
    p = np.nan_to_num(np.asarray(probability, dtype="float64"), nan=0.0)
    return np.clip(np.rint(100.0 * p), 0, 100).astype("int64")


def likelihood_percent(probability: np.ndarray) -> np.ndarray:
    """The calibrated probability in percent with one decimal (the likelihood field)."""
    p = np.nan_to_num(np.asarray(probability, dtype="float64"), nan=0.0)
    return np.round(np.clip(100.0 * p, 0.0, 100.0), 1)


def check_policy(mode: str, thresholds: Mapping[str, Any]) -> dict[str, float]:
    """Validated thresholds as floats; raises :class:`TierPolicyError` naming the offending key.

    The words name no YAML path: thresholds come from the command line and the console (the YAML
    file's ``tiers`` are checked when the config loads, with their path). A trial's revops typed
    ``tiers preview A=100 ...`` and read "tiers.thresholds: ..." back."""
    if mode not in ("score", "likelihood", "capacity"):
        raise TierPolicyError(f"unknown tier mode {mode!r} (use 'score', 'likelihood' or 'capacity')")
    values: dict[str, float] = {}
    for key, raw in thresholds.items():
        try:
            values[str(key)] = float(raw)
        except (TypeError, ValueError) as exc:
            raise TierPolicyError(f"threshold {key}: {raw!r} is not a number") from exc
    try:
        validate_thresholds(mode, values)
    except ValueError as exc:
        raise TierPolicyError(str(exc)) from exc
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
    """The lowest value that still makes each of A, B, C when shares are cut on ``reference``.

    Equal values always share a tier: where a share's boundary falls inside a run of equal
    values (1-99 scores tie often), the whole run goes to the side that leaves the tier's size
    nearest its share (into the tier on a tie of distances), so a tier can be a little over or
    under its share, never split one score. ``inf``: the tier is empty."""
    ref = np.sort(np.asarray(reference, dtype="float64"))[::-1]
    n = len(ref)
    ascending = ref[::-1]
    cutoffs: dict[str, float] = {}
    taken = 0
    for tier in ("A", "B", "C"):
        taken += int(round(n * float(shares[tier]) / 100.0))
        if taken <= 0 or not n:
            cutoffs[tier] = float("inf")
            continue
        value = ref[min(taken, n) - 1]
        above = n - int(np.searchsorted(ascending, value, side="right"))  # strictly greater
        through = n - int(np.searchsorted(ascending, value, side="left"))  # greater or equal
        if taken - above < through - taken:  # nearer the share without this run of equal values
            cutoffs[tier] = float(ref[above - 1]) if above else float("inf")
        else:
            cutoffs[tier] = float(value)
    return cutoffs


def _filling_share(values: np.ndarray, shares: Mapping[str, float], tier: str) -> float | None:
    """The smallest share of ``tier`` (two significant digits, the other shares as given) with
    which it holds a lead on ``values``; None when no share the others leave room for does. A
    tier's holding grows with its share, so the least number of leads is found by bisection."""
    n = len(values)
    room = 100.0 - sum(float(v) for t, v in shares.items() if t != tier)

    def holds(share: float) -> bool:
        trial = {t: float(v) for t, v in shares.items()}
        trial[tier] = share
        return tier in assign_tiers(values, Policy("capacity", trial))

    most = int(math.ceil(n * room / 100.0)) - 1  # the most leads a share under ``room`` takes
    if most < 1 or not holds(most * 100.0 / n):
        return None
    low, high = 1, most
    while low < high:
        middle = (low + high) // 2
        if holds(middle * 100.0 / n):
            high = middle
        else:
            low = middle + 1
    exact = low * 100.0 / n
    # A share takes round(n * share / 100) leads: any share above low - 0.5 leads takes low.
    for above in ((low - 0.5) * 100.0 / n, exact):
        unit = 10.0 ** (math.floor(math.log10(above)) - 1)
        shown = float(f"{math.floor(above / unit + 1) * unit:.2g}")
        if shown < room and holds(shown):
            return shown
    return exact


def empty_capacity_tiers(reference: np.ndarray, shares: Mapping[str, float]) -> dict[str, str]:
    """Each of A, B and C that capacity ``shares`` cut on ``reference`` (the open leads' current
    scores) leave without a lead, with why in words and the least share that gives it one: its
    share is less than one lead, or equal scores at its cut-off go to another tier
    (:func:`capacity_cutoffs` never splits a score). Empty when every tier holds a lead, or when
    ``reference`` holds none (nothing to cut yet)."""
    values = np.asarray(reference, dtype="float64")
    n = len(values)
    if not n:
        return {}
    given = {t: float(shares[t]) for t in ("A", "B", "C")}
    held = Counter(assign_tiers(values, Policy("capacity", given)))
    out: dict[str, str] = {}
    for tier in ("A", "B", "C"):
        if held[tier]:
            continue
        share = given[tier]
        if int(round(n * share / 100.0)) < 1:
            why = f"{share:g}% of {n:,} current leads is {n * share / 100.0:.2g} of a lead"
        else:
            why = f"equal scores share a tier, and its {share:g}% falls among leads that tie with another tier's"
        filling = _filling_share(values, given, tier)
        out[tier] = why + (f"; give {tier} at least {filling:g}%" if filling is not None
                           else "; no share the other tiers leave room for gives it one: use score thresholds")
    return out


def assign_tiers(
    scores: np.ndarray, policy: PolicyLike, *, reference: np.ndarray | None = None
) -> list[str]:
    """Tier of each value under ``policy``.

    Score and likelihood modes: ``scores`` are compared with the thresholds. Capacity mode: the
    shares are cut on ``reference`` (default: ``scores`` themselves), the distribution of all
    current scores (the service passes 1-99 scores; :func:`capacity_cutoffs` keeps ties together).
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
    """Current scores of open leads: score_id, lead_id, probability, score, tier, model_version_id.

    Only open leads are tiered: a converted, closed, deleted or merged lead keeps its last score as
    history (scoring and re-tiering never write it again), so it neither counts in a preview nor
    moves capacity cut-offs."""
    stmt = (
        select(LeadScore.id, LeadScore.lead_id, LeadScore.probability, LeadScore.score, LeadScore.tier,
               LeadScore.model_version_id)
        .join(Lead, Lead.id == LeadScore.lead_id)
        .where(LeadScore.is_current.is_(True), Lead.is_deleted.is_(False), Lead.lifecycle == LeadLifecycle.open)
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
    """Tiers of leads: on their 1-99 rank ``scores`` (score mode, and capacity mode, whose shares
    are cut on the 1-99 scores of ``reference``, default: ``scores`` themselves) or on the
    probability in percent (likelihood mode). Capacity tiers follow the score a rep sees: two
    leads with the same score are always in the same tier.

    Without ``scores`` the leads' probabilities are ranked against themselves, which is what
    scoring does when they are the champion's reference leads."""
    if policy.mode == "likelihood":
        return assign_tiers(likelihood_percent(probability), policy)
    if scores is None:
        from scoring.reference import rank

        probs = np.asarray(probability, dtype="float64")
        scores = rank(probs, np.sort(probs))
    values = np.asarray(scores, dtype="float64")
    if policy.mode == "capacity":
        return assign_tiers(values, policy, reference=reference)
    return assign_tiers(values, policy)
