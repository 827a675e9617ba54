"""Top-tier conversion against its norm: on elapsed leads, and early (the last two weeks' conversions
against the pace the reference predicts)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from scoring import registry
from scoring.metrics import conversion_by_tier
from scoring.monitoring.clock import parse_time
from scoring.monitoring.cohorts import COHORT_AGE_DAYS, cohort_leads
from scoring.monitoring.elapsed import scores_at_age
from scoring.monitoring.reference_cohort import Reference
from scoring.monitoring.stats import Z_ONE_SIDED, wilson_upper
from scoring.monitoring.status import ALERT, NOT_ENOUGH, OK, WARN, Alert
from scoring.tier_changes import champion_scores
from scoring.tiers import PolicyLike, tiers_for
from store.models import Lead, ModelVersion

# Leads with a known outcome in the top tier needed before its conversion is judged.
MIN_TOP_TIER_LEADS = 20


def reference_tiers(session: Session, ref: Reference, policy: PolicyLike) -> list[str]:
    """The tiers of the reference's leads as live scoring gives them: in score mode their 1-99 ranks
    against the champion's score reference (not against each other), so that a tier of the
    reference is the same kind of lead as that tier live. A capacity policy is best given as live
    scoring applies it (:func:`~scoring.monitoring.elapsed.as_live`: today's score cut-offs);
    as it is, its shares are cut within the reference itself."""
    p = np.asarray([o[0] for o in ref.outcomes], dtype="float64")
    return tiers_for(policy, p, scores=champion_scores(session, p) if policy.mode != "likelihood" else None)


def tier_norms(session: Session, ref: Reference | None, policy: PolicyLike) -> dict[str, dict[str, float | int]]:
    """Conversion by tier of the reference's leads under ``policy`` (:func:`reference_tiers`): the
    norm live tiers are compared with. Empty without reference outcomes."""
    if ref is None or not ref.outcomes:
        return {}
    y = np.asarray([o[1] for o in ref.outcomes], dtype="int64")
    return conversion_by_tier(y, reference_tiers(session, ref, policy))


def top_tier_alert(by_tier: dict[str, dict[str, Any]], norms: dict[str, dict[str, Any]], *, share: float,
                   min_leads: int = MIN_TOP_TIER_LEADS) -> tuple[str, Alert | None, dict[str, Any]]:
    """Judge the top tier's conversion on elapsed leads against its norm.

    Returns (status, alert or None, detail). Alerts when the rate is below ``share`` × norm and
    the norm is outside its one-sided 99 % upper bound (not a chance dip); below ``share`` × norm
    within noise warns. Fewer than ``min_leads`` top-tier leads with outcomes: not enough data.
    """
    top = next((t for t in ("A", "B", "C") if t in norms or t in by_tier), "A")
    live = by_tier.get(top) or {}
    norm = norms.get(top) or {}
    n, converted = int(live.get("leads", 0)), int(live.get("converted", 0))
    detail: dict[str, Any] = {"tier": top, "leads": n, "converted": converted, "needed": min_leads,
                              "conversion_rate": live.get("conversion_rate"),
                              "norm": norm.get("conversion_rate"), "share": share}
    if n < min_leads:
        detail["reason"] = f"{n} tier-{top} leads with a known outcome; at least {min_leads} needed"
        return NOT_ENOUGH, None, detail
    if norm.get("conversion_rate") is None:
        detail["reason"] = "the champion has no reference outcomes for a tier norm"
        return NOT_ENOUGH, None, detail
    rate, base = converted / n, float(norm["conversion_rate"])
    floor = share * base
    detail["floor"] = floor
    if rate >= floor:
        return OK, None, detail
    upper = wilson_upper(converted, n)
    detail["upper_bound"] = upper
    what = (f"tier {top} converts {rate:.1%} of {n} elapsed leads, below {share:g}x its norm "
            f"{base:.1%} (floor {floor:.1%})")
    if upper < base:
        return ALERT, Alert(ALERT, "top_tier_conversion", what, rate, floor, action=TOP_TIER_ACTION), detail
    return WARN, Alert(WARN, "top_tier_conversion", f"{what}; within sampling noise (upper bound {upper:.1%})",
                       rate, floor, action=TOP_TIER_ACTION), detail


TOP_TIER_ACTION = ("reps' best leads convert less than the model promised: ask sales whether follow-up of tier A "
                   "changed, check drift and recent accuracy, and run `leadscore retrain --dry-run` to see "
                   "whether a model trained on recent leads ranks them better")


# The early measure: conversions of the top tier's open leads in the last EARLY_WINDOW_DAYS against
# what the reference's pace predicts for leads of their ages.
EARLY_WINDOW_DAYS = 14
# Expected conversions needed before the early measure judges (fewer: a few leads' luck decides).
MIN_EARLY_EXPECTED = 10.0


def conversion_pace(ages: Sequence[float | None]) -> Callable[[float], float]:
    """F(a): the share of the reference's top-tier leads converted by ``a`` days after creation."""
    n = len(ages)
    converted = np.sort(np.asarray([a for a in ages if a is not None], dtype="float64"))
    return lambda a: float(np.searchsorted(converted, a, side="right")) / n if n else 0.0


def early_top_tier(session: Session, ref: Reference | None, policy: PolicyLike, *, as_of: datetime,
                   horizon_days: int, share: float, window_days: int = EARLY_WINDOW_DAYS,
                   ) -> tuple[str, Alert | None, dict[str, Any]]:
    """Judge the top tier on the conversions of the last ``window_days``, without waiting for a horizon.

    Every lead a model in production served the top tier at :data:`COHORT_AGE_DAYS` days old, and
    still open and within its horizon at some point of the window, is at risk from age a1 to a2
    (days since creation, clipped to the window and to [7, 7 + horizon]). Observed: those of them that
    converted in the window. Expected: Σ (F(a2) − F(a1)) / (1 − F(a1)), F being the share of the
    reference's top-tier leads (same policy, ranked as live scoring ranks) converted by each age.
    Alert when observed / expected is below ``share`` and its one-sided 99 % upper bound is below 1
    (log scale, both counts Poisson: the live conversions and the reference's); below ``share``
    within noise warns; fewer than :data:`MIN_EARLY_EXPECTED` expected conversions: not enough data.
    Returns (status, alert or None, detail)."""
    detail: dict[str, Any] = {"window_days": window_days, "leads": 0, "observed": 0, "expected": 0.0,
                              "needed_expected": MIN_EARLY_EXPECTED, "share": share}
    if ref is None or not ref.outcomes or len(ref.conversion_days) != len(ref.outcomes):
        detail["reason"] = "the champion's reference records no conversion ages (retrain or wait for its reference)"
        return NOT_ENOUGH, None, detail
    ref_tiers = np.asarray(reference_tiers(session, ref, policy), dtype=object)
    top = next((t for t in ("A", "B", "C") if (ref_tiers == t).any()), "A")
    ages = [d for d, t in zip(ref.conversion_days, ref_tiers, strict=True) if t == top]
    pace = conversion_pace(ages)
    ref_converted = sum(1 for a in ages if a is not None)
    detail |= {"tier": top, "reference_leads": len(ages), "reference_converted": ref_converted}
    start = as_of - timedelta(days=window_days)
    first, last = COHORT_AGE_DAYS, COHORT_AGE_DAYS + horizon_days
    created_from, created_to = start - timedelta(days=last), as_of - timedelta(days=first)
    ids = cohort_leads(session, created_from, created_to)
    served = scores_at_age(session, ids, COHORT_AGE_DAYS)
    live = set(session.scalars(select(ModelVersion.id).where(ModelVersion.status == registry.CHAMPION)))
    if not served.empty:
        served = served[(served["tier"] == top) & served["model_version_id"].isin(live)]
    if served.empty:
        detail["reason"] = (f"no lead created {created_from:%Y-%m-%d}..{created_to:%Y-%m-%d}, those that could "
                            f"convert in these {window_days} days within their {horizon_days}-day horizon, was served "
                            f"tier {top} by a model in production at {COHORT_AGE_DAYS} days old")
        return NOT_ENOUGH, None, detail
    converted = dict(session.execute(select(Lead.id, Lead.converted_at).where(
        Lead.id.in_(served["lead_id"].astype("int64").tolist()))).tuples().all())
    observed, expected, at_risk = 0, 0.0, 0
    for lead_id, created in zip(served["lead_id"].astype("int64"), served["created_at"], strict=True):
        created_at = created.to_pydatetime()
        a1 = max((start - created_at) / timedelta(days=1), first)
        a2 = min((as_of - created_at) / timedelta(days=1), last)
        conv = parse_time(converted.get(int(lead_id)))
        conv_age = (conv - created_at) / timedelta(days=1) if conv is not None else None
        if a2 <= a1 or (conv_age is not None and conv_age <= a1):
            continue
        at_risk += 1
        f1 = pace(a1)
        if f1 < 1.0:
            expected += (pace(a2) - f1) / (1.0 - f1)
        observed += int(conv_age is not None and conv_age <= a2)
    detail |= {"leads": at_risk, "observed": observed, "expected": expected}
    if expected < MIN_EARLY_EXPECTED:
        detail["reason"] = (f"{at_risk} tier-{top} leads at risk in the last {window_days} days, {expected:.1f} "
                            f"conversions expected; at least {MIN_EARLY_EXPECTED:g} needed")
        return NOT_ENOUGH, None, detail
    ratio = observed / expected
    detail["ratio"] = ratio
    if ratio >= share:
        return OK, None, detail
    # Both counts are Poisson: the live one and the reference's (the pace is estimated from
    # ref_converted conversions). One-sided 99 % upper bound of the ratio on the log scale.
    spread = math.sqrt(1 / max(observed, 0.5) + 1 / max(ref_converted, 1))
    upper = max(ratio, 0.5 / expected) * math.exp(Z_ONE_SIDED * spread)
    detail["upper_bound"] = upper
    what = (f"tier {top} leads converted {observed} times in the last {window_days} days where the reference's "
            f"pace predicts {expected:.1f} ({ratio:.2f}x, below {share:g}x; {at_risk} tier-{top} leads at risk)")
    if upper < 1.0:
        return ALERT, Alert(ALERT, "top_tier_conversion", what, ratio, share, action=TOP_TIER_ACTION), detail
    return WARN, Alert(WARN, "top_tier_conversion", f"{what}; within sampling noise (upper bound {upper:.2f}x)",
                       ratio, share, action=TOP_TIER_ACTION), detail
