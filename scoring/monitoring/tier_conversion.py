"""Top-tier conversion against its norm."""

from __future__ import annotations

from typing import Any

from scoring.monitoring.stats import wilson_upper
from scoring.monitoring.status import ALERT, NOT_ENOUGH, OK, WARN, Alert

# Leads with a known outcome in the top tier needed before its conversion is judged.
MIN_TOP_TIER_LEADS = 20


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
