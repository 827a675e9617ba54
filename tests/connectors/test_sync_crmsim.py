"""End-to-end sync against crmsim through the real clients, on real PostgreSQL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from connectors.salesforce.client import make_salesforce
from connectors.sync import ProgressEvent, refresh_planner_statistics, sync_connection
from crmsim.app import CRMSim
from crmsim.model import Person
from store.models import Activity, Connection, Lead, LeadLifecycle, QuarantinedRecord, SyncCursor, SyncRun
from tests.connectors import expected
from tests.connectors.conftest import hubspot_config, salesforce_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _runs(engine: Engine, connection: str) -> list[SyncRun]:
    with Session(engine) as session:
        conn_id = session.execute(select(Connection.id).where(Connection.name == connection)).scalar_one()
        return list(session.execute(select(SyncRun).where(SyncRun.connection_id == conn_id)
                                    .order_by(SyncRun.id)).scalars())


def test_full_then_incremental_equals_crmsim(small_sim: CRMSim, committing_pg_engine: Engine) -> None:
    sf, sf_secrets = salesforce_config(small_sim, "e2e-sf")
    hs, hs_secrets = hubspot_config(small_sim, "e2e-hs")
    for conn, secrets, build in ((sf, sf_secrets, expected.salesforce), (hs, hs_secrets, expected.hubspot)):
        report = sync_connection(committing_pg_engine, conn, secrets)
        assert report.status == "succeeded", report.error
        assert report.records > 0
        expected.assert_database_matches(committing_pg_engine, conn.name, build(small_sim))
    summary = small_sim.advance(20)
    assert summary  # the world moved: new leads, activities, deletions, merges
    for conn, secrets, build in ((sf, sf_secrets, expected.salesforce), (hs, hs_secrets, expected.hubspot)):
        report = sync_connection(committing_pg_engine, conn, secrets)
        assert report.status == "succeeded", report.error
        expected.assert_database_matches(committing_pg_engine, conn.name, build(small_sim))
        runs = _runs(committing_pg_engine, conn.name)
        assert runs and all(r.status == "succeeded" for r in runs)
        assert all(r.server_time is not None and r.finished_at is not None for r in runs)
        with Session(committing_pg_engine) as session:
            cursors = session.execute(select(SyncCursor).join(Connection).where(
                Connection.name == conn.name)).scalars().all()
            # The cursor never passes the CRM's clock at sync start (its Date header, + < 1 s).
            assert cursors and all(c.cursor_ts is not None and c.cursor_ts <= small_sim.world.now for c in cursors)


def test_identical_result_with_injected_faults(small_sim: CRMSim, committing_pg_engine: Engine) -> None:
    small_sim.set_faults("rate_429=0.05,rate_503=0.05,rate_500=0.03,drop=0.05,expire_after=15", seed=5)
    sf, sf_secrets = salesforce_config(small_sim, "faults-sf", page_size=100)
    hs, hs_secrets = hubspot_config(small_sim, "faults-hs", page_size=40)
    for conn, secrets, build in ((sf, sf_secrets, expected.salesforce), (hs, hs_secrets, expected.hubspot)):
        report = sync_connection(committing_pg_engine, conn, secrets)
        assert report.status == "succeeded", report.error
        small_sim.advance(3)
        report = sync_connection(committing_pg_engine, conn, secrets)
        assert report.status == "succeeded", report.error
        expected.assert_database_matches(committing_pg_engine, conn.name, build(small_sim))
    assert sum(small_sim.salesforce.faults.injected.values()) > 2
    assert sum(small_sim.hubspot.faults.injected.values()) > 2
    assert small_sim.salesforce.sessions_expired >= 1  # the client logged in again by itself
    assert small_sim.call_counts()["hubspot"].get("POST oauth/token", 0) >= 1  # token refreshed once


def test_score_write_back_does_not_change_inputs(small_sim: CRMSim, committing_pg_engine: Engine) -> None:
    conn, secrets = salesforce_config(small_sim, "echo-sf")
    sync_connection(committing_pg_engine, conn, secrets, streams=["leads"])
    with Session(committing_pg_engine) as session:
        lead = session.execute(select(Lead).join(Connection).where(
            Connection.name == conn.name, Lead.lifecycle == LeadLifecycle.open)
            .order_by(Lead.crm_id).limit(1)).scalar_one()
        before = (lead.inputs_hash, lead.inputs_changed_at, lead.crm_modified_at, lead.synced_at)
    small_sim.advance(0.01)  # the write-back happens later than the sync
    client = make_salesforce(conn, secrets)
    client.request(lambda sf: sf.Lead.update(lead.crm_id, {"Lead_Score__c": 87, "Lead_Tier__c": "A"}))
    sync_connection(committing_pg_engine, conn, secrets, streams=["leads"])
    with Session(committing_pg_engine) as session:
        again = session.execute(select(Lead).where(Lead.id == lead.id)).scalar_one()
    assert again.crm_modified_at > before[2]  # the echo of our own write was read (upserted) ...
    assert again.synced_at > before[3]
    assert again.inputs_hash == before[0]  # ... and recognised as no input change
    assert again.inputs_changed_at == before[1]
    # A real input change does move it.
    client.request(lambda sf: sf.Lead.update(lead.crm_id, {"Title": "Chief Revenue Officer"}))
    sync_connection(committing_pg_engine, conn, secrets, streams=["leads"])
    with Session(committing_pg_engine) as session:
        changed = session.execute(select(Lead).where(Lead.id == lead.id)).scalar_one()
    assert changed.inputs_hash != before[0]
    assert changed.inputs_changed_at is not None and changed.inputs_changed_at > before[1]
    # A new activity of the lead moves it too (and is linked to the lead in the same transaction).
    sync_connection(committing_pg_engine, conn, secrets, streams=["tasks"])
    client.request(lambda sf: sf.Task.create({"WhoId": lead.crm_id, "Subject": "Call", "Type": "Call",
                                               "Status": "Completed"}))
    report = sync_connection(committing_pg_engine, conn, secrets, streams=["tasks"])
    assert report.streams["tasks"].activities >= 1
    with Session(committing_pg_engine) as session:
        touched = session.execute(select(Lead).where(Lead.id == lead.id)).scalar_one()
        linked = session.execute(select(Activity).where(Activity.lead_id == lead.id,
                                                        Activity.type == "call")).scalars().all()
    assert touched.inputs_changed_at is not None and touched.inputs_changed_at > changed.inputs_changed_at
    assert touched.inputs_hash == changed.inputs_hash
    assert linked


_CHILD = """
import json, os, sys
from config.app_config import ConnectionConfig
from connectors.base import ConnectionSecrets
from connectors.partition import sync_in_threads
from connectors.sync import sync_connection
from store.db import make_engine
spec = json.loads(os.environ["LS_SYNC_SPEC"])
engine = make_engine(spec["url"])
print("ready", flush=True)
for item in spec["connections"]:
    conn, secrets = ConnectionConfig(**item["conn"]), ConnectionSecrets(**item["secrets"])
    if spec["mode"] == "partitioned":
        sync_in_threads(engine, conn, secrets, threads=2)
    else:
        sync_connection(engine, conn, secrets)
"""


@pytest.mark.parametrize(("mode", "wanted_kills"), [("sequential", 10), ("partitioned", 6)])
def test_sigkill_at_random_points_loses_and_duplicates_nothing(small_sim: CRMSim, committing_pg_engine: Engine,
                                                               mode: str, wanted_kills: int) -> None:
    # partitioned: the units of connectors.partition, two at a time (time windows of the
    # Salesforce first load included), killed at random points and resumed from their cursors.
    # The world moves between kills only when no plan is half done: a resumed plan reads up to
    # its own clock, so a lead modified meanwhile is read by the next plan, after its campaign
    # membership was (docs/sync.md, "A lead read after its campaign membership"; that order is
    # tested in test_pending_campaign.py).
    sf, sf_secrets = salesforce_config(small_sim, "kill-sf", page_size=200, overlap_seconds=0, first_load_windows=3)
    hs, hs_secrets = hubspot_config(small_sim, "kill-hs", page_size=40)
    url = committing_pg_engine.url.render_as_string(hide_password=False)
    spec = {"url": url, "mode": mode, "connections": [
        {"conn": c.model_dump(exclude={"score_fields"}),
         "secrets": {k: v.get_secret_value() for k, v in vars(s).items() if v is not None}}
        for c, s in ((sf, sf_secrets), (hs, hs_secrets))]}
    env = dict(os.environ, LS_SYNC_SPEC=json.dumps(spec), PYTHONPATH=REPO)
    rng = random.Random(4)
    kills = 0
    longest = 1.5  # a kill lands at a random point of the first `longest` seconds of a sync
    advanced = False
    for _round in range(40):
        if kills >= wanted_kills:
            break
        if kills >= wanted_kills // 2 and not advanced:
            if mode == "partitioned":
                _finish(env)
            small_sim.advance(4)  # new data between kills too
            advanced = True
        child = subprocess.Popen([sys.executable, "-c", _CHILD], env=env, cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"  # imports done: the sync starts now
        time.sleep(rng.uniform(0.05, longest))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        else:
            longest = max(0.2, longest * 0.7)  # the sync finished first: on this machine it is faster
        child.wait(timeout=30)
    assert kills >= wanted_kills and advanced
    _finish(env)
    expected.assert_database_matches(committing_pg_engine, "kill-sf", expected.salesforce(small_sim))
    expected.assert_database_matches(committing_pg_engine, "kill-hs", expected.hubspot(small_sim))
    runs = _runs(committing_pg_engine, "kill-sf") + _runs(committing_pg_engine, "kill-hs")
    interrupted = [r for r in runs if r.status == "failed"]
    assert interrupted  # killed runs are closed as interrupted on the next start


def _finish(env: dict[str, str]) -> None:
    child = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=REPO, capture_output=True, timeout=240)
    assert child.returncode == 0, child.stderr.decode()[-2000:]


def _person(key: str, crm: str, when: datetime) -> Person:
    return Person(key=key, crm=crm, company_key=None, first_name="Ann", last_name=f"Tie{key}",  # type: ignore[arg-type]
                  email=f"{key.lower()}@tie-corp.com", title="Buyer", phone=None, lead_source="Web",
                  campaign_key=None, status="Open", owner_key=None, created_at=when, company_name="Tie Corp")


class _StopAfterPages(Exception):
    pass


def test_5000_salesforce_leads_sharing_one_timestamp(committing_pg_engine: Engine) -> None:
    with CRMSim(leads=20, seed=2, history_days=10, admin=False) as sim:
        now = sim.world.clock.now()
        for i in range(5000):
            sim.salesforce.store.put_person(_person(f"TIE{i:05d}", "salesforce", now))
        stamps = {r.values["SystemModstamp"] for r in sim.salesforce.store.records["Lead"].values()
                  if r.values["LastName"].startswith("Tie")}
        assert len(stamps) == 1
        conn, secrets = salesforce_config(sim, "ties-sf", overlap_seconds=0, page_size=2000)
        pages = 0

        def stop_after_two(event: ProgressEvent) -> None:
            nonlocal pages
            if event.kind == "page":
                pages += 1
                if pages == 2:
                    raise _StopAfterPages  # a crash between pages, mid-timestamp

        with pytest.raises(_StopAfterPages):
            sync_connection(committing_pg_engine, conn, secrets, streams=["leads"], progress=stop_after_two)
        report = sync_connection(committing_pg_engine, conn, secrets, streams=["leads"])
        assert report.status == "succeeded"
        want = expected.salesforce(sim)
        want.activities = {}  # only the leads stream was synced: no activities, no campaigns
        for lead in want.leads.values():
            lead.pop("campaign", None)
        with Session(committing_pg_engine) as session:
            ids = set(session.execute(select(Lead.crm_id).join(Connection).where(
                Connection.name == conn.name)).scalars())
        assert ids == set(want.leads)
        expected.assert_database_matches(committing_pg_engine, conn.name, want)


def test_more_than_10000_hubspot_contacts_in_one_window(committing_pg_engine: Engine) -> None:
    with CRMSim(leads=20, seed=3, history_days=10, admin=False) as sim:
        now = sim.world.clock.now()
        for i in range(10_050):
            sim.hubspot.store.put_person(_person(f"BIG{i:05d}", "hubspot", now))
        conn, secrets = hubspot_config(sim, "big-hs")
        report = sync_connection(committing_pg_engine, conn, secrets, streams=["contacts"])
        assert report.status == "succeeded", report.error
        assert report.streams["contacts"].records == len(sim.hubspot.store.records["contacts"])
        with Session(committing_pg_engine) as session:
            ids = set(session.execute(select(Lead.crm_id).join(Connection).where(
                Connection.name == conn.name)).scalars())
        assert ids == {str(r.id) for r in sim.hubspot.store.records["contacts"].values()
                       if r.props.get("annualrevenue") is None or float(r.props["annualrevenue"]) >= 0}
        assert len(ids) > 10_000


def test_data_quality_faults_are_quarantined_or_normalised(committing_pg_engine: Engine) -> None:
    with CRMSim(leads=1500, seed=21, history_days=60, admin=False, dq_rate=0.3) as sim:
        for build, make in ((expected.salesforce, salesforce_config), (expected.hubspot, hubspot_config)):
            conn, secrets = make(sim, f"dq-{build.__name__[:2]}")
            streams = ["leads"] if build is expected.salesforce else ["companies", "contacts"]
            report = sync_connection(committing_pg_engine, conn, secrets, streams=streams)
            assert report.status == "succeeded"
        truth = {t["person_key"] if "person_key" in t else t["key"]: t for t in sim.truth()}
        with Session(committing_pg_engine) as session:
            leads = {(r.connection_id, r.crm_id): r for r in session.execute(select(Lead)).scalars()}
            quarantined = {(q.connection_id, q.crm_id): q for q in session.execute(select(QuarantinedRecord)).scalars()}
            conn_ids = dict(session.execute(select(Connection.name, Connection.id)).all())
        seen: set[str] = set()
        for item in truth.values():
            faults = [f for f in item.get("dq_faults", []) if f != "duplicate"]
            crm_id = item.get("crm_id")
            if not faults or not crm_id:
                continue
            key = (conn_ids["dq-sa" if item["crm"] == "salesforce" else "dq-hu"], crm_id)
            kind, _, fld = faults[-1].partition(":")
            if key in quarantined:
                assert quarantined[key].reason.startswith("absurd_value"), quarantined[key].reason
                assert kind == "absurd" or any(f.startswith("absurd") for f in faults)
                seen.add("absurd")
                continue
            row = leads.get(key)
            if row is None:
                continue
            if kind == "absurd" and item["crm"] == "hubspot" and fld == "employees":
                continue  # HubSpot contacts carry a head-count bucket; the company's count is used
            assert kind != "absurd", f"{crm_id} {faults} was not quarantined"
            column = {"title": "title", "industry": "industry", "country": "country", "company_name": "company",
                      "lead_source": "lead_source", "email": "email"}.get(fld)
            value = getattr(row, column) if column else None
            falls_back = item["crm"] == "hubspot" and fld != "title"  # company / source fill the gap
            if kind == "junk" and column and not falls_back:
                assert value is None, f"{crm_id} {fld}={value!r} should be NULL"
            elif kind == "long" and column:
                assert value is not None and len(value) <= 255
            elif kind == "casing" and fld == "email" and value is not None:
                assert value == value.lower()
            seen.add(kind)
        assert {"absurd", "junk", "long", "casing"} <= seen, seen

        # What an admin and revops read of it: `status` counts the quarantined records per stream and
        # says where to look, and `explain` of a quarantined lead says why it has no score.
        env = dict(os.environ, LEADSCORE_DATABASE_URL=committing_pg_engine.url.render_as_string(hide_password=False),
                   LEADSCORE_CONFIG_FILE=os.devnull, COLUMNS="400")
        env.pop("LEADSCORE_BROKER_URL", None)
        status = subprocess.run([sys.executable, "-m", "worker.cli", "status"], capture_output=True, text=True,
                                env=env, cwd=REPO, timeout=120)
        assert "Traceback" not in status.stderr
        assert f"quarantined: {len(quarantined)} record(s) the sync could not store (" in status.stdout, status.stdout
        assert "dq-sa leads " in status.stdout
        crm_id = next(crm for (_conn, crm), q in sorted(quarantined.items(), key=str) if crm and q.stream == "leads")
        explained = subprocess.run([sys.executable, "-m", "worker.cli", "explain", crm_id], capture_output=True,
                                   text=True, env=env, cwd=REPO, timeout=120)
        assert explained.returncode == 1
        assert f"{crm_id} was quarantined by the dq-sa sync on" in explained.stderr, explained.stderr
        assert "(leads: absurd_value: " in explained.stderr and "Traceback" not in explained.stderr


def test_quota_stops_the_sync_and_records_it(small_sim: CRMSim, committing_pg_engine: Engine) -> None:
    conn, secrets = salesforce_config(small_sim, "quota-sf", page_size=200)
    small_sim.set_faults("sf.daily_limit=6")
    report = sync_connection(committing_pg_engine, conn, secrets)
    assert report.status == "stopped"
    runs = _runs(committing_pg_engine, conn.name)
    assert runs[-1].status == "stopped" and runs[-1].error
    # Our own budget share stops earlier, before the CRM refuses.
    small_sim.set_faults("sf.daily_limit=100000")
    small_sim.salesforce.reset_counts()
    budget = conn.model_copy(update={"name": "budget-sf", "api_budget_share": 0.00004})  # 4 of 100,000
    report = sync_connection(committing_pg_engine, budget, secrets)
    assert report.status == "stopped" and "budget" in (report.error or "")
    assert _runs(committing_pg_engine, "budget-sf")[-1].status == "stopped"


def test_full_resync_changes_nothing(small_sim: CRMSim, committing_pg_engine: Engine) -> None:
    conn, secrets = hubspot_config(small_sim, "full-hs")
    sync_connection(committing_pg_engine, conn, secrets)
    with Session(committing_pg_engine) as session:
        before = dict(session.execute(select(Lead.crm_id, Lead.inputs_changed_at).join(Connection).where(
            Connection.name == conn.name)).all())
    report = sync_connection(committing_pg_engine, conn, secrets, full=True)
    assert report.status == "succeeded"
    with Session(committing_pg_engine) as session:
        after = dict(session.execute(select(Lead.crm_id, Lead.inputs_changed_at).join(Connection).where(
            Connection.name == conn.name)).all())
    assert after == before
    expected.assert_database_matches(committing_pg_engine, conn.name, expected.hubspot(small_sim))
    assert datetime.now(UTC) > max(v for v in after.values() if v is not None)


def test_activities_of_stored_converted_leads_cost_no_extra_calls(small_sim: CRMSim,
                                                                  committing_pg_engine: Engine) -> None:
    """Conversion moves a lead's Tasks and Events to its Contact; the leads stream stores each
    converted lead's ``ConvertedContactId``, so those activities are linked from the store: every
    stream costs one query per page (+1 for the empty page after a full last one), nothing more."""
    page = 50
    conn, secrets = salesforce_config(small_sim, "convert-sf", page_size=page)
    report = sync_connection(committing_pg_engine, conn, secrets)
    assert report.status == "succeeded", report.error
    expected.assert_database_matches(committing_pg_engine, conn.name, expected.salesforce(small_sim))
    store = small_sim.salesforce.store
    moved = sum(1 for kind in ("Task", "Event") for rec in store.records[kind].values()
                if str(rec.values.get("WhoId") or "").startswith("003"))
    assert moved > page  # activities on converted leads' Contacts span several pages
    for name, stream in report.streams.items():
        pages = stream.records // page + 1
        assert stream.api_calls == pages, (name, stream.records, stream.api_calls)


def test_a_large_first_load_refreshes_the_planner_statistics(committing_pg_engine: Engine) -> None:
    """Without statistics PostgreSQL plans the per-page look-ups for an empty table (a scan per
    page): a run analyzes lead and activity after its first records, then at every tenfold."""
    def analyzed() -> dict[str, bool]:
        with committing_pg_engine.connect() as connection:
            return {name: last is not None for name, last in connection.execute(text(
                "SELECT relname, last_analyze FROM pg_stat_user_tables WHERE relname IN ('lead', 'activity')"))}

    assert refresh_planner_statistics(committing_pg_engine, 999, 1000) == 1000
    assert analyzed() == {"lead": False, "activity": False}
    assert refresh_planner_statistics(committing_pg_engine, 1500, 1000) == 15000
    assert analyzed() == {"lead": True, "activity": True}
