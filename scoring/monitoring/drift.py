"""Drift: PSI of the score and of watched features, live cohort against the reference; importance change."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.app_config import MonitoringConfig
from scoring import registry
from scoring.features import (
    align_to_spec,
)
from scoring.frame import prepare_frame
from scoring.monitoring.cohorts import build_cohort, cohort_leads
from scoring.monitoring.distributions import psi
from scoring.monitoring.reference_cohort import Reference, ensure_reference
from scoring.monitoring.status import ALERT, NOT_ENOUGH, WARN, Alert, Findings, worst
from store.models import (
    ModelVersion,
)

LIVE_WINDOW_DAYS = 7
MAX_LIVE_WINDOW_DAYS = 28
MIN_PSI_ROWS = 100
BROAD_SHIFT_FEATURES = 3  # top features above psi_alert at once that alert without the score moving


def measure_drift(session: Session, champion: ModelVersion, ref: Reference, as_of: datetime, config: MonitoringConfig,
           out: Findings) -> None:
    end = as_of - timedelta(days=ref.age_days)
    # The shortest window that holds enough leads: a busy CRM shows a change within days, a quiet
    # one is still measured (on up to MAX_LIVE_WINDOW_DAYS).
    days = LIVE_WINDOW_DAYS
    start = end - timedelta(days=days)
    ids = cohort_leads(session, start, end)
    while len(ids) < MIN_PSI_ROWS and days < MAX_LIVE_WINDOW_DAYS:
        days = min(days + LIVE_WINDOW_DAYS, MAX_LIVE_WINDOW_DAYS)
        start = end - timedelta(days=days)
        ids = cohort_leads(session, start, end)
    drift: dict[str, Any] = {"status": NOT_ENOUGH, "leads": len(ids), "needed": MIN_PSI_ROWS,
                             "cohort_start": start, "cohort_end": end, "rows": len(ids),
                             "reference_rows": ref.rows}
    out.metrics["drift"] = drift
    if len(ids) < MIN_PSI_ROWS:
        drift["reason"] = (f"{len(ids)} leads created {start:%Y-%m-%d}..{end:%Y-%m-%d} (seen at {ref.age_days} "
                           f"days old); at least {MIN_PSI_ROWS} needed")
        out.notes.append(f"drift not measured: {drift['reason']}")
        return
    cohort = build_cohort(session, ids, age_days=ref.age_days)
    model = registry.load_model(champion)
    aligned = align_to_spec(cohort.features, model.spec)
    proba = model.predict_proba(aligned)
    encoded = prepare_frame(aligned, model.spec)
    drift["score_psi"] = psi(ref.score.shares, ref.score.counts(proba))
    drift["score_mean"] = float(np.mean(proba))
    feature_psi = {name: psi(dist.shares, dist.counts(encoded[name])) for name, dist in ref.features.items()
                   if name in encoded.columns}
    drift["feature_psi"] = feature_psi
    drift["features_above_alert"] = above_alert(feature_psi, config)
    # Between the two lines: the "shifting" warnings (the CLI counts both, with their lines).
    drift["features_above_warning"] = sum(1 for v in feature_psi.values()
                                          if math.isfinite(v) and config.psi_warn < v <= config.psi_alert)
    drift["psi_warn"], drift["psi_alert"] = config.psi_warn, config.psi_alert
    found = drift_alerts(drift["score_psi"], feature_psi, config)
    drift["status"] = worst(found)
    out.alerts.extend(found)



WATCH_ACTION = ("nothing to change yet: the scores do not feel this input's shift; if it keeps growing, look at "
                "where the new leads come from (the feature PSI table of `leadscore report --html` or the "
                "console's Monitor page), and for a new source or a broken field mapping in the CRM")
DRIFT_ACTION = ("the leads arriving now differ from those the model learnt from: check for a new source, "
                "campaign or market (or a broken field mapping); `leadscore retrain` learns from the new leads "
                "once their outcomes are known")


def above_alert(feature_psi: dict[str, float], config: MonitoringConfig) -> int:
    return sum(1 for v in feature_psi.values() if math.isfinite(v) and v > config.psi_alert)


def drift_alerts(score_psi: float, feature_psi: dict[str, float], config: MonitoringConfig) -> list[Alert]:
    """The alerts and warnings that PSI values of the score and of the watched features call for.

    Inputs that moved while the scores did not change no decision (cumulative features such as the
    buying-committee size grow with the CRM's age): such a feature drift is a warning only, unless
    :data:`BROAD_SHIFT_FEATURES` of the watched features moved at once (a new lead mix: the market
    changed, whatever the stale model makes of it).
    """
    scores_moved = math.isfinite(score_psi) and score_psi > config.psi_warn
    scores_moved = scores_moved or above_alert(feature_psi, config) >= BROAD_SHIFT_FEATURES
    alerts: list[Alert] = []
    checks = [("score", score_psi)] + sorted(feature_psi.items(), key=lambda kv: -kv[1])
    for name, value in checks:
        if not math.isfinite(value):
            continue
        what = "score distribution" if name == "score" else f"feature {name}"
        kind = "psi_score" if name == "score" else "psi_feature"
        if value > config.psi_alert and (name == "score" or scores_moved):
            alerts.append(Alert(ALERT, kind, f"{what} drifted: PSI {value:.3f} > {config.psi_alert:g}",
                                value, config.psi_alert, action=DRIFT_ACTION))
        elif value > config.psi_alert:
            alerts.append(Alert(WARN, kind, f"{what} drifted (PSI {value:.3f} > {config.psi_alert:g}) but the "
                                f"score distribution is stable (PSI {score_psi:.3f})", value, config.psi_alert,
                                action=WATCH_ACTION))
        elif value > config.psi_warn:
            alerts.append(Alert(WARN, kind, f"{what} shifting: PSI {value:.3f} > {config.psi_warn:g}",
                                value, config.psi_warn, action=DRIFT_ACTION if name == "score" else WATCH_ACTION))
    return alerts


def previous_version(session: Session, champion: ModelVersion) -> ModelVersion | None:
    """The version the champion replaced: the latest one promoted before it (same segment)."""
    stmt = select(ModelVersion).where(ModelVersion.id != champion.id, ModelVersion.promoted_at.is_not(None))
    stmt = stmt.where(ModelVersion.segment.is_(None) if champion.segment is None
                      else ModelVersion.segment == champion.segment)
    if champion.promoted_at is not None:
        stmt = stmt.where(ModelVersion.promoted_at < champion.promoted_at)
    return session.scalars(stmt.order_by(ModelVersion.promoted_at.desc(), ModelVersion.id.desc())).first()


def importance_change(session: Session, champion: ModelVersion, ref: Reference, as_of: datetime,
                       out: Findings) -> None:
    prev = previous_version(session, champion)
    if prev is None:
        out.notes.append("no previous champion to compare feature importance with")
        return
    prev_ref = ensure_reference(session, prev, as_of=as_of)
    if prev_ref is None:
        out.notes.append(f"previous version {prev.version} has no reference window: importance not compared")
        return
    names = sorted(set(ref.importance) | set(prev_ref.importance))
    pairs = [(n, ref.importance.get(n, 0.0), prev_ref.importance.get(n, 0.0)) for n in names]
    pairs.sort(key=lambda r: -abs(r[1] - r[2]))
    # Half the L1 distance of two share vectors: 0 = same ranking weights, 1 = disjoint.
    shift = 0.5 * sum(abs(now - before) for _n, now, before in pairs)
    rows = [{"feature": n, "champion": now, "previous": before} for n, now, before in pairs[:10]]
    out.metrics["importance_change"] = {"previous_version": prev.version, "shift": shift, "top_changes": rows}
