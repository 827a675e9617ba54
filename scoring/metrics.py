"""Classification metrics for lead scores: ranking, calibration and top-of-list usefulness.

All functions take 0/1 labels and probabilities. Undefined values (AUC with a single class)
are returned as NaN rather than raising, so a tiny slice never crashes a report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score


def _as_arrays(y_true: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype="float64").ravel()
    p = np.asarray(proba, dtype="float64").ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.shape[0]} vs {p.shape[0]}")
    if y.size == 0:
        raise ValueError("no rows to evaluate")
    return y, p


def _ranked(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Labels ordered by descending probability (stable, so ties keep input order)."""
    return y[np.argsort(-p, kind="stable")]


def expected_calibration_error(y_true: Any, proba: Any, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width probability bins.

    Σ (bin rows / rows) × |mean predicted − observed rate|; 0 means perfectly calibrated.
    """
    y, p = _as_arrays(y_true, proba)
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() / y.size * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def calibration_table(y_true: Any, proba: Any, bins: int = 10) -> list[dict[str, float | int]]:
    """Reliability table: per non-empty equal-width bin, mean predicted vs observed rate."""
    y, p = _as_arrays(y_true, proba)
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    rows: list[dict[str, float | int]] = []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            rows.append(
                {
                    "bin": b,
                    "predicted": float(p[mask].mean()),
                    "observed": float(y[mask].mean()),
                    "count": int(mask.sum()),
                }
            )
    return rows


def lift_by_decile(y_true: Any, proba: Any) -> list[float]:
    """Conversion rate of each score decile (highest first) divided by the overall rate.

    Deciles are 10 near-equal groups of the ranked rows (``numpy.array_split``).
    """
    y, p = _as_arrays(y_true, proba)
    base = y.mean()
    ranked = _ranked(y, p)
    out: list[float] = []
    for part in np.array_split(ranked, 10):
        out.append(float(part.mean() / base) if part.size and base > 0 else float("nan"))
    return out


def classification_metrics(y_true: Any, proba: Any) -> dict[str, Any]:
    """All the metrics reports use, as a JSON-able dict.

    Keys: auc, pr_auc, brier, ece, precision_at_10pct, recall_at_10pct, lift_top_decile,
    lift_by_decile (10 floats, top decile first), calibration (reliability table), rows,
    positives. "Top 10 %" is the ``ceil(0.1 × rows)`` highest-scored rows.
    """
    y, p = _as_arrays(y_true, proba)
    both = 0 < y.sum() < y.size
    positives = float(y.sum())
    base = positives / y.size
    k = max(1, math.ceil(0.1 * y.size))
    top = _ranked(y, p)[:k]
    precision = float(top.mean())
    return {
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "precision_at_10pct": precision,
        "recall_at_10pct": float(top.sum() / positives) if positives else float("nan"),
        "lift_top_decile": precision / base if base > 0 else float("nan"),
        "lift_by_decile": lift_by_decile(y, p),
        "calibration": calibration_table(y, p),
        "rows": int(y.size),
        "positives": int(positives),
    }


def conversion_by_tier(y_true: Any, tiers: Sequence[str] | Any) -> dict[str, dict[str, float | int]]:
    """Leads, conversions and conversion rate per tier label, tiers in sorted order (A, B, C, D)."""
    y = np.asarray(y_true, dtype="float64").ravel()
    t = np.asarray(tiers, dtype=object).ravel()
    if y.shape != t.shape:
        raise ValueError(f"labels and tiers differ in length: {y.shape[0]} vs {t.shape[0]}")
    out: dict[str, dict[str, float | int]] = {}
    for tier in sorted({str(v) for v in t}):
        mask = np.array([str(v) == tier for v in t], dtype=bool)
        out[tier] = {"leads": int(mask.sum()), "converted": int(y[mask].sum()),
                     "conversion_rate": float(y[mask].mean())}
    return out
