"""Fit and engagement: the champion's contributions split into who the lead is and what it did.

Every feature belongs to one of two concepts:

- **engagement**: what the lead did — activity counts per type and window, recency
  (``days_since_last_engagement``), velocity, content depth, high-intent page visits, and the
  buying committee's activity (colleagues who became leads recently);
- **fit**: who the lead is — firmographics, persona (seniority, department), source, campaign,
  e-mail type, data quality and the customer's own mapped fields.

A lead's fit sum (engagement sum) is the sum of the champion's per-feature contributions
(CatBoost SHAP, log-odds) over that concept's features; the two sums plus the model's bias add
up to the lead's raw score. Each sum is ranked against the same sums of the reference leads
(:mod:`scoring.reference`), giving the 1-99 fit and engagement scores. Why this rather than two
companion models is measured in docs/model.md ("Fit and engagement").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scoring.features import ENGAGEMENT_TYPES

FIT = "fit"
ENGAGEMENT = "engagement"

_ENGAGEMENT_FEATURES = frozenset({
    "engagement_30d", "days_since_last_engagement", "engagement_velocity", "content_depth_7d",
    "content_depth_30d", "high_intent_visits_7d", "high_intent_visits_30d", "committee_size",
    # Constant at training time (every example is 14 days old), so it carries no weight; it is
    # about time, not about who the lead is.
    "lead_age_days",
})


def group_of(feature: str) -> str:
    """``"engagement"`` for behaviour features, ``"fit"`` for everything about who the lead is."""
    if feature in _ENGAGEMENT_FEATURES:
        return ENGAGEMENT
    for t in ENGAGEMENT_TYPES:
        if feature.startswith(f"{t}_") and feature.endswith("d") and feature[len(t) + 1 : -1].isdigit():
            return ENGAGEMENT
    return FIT


def split_contributions(contributions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(fit sum, engagement sum) per row of a contributions frame (``__bias__`` left out)."""
    cols = [c for c in contributions.columns if not str(c).startswith("__")]
    eng_cols = [c for c in cols if group_of(str(c)) == ENGAGEMENT]
    fit_cols = [c for c in cols if group_of(str(c)) == FIT]
    fit = contributions[fit_cols].to_numpy(dtype="float64").sum(axis=1) if fit_cols else np.zeros(len(contributions))
    eng = contributions[eng_cols].to_numpy(dtype="float64").sum(axis=1) if eng_cols else np.zeros(len(contributions))
    return fit, eng
