"""Data audit run before any training: identifiers, constants, placeholders, leaks, duplicates.

:func:`audit_frame` reports what it found and returns a cleaned :class:`FeatureSpec` with each
dropped feature's reason. Leak detection is deliberately simple and explainable:

* single-feature AUC (numerics ranked directly, categoricals target-encoded out of fold) at or
  above ``leak_auc`` → leaky;
* a categorical with single-feature AUC ≥ 0.85 whose near-pure levels (at least 30 rows each,
  with at most a tenth of the base rate of one class) cover ``leak_pure_share`` of the rows or
  more → leaky. This is what catches sales-team
  dispositions such as X Education's ``Tags`` ("Closed by Horizzon", "Ringing"), whose AUC alone
  (≈0.92) stays under 0.95 because a third of the rows are blank;
* a single-feature AUC at or above ``suspicious_auc`` only warns: the audit cannot know whether
  a strong feature is known before the outcome; the user can.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from config.errors import LeadscoreError
from scoring.frame import MISSING_TOKEN, PLACEHOLDERS, FeatureSpec, prepare_frame


class DataError(LeadscoreError):
    """The data cannot be used as given; the message (one line) says why."""


class InsufficientDataError(DataError):
    """Too few examples of a class to train and evaluate honestly."""

    def __init__(self, positives: int, negatives: int, minimum: int) -> None:
        self.positives = positives
        self.negatives = negatives
        self.minimum = minimum
        super().__init__(
            f"not enough labelled leads to train: {positives} positive and {negatives} negative, "
            f"need at least {minimum} of each (fewer makes the evaluation unreliable; the minimum is "
            "training.min_per_class in the YAML, --min-per-class for evaluate and demo)"
        )


_ID_NAME = re.compile(r"(^|[\s_\-.])(id|ids|uuid|guid|key|number|no|nr|#)$|^id[\s_\-]|_id$", re.IGNORECASE)

PURE_LEVEL_RATIO = 0.1  # a level is near-pure when it has ≤ 1/10 of the base rate of one class
PURE_LEVEL_MIN_ROWS = 30
PURE_RULE_MIN_AUC = 0.85  # the near-pure-levels rule also needs a strong feature on its own
CORRELATION_THRESHOLD = 0.95
NEAR_CONSTANT_SHARE = 0.999
HIGH_MISSING_WARN = 0.40


@dataclass
class AuditReport:
    """What the audit found; ``dropped`` maps each removed feature to its reason."""

    rows: int
    positives: int
    negatives: int
    warnings: list[str] = field(default_factory=list)
    leaky_features: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    missing_share: dict[str, float] = field(default_factory=dict)
    placeholder_values: dict[str, list[str]] = field(default_factory=dict)
    duplicates: int = 0
    correlated_pairs: list[tuple[str, str, float]] = field(default_factory=list)
    identifiers: list[str] = field(default_factory=list)
    constant_features: list[str] = field(default_factory=list)
    single_feature_auc: dict[str, float] = field(default_factory=dict)

    def findings(self) -> list[str]:
        """The warnings that are not about an excluded feature (:attr:`dropped` says why those went)."""
        return other_findings(self.warnings, self.dropped)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tuples become lists)."""
        d = asdict(self)
        d["correlated_pairs"] = [list(p) for p in self.correlated_pairs]
        return d


def other_findings(warnings: list[str], dropped: dict[str, str]) -> list[str]:
    """``warnings`` without those about a feature in ``dropped`` (``"feature: ..."``): the card and
    ``leadscore train`` list an excluded feature once, with why it was excluded."""
    return [w for w in warnings if w.split(":", 1)[0] not in dropped]


def binary_target(series: pd.Series, name: str) -> np.ndarray:
    """Return a 0/1 int array for a binary target column, or raise :class:`DataError`.

    Accepts 0/1 numbers, booleans, and yes/no / true/false strings. Missing labels are refused
    (drop those rows first).
    """
    if series.isna().any():
        raise DataError(f"target column {name!r} has {int(series.isna().sum())} missing values")
    if pd.api.types.is_bool_dtype(series):
        return series.astype("int64").to_numpy()
    if pd.api.types.is_numeric_dtype(series):
        values = set(np.unique(series.to_numpy(dtype="float64")).tolist())
        if values <= {0.0, 1.0}:
            return series.astype("int64").to_numpy()
        shown = ", ".join(str(v) for v in sorted(values)[:5])
        raise DataError(f"target column {name!r} is not binary 0/1 (values: {shown})")
    text = series.astype("string").str.strip().str.lower()
    mapping = {"1": 1, "0": 0, "true": 1, "false": 0, "yes": 1, "no": 0, "y": 1, "n": 0}
    unknown = sorted(set(text.unique().tolist()) - set(mapping))
    if unknown:
        raise DataError(f"target column {name!r} is not binary (unexpected values: {', '.join(unknown[:5])})")
    return text.map(mapping).astype("int64").to_numpy()


def check_class_counts(y: np.ndarray, min_per_class: int) -> tuple[int, int]:
    """Return (positives, negatives); raise :class:`InsufficientDataError` below ``min_per_class``."""
    positives = int(np.sum(y == 1))
    negatives = int(np.sum(y == 0))
    if positives < min_per_class or negatives < min_per_class:
        raise InsufficientDataError(positives, negatives, min_per_class)
    return positives, negatives


def looks_like_identifier(name: str, series: pd.Series) -> bool:
    """True for columns that name a row rather than describe it.

    Strings unique per row, integers unique per row, or an id-like name ("ID", "Lead Number",
    "customer_id") with ≥95 % distinct values. Continuous floats unique per row are *not*
    identifiers (measurements often are all distinct).
    """
    non_null = series.dropna()
    if len(non_null) < 2:
        return False
    distinct_share = non_null.nunique() / len(non_null)
    if _ID_NAME.search(name.strip()) and distinct_share >= 0.95:
        return True
    if distinct_share < 1.0:
        return False
    if pd.api.types.is_integer_dtype(non_null) or not pd.api.types.is_numeric_dtype(non_null):
        return True
    values = non_null.to_numpy(dtype="float64")
    return bool(np.all(values == np.round(values)))


def _single_feature_auc(x: pd.Series, y: np.ndarray, categorical: bool, seed: int) -> float:
    """AUC of one feature alone, direction-free (≥ 0.5); categoricals target-encoded out of fold."""
    if categorical:
        codes, _ = pd.factorize(x)
        scores = np.zeros(len(x))
        prior = float(y.mean())
        folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
        for train_idx, test_idx in folds.split(codes, y):
            n_levels = int(codes.max()) + 1
            pos = np.bincount(codes[train_idx], weights=y[train_idx], minlength=n_levels)
            cnt = np.bincount(codes[train_idx], minlength=n_levels)
            rate = (pos + 10 * prior) / (cnt + 10)
            scores[test_idx] = rate[codes[test_idx]]
    else:
        values = x.to_numpy(dtype="float64")
        if np.all(np.isnan(values)):
            return 0.5
        scores = np.where(np.isnan(values), np.nanmedian(values), values)
    auc = float(roc_auc_score(y, scores))
    return max(auc, 1.0 - auc)


def _pure_level_share(x: pd.Series, y: np.ndarray) -> float:
    """Share of rows in levels (≥ 30 rows) that all but determine the class.

    Relative to the base rate so a rare outcome does not make every level look pure: a level is
    near-pure when its conversion is at most a tenth of the base rate, or its non-conversion at
    most a tenth of the base non-conversion rate.
    """
    base = float(y.mean())
    stats = pd.DataFrame({"x": x.to_numpy(), "y": y}).groupby("x")["y"].agg(["mean", "count"])
    pure = stats[
        (stats["count"] >= PURE_LEVEL_MIN_ROWS)
        & ((stats["mean"] <= PURE_LEVEL_RATIO * base) | (1 - stats["mean"] <= PURE_LEVEL_RATIO * (1 - base)))
    ]
    return float(pure["count"].sum()) / len(x)


def _cramers_v(a: pd.Series, b: pd.Series) -> float:
    """Cramér's V between two categoricals (0 = independent, 1 = one determines the other)."""
    ca, _ = pd.factorize(a)
    cb, _ = pd.factorize(b)
    ka, kb = int(ca.max()) + 1, int(cb.max()) + 1
    if ka < 2 or kb < 2:
        return 0.0
    table = np.bincount(ca * kb + cb, minlength=ka * kb).reshape(ka, kb).astype("float64")
    n = table.sum()
    expected = np.outer(table.sum(1), table.sum(0)) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = float(np.nansum((table - expected) ** 2 / np.where(expected > 0, expected, np.nan)))
    return math.sqrt(chi2 / (n * (min(ka, kb) - 1)))


def audit_frame(
    df: pd.DataFrame,
    *,
    target: str,
    spec: FeatureSpec,
    min_per_class: int = 500,
    post_outcome: Iterable[str] = (),
    leak_auc: float = 0.95,
    leak_pure_share: float = 0.25,
    suspicious_auc: float = 0.75,
    drop_leaky: bool = True,
    seed: int = 0,
) -> tuple[AuditReport, FeatureSpec]:
    """Audit ``df`` before training; return the report and the cleaned spec.

    Dropped (with the reason in ``report.dropped``): declared ``post_outcome`` columns,
    identifiers, constant/near-constant columns, leaky columns (unless ``drop_leaky=False``: then
    they are only reported), and the more-missing member of each highly correlated pair.
    Placeholder values (see :data:`scoring.frame.PLACEHOLDERS`) are reported and count as missing;
    :func:`prepare_frame` maps them to the missing token. Raises :class:`InsufficientDataError`
    when either class has fewer than ``min_per_class`` rows, :class:`DataError` for a missing or
    non-binary target or feature columns absent from ``df``.
    """
    if target not in df.columns:
        raise DataError(f"target column {target!r} not found")
    absent = [c for c in spec.columns if c not in df.columns]
    if absent:
        raise DataError(f"feature columns not found: {', '.join(absent)}")
    y = binary_target(df[target], target)
    positives, negatives = check_class_counts(y, min_per_class)
    report = AuditReport(rows=len(df), positives=positives, negatives=negatives)
    kept = spec

    declared = [c for c in post_outcome if c in spec.columns]
    for col in declared:
        report.dropped[col] = "declared post-outcome (known only after the result)"
    unknown_declared = [c for c in post_outcome if c not in spec.columns]
    if unknown_declared:
        report.warnings.append(f"post-outcome columns not among the features: {', '.join(unknown_declared)}")
    kept = kept.without(declared)

    # Placeholders and missingness are read from the raw values, before encoding.
    for col in kept.categorical:
        raw = df[col].dropna().astype("string").str.strip()
        found = sorted({v for v in raw.unique().tolist() if v.lower() in PLACEHOLDERS})
        if found:
            report.placeholder_values[col] = found
            share = float(raw.str.lower().isin(PLACEHOLDERS).sum()) / len(df)
            shown = ", ".join(repr(v) for v in found)
            report.warnings.append(f"{col}: placeholder {shown} in {share:.0%} of rows, treated as missing")

    frame = prepare_frame(df, kept)
    for col in kept.columns:
        s = frame[col]
        share = float((s == MISSING_TOKEN).mean()) if col in kept.categorical else float(s.isna().mean())
        report.missing_share[col] = round(share, 4)
        if share >= HIGH_MISSING_WARN:
            report.warnings.append(f"{col}: {share:.0%} missing")

    for col in kept.columns:
        if looks_like_identifier(col, df[col]):
            report.identifiers.append(col)
            report.dropped[col] = "identifier (distinct per row)"
    kept = kept.without(report.identifiers)

    for col in kept.columns:
        counts = frame[col].value_counts(dropna=False)
        if len(counts) <= 1:
            report.constant_features.append(col)
            report.dropped[col] = "constant (a single value)"
        elif counts.iloc[0] / len(frame) >= NEAR_CONSTANT_SHARE:
            report.constant_features.append(col)
            report.dropped[col] = f"near-constant ({counts.iloc[0] / len(frame):.2%} one value)"
    kept = kept.without(report.constant_features)

    for col in kept.columns:
        is_cat = col in kept.categorical
        auc = _single_feature_auc(frame[col], y, is_cat, seed)
        report.single_feature_auc[col] = round(auc, 4)
        pure = _pure_level_share(frame[col], y) if is_cat else 0.0
        if auc >= leak_auc or (pure >= leak_pure_share and auc >= PURE_RULE_MIN_AUC):
            report.leaky_features.append(col)
            why = f"single-feature AUC {auc:.3f}" + (f", {pure:.0%} of rows in near-pure levels" if pure else "")
            action = "dropped" if drop_leaky else "kept on request"
            report.warnings.append(f"{col}: looks leaky ({why}); {action} - is it known before the outcome?")
            if drop_leaky:
                report.dropped[col] = f"leaky ({why})"
        elif auc >= suspicious_auc:
            report.warnings.append(
                f"{col}: strongly predictive alone (AUC {auc:.3f}); check it is known before the outcome"
            )
    if drop_leaky:
        kept = kept.without(report.leaky_features)

    correlated_drop: list[str] = []
    numeric = [c for c in kept.numeric]
    if len(numeric) >= 2:
        corr = frame[numeric].corr()
        for i, a in enumerate(numeric):
            for b in numeric[i + 1 :]:
                r = corr.loc[a, b]
                if pd.notna(r) and abs(r) >= CORRELATION_THRESHOLD:
                    report.correlated_pairs.append((a, b, round(float(r), 4)))
    cats = list(kept.categorical)
    for i, a in enumerate(cats):
        for b in cats[i + 1 :]:
            v = _cramers_v(frame[a], frame[b])
            if v >= CORRELATION_THRESHOLD:
                report.correlated_pairs.append((a, b, round(v, 4)))
    for a, b, r in report.correlated_pairs:
        if a in correlated_drop or b in correlated_drop:
            continue
        # keep the better-filled one; ties keep the first in spec order
        loser = b if report.missing_share.get(b, 0.0) >= report.missing_share.get(a, 0.0) else a
        keeper = a if loser == b else b
        correlated_drop.append(loser)
        report.dropped[loser] = f"redundant with {keeper} (correlation {r:.2f})"
    kept = kept.without(correlated_drop)

    report.duplicates = int(frame[kept.columns].duplicated().sum()) if kept.columns else 0
    if report.duplicates:
        report.warnings.append(f"{report.duplicates} row{' repeats' if report.duplicates == 1 else 's repeat'} "
                               "an earlier row's features exactly")
    for col in report.identifiers:
        report.warnings.append(f"{col}: identifier, excluded")
    for col in report.constant_features:
        report.warnings.append(f"{col}: {report.dropped[col]}, excluded")
    if not kept.columns:
        raise DataError("no usable feature left after the audit")
    return report, kept
