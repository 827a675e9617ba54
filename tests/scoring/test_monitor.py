"""The monitor: PSI arithmetic, a monitor run on a trained store, freshness, alerts, webhook."""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from config.app_config import MonitoringConfig, TrainingConfig
from scoring.monitor import (
    BROAD_SHIFT_FEATURES,
    REFERENCE_KEY,
    auc_standard_error,
    categorical_distribution,
    drift_alerts,
    numeric_distribution,
    psi,
    run_monitor,
    top_tier_alert,
)
from scoring.monitoring.accuracy import calibration_alert, reference_gap_note
from scoring.monitoring.elapsed import as_live
from scoring.monitoring.reference_cohort import ensure_reference
from scoring.monitoring.tier_conversion import early_top_tier
from scoring.registry import champion
from scoring.score_writes import render_queued
from scoring.service import score_leads, train_from_store
from scoring.tiers import Policy, current_scores
from store.db import make_engine
from store.models import Activity, Base, Connection, Lead, LeadScore, ModelVersion, MonitorReport, Outbox, SyncRun
from tests.conftest import rolled_back_session
from tests.factories import BASE_TIME, make_connection, make_lead, synthetic_population

TRAIN_DAY = 300
TRAINING = TrainingConfig(horizon_days=60, min_per_class=30)


def as_of_day(n: float) -> datetime:
    return BASE_TIME + timedelta(days=n)


def build_trained_store(path: Path) -> Engine:
    """A SQLite store with a synthetic funnel, a champion trained as of day 300 and current
    scores written then (scored_at set to the CRM clock)."""
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    with Session(bind=engine, expire_on_commit=False) as session:
        synthetic_population(session, leads=3000, seed=5, days=360)
        now = as_of_day(TRAIN_DAY)
        train_from_store(session, as_of=now, config=TRAINING, families=("catboost",), catboost_iterations=80)
        score_leads(session, as_of=now, all=True)
        session.execute(LeadScore.__table__.update().values(scored_at=now))
        session.commit()
    return engine


def trained_store_copy(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A fresh copy of the trained store (built once per test session: training is the slow part)."""
    template = tmp_path_factory.getbasetemp() / "trained-template.db"
    if not template.exists():
        build_trained_store(template).dispose()
    copy = tmp_path_factory.mktemp(name) / "store.db"
    shutil.copy(template, copy)
    return copy


@pytest.fixture(scope="module")
def trained_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{trained_store_copy(tmp_path_factory, 'monitor')}")
    yield engine
    engine.dispose()


@pytest.fixture
def session(trained_engine: Engine) -> Iterator[Session]:
    """A session on the trained store whose changes are rolled back after the test."""
    with rolled_back_session(trained_engine) as s:
        yield s


# ------------------------------------------------------------------------------------ arithmetic


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 5000)
    dist = numeric_distribution(reference)
    same = psi(dist.shares, dist.counts(rng.normal(0, 1, 5000)))
    shifted = psi(dist.shares, dist.counts(rng.normal(1.0, 1, 5000)))
    assert same < 0.01
    assert shifted > 0.25


def test_psi_counts_missing_and_unseen_values_in_their_own_bins() -> None:
    dist = categorical_distribution(["a"] * 80 + ["b"] * 20)
    counts = dist.counts(["a", "z", None, "__missing__"])
    # categories a, b, then other, then missing
    assert counts.tolist() == [1.0, 0.0, 1.0, 2.0]
    numeric = numeric_distribution([0] * 90 + [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert numeric.edges[0] == 0.0  # a mostly-zero count keeps a bin for zero
    assert numeric.counts([0, np.nan, 100]).tolist()[-1] == 1.0


def test_auc_standard_error_shrinks_with_more_data() -> None:
    assert auc_standard_error(0.8, 200, 2000) < auc_standard_error(0.8, 20, 200)
    assert 0.0 < auc_standard_error(0.8, 50, 500) < 0.05


def _levels(alerts: list[Any]) -> dict[str, str]:
    return {a.message.split(":")[0].split(" drifted")[0].split(" shifting")[0]: a.level for a in alerts}


def test_a_feature_drift_the_scores_do_not_feel_only_warns() -> None:
    config = MonitoringConfig()
    alerts = drift_alerts(0.05, {"industry": 0.6, "employee_band": 0.12, "engagement_30d": 0.02}, config)
    assert _levels(alerts) == {"feature industry": "warn", "feature employee_band": "warn"}
    assert "score distribution is stable" in alerts[0].message


def test_a_feature_drift_alerts_when_the_scores_moved_too() -> None:
    config = MonitoringConfig()
    alerts = drift_alerts(0.15, {"industry": 0.6, "employee_band": 0.12}, config)
    assert _levels(alerts) == {"score distribution": "warn", "feature industry": "alert",
                               "feature employee_band": "warn"}
    assert _levels(drift_alerts(0.3, {}, config)) == {"score distribution": "alert"}


def test_a_broad_shift_of_the_top_features_alerts_with_stable_scores() -> None:
    """A new lead mix: enough top features above psi_alert at once alert even if the stale model's
    scores hardly moved; one fewer stays a warning."""
    config = MonitoringConfig()
    names = [f"f{i}" for i in range(BROAD_SHIFT_FEATURES)]
    broad = drift_alerts(0.05, {**dict.fromkeys(names, 0.4), "quiet": 0.01}, config)
    assert _levels(broad) == dict.fromkeys((f"feature {n}" for n in names), "alert")
    narrow = drift_alerts(0.05, {**dict.fromkeys(names[:-1], 0.4), names[-1]: 0.2}, config)
    assert set(_levels(narrow).values()) == {"warn"}
    # Thresholds come from the configuration, and non-finite values (an empty bin set) are skipped.
    strict = MonitoringConfig(psi_warn=0.01, psi_alert=0.03)
    assert _levels(drift_alerts(0.02, {"f": 0.05, "g": float("nan")}, strict)) == {
        "score distribution": "warn", "feature f": "alert"}


def test_a_hundred_leads_from_an_unchanged_mix_do_not_read_as_a_shift() -> None:
    """Revops saw "score distribution shifting" week after week on small cohorts drawn from the same
    leads: at 100 leads and 10 bins, PSI passes 0.1 by chance alone about half the time. The line
    each value must pass is raised to what sampling gives once in a hundred times."""
    from scoring.monitoring.distributions import numeric_distribution, psi, psi_noise

    rng = np.random.default_rng(7)
    reference = numeric_distribution(rng.beta(2, 5, 2000))
    draws = [psi(reference.shares, reference.counts(rng.beta(2, 5, 100))) for _ in range(300)]
    noise = psi_noise(reference.shares, 100, 2000)
    assert 0.2 < noise < 0.26  # chi-square(9) at 99 % x (1/100 + 1/2000)
    by_chance = sum(d > MonitoringConfig().psi_warn for d in draws) / len(draws)
    assert by_chance > 0.25  # what the plain 0.1 line called a shift
    assert sum(d > noise for d in draws) / len(draws) < 0.03
    # A real shift of the same size of cohort is still seen.
    shifted = [psi(reference.shares, reference.counts(rng.beta(4, 4, 100))) for _ in range(50)]
    assert min(shifted) > noise
    # On many leads the noise is small and the configured lines decide.
    assert psi_noise(reference.shares, 20_000, 2000) < MonitoringConfig().psi_warn / 2

    config = MonitoringConfig()
    quiet = drift_alerts(0.15, {"industry": 0.2}, config, {"score": noise, "industry": noise})
    assert quiet == []
    loud = drift_alerts(0.15, {"industry": 0.2}, config, {"score": 0.02, "industry": 0.02})
    assert _levels(loud) == {"score distribution": "warn", "feature industry": "warn"}
    raised = drift_alerts(0.2, {}, config, {"score": 0.18})
    assert _levels(raised) == {"score distribution": "warn"} and raised[0].message == (
        "score distribution shifting: PSI 0.200 > 0.180 (the 99% line sampling alone reaches on this many leads, "
        "above the warning line 0.1: barely past chance)")
    # Digits enough to tell the value from its line (a trial read "PSI 0.124 > 0.124").
    (close,) = drift_alerts(0.12446, {}, config, {"score": 0.12359})
    assert close.message.startswith("score distribution shifting: PSI 0.1245 > 0.1236 (the 99% line")
    (clear,) = drift_alerts(0.2, {}, config)
    assert clear.message == "score distribution shifting: PSI 0.200 > 0.100"
    # The alert line stays as configured (an alert's retraining is judged again on held-out leads),
    # and an alert sampling alone could give says so.
    (within,) = drift_alerts(0.3, {}, config, {"score": 0.4})
    assert within.level == "alert" and "PSI 0.300 is within its 99% noise line 0.400" in within.message
    # A trial's monitor: the score at 0.170 (its line 0.233) had "moved", so country at 0.269 (its own
    # line 0.31) raised an alert without a word, while the report's note called the 0.170 chance.
    trial = drift_alerts(0.170, {"country": 0.269}, config, {"score": 0.233, "country": 0.31})
    assert _levels(trial) == {"feature country": "alert"}
    assert ("PSI 0.269 is within its 99% noise line 0.310 and the scores moved only within theirs "
            "(PSI 0.170, line 0.233)") in trial[0].message
    # Beyond the noise: the alert as it was, nothing added.
    (beyond,) = drift_alerts(0.3, {"country": 0.5}, config, {"score": 0.05, "country": 0.05})[1:]
    assert beyond.message == "feature country drifted: PSI 0.500 > 0.25"


# ----------------------------------------------------------------------------------- monitor run


def test_monitor_run_writes_a_report_and_stores_the_reference(session: Session) -> None:
    now = as_of_day(TRAIN_DAY)
    report = run_monitor(session, as_of=now, config=MonitoringConfig(), horizon_days=TRAINING.horizon_days)
    stored = session.get(MonitorReport, report.id)
    assert stored is not None and stored.status in ("ok", "warn", "alert")
    drift = report.metrics["drift"]
    assert drift["rows"] >= 100 and 0 <= drift["score_psi"] < 0.25, drift
    assert set(drift["feature_psi"]) == set(report.metrics["reference"]["top_features"])
    mv = champion(session)
    assert mv is not None and REFERENCE_KEY in mv.params
    ref = mv.params[REFERENCE_KEY]
    assert abs(sum(ref["score"]["shares"]) - 1.0) < 1e-9
    assert ref["baseline_auc"] is not None and ref["baseline_auc"] > 0.6
    # No sync run was ever recorded for the connection: a warning, not silence.
    assert any(a["kind"] == "freshness" and a["level"] == "warn" for a in report.alerts)


def test_a_population_shift_raises_a_psi_alert(session: Session, caplog: pytest.LogCaptureFixture) -> None:
    now = as_of_day(TRAIN_DAY + 12)
    conn_id = session.scalar(select(Lead.connection_id).limit(1))
    from store.models import Connection

    conn = session.get(Connection, conn_id)
    assert conn is not None
    # Two weeks of leads unlike anything in training: students on free-mail from one country.
    for i in range(160):
        make_lead(session, conn, crm_created_at=now - timedelta(days=19, hours=-2 * i), title="Student",
                  email=f"kid{i}@gmail.com", company=None, country="Brazil", employees=3, industry="Education")
    caplog.set_level(logging.WARNING, logger="scoring.monitor")
    report = run_monitor(session, as_of=now, config=MonitoringConfig(), horizon_days=TRAINING.horizon_days)
    assert report.status == "alert"
    kinds = {a["kind"] for a in report.alerts if a["level"] == "alert"}
    assert "psi_score" in kinds or "psi_feature" in kinds, report.alerts
    assert any("drifted" in r.getMessage() for r in caplog.records)


def test_freshness_and_outbox_failures_are_reported(session: Session) -> None:
    now = as_of_day(TRAIN_DAY)
    lead = session.scalars(select(Lead).limit(1)).one()
    session.add(SyncRun(connection_id=lead.connection_id, stream="leads", status="succeeded",
                        started_at=now - timedelta(hours=30), finished_at=now - timedelta(hours=30)))
    session.add(Outbox(connection_id=lead.connection_id, lead_id=lead.id, crm_id=lead.crm_id, payload={},
                       payload_hash="x", status="failed", attempts=5, last_error="HTTP 400"))
    session.flush()
    report = run_monitor(session, as_of=now, config=MonitoringConfig(freshness_hours=6))
    fresh = [a for a in report.alerts if a["kind"] == "freshness"]
    assert fresh and fresh[0]["level"] == "alert" and fresh[0]["value"] == pytest.approx(30.0)
    from scoring.monitoring.freshness import FRESHNESS_ACTION

    assert fresh[0]["action"] == FRESHNESS_ACTION  # no later sync: the failing-sync advice
    assert report.metrics["outbox"]["failed"] == 1
    assert report.status == "alert"
    # A recent success clears the freshness alert.
    session.add(SyncRun(connection_id=lead.connection_id, stream="leads", status="succeeded",
                        started_at=now - timedelta(hours=1), finished_at=now - timedelta(hours=1)))
    session.flush()
    again = run_monitor(session, as_of=now, config=MonitoringConfig(freshness_hours=6))
    assert not [a for a in again.alerts if a["kind"] == "freshness"]
    # A configured connection that never synced is not in the store yet: it warns all the same
    # (it read "no connection configured" on an install with two in its YAML).
    stored = session.scalar(select(Connection.name).where(Connection.id == lead.connection_id))
    configured = run_monitor(session, as_of=now, config=MonitoringConfig(freshness_hours=6),
                             connections=[stored, "hubspot-eu"])
    assert [a["message"] for a in configured.alerts if a["kind"] == "freshness"] == [
        "connection hubspot-eu has never synced successfully"]
    assert configured.metrics["freshness"]["hubspot-eu"]["last_success"] is None


def test_a_look_back_at_a_stale_sync_that_a_later_sync_caught_up_says_nothing_to_fix_now(session: Session) -> None:
    """`monitor --as-of` at a day the sync was 30 h old alerted, true then, but its "what to do" sent
    revops after a failing sync that a later sync had long caught up."""
    from scoring.monitoring.freshness import FRESHNESS_ACTION

    now = as_of_day(TRAIN_DAY)
    lead = session.scalars(select(Lead).limit(1)).one()
    for hours in (30, -48):  # 30 h before the look-back, and 48 h after it
        at = now - timedelta(hours=hours)
        session.add(SyncRun(connection_id=lead.connection_id, stream="leads", status="succeeded", started_at=at,
                            finished_at=at, server_time=at))
    session.flush()
    past = run_monitor(session, as_of=now, config=MonitoringConfig(freshness_hours=6))
    fresh = [a for a in past.alerts if a["kind"] == "freshness"]
    assert fresh and fresh[0]["value"] == pytest.approx(30.0)  # the finding stays: it was true then
    assert fresh[0]["action"] != FRESHNESS_ACTION
    assert fresh[0]["action"].startswith("a look-back: ") and "synced successfully later (last " in fresh[0]["action"]


def test_a_past_as_of_before_the_first_sync_is_not_never_synced(session: Session) -> None:
    """`monitor --as-of` a day before the first sync (on the CRM's clock) warned "connection ...
    has never synced successfully" with failure advice: nothing had failed. Freshness is not
    measured then, and says so instead of "ok"."""
    from scoring.monitoring.describe import describe_by_measure

    now = as_of_day(TRAIN_DAY)
    lead = session.scalars(select(Lead).limit(1)).one()
    session.add(SyncRun(connection_id=lead.connection_id, stream="leads", status="succeeded", started_at=now,
                        finished_at=now, server_time=now))
    session.flush()
    before = run_monitor(session, as_of=now - timedelta(days=2), config=MonitoringConfig())
    assert not [a for a in before.alerts if a["kind"] == "freshness"], before.alerts
    assert before.metrics["measures"]["freshness"]["status"] == "not enough data"
    assert any("not measured: its first successful sync" in n for n in before.metrics["notes"])
    line = describe_by_measure(before.metrics)["freshness"][0]
    assert f"not measured (its first successful sync ({now:%Y-%m-%d %H:%M} CRM clock) is after the as-of)" in line
    # Printed once: the measure line gives the date, so the note is not printed again.
    from scoring.monitoring.describe import describe_report

    assert not [x for x in describe_report(before.metrics, []) if x.startswith("note: freshness of")]
    # A connection that never synced at all still warns.
    other = make_connection(session, "second")
    session.flush()
    again = run_monitor(session, as_of=now - timedelta(days=2), config=MonitoringConfig())
    assert [a["message"] for a in again.alerts if a["kind"] == "freshness"] == [
        f"connection {other.name} has never synced successfully"]


# --------------------------------------------------------------------------------------- webhook


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", "0"))
        _Receiver.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def test_alerts_are_posted_to_the_webhook(session: Session, receiver: str) -> None:
    report = run_monitor(session, as_of=as_of_day(TRAIN_DAY), config=MonitoringConfig(webhook_url=receiver))
    assert report.alerts
    assert len(_Receiver.received) == 1
    body = _Receiver.received[0]
    assert body["status"] == report.status and body["report_id"] == report.id
    assert [a["kind"] for a in body["alerts"]] == [a["kind"] for a in report.alerts]


def test_a_dead_webhook_is_logged_not_raised(session: Session, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    caplog.set_level(logging.WARNING, logger="scoring.monitor")
    report = run_monitor(session, as_of=as_of_day(TRAIN_DAY),
                         config=MonitoringConfig(webhook_url=f"http://127.0.0.1:{port}/hook"))
    assert report.id is not None
    assert any("webhook" in r.getMessage() for r in caplog.records)


def test_monitor_without_a_model_on_both_databases(any_session: Session) -> None:
    from tests.factories import make_connection

    conn = make_connection(any_session)
    now = as_of_day(0)
    any_session.add(SyncRun(connection_id=conn.id, stream="leads", status="succeeded",
                            started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=2)))
    any_session.add(SyncRun(connection_id=conn.id, stream="leads", status="failed",
                            started_at=now - timedelta(hours=1), finished_at=now - timedelta(hours=1)))
    any_session.flush()
    report = run_monitor(any_session, as_of=now, config=MonitoringConfig(freshness_hours=6))
    assert report.status == "warn"
    assert [a["kind"] for a in report.alerts] == ["no_model"]
    assert report.metrics["freshness"][conn.name]["age_hours"] == pytest.approx(2.0)
    later = run_monitor(any_session, as_of=now + timedelta(hours=10), config=MonitoringConfig(freshness_hours=6))
    assert later.status == "alert" and "freshness" in {a["kind"] for a in later.alerts}


# ------------------------------------------------------------------- honest statuses, top tier


def test_top_tier_conversion_below_its_norm_alerts_unless_noise_or_too_few() -> None:
    norms = {"A": {"leads": 400, "conversion_rate": 0.50}, "B": {"leads": 800, "conversion_rate": 0.2}}
    # Halved on 200 leads: far below 0.7 x 50 % and beyond noise.
    status, alert, detail = top_tier_alert({"A": {"leads": 200, "converted": 50}}, norms, share=0.7)
    assert status == "alert" and alert is not None and alert.kind == "top_tier_conversion"
    assert "25.0% of 200 elapsed leads" in alert.message and "50.0%" in alert.message and alert.action
    assert detail["floor"] == pytest.approx(0.35)
    # Below the floor on 22 leads (7 converted, 31.8 %) could be chance: a warning that says so.
    status, alert, _ = top_tier_alert({"A": {"leads": 22, "converted": 7}}, norms, share=0.7)
    assert status == "warn" and alert is not None and "within sampling noise" in alert.message
    # Above the floor: ok; too few leads: not enough data, with the counts and what is needed.
    assert top_tier_alert({"A": {"leads": 200, "converted": 80}}, norms, share=0.7)[0] == "ok"
    status, alert, detail = top_tier_alert({"A": {"leads": 7, "converted": 0}}, norms, share=0.7)
    assert status == "not enough data" and alert is None
    assert detail["reason"] == "7 tier-A leads with a known outcome; at least 20 needed"


def test_a_monitor_that_measured_nothing_never_says_ok(session: Session) -> None:
    # A CRM time long after the last lead arrived: no lead in the drift week, none elapsed.
    later = as_of_day(900)
    conn_id = session.scalar(select(Lead.connection_id).limit(1))
    session.add(SyncRun(connection_id=conn_id, stream="leads", status="succeeded", started_at=later,
                        finished_at=later, server_time=later))
    session.flush()
    report = run_monitor(session, as_of=later, config=MonitoringConfig(), horizon_days=TRAINING.horizon_days)
    assert report.alerts == []
    assert report.status == "not enough data"
    measures = report.metrics["measures"]
    assert measures["drift"]["status"] == "not enough data" and measures["drift"]["leads"] == 0
    assert "at least 100 needed" in measures["drift"]["reason"]
    assert measures["tier_conversion"]["status"] == "not enough data"
    assert "no lead was created" in measures["tier_conversion"]["reason"]


def test_the_default_clock_is_the_newest_synced_modification(session: Session) -> None:
    newest = max(session.scalar(select(func.max(Lead.crm_modified_at))),
                 session.scalar(select(func.max(Activity.crm_modified_at))))
    report = run_monitor(session, config=MonitoringConfig(), horizon_days=TRAINING.horizon_days)
    assert report.metrics["clock"]["source"] == "newest synced modification"
    assert report.as_of.replace(tzinfo=None) == newest.replace(tzinfo=None)
    # Elapsed leads the champion never learnt from are scored as they were at 7 days old.
    tc = report.metrics["tier_conversion"]
    assert tc["leads"] > 0 and tc["reconstructed"] > 0, {k: v for k, v in tc.items() if k != "by_tier"}
    assert sum(r["leads"] for r in tc["by_tier"].values()) == tc["leads"]



def test_a_run_before_the_first_sync_is_not_the_latest_report_once_data_has_arrived(session: Session) -> None:
    """A first `leadscore monitor` on an empty store measures on the machine's clock, later than
    every CRM time synced after it: report, status and the console showed that run ("no champion
    model") for months of weekly runs."""
    from scoring.monitor import latest_report, reports
    from scoring.monitoring.clock import data_clock
    from scoring.monitoring.run import NO_DATA_CLOCK

    synced_until = data_clock(session)
    assert synced_until is not None
    # The machine's clock at that first run: ahead of the CRM times synced since (a demo, an import).
    machine_then = synced_until + timedelta(days=60)
    before_any_data = MonitorReport(model_version_id=None, as_of=machine_then, status="warn",
                                    metrics={"clock": {"source": NO_DATA_CLOCK}},
                                    alerts=[{"level": "warn", "message": "no champion model"}])
    session.add(before_any_data)
    session.flush()
    measured = run_monitor(session, config=MonitoringConfig(), horizon_days=TRAINING.horizon_days)
    latest = latest_report(session)
    assert latest is not None and latest.id == measured.id != before_any_data.id
    assert reports(session)[-1].id == measured.id and before_any_data.id not in [r.id for r in reports(session)]


# ---------------------------------------------------------------------------------------- shadow


def test_a_challenger_in_shadow_for_a_month_is_compared_live_and_never_written(session: Session) -> None:
    from scoring import registry
    from scoring.monitor import shadow_comparison
    from store.models import ShadowScore

    champ = champion(session)
    assert champ is not None
    challenger = train_from_store(session, as_of=as_of_day(TRAIN_DAY), config=TRAINING, families=("catboost",),
                                  catboost_iterations=30, promote_if_first=False).model_version
    registry.shadow(session, challenger.version)
    # A simulated month: each day the leads created that day are scored at that day's CRM clock
    # (the rows' scored_at is the machine's time: the monitor reads their as_of, the CRM's).
    scored = 0
    for d in range(TRAIN_DAY + 1, TRAIN_DAY + 31):
        ids = list(session.scalars(select(Lead.id).where(Lead.crm_created_at > as_of_day(d - 1),
                                                         Lead.crm_created_at <= as_of_day(d))))
        if not ids:
            continue
        score_leads(session, as_of=as_of_day(d), all=True, lead_ids=ids)
        scored += len(ids)
    shadow_rows = session.scalars(select(ShadowScore).where(ShadowScore.model_version_id == challenger.id)).all()
    assert scored > 100 and len(shadow_rows) == scored
    # Nothing the shadow model computed reaches the CRM: every score write carries the champion.
    writes = list(session.scalars(select(Outbox)))
    render_queued(session, writes)  # as the drain will send them
    models = {(row.payload or {}).get("model") for row in writes}
    assert champ.version in models and challenger.version not in models
    # After the horizon, the monitor compares both on the same leads with known outcomes.
    later = as_of_day(TRAIN_DAY + 31 + TRAINING.horizon_days + 7)
    report = run_monitor(session, as_of=later, config=MonitoringConfig(), horizon_days=TRAINING.horizon_days)
    (live,) = report.metrics["shadow"]
    assert live["version"] == challenger.version and live["status"] == "measured", live
    assert live["leads"] >= 100 and live["converted"] >= 20
    assert 0.5 < live["champion_auc"] < 1 and 0.5 < live["shadow_auc"] < 1
    assert live["improvement"] == pytest.approx(live["shadow_auc"] - live["champion_auc"])
    # Before any outcome is known the comparison says so instead of guessing.
    early = shadow_comparison(session, challenger, as_of=as_of_day(TRAIN_DAY + 31), horizon_days=TRAINING.horizon_days)
    assert early["status"] == "not enough data" and early["leads"] == 0 and early["awaiting_outcome"] > 0


# ------------------------------------------------------------------ defects found trying it out


def _served_random_scores(session: Session, mv_id: int, start: datetime, end: datetime) -> int:
    """A bad model's served scores (random probabilities, tier from their rank) at 6 days old for the
    leads created in [start, end)."""
    # In id order: the leads' CRM ids come from a counter shared by every test in the process, and
    # an order they decide made which lead drew which random score depend on the tests run before
    # (a CI run drew a live AUC of 0.59 and only a warning).
    rows = session.execute(select(Lead.id, Lead.crm_created_at).where(Lead.crm_created_at >= start,
                                                                      Lead.crm_created_at < end)
                           .order_by(Lead.id)).all()
    rng = np.random.default_rng(3)
    proba = rng.uniform(0.01, 0.6, len(rows))
    cut = np.quantile(proba, [0.95, 0.8, 0.5])
    for (lead_id, created), p in zip(rows, proba, strict=True):
        tier = "A" if p >= cut[0] else "B" if p >= cut[1] else "C" if p >= cut[2] else "D"
        session.add(LeadScore(lead_id=lead_id, model_version_id=mv_id, probability=float(p),
                              score=int(p * 100), tier=tier, is_current=False,
                              scored_at=created + timedelta(days=6)))
    session.flush()
    return len(rows)


def test_a_brand_new_champion_is_not_blamed_for_its_predecessors_scores(session: Session) -> None:
    now = as_of_day(TRAIN_DAY)
    old = champion(session)
    assert old is not None
    horizon = TRAINING.horizon_days
    end = now - timedelta(days=horizon + 7)
    assert _served_random_scores(session, old.id, end - timedelta(days=30), end) > 100
    # The champion served those scores: its elapsed leads rank no better than chance, an alert.
    report = run_monitor(session, as_of=now, config=MonitoringConfig(), horizon_days=horizon)
    assert "auc_drop" in {a["kind"] for a in report.alerts if a["level"] == "alert"}, report.alerts
    # A new champion goes live: nothing it scored has elapsed yet. The old scores are shown, not
    # judged: not enough data, not an alert about a model that never scored those leads.
    new = ModelVersion(version=f"{old.version}-next", status="champion", family=old.family, artifact=old.artifact,
                       metrics=old.metrics, features=old.features, params=old.params, train_start=old.train_start,
                       train_end=old.train_end, promoted_at=now)
    old.status = "retired"
    session.add(new)
    session.flush()
    after = run_monitor(session, as_of=now, config=MonitoringConfig(), horizon_days=horizon)
    judged = {"auc_drop", "calibration", "top_tier_conversion"}
    assert not [a for a in after.alerts if a["kind"] in judged], after.alerts
    perf, tc = after.metrics["performance"], after.metrics["tier_conversion"]
    assert perf["status"] == tc["status"] == "not enough data"
    assert f"scored by {old.version}, no longer in production" in perf["reason"]
    assert perf["auc"] is not None and perf["leads"] > 100  # measured and shown
    assert after.metrics["measures"]["drift"]["status"] != "not enough data"


def test_expected_crm_refusals_are_counted_apart_and_do_not_alert(session: Session) -> None:
    now = as_of_day(TRAIN_DAY)
    leads = session.scalars(select(Lead).limit(4)).all()
    errors = ["FIELD_CUSTOM_VALIDATION_EXCEPTION: Lead_Score__c: scores need an approved owner",
              "FIELD_CUSTOM_VALIDATION_EXCEPTION: Lead_Score__c: scores need an approved owner",
              "CANNOT_UPDATE_CONVERTED_LEAD: cannot reference converted lead"]
    for lead, error in zip(leads, errors, strict=False):
        session.add(Outbox(connection_id=lead.connection_id, lead_id=lead.id, crm_id=lead.crm_id, payload={},
                           payload_hash="x", status="failed", attempts=1, last_error=error))
    session.flush()
    report = run_monitor(session, as_of=now, config=MonitoringConfig())
    assert not [a for a in report.alerts if a["kind"] == "writeback"], report.alerts
    outbox = report.metrics["outbox"]
    assert outbox["failed"] == 0
    assert outbox["refused_expected"] == {"validation_rule": 2, "converted_lead": 1}
    assert any("3 CRM writes refused by the CRM's own rules, as expected (validation_rule 2, converted_lead 1)"
               in n for n in report.metrics["notes"])
    # An unexpected failure still alerts, with its code.
    lead = leads[3]
    session.add(Outbox(connection_id=lead.connection_id, lead_id=lead.id, crm_id=lead.crm_id, payload={},
                       payload_hash="x", status="failed", attempts=5,
                       last_error="gave up after 5 attempts: UNABLE_TO_LOCK_ROW: row locked"))
    session.flush()
    again = run_monitor(session, as_of=now, config=MonitoringConfig())
    (alert,) = [a for a in again.alerts if a["kind"] == "writeback"]
    assert alert["level"] == "alert" and alert["message"] == "1 CRM writes failed for good (gave up after 5 attempts 1)"


def test_writes_still_retrying_are_aged_on_this_machines_clock_not_the_crms(session: Session) -> None:
    # The monitor judges the simulated CRM's clock (long before this machine's), while an outbox row
    # records when this machine queued it: its age is measured on this machine's clock.
    now = as_of_day(TRAIN_DAY)
    wall = datetime.now(UTC)
    leads = session.scalars(select(Lead).limit(3)).all()
    for lead, hours, attempts in zip(leads, [30, 2, 30], [3, 1, 0], strict=True):
        session.add(Outbox(connection_id=lead.connection_id, lead_id=lead.id, crm_id=lead.crm_id, payload={},
                           payload_hash="x", status="pending", attempts=attempts, last_error="HTTP 503",
                           created_at=wall - timedelta(hours=hours), next_attempt_at=wall))
    session.flush()
    report = run_monitor(session, as_of=now, config=MonitoringConfig(freshness_hours=24))
    assert report.metrics["outbox"]["pending_retrying"] == 1  # queued 30 h ago and tried; not the new or untried
    (alert,) = [a for a in report.alerts if a["kind"] == "writeback"]
    assert alert["level"] == "warn" and alert["message"] == "1 CRM writes still retrying after 24 h"


def test_a_moved_rate_with_a_better_ece_than_the_reference_is_not_called_miscalibrated() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.25, 2000)
    y = (rng.uniform(size=2000) < p * 0.6).astype(int)  # 40 % fewer conversions than predicted
    config = MonitoringConfig()
    better = calibration_alert(y, p, ece=0.04, reference_ece=0.05, config=config)
    assert better is not None and better.level == "warn"
    assert "miscalibrated" not in better.message
    assert better.message.startswith("fewer leads converted than predicted: ")
    assert "the likelihood field reads high" in better.message and "the conversion rate shifted" in better.message
    more = calibration_alert((rng.uniform(size=2000) < p * 1.6).astype(int), p, ece=0.06, reference_ece=0.05,
                             config=config)
    assert more is not None and more.level == "warn"
    assert more.message.startswith("more leads converted than predicted: ")
    assert "reads low" in more.message and "grew, within the alert line" in more.message
    worse = calibration_alert(y, p, ece=0.12, reference_ece=0.05, config=config)
    assert worse is not None and worse.level == "alert" and worse.message.startswith("scores are miscalibrated")
    calibrated = (rng.uniform(size=2000) < p).astype(int)
    assert calibration_alert(calibrated, p, ece=0.03, reference_ece=0.05, config=config) is None


def test_a_rate_off_the_predictions_as_on_the_reference_leads_is_no_warning() -> None:
    """The demo's champion (trained on leads 14 days old) predicts leads seen at 7 days low: 6.0 %
    predicted, 11.1 % converted on its own reference leads. Live leads at 7 days showed the same
    (10.1 % vs 6.0 %) and the monitor warned "the conversion rate shifted as a whole", sending
    revops to a retrain that would change nothing. Off as on the reference is not a change."""
    rng = np.random.default_rng(2)
    config = MonitoringConfig()
    ref_p = rng.uniform(0.02, 0.12, 1400)
    ref_y = (rng.uniform(size=1400) < ref_p * 1.85).astype(int)  # the reference: converts 1.85x the prediction
    p = rng.uniform(0.02, 0.12, 750)
    same = (rng.uniform(size=750) < p * 1.7).astype(int)
    assert calibration_alert(same, p, ece=0.05, reference_ece=0.054, config=config) is not None  # without it
    assert calibration_alert(same, p, ece=0.05, reference_ece=0.054, config=config, reference=(ref_y, ref_p)) is None
    # A real shift against the reference still warns, and says what the reference showed.
    shifted = (rng.uniform(size=750) < p * 3.6).astype(int)
    alert = calibration_alert(shifted, p, ece=0.05, reference_ece=0.054, config=config, reference=(ref_y, ref_p))
    assert alert is not None and alert.level == "warn" and "(the reference leads: " in alert.message, alert
    fewer = (rng.uniform(size=750) < p * 0.6).astype(int)
    assert calibration_alert(fewer, p, ece=0.05, reference_ece=0.054, config=config, reference=(ref_y, ref_p))


def test_the_reference_gap_note_says_what_was_to_be_expected() -> None:
    """"12.1 % vs 2.1 % ..., as on the reference leads (8.0 % vs 4.0 %)" read as if the gaps were
    the same; the note now says the rate the reference makes expected (2.1 % x 8/4 = 4.2 %) and
    how few reference conversions the comparison rests on."""
    ref_y = np.array([1] * 8 + [0] * 92, dtype="float64")
    ref_p = np.full(100, 0.04)
    note = reference_gap_note(0.121, 0.021, 340, (ref_y, ref_p))
    assert note.startswith("more leads converted than predicted (12.1% of 340 elapsed leads vs 2.1% predicted)")
    assert "(8.0% vs 4.0%): about 4.2% was to be expected" in note
    assert "within the error of 8 reference conversions" in note and "reads low" in note
    fewer = reference_gap_note(0.01, 0.05, 340, (np.array([1.0] * 2 + [0.0] * 98), ref_p))
    assert fewer.startswith("fewer leads") and "about 2.5% was to be expected" in fewer and "reads high" in fewer


def test_the_early_top_tier_measure_alerts_when_tier_a_stops_converting(session: Session) -> None:
    now = as_of_day(TRAIN_DAY)
    horizon, window = TRAINING.horizon_days, 28
    mv = champion(session)
    assert mv is not None
    ref = ensure_reference(session, mv, as_of=now)
    assert ref is not None and len(ref.conversion_days) == len(ref.outcomes) > 0
    # Every lead is tier A under this policy, in the reference and live alike: the same population.
    policy = Policy(mode="score", thresholds={"A": 1.0, "B": 0.5, "C": 0.2})
    start, end = now - timedelta(days=window + 7 + horizon), now - timedelta(days=7)
    leads = session.execute(select(Lead.id, Lead.crm_created_at).where(Lead.crm_created_at >= start,
                                                                       Lead.crm_created_at < end)).all()
    for lead_id, created in leads:
        session.add(LeadScore(lead_id=lead_id, model_version_id=mv.id, probability=0.1, score=50, tier="A",
                              is_current=False, scored_at=created + timedelta(days=6)))
    session.flush()
    status, alert, detail = early_top_tier(session, ref, policy, as_of=now, horizon_days=horizon, share=0.7,
                                           window_days=window)
    # The same population converts at its reference's pace, within noise: judged, no alert.
    assert status in ("ok", "warn") and (alert is None or alert.level == "warn"), detail
    assert detail["expected"] >= 10 and 0.5 <= detail["ratio"] <= 1.5, detail
    # Nobody converted in the window after all: far below the pace, beyond noise.
    session.execute(Lead.__table__.update().where(Lead.converted_at > now - timedelta(days=window),
                                                  Lead.converted_at <= now).values(converted_at=None))
    status, alert, detail = early_top_tier(session, ref, policy, as_of=now, horizon_days=horizon, share=0.7,
                                           window_days=window)
    assert status == "alert" and alert is not None and alert.kind == "top_tier_conversion", detail
    assert detail["observed"] == 0 and f"converted 0 times in the last {window} days" in alert.message


def test_the_accuracy_line_names_the_check_that_warned() -> None:
    from scoring.monitoring.describe import describe_measures

    perf = {"status": "warn", "status_from": ["calibration"], "auc": 0.745, "leads": 750, "baseline_auc": 0.760,
            "ece": 0.050}
    (line,) = [x for x in describe_measures({"performance": perf}) if x.startswith("accuracy")]
    assert line == "accuracy: warn (calibration) — AUC 0.745 on 750 elapsed leads (baseline 0.760), ECE 0.050"
    perf.update(status="ok", status_from=[])
    (line,) = [x for x in describe_measures({"performance": perf}) if x.startswith("accuracy")]
    assert line.startswith("accuracy: ok — AUC 0.745")


def test_tier_norms_tier_the_reference_leads_as_live_scoring_does(session: Session) -> None:
    from scoring.champions import ensure_score_reference
    from scoring.metrics import conversion_by_tier
    from scoring.monitoring.tier_conversion import tier_norms
    from scoring.reference import rank
    from scoring.tiers import assign_tiers, tiers_for

    now = as_of_day(TRAIN_DAY)
    mv = champion(session)
    assert mv is not None
    ref = ensure_reference(session, mv, as_of=now)
    assert ref is not None and len(ref.outcomes) > 100
    p = np.asarray([o[0] for o in ref.outcomes], dtype="float64")
    y = np.asarray([o[1] for o in ref.outcomes], dtype="int64")
    policy = Policy(mode="score", thresholds={"A": 80, "B": 60, "C": 40})
    # A live lead's score is its rank among the champion's score reference leads.
    scores = rank(p, ensure_score_reference(session, mv)["probability"])
    live = conversion_by_tier(y, assign_tiers(scores, policy))
    assert tier_norms(session, ref, policy) == live
    # Ranked against each other, the reference's leads would fill every tier in fixed shares instead.
    assert conversion_by_tier(y, tiers_for(policy, p)) != live
    # Capacity shares are cut on the same scores (whole scores, as live capacity tiers are), where
    # live scoring cuts them: on the open leads' current scores (as the tier preview does). A trial
    # read tier A converting 58 % in the monitor (the top 10 % of the reference itself) and 29 % in
    # the preview of the same policy.
    capacity = Policy(mode="capacity", thresholds={"A": 10, "B": 20, "C": 30})
    current = current_scores(session)["score"].to_numpy(dtype="float64")
    assert len(current) > 0
    cut_live = conversion_by_tier(y, assign_tiers(scores, capacity, reference=current))
    assert tier_norms(session, ref, as_live(session, capacity)) == cut_live
    # (As it is, the policy's shares are cut within the reference: what the monitor used to judge.)
    assert tier_norms(session, ref, capacity) == conversion_by_tier(y, assign_tiers(scores, capacity)) != cut_live
    # A monitor run under an active capacity policy judges tiers by it.
    from scoring.tiers import set_policy

    set_policy(session, "capacity", {"A": 10, "B": 20, "C": 30}, created_by="test")
    report = run_monitor(session, as_of=now, config=MonitoringConfig(), horizon_days=TRAINING.horizon_days)
    shown = (report.metrics.get("tier_conversion") or {}).get("by_tier") or {}
    assert shown and all(row.get("norm") == (cut_live.get(t) or {}).get("conversion_rate")
                         for t, row in shown.items()), (shown, cut_live)


def test_a_rerun_at_the_same_data_clock_replaces_its_report_and_repeats_no_webhook(
    session: Session, receiver: str
) -> None:
    """Revops running the monitor again before the next sync: the history keeps one report per
    data clock (the alert history, PSI and AUC trends showed each run's alerts again), and the
    webhook is not paged again with the same alerts; changed alerts are posted."""
    from scoring.monitor import reports

    now = as_of_day(TRAIN_DAY)
    config = MonitoringConfig(webhook_url=receiver)
    first = run_monitor(session, as_of=now, config=config, horizon_days=TRAINING.horizon_days)
    first_id, first_alerts = first.id, list(first.alerts)
    assert first_alerts and len(_Receiver.received) == 1
    again = run_monitor(session, as_of=now, config=config, horizon_days=TRAINING.horizon_days)
    assert again.id == first_id and again.alerts == first_alerts
    assert again.metrics["remeasured"]["runs"] == 2
    stored = session.scalars(select(MonitorReport).where(MonitorReport.as_of == now)).all()
    assert [r.id for r in stored] == [first_id]
    assert len(_Receiver.received) == 1  # the same alerts: not posted again
    # Stricter drift lines change the alerts: the rerun posts them.
    changed = run_monitor(session, as_of=now, config=MonitoringConfig(webhook_url=receiver, psi_warn=0.0001,
                                                                      psi_alert=0.0002),
                          horizon_days=TRAINING.horizon_days)
    assert changed.id == first_id and changed.alerts != first_alerts
    assert len(_Receiver.received) == 2 and changed.metrics["remeasured"]["runs"] == 3
    # Another data clock is another report.
    later = run_monitor(session, as_of=now + timedelta(days=1), config=MonitoringConfig(),
                        horizon_days=TRAINING.horizon_days)
    assert later.id != first_id and "remeasured" not in later.metrics
    assert [r.id for r in reports(session)][-2:] == [first_id, later.id]


def test_the_history_shows_one_report_per_data_clock_of_stores_with_repeated_runs(session: Session) -> None:
    """Stores kept a report per run before reruns replaced them: the history (report, console,
    retraining's alert streak) reads the latest of each data clock and champion."""
    from scoring.monitor import reports

    mv = champion(session)
    assert mv is not None
    day = as_of_day(TRAIN_DAY + 2)
    older = MonitorReport(model_version_id=mv.id, as_of=day, status="warn", metrics={}, alerts=[])
    newer = MonitorReport(model_version_id=mv.id, as_of=day, status="ok", metrics={}, alerts=[])
    other_model = MonitorReport(model_version_id=None, as_of=day, status="warn", metrics={}, alerts=[])
    session.add_all([older, newer, other_model])
    session.flush()
    ids = [r.id for r in reports(session) if r.as_of == day or r.as_of.replace(tzinfo=UTC) == day]
    assert sorted(ids) == sorted([newer.id, other_model.id])


def test_the_drift_line_counts_features_above_each_line_with_the_lines() -> None:
    from scoring.monitoring.describe import describe_measures

    drift = {"status": "warn", "leads": 181, "cohort_start": "2026-06-18", "cohort_end": "2026-06-25",
             "score_psi": 0.092, "features_above_alert": 0, "features_above_warning": 1,
             "psi_warn": 0.1, "psi_alert": 0.25}
    (line,) = [x for x in describe_measures({"drift": drift}) if x.startswith("drift")]
    assert "0 features above the alert line (PSI 0.25), 1 above the warning line (0.1)" in line
    (noisy,) = [x for x in describe_measures({"drift": {**drift, "within_noise": 2}}) if x.startswith("drift")]
    assert noisy.endswith("1 above the warning line (0.1), 2 within the sampling noise)")


def test_the_accuracy_status_names_only_the_checks_at_its_level() -> None:
    """A trial read "accuracy: alert (auc_drop, calibration)" while the AUC's drop only warned
    ("within sampling noise"): the status names the checks that set it, at its level."""
    from scoring.monitoring.accuracy import _status
    from scoring.monitoring.status import ALERT, WARN, Alert

    perf: dict[str, Any] = {"auc_se": 0.03}
    _status(perf, [Alert(WARN, "auc_drop", "live AUC 0.640 is 0.085 below baseline 0.726, within sampling noise"),
                   Alert(ALERT, "calibration", "ECE 0.09")])
    assert (perf["status"], perf["status_from"]) == ("alert", ["calibration"])
    _status(perf, [Alert(WARN, "auc_drop", "..."), Alert(WARN, "calibration", "...")])
    assert (perf["status"], perf["status_from"]) == ("warn", ["auc_drop", "calibration"])


def test_tier_conversion_on_few_conversions_carries_the_tier_previews_caution() -> None:
    """A trial read "D 7.1% of 14 (norm 3.4% of 29)" beside "C 3.6% of 83" as D converting better
    than C, on one conversion: the line now carries the caution the tier preview gives."""
    from scoring.monitoring.describe import describe_measures

    by_tier = {"A": {"leads": 40, "converted": 22, "conversion_rate": 0.55},
               "C": {"leads": 83, "converted": 3, "conversion_rate": 3 / 83},
               "D": {"leads": 14, "converted": 1, "conversion_rate": 1 / 14}}
    tc = {"status": "ok", "leads": 137, "served": 137, "reconstructed": 0, "by_tier": by_tier, "top_tier": {}}
    lines = [x for x in describe_measures({"tier_conversion": tc}) if x.startswith("tier conversion")]
    assert lines[1] == ("tier conversion caution: the conversion of elapsed leads of tiers C (3 conversions) and "
                        "D (1 conversion) rests on fewer than 10 conversions each: too few to compare tiers by it")
    enough = {t: {**row, "converted": 10} for t, row in by_tier.items()}
    assert [x for x in describe_measures({"tier_conversion": {**tc, "by_tier": enough}})
            if x.startswith("tier conversion caution")] == []


def test_a_past_as_of_before_the_champion_was_trained_says_it_learned_from_those_leads(session: Session) -> None:
    """`monitor --as-of` a month before training judged the champion on leads it was trained on
    without a word; the report now says so (the accuracy it shows can read better than it was)."""
    from scoring.monitoring.clock import trained_at

    mv = champion(session)
    assert mv is not None
    trained = trained_at(mv)
    past = run_monitor(session, as_of=trained - timedelta(days=30), config=MonitoringConfig())
    said = [n for n in past.metrics["notes"] if n.startswith("the champion was trained as of")]
    assert said == [f"the champion was trained as of {trained:%Y-%m-%d}, after this as-of: leads it learned from "
                    "are among those measured here, so its accuracy can read better than it was then"]
    later = run_monitor(session, as_of=trained + timedelta(days=2), config=MonitoringConfig())
    assert not [n for n in later.metrics["notes"] if n.startswith("the champion was trained as of")]


def test_the_report_in_words_gives_each_note_once_and_what_to_do_under_its_alert() -> None:
    from scoring.monitoring.describe import describe_report

    shadow = {"version": "m2", "leads": 0, "status": "not enough data", "reason": "no elapsed lead yet"}
    metrics = {
        "performance": {"status": "not enough data", "leads": 0, "reason": "no matured scores"},
        "shadow": [shadow],
        "notes": ["live performance not measured: no matured scores", "no previous champion to compare with"],
    }
    from scoring.monitoring.shadow_compare import describe_shadow

    metrics["notes"].append(describe_shadow(shadow))
    alerts = [{"level": "warn", "message": "feature x shifting", "action": "look at x"},
              {"level": "alert", "message": "no sync", "action": None}]
    lines = describe_report(metrics, alerts)
    assert lines.count(describe_shadow(shadow)) == 1  # a measure line, not again as a note
    assert "note: live performance not measured: no matured scores" not in lines  # the accuracy line says it
    assert "accuracy: not enough data (no matured scores)" in lines
    assert "note: no previous champion to compare with" in lines
    assert lines[-3:] == ["warn: feature x shifting", "  what to do: look at x", "alert: no sync"]


def test_every_drift_warning_says_what_to_do() -> None:
    from scoring.monitoring.drift import drift_alerts

    config = MonitoringConfig()
    # A feature shifting while the scores stay put (the demo's "feature country shifting"), a
    # feature drifted past the alert line with stable scores, and the scores themselves shifting.
    alerts = drift_alerts(0.05, {"country": 0.101, "industry": 0.3}, config)
    alerts += drift_alerts(0.15, {}, config)
    assert {a.level for a in alerts} == {"warn"} and len(alerts) == 3
    assert all(a.action for a in alerts), [a.to_dict() for a in alerts]
    assert [a.action for a in alerts][:2] == [alerts[0].action] * 2 and "nothing to change yet" in alerts[0].action
    assert "new source" in alerts[2].action and "nothing to change yet" not in alerts[2].action


def test_an_accuracy_not_judged_says_why_before_its_auc_and_norms_say_their_base() -> None:
    # A user trial read "AUC 0.964" first on one conversion, and "A 0.0% < B 40%" norms as
    # expectations: the reason leads, and each norm names the leads it was measured on.
    from scoring.monitoring.describe import describe_measures

    perf = {"status": "not enough data", "auc": 0.964, "leads": 35, "ece": 0.047,
            "reason": "1 conversion among 35 elapsed leads; at least 20 of each class needed to judge the AUC"}
    tc = {"status": "not enough data", "leads": 35, "served": 0, "reconstructed": 35,
          "top_tier": {"reason": "6 tier-A leads with a known outcome; at least 20 needed"},
          "by_tier": {"A": {"conversion_rate": 1 / 6, "leads": 6, "norm": 0.0, "norm_leads": 3},
                      "B": {"conversion_rate": 0.5, "leads": 2, "norm": 0.4, "norm_leads": 5}}}
    lines = describe_measures({"performance": perf, "tier_conversion": tc})
    (accuracy,) = [x for x in lines if x.startswith("accuracy")]
    assert accuracy == ("accuracy: not enough data (1 conversion among 35 elapsed leads; at least 20 of each class "
                        "needed to judge the AUC); not judged yet: AUC 0.964, ECE 0.047 on 35 elapsed leads")
    (tiers,) = [x for x in lines if x.startswith("tier conversion:")]
    assert tiers.endswith("A 16.7% of 6 (norm 0.0% of 3), B 50.0% of 2 (norm 40.0% of 5)"), tiers


def test_feature_importance_is_compared_with_the_champion_replaced_also_after_a_rollback(session: Session) -> None:
    # The comparison was computed on every run and shown nowhere; after a rollback it said "no
    # previous champion" although the version just rolled back had been one.
    from scoring import registry

    first = champion(session)
    assert first is not None
    second = train_from_store(session, as_of=as_of_day(TRAIN_DAY), config=TRAINING, families=("catboost",),
                              catboost_iterations=30, promote_if_first=False).model_version
    as_of = as_of_day(TRAIN_DAY + 30)

    def note_against(previous: str) -> str:
        report = run_monitor(session, as_of=as_of, config=MonitoringConfig(), horizon_days=TRAINING.horizon_days)
        change = report.metrics["importance_change"]
        assert change["previous_version"] == previous, change
        (note,) = [n for n in report.metrics["notes"] if n.startswith("feature importance against")]
        assert f"the previous champion {previous}: {change['shift']:.0%} of the weight moved" in note, note
        return note

    registry.promote(session, second.version, by="test")
    assert re.search(r"; most: [^;]+ \d+% → \d+%", note_against(first.version))
    registry.rollback(session, by="test")
    assert champion(session).version == first.version
    note_against(second.version)
