"""Drift: PSI of the score and of watched features, live cohort against the reference; importance change."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
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
from scoring.monitoring.distributions import NOISE_QUANTILE, psi, psi_noise
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
        # The window has grown to its longest: say so, or revops waits for a wider one.
        drift["reason"] = (f"{len(ids)} leads created {start:%Y-%m-%d}..{end:%Y-%m-%d} (the longest window, "
                           f"{days} days; seen at {ref.age_days} days old); at least {MIN_PSI_ROWS} needed")
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
    # What sampling alone gives on this many leads: a PSI below it is not a measured shift.
    noise = {"score": psi_noise(ref.score.shares, len(ids), ref.rows)}
    noise.update({name: psi_noise(ref.features[name].shares, len(ids), ref.rows) for name in feature_psi})
    drift["score_psi_noise"] = noise["score"]
    drift["feature_psi"] = feature_psi
    drift["features_above_alert"] = above_alert(feature_psi, config)
    # Between the two lines: the "shifting" warnings (the CLI counts both, with their lines).
    drift["features_above_warning"] = sum(1 for name, v in feature_psi.items() if math.isfinite(v)
                                          and _warn_line(config, noise, name) < v <= config.psi_alert)
    drift["psi_warn"], drift["psi_alert"] = config.psi_warn, config.psi_alert
    values = {"score": drift["score_psi"], **feature_psi}
    quiet = [name for name, v in values.items()
             if math.isfinite(v) and config.psi_warn < v <= _warn_line(config, noise, name)]
    drift["within_noise"] = len(quiet)
    if quiet:
        out.notes.append(
            f"drift: {len(quiet)} PSI value(s) above the warning line ({config.psi_warn:g}) but within what "
            f"{len(ids):,} leads against {ref.rows:,} reference rows give by chance ({NOISE_QUANTILE:.0%} line), "
            "not raised as warnings: "
            + ", ".join(f"{name} {values[name]:.3f} (line {noise[name]:.3f})" for name in quiet[:5])
            + (" ..." if len(quiet) > 5 else ""))
    found = drift_alerts(drift["score_psi"], feature_psi, config, noise)
    drift["status"] = worst(found)
    out.alerts.extend(found)



WATCH_ACTION = ("nothing to change yet: the scores do not feel this input's shift; if it keeps growing, look at "
                "where the new leads come from (the feature PSI table of `leadscore report --html` or the "
                "console's Monitor page), and for a new source or a broken field mapping in the CRM")
DRIFT_ACTION = ("the leads arriving now differ from those the model learnt from: check for a new source, "
                "campaign or market (or a broken field mapping); `leadscore retrain` learns from the new leads "
                "once their outcomes are known")


def _warn_line(config: MonitoringConfig, noise: dict[str, float] | None, name: str) -> float:
    """The warning line for ``name``: the configured one, raised to the sampling noise of the leads
    measured (never above the alert line)."""
    return min(config.psi_alert, max(config.psi_warn, (noise or {}).get(name, 0.0)))


def above_alert(feature_psi: dict[str, float], config: MonitoringConfig) -> int:
    return sum(1 for v in feature_psi.values() if math.isfinite(v) and v > config.psi_alert)


def drift_alerts(score_psi: float, feature_psi: dict[str, float], config: MonitoringConfig,
                 noise: dict[str, float] | None = None) -> list[Alert]:
    """The alerts and warnings that PSI values of the score and of the watched features call for.

    Inputs that moved while the scores did not change no decision (cumulative features such as the
    buying-committee size grow with the CRM's age): such a feature drift is a warning only, unless
    :data:`BROAD_SHIFT_FEATURES` of the watched features moved at once (a new lead mix: the market
    changed, whatever the stale model makes of it).

    ``noise`` (by name, "score" for the score): the PSI sampling alone reaches on the leads measured
    (:func:`~scoring.monitoring.distributions.psi_noise`). A *warning* needs the value above it as
    well as above ``psi_warn``: between the two, a small cohort cannot tell a shift from chance.
    The alert line and what it takes are left as configured: an alert starts a retraining, whose
    promotion is judged again on held-out leads with its own confidence bound.
    """
    broad = above_alert(feature_psi, config) >= BROAD_SHIFT_FEATURES
    scores_moved = (math.isfinite(score_psi) and score_psi > config.psi_warn) or broad
    alerts: list[Alert] = []
    checks = [("score", score_psi)] + sorted(feature_psi.items(), key=lambda kv: -kv[1])
    for name, value in checks:
        if not math.isfinite(value):
            continue
        what = "score distribution" if name == "score" else f"feature {name}"
        kind = "psi_score" if name == "score" else "psi_feature"
        warn_line = _warn_line(config, noise, name)
        if value > config.psi_alert and (name == "score" or scores_moved):
            message = f"{what} drifted: PSI {value:.3f} > {config.psi_alert:g}"
            alerts.append(Alert(ALERT, kind, message + _chance(name, value, score_psi, broad, noise),
                                value, config.psi_alert, action=DRIFT_ACTION))
        elif value > config.psi_alert:
            alerts.append(Alert(WARN, kind, f"{what} drifted (PSI {value:.3f} > {config.psi_alert:g}) but the "
                                f"score distribution is stable (PSI {score_psi:.3f})", value, config.psi_alert,
                                action=WATCH_ACTION))
        elif value > warn_line:
            alerts.append(Alert(WARN, kind, f"{what} shifting: {_past(value, warn_line, config.psi_warn)}",
                                value, warn_line, action=DRIFT_ACTION if name == "score" else WATCH_ACTION))
    return alerts


def _past(value: float, line: float, configured: float) -> str:
    """``PSI 0.200 > 0.180 (...)``: the value and the line it passed, with digits enough to tell
    them apart, and which line it was when the sampling noise raised it above the configured one (a
    trial read "PSI 0.124 > 0.124" for 0.1245 against the noise line 0.1236 of 201 leads)."""
    digits = 3
    while digits < 6 and f"{value:.{digits}f}" == f"{line:.{digits}f}":
        digits += 1
    said = f"PSI {value:.{digits}f} > {line:.{digits}f}"
    if line > configured:
        barely = ": barely past chance" if value < 1.25 * line else ""
        said += (f" (the {NOISE_QUANTILE:.0%} line sampling alone reaches on this many leads, above the warning "
                 f"line {configured:g}{barely})")
    return said


def _chance(name: str, value: float, score_psi: float, broad: bool, noise: dict[str, float] | None) -> str:
    """What an alert rests on when sampling alone could give it: the value within its own noise
    line, or (for a feature) scores that "moved" only within theirs. Said in the alert, which
    stands: a trial's report called the score's 0.170 chance in a note (line 0.233) and raised a
    feature's 0.269 (its line 0.31) as an alert because the score had moved. The lines stay as
    configured: an alert starts a retraining whose challenger is judged on held-out leads before
    anything changes, and in the drift simulations such alerts after a real shift kept the
    champion fresh (tests/scoring/monitor_sim.py)."""
    if not noise:
        return ""
    parts = []
    if value <= noise.get(name, 0.0):
        parts.append(f"PSI {value:.3f} is within its {NOISE_QUANTILE:.0%} noise line {noise[name]:.3f}")
    if name != "score" and not broad and math.isfinite(score_psi) and score_psi <= noise.get("score", 0.0):
        parts.append(f"the scores moved only within theirs (PSI {score_psi:.3f}, line {noise['score']:.3f})")
    if not parts:
        return ""
    return (f" (on this many leads sampling alone could give it: {' and '.join(parts)}; the retraining it starts "
            "is judged on held-out leads before anything changes)")


def champion_since(mv: ModelVersion) -> datetime | None:
    """When ``mv`` last became champion: its promotion, or a later rollback to it (recorded in
    ``params["promotions"]``)."""
    times = [mv.promoted_at] if mv.promoted_at is not None else []
    for step in (mv.params or {}).get("promotions") or []:
        if isinstance(step, dict) and step.get("action") == "rollback":
            try:
                times.append(datetime.fromisoformat(str(step.get("at"))))
            except ValueError:
                continue
    times = [t if t.tzinfo is not None else t.replace(tzinfo=UTC) for t in times]
    return max(times) if times else None


def previous_version(session: Session, champion: ModelVersion) -> ModelVersion | None:
    """The version the champion replaced: the latest one promoted before it last became champion
    (same segment). After a rollback, the version rolled back (it said "no previous champion")."""
    stmt = select(ModelVersion).where(ModelVersion.id != champion.id, ModelVersion.promoted_at.is_not(None))
    stmt = stmt.where(ModelVersion.segment.is_(None) if champion.segment is None
                      else ModelVersion.segment == champion.segment)
    since = champion_since(champion)
    if since is not None:
        stmt = stmt.where(ModelVersion.promoted_at < since)
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
    out.notes.append(describe_importance_change(out.metrics["importance_change"]))


def describe_importance_change(change: dict[str, Any]) -> str:
    """The feature-importance comparison in words: how much of the weight moved from the previous
    champion to this one and the features that moved most (computed by every monitor run, and
    shown nowhere before)."""
    from scoring.card import concept_label

    moved = [r for r in change.get("top_changes") or [] if abs(r["champion"] - r["previous"]) >= 0.005][:3]
    text = (f"feature importance against the previous champion {change['previous_version']}: "
            f"{change['shift']:.0%} of the weight moved")
    if moved:
        text += "; most: " + ", ".join(f"{concept_label(r['feature'])} {r['previous']:.0%} → {r['champion']:.0%}"
                                       for r in moved)
    return text
