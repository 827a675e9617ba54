"""Champion against challenger on the same held-out leads, and the rule that promotes.

Promotion rule (tested against noise): let ``d`` be the challenger's improvement in
``training.selection_metric`` on the held-out examples (for brier: champion − challenger), and
``[lo, hi]`` a 90 % paired bootstrap interval of ``d`` resampling held-out *leads* (a lead's
snapshots move together). With a healthy champion (latest monitor report not an alert) the
challenger is promoted only when ``d > promotion_tolerance`` and ``lo > 0``: better by more than
the tolerance, and not by chance. When the champion is under an alert, the bar is "at least as
good within the tolerance, with confidence": ``lo > −promotion_tolerance``. Otherwise the
challenger stays a candidate and its ``notes`` say why.

A champion trained under a regime boundary (``params["data_since"]``, see :mod:`scoring.retrain`)
is *provisional* for challengers trained under the same boundary on more examples
(:func:`promotion_bar`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from config.app_config import MAX_HOLDOUT_DAYS
from scoring.compare import (
    CONFIDENCE,
    MIN_HOLDOUT_POSITIVES,
    STRICT_CONFIDENCE,
    _metric,
    _predict,
    bootstrap_differences,
    percentile_interval,
)
from scoring.dataset import LEAD_ID_COLUMN, TARGET
from scoring.monitor import ALERT, parse_time
from scoring.training import TrainedModel
from store.models import ModelVersion, MonitorReport

__all__ = ["DATA_SINCE_KEY", "Comparison", "compare_on_holdout", "data_since", "promotion_bar", "promotion_decision"]

DATA_SINCE_KEY = "data_since"


def data_since(mv: ModelVersion | None) -> datetime | None:
    """The regime boundary a version was trained under (leads created before it are not used)."""
    return parse_time((mv.params or {}).get(DATA_SINCE_KEY)) if mv is not None else None


@dataclass
class Comparison:
    """Champion vs challenger on the same held-out examples."""

    metric: str
    champion: float
    challenger: float
    improvement: float  # positive = challenger better
    ci_low: float
    ci_high: float
    rows: int
    leads: int
    positives: int
    holdout_start: datetime
    holdout_end: datetime
    # One-sided 99 % lower bound of the improvement (the 1 % bootstrap quantile): what replacing a
    # healthy champion needs, since retraining tests a new challenger every few days.
    strict_low: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "champion": self.champion, "challenger": self.challenger,
            "improvement": self.improvement, "ci_low": self.ci_low, "ci_high": self.ci_high,
            "strict_low": self.strict_low, "confidence": CONFIDENCE,
            "rows": self.rows, "leads": self.leads, "positives": self.positives,
            "holdout_start": self.holdout_start.isoformat(), "holdout_end": self.holdout_end.isoformat(),
        }


def _too_small(c: Comparison) -> str:
    """Why the held-out set cannot judge, and the setting that would change it: a small org's
    30 held-out days may never hold enough conversions, and no retraining would ever say why."""
    days = max(1, round((c.holdout_end - c.holdout_start).total_seconds() / 86400))
    said = (f"held-out set too small to judge ({c.positives} conversions in its {days} days, "
            f"at least {MIN_HOLDOUT_POSITIVES} needed")
    if c.positives > 0:
        needed = math.ceil(days * MIN_HOLDOUT_POSITIVES / c.positives)
        if needed <= MAX_HOLDOUT_DAYS:
            return said + f"): at this rate, training.holdout_days: {needed} would hold out enough"
    return said + f"): too few conversions for any training.holdout_days up to {MAX_HOLDOUT_DAYS}"


def promotion_decision(comparison: Comparison, *, tolerance: float, champion_healthy: bool,
                       why_not_healthy: str = "champion under alert") -> tuple[bool, str]:
    """The promotion rule of this module's docstring: (promote?, the reason in words).
    ``why_not_healthy`` names why the lower bar applies (an alert, a provisional champion)."""
    c = comparison
    summary = (f"{c.metric} {c.challenger:.4f} vs champion {c.champion:.4f} on {c.leads} held-out leads "
               f"(improvement {c.improvement:+.4f}, {int(CONFIDENCE * 100)}% CI {c.ci_low:+.4f}..{c.ci_high:+.4f})")
    if c.positives < MIN_HOLDOUT_POSITIVES or not math.isfinite(c.ci_low):
        return False, f"kept as candidate: {_too_small(c)}; {summary}"
    if champion_healthy:
        # Replacing a healthy champion needs the one-sided 99 % bound above zero: a challenger is
        # tested every few days, and at 95 % one of them wins by chance every few months.
        strict = c.strict_low if math.isfinite(c.strict_low) else c.ci_low
        if c.improvement > tolerance and c.ci_low > 0 and strict > 0:
            return True, f"promoted: better beyond tolerance {tolerance:g} and beyond noise; {summary}"
        if c.improvement > tolerance:
            return False, (f"kept as candidate: the improvement could be noise (one-sided 99% lower bound "
                           f"{strict:+.4f}); {summary}")
        # "Healthy": the latest monitor report raised no alert (warnings do not lower the bar).
        return False, (f"kept as candidate: does not beat the champion by more than the required margin "
                       f"{tolerance:g} (the champion raised no monitor alert, so the full bar applies); {summary}")
    if c.ci_low > -tolerance:
        return True, (f"promoted: {why_not_healthy} and challenger at least as good "
                      f"(tolerance {tolerance:g}); {summary}")
    return False, f"kept as candidate: {why_not_healthy} but challenger not reliably as good; {summary}"


def promotion_bar(report: MonitorReport | None, champion: ModelVersion, since: datetime | None,
         train_examples: int) -> dict[str, Any]:
    """Which promotion bar applies: a healthy champion's, or the lower one when the latest monitor
    report is an alert or the champion is *provisional* -- trained under the same regime boundary
    as the challenger (``data_since``), on fewer examples. Right after a change the first
    challenger learns from the few leads since it; later ones learn from more of the same world,
    and holding them to the healthy champion's bar (beyond noise at 99 %) would keep the model
    that saw least of the new world in production."""
    if report is not None and report.status == ALERT:
        return {"champion_healthy": False}
    boundary = data_since(champion)
    examples = int((champion.params or {}).get("examples") or 0)
    if since is not None and boundary is not None and boundary == since and 0 < examples < train_examples:
        return {"champion_healthy": False,
                "why_not_healthy": (f"champion provisional (trained on {examples:,} examples since the change "
                                    f"of {since:%Y-%m-%d}; the challenger on {train_examples:,})")}
    return {"champion_healthy": True}


def compare_on_holdout(
    champion: TrainedModel,
    challenger: TrainedModel,
    holdout: pd.DataFrame,
    *,
    metric: str,
    seed: int = 0,
    holdout_start: datetime,
    holdout_end: datetime,
) -> Comparison:
    """Both models on the same held-out examples, with a paired bootstrap over leads."""
    y = holdout[TARGET].to_numpy(dtype="int64")
    if len(holdout) == 0:
        nan = float("nan")
        return Comparison(metric, nan, nan, nan, nan, nan, 0, 0, 0, holdout_start, holdout_end)
    p_champion = _predict(champion, holdout)
    p_challenger = _predict(challenger, holdout)
    groups = holdout[LEAD_ID_COLUMN].to_numpy()
    d, diffs = bootstrap_differences(y, p_champion, p_challenger, groups, metric=metric, seed=seed)
    low, high = percentile_interval(diffs, CONFIDENCE)
    # The same resamples, read at the one-sided 99 % lower bound.
    strict_low, _high = percentile_interval(diffs, STRICT_CONFIDENCE)
    sign = -1.0 if metric == "brier" else 1.0
    return Comparison(
        metric=metric, champion=sign * _metric(metric, y, p_champion),
        challenger=sign * _metric(metric, y, p_challenger), improvement=d, ci_low=low, ci_high=high,
        rows=len(holdout), leads=int(pd.Series(groups).nunique()), positives=int(y.sum()),
        holdout_start=holdout_start, holdout_end=holdout_end, strict_low=strict_low,
    )
