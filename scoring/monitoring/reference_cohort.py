"""A model's reference cohort (its own test period): what drift and tier norms are measured against."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from scoring import registry
from scoring.features import (
    align_to_spec,
)
from scoring.frame import prepare_frame
from scoring.monitoring.clock import as_utc, horizon_of, parse_time, trained_at
from scoring.monitoring.cohorts import COHORT_AGE_DAYS, build_cohort, cohort_leads, labels_at
from scoring.monitoring.distributions import Distribution, categorical_distribution, numeric_distribution
from scoring.monitoring.stats import roc_auc
from scoring.training import BIAS, TrainedModel
from store.models import (
    ModelVersion,
)

REFERENCE_KEY = "monitor_reference"
REFERENCE_FORMAT = 4  # 2: lead-mix features watched; 3: reference outcomes (tier norms); 4: conversion ages
TOP_FEATURES = 8
# Who the leads are, known at creation: watched besides the top features, because a new lead mix
# is a market change whatever the champion makes of it (campaigns are left out: they come and go).
MIX_FEATURES: tuple[str, ...] = ("industry", "employee_band", "revenue_band", "country", "seniority",
                                 "department", "lead_source")
MAX_IMPORTANCE_ROWS = 1000
# Reference outcomes kept with the model (probability, converted) to derive tier norms for any policy.
MAX_REFERENCE_OUTCOMES = 4000


@dataclass
class Reference:
    """A model's reference cohort summary (what is stored in ``params["monitor_reference"]``)."""
    cohort_start: datetime
    cohort_end: datetime
    rows: int
    score: Distribution
    features: dict[str, Distribution]
    importance: dict[str, float]
    baseline_auc: float | None
    baseline_rows: int
    baseline_positives: int
    computed_at: datetime
    age_days: int = COHORT_AGE_DAYS
    # (probability, converted) of the reference leads whose outcome was known: the tier norms of
    # whatever tier policy is active are derived from these.
    outcomes: list[tuple[float, int]] = field(default_factory=list)
    # Days from creation to conversion of the same leads (None: not converted within the horizon):
    # the pace at which each tier converts, for the early top-tier measure.
    conversion_days: list[float | None] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REFERENCE_FORMAT, "cohort_start": self.cohort_start.isoformat(),
            "cohort_end": self.cohort_end.isoformat(), "rows": self.rows, "age_days": self.age_days,
            "score": self.score.to_dict(), "features": {k: v.to_dict() for k, v in self.features.items()},
            "importance": self.importance, "baseline_auc": self.baseline_auc,
            "baseline_rows": self.baseline_rows, "baseline_positives": self.baseline_positives,
            "computed_at": self.computed_at.isoformat(),
            "outcomes": [[round(float(p), 6), int(y)] for p, y in self.outcomes],
            "conversion_days": [None if d is None else round(float(d), 3) for d in self.conversion_days],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reference:
        def when(key: str) -> datetime:
            value = parse_time(d.get(key))
            return value if value is not None else datetime(1970, 1, 1, tzinfo=UTC)

        auc = d.get("baseline_auc")
        return cls(
            cohort_start=when("cohort_start"), cohort_end=when("cohort_end"), rows=int(d.get("rows", 0)),
            score=Distribution.from_dict(d["score"]),
            features={k: Distribution.from_dict(v) for k, v in d.get("features", {}).items()},
            importance={str(k): float(v) for k, v in d.get("importance", {}).items()},
            baseline_auc=float(auc) if isinstance(auc, int | float) else None,
            baseline_rows=int(d.get("baseline_rows", 0)), baseline_positives=int(d.get("baseline_positives", 0)),
            computed_at=when("computed_at"), age_days=int(d.get("age_days", COHORT_AGE_DAYS)),
            outcomes=[(float(p), int(y)) for p, y in d.get("outcomes", [])],
            conversion_days=[None if v is None else float(v) for v in d.get("conversion_days", [])],
        )


def reference_window(mv: ModelVersion) -> tuple[datetime, datetime] | None:
    """Creation-time window of a version's reference cohort: its test period if recorded, else the
    last 20 % of its training window. None when the version records no window at all."""
    params = mv.params or {}
    split = params.get("split") or {}
    offsets = params.get("snapshot_offsets_days") or [1]
    first_offset = timedelta(days=float(min(offsets)))
    start = parse_time(split.get("test_from")) if split.get("kind") == "time" else None
    end = parse_time(split.get("test_to")) if split.get("kind") == "time" else None
    if start is not None and end is not None and end > start:
        # split_at is a lead's first snapshot (creation + the smallest offset).
        return start - first_offset, end - first_offset + timedelta(seconds=1)
    if mv.train_start is None or mv.train_end is None:
        return None
    lo, hi = as_utc(mv.train_start), as_utc(mv.train_end)
    return lo + (hi - lo) * 0.8 - first_offset, hi - first_offset + timedelta(seconds=1)


def feature_importance(model: TrainedModel, features: pd.DataFrame) -> dict[str, float]:
    """Each feature's share of the mean absolute contribution (sums to 1) on ``features``."""
    if features.empty:
        return {}
    sample = features.iloc[:MAX_IMPORTANCE_ROWS]
    contrib = model.contributions(align_to_spec(sample, model.spec)).drop(columns=[BIAS])
    mean_abs = contrib.abs().mean(axis=0)
    total = float(mean_abs.sum())
    if total <= 0:
        return {str(k): 0.0 for k in mean_abs.index}
    return {str(k): float(v) / total for k, v in mean_abs.sort_values(ascending=False).items()}


def compute_reference(session: Session, mv: ModelVersion, *, as_of: datetime) -> Reference | None:
    """Build a version's reference from its reference cohort (None if it has no usable window)."""
    window = reference_window(mv)
    if window is None:
        return None
    start, end = window
    ids = cohort_leads(session, start, end)
    if not ids:
        return None
    cohort = build_cohort(session, ids)
    model = registry.load_model(mv)
    aligned = align_to_spec(cohort.features, model.spec)
    proba = model.predict_proba(aligned)
    importance = feature_importance(model, cohort.features)
    encoded = prepare_frame(aligned, model.spec)
    top = [f for f in importance if f in model.spec.columns][:TOP_FEATURES]
    top += [f for f in MIX_FEATURES if f in model.spec.columns and f not in top]
    features = {
        f: numeric_distribution(encoded[f]) if f in model.spec.numeric else categorical_distribution(encoded[f])
        for f in top
    }
    known, label = labels_at(cohort.leads, cohort.snapshots, horizon_of(mv), as_of)
    auc = roc_auc(label[known], proba[known]) if known.any() else float("nan")
    rows = np.flatnonzero(known)
    if len(rows) > MAX_REFERENCE_OUTCOMES:
        rows = np.sort(np.random.default_rng(0).choice(rows, MAX_REFERENCE_OUTCOMES, replace=False))
    outcomes = [(float(proba[i]), int(label[i])) for i in rows]
    converted_at = pd.to_datetime(cohort.leads["converted_at"], utc=True)
    age = ((converted_at - pd.to_datetime(cohort.leads["crm_created_at"], utc=True)) / pd.Timedelta(days=1)
           ).to_numpy(dtype="float64")
    conversion_days = [float(age[i]) if label[i] else None for i in rows]
    return Reference(
        cohort_start=start, cohort_end=end, rows=len(cohort), score=numeric_distribution(proba),
        features=features, importance=importance, baseline_auc=auc if math.isfinite(auc) else None,
        baseline_rows=int(known.sum()), baseline_positives=int(label[known].sum()), computed_at=as_of,
        outcomes=outcomes, conversion_days=conversion_days,
    )


def ensure_reference(session: Session, mv: ModelVersion, *, as_of: datetime | None = None) -> Reference | None:
    """The version's stored reference, computing and storing it (in ``params``) when absent."""
    stored = (mv.params or {}).get(REFERENCE_KEY)
    if isinstance(stored, dict) and stored.get("format") == REFERENCE_FORMAT:
        return Reference.from_dict(stored)
    ref = compute_reference(session, mv, as_of=as_of or trained_at(mv))
    if ref is None:
        return None
    # Reassign (not mutate) so SQLAlchemy sees the JSON column change.
    mv.params = {**(mv.params or {}), REFERENCE_KEY: ref.to_dict()}
    session.flush()
    return ref
