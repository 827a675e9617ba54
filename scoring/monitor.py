"""Daily model health: the names the CLI, the worker, the console, the report and the retrainer use.

The monitor itself lives in :mod:`scoring.monitoring`, one module per measure (its docstring says
what each measures); this module re-exports its public names so callers keep one import path.
"""

from __future__ import annotations

from scoring.monitoring.accuracy import calibration_by_band
from scoring.monitoring.clock import data_clock, horizon_of, parse_time, trained_at
from scoring.monitoring.cohorts import COHORT_AGE_DAYS, build_cohort, cohort_leads
from scoring.monitoring.distributions import Distribution, categorical_distribution, numeric_distribution, psi
from scoring.monitoring.drift import BROAD_SHIFT_FEATURES, drift_alerts
from scoring.monitoring.elapsed import active_tier_policy, elapsed_scores
from scoring.monitoring.reference_cohort import (
    REFERENCE_KEY,
    Reference,
    compute_reference,
    ensure_reference,
    feature_importance,
)
from scoring.monitoring.run import latest_report, reports, run_monitor, send_webhook
from scoring.monitoring.shadow_compare import describe_shadow, shadow_comparison
from scoring.monitoring.stats import auc_standard_error
from scoring.monitoring.status import ALERT, NOT_ENOUGH, OK, WARN
from scoring.monitoring.tier_conversion import top_tier_alert

__all__ = [
    "ALERT",
    "BROAD_SHIFT_FEATURES",
    "COHORT_AGE_DAYS",
    "NOT_ENOUGH",
    "OK",
    "REFERENCE_KEY",
    "WARN",
    "Distribution",
    "Reference",
    "active_tier_policy",
    "auc_standard_error",
    "build_cohort",
    "calibration_by_band",
    "categorical_distribution",
    "cohort_leads",
    "compute_reference",
    "data_clock",
    "describe_shadow",
    "drift_alerts",
    "elapsed_scores",
    "ensure_reference",
    "feature_importance",
    "horizon_of",
    "latest_report",
    "numeric_distribution",
    "parse_time",
    "psi",
    "reports",
    "run_monitor",
    "send_webhook",
    "shadow_comparison",
    "top_tier_alert",
    "trained_at",
]
