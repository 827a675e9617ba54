"""Sampling noise: AUC standard errors, one-sided bounds of rates, the z of the monitor's tests."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

MIN_PERFORMANCE_POSITIVES = 20
# z for a one-sided 99 % test: an AUC drop is an alert only when noise is an unlikely cause. The
# monitor runs daily on overlapping cohorts, so a 95 % test would cry wolf every few weeks.
Z_ONE_SIDED = 2.326


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC."""
    if positives < 1 or negatives < 1 or not math.isfinite(auc):
        return float("nan")
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (
        positives * negatives
    )
    return float(math.sqrt(max(var, 0.0)))


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """The AUC of ``p`` for outcomes ``y``; NaN when only one class is present."""
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def wilson_upper(successes: int, n: int, z: float = Z_ONE_SIDED) -> float:
    """One-sided upper confidence bound of a rate (Wilson score interval)."""
    if n <= 0:
        return 1.0
    rate = successes / n
    denom = 1 + z * z / n
    centre = rate + z * z / (2 * n)
    spread = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / denom)
