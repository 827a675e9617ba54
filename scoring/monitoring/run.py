"""One monitor run (:func:`run_monitor`), its webhook, and the stored reports."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.app_config import MonitoringConfig
from scoring import registry
from scoring.monitoring.accuracy import measure_performance
from scoring.monitoring.clock import as_utc, data_clock, horizon_of, trained_at
from scoring.monitoring.drift import importance_change, measure_drift
from scoring.monitoring.elapsed import live_tier_policy
from scoring.monitoring.freshness import measure_freshness
from scoring.monitoring.reference_cohort import Reference, ensure_reference
from scoring.monitoring.shadow_compare import describe_shadow, shadow_comparison
from scoring.monitoring.status import NOT_ENOUGH, OK, SEVERITY, WARN, Alert, Findings, to_json, worst
from scoring.monitoring.tier_conversion import early_top_tier
from store.models import (
    ModelVersion,
    MonitorReport,
)

log = logging.getLogger(__name__)
# The alerts' own log lines (for workers' logs): commands that print the alerts themselves
# (``leadscore monitor``, the demo) hold this logger back so a terminal does not show each twice.
alert_log = logging.getLogger(f"{__name__}.alerts")


@contextmanager
def alerts_printed_by_caller() -> Iterator[None]:
    """Hold back the alerts' log lines while the caller prints the alerts itself."""
    level = alert_log.level
    alert_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        alert_log.setLevel(level)
WEBHOOK_TIMEOUT_SECONDS = 5.0


def run_monitor(
    session: Session,
    *,
    as_of: datetime | None = None,
    config: MonitoringConfig,
    horizon_days: int | None = None,
    connections: Sequence[str] = (),
) -> MonitorReport:
    """Measure the champion's health as of ``as_of`` and write a ``monitor_report``.

    ``connections``: the configured (enabled) connections' names: one that never synced warns as
    never synced, even before its first sync put it in the store.

    ``as_of`` None uses the data's clock (:func:`data_clock`: the newest synced modification time),
    never the machine's. ``horizon_days`` defaults to the champion's training horizon. Each measure
    records its status (ok | warn | alert | not enough data) with the counts it used; the overall
    status is the worst alert, or "not enough data" when neither drift nor tier conversion nor
    accuracy could be measured. Flushes, never commits. Alerts are logged at WARNING and POSTed to
    ``config.webhook_url`` when set (failures logged only).

    A run at the data clock of an earlier report of the same champion (the monitor run again before
    the next sync) measures again and replaces that report instead of adding a second one to the
    history; its webhook is sent only when the alerts differ from the replaced report's.
    """
    explicit = as_of is not None
    clock = as_utc(as_of) if as_of is not None else data_clock(session)
    out = Findings()
    out.metrics["clock"] = {"as_of": clock, "source": "--as-of" if explicit else "newest synced modification"}
    out.metrics["measures"] = {}
    if clock is None:
        clock = datetime.now(UTC)
        out.metrics["clock"] |= {"as_of": clock, "source": NO_DATA_CLOCK}
        out.notes.append("no lead or activity synced yet: nothing to measure")
    as_of = clock
    champion = registry.champion(session)
    measured = False
    if champion is None:
        out.alerts.append(Alert(WARN, "no_model", "no champion model: run `leadscore train`",
                                action="train a first model: `leadscore train`"))
    else:
        horizon = horizon_days or horizon_of(champion)
        trained = trained_at(champion)
        out.metrics["champion"] = {"version": champion.version, "family": champion.family,
                                   "trained_as_of": trained}
        if trained > as_of + timedelta(days=1):
            # A past --as-of: the champion learned from outcomes known after it.
            out.notes.append(f"the champion was trained as of {trained:%Y-%m-%d}, after this as-of: leads it learned "
                             "from are among those measured here, so its accuracy can read better than it was then")
        ref = ensure_reference(session, champion, as_of=as_of)
        if ref is None:
            out.notes.append("the champion records no training window: drift not measured")
            out.metrics["drift"] = {"status": NOT_ENOUGH, "leads": 0,
                                    "reason": "the champion records no training window to compare with"}
        else:
            out.metrics["reference"] = {"cohort_start": ref.cohort_start, "cohort_end": ref.cohort_end,
                                        "rows": ref.rows, "baseline_auc": ref.baseline_auc,
                                        "top_features": list(ref.features)}
            measure_drift(session, champion, ref, as_of, config, out)
            importance_change(session, champion, ref, as_of, out)
        measure_performance(session, champion, ref, as_of, horizon, config, out)
        _early_top_tier(session, ref, as_of, horizon, config, out)
        shadow_rows = [shadow_comparison(session, mv, as_of=as_of, horizon_days=horizon)
                       for mv in registry.shadows(session) if mv.segment is None]
        if shadow_rows:
            out.metrics["shadow"] = shadow_rows
            out.notes.extend(describe_shadow(c) for c in shadow_rows)
        measured = any((out.metrics.get(k) or {}).get("status") not in (None, NOT_ENOUGH)
                       for k in ("drift", "tier_conversion", "performance"))
        for key in ("drift", "tier_conversion", "performance"):
            part = out.metrics.get(key) or {}
            out.metrics["measures"][key] = {"status": part.get("status", NOT_ENOUGH), "leads": part.get("leads", 0),
                                            **({"reason": part["reason"]} if part.get("reason") else {})}
    measure_freshness(session, as_of, config, out, explicit=explicit, configured=connections)
    status = worst(out.alerts)
    if status == OK and not measured:
        status = NOT_ENOUGH
    model_id = champion.id if champion is not None else None
    earlier = _same_measurement(session, model_id, as_of)
    alerts = [a.to_dict() for a in out.alerts]
    if earlier is not None:
        previous = earlier.metrics or {}
        first = (previous.get("remeasured") or {}).get("first_written_at") or as_utc(earlier.created_at).isoformat()
        runs = int((previous.get("remeasured") or {}).get("runs", 1)) + 1
        out.metrics["remeasured"] = {"first_written_at": first, "runs": runs}
    out.metrics["notes"] = out.notes
    if earlier is None:
        report = MonitorReport(model_version_id=model_id, as_of=as_of, status=status,
                               metrics=to_json(out.metrics), alerts=alerts)
        session.add(report)
        changed = bool(alerts)
    else:
        changed = _alert_lines(alerts) != _alert_lines(earlier.alerts or [])
        report = earlier
        report.status, report.metrics, report.alerts = status, to_json(out.metrics), alerts
        report.created_at = datetime.now(UTC)
    session.flush()
    for a in out.alerts:
        alert_log.warning("monitor %s [%s] %s", a.level, a.kind, a.message)
    if config.webhook_url and out.alerts:
        if changed:
            send_webhook(config.webhook_url, report, champion)
        else:
            log.info("monitor webhook not sent again: the alerts are those of report %s at this data clock",
                     report.id)
    return report


def _same_measurement(session: Session, model_version_id: int | None, as_of: datetime) -> MonitorReport | None:
    """The latest report of this champion at this data clock, if the monitor has already run there."""
    same_model = (MonitorReport.model_version_id.is_(None) if model_version_id is None
                  else MonitorReport.model_version_id == model_version_id)
    return session.scalars(select(MonitorReport).where(MonitorReport.as_of == as_of, same_model)
                           .order_by(MonitorReport.id.desc()).limit(1)).first()


def _alert_lines(alerts: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
    return [(a.get("level"), a.get("kind"), a.get("message")) for a in alerts]


def _early_top_tier(session: Session, ref: Reference | None, as_of: datetime, horizon: int, config: MonitoringConfig,
                    out: Findings) -> None:
    """The early top-tier measure beside the elapsed one: ``tier_conversion["early"]``; the measure's
    status is the worse of the two that could be judged."""
    status, alert, detail = early_top_tier(session, ref, live_tier_policy(session), as_of=as_of,
                                           horizon_days=horizon, share=config.top_tier_share)
    tc = out.metrics["tier_conversion"]
    tc["early"] = {"status": status, **detail}
    if alert is not None:
        out.alerts.append(alert)
    if status == NOT_ENOUGH:
        out.notes.append(f"early top-tier conversion not judged: {detail.get('reason')}")
    elif tc.get("status", NOT_ENOUGH) == NOT_ENOUGH or SEVERITY[status] > SEVERITY.get(tc["status"], 0):
        tc["status"] = status


def send_webhook(url: str, report: MonitorReport, champion: ModelVersion | None) -> bool:
    """POST the report's alerts as JSON; True on a 2xx answer. Never raises on network errors."""
    payload = {
        "source": "leadscore", "report_id": report.id, "status": report.status,
        "as_of": report.as_of.isoformat(), "model_version": champion.version if champion else None,
        "alerts": report.alerts,
    }
    try:
        response = requests.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        log.warning("monitor webhook %s failed: %s", url, exc.__class__.__name__)
        return False
    if not 200 <= response.status_code < 300:
        log.warning("monitor webhook %s answered HTTP %s", url, response.status_code)
        return False
    return True


NO_DATA_CLOCK = "no synced data (machine clock)"  # metrics["clock"]["source"] of a run on an empty store


def _before_any_data(report: MonitorReport) -> bool:
    """A run on a store with no synced data: measured on the machine's clock, usually later than
    every CRM time synced after it."""
    return bool(((report.metrics or {}).get("clock") or {}).get("source") == NO_DATA_CLOCK)


def latest_report(session: Session, *, as_of: datetime | None = None) -> MonitorReport | None:
    """The most recent monitor report (by ``as_of``), optionally no later than ``as_of``. A run
    made before any data was synced (on the machine's clock) is the latest only while no run
    measured data: report, status and the console showed a first run's "no champion model" for
    months of weekly runs, its machine-clock date being later than the CRM's."""
    first: MonitorReport | None = None
    for report in _ordered(session, as_of):  # newest first, read until one measured data
        if not _before_any_data(report):
            return report
        first = first or report
    return first


def _ordered(session: Session, as_of: datetime | None) -> Iterator[MonitorReport]:
    stmt = select(MonitorReport)
    if as_of is not None:
        stmt = stmt.where(MonitorReport.as_of <= as_of)
    yield from session.scalars(stmt.order_by(MonitorReport.as_of.desc(), MonitorReport.id.desc()))


def reports(session: Session, *, as_of: datetime | None = None, limit: int = 365) -> list[MonitorReport]:
    """Monitor reports in time order (the last ``limit``), one per data clock and champion: of
    reports a store kept from runs repeated at the same data clock (before a rerun replaced its
    report), the latest. Runs made before any data was synced are left out once a run measured
    data (:func:`latest_report`)."""
    found = list(_ordered(session, as_of))
    if any(not _before_any_data(r) for r in found):
        found = [r for r in found if not _before_any_data(r)]
    rows: list[MonitorReport] = []
    seen: set[tuple[datetime, int | None]] = set()
    for report in found:
        key = (as_utc(report.as_of), report.model_version_id)
        if key in seen:
            continue
        seen.add(key)
        rows.append(report)
        if len(rows) >= limit:
            break
    return rows[::-1]
