"""A drain or routing process killed with SIGKILL mid-run, then restarted: nothing lost, nothing twice.

The child process is a real ``python`` running ``drain_outbox`` / ``execute_routing`` against
crmsim (served by this test process) and a SQLite file shared with this process.
Salesforce: the child's HTTP session SIGKILLs its own process the moment the CRM's response
to the write arrives — the worst window: the CRM applied the write, the database never heard.
HubSpot: this process SIGKILLs the child while it is draining (after some writes landed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from connectors.routing import execute_routing, plan_routing
from connectors.writeback import drain_outbox
from crmsim.app import CRMSim
from store.db import unit_of_work
from store.models import RoutingAction
from tests.connectors.test_writeback_support import (
    add_leads,
    app_config,
    hs_api_writes,
    hs_contact_ids,
    outbox_statuses,
    running_sim,
    score,
    secrets_for,
    sf_api_writes,
    sf_lead_ids,
)

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, os, signal, sys
from config.app_config import AppConfig
from connectors.base import ConnectionSecrets
from store.db import make_engine

spec = json.loads(sys.argv[1])
config = AppConfig.model_validate(spec["config"])
secrets = {name: ConnectionSecrets(**values) for name, values in spec["secrets"].items()}
engine = make_engine(spec["db"])
clients = {}
if spec.get("kill_after"):
    # SIGKILL this process as soon as the CRM answered the chosen request, before anything else runs.
    from connectors.salesforce.client import make_salesforce
    from connectors.salesforce.session import simulator_session

    conn = config.connection("sf")
    session = simulator_session(conn.ca_bundle, conn.instance_url)
    method, suffix = spec["kill_after"]

    def kill(response, *args, **kwargs):
        if response.request.method == method and response.request.path_url.rstrip("/").endswith(suffix):
            os.kill(os.getpid(), signal.SIGKILL)

    session.hooks["response"].append(kill)
    clients["sf"] = make_salesforce(conn, secrets["sf"], session=session)
if spec["job"] == "drain":
    from connectors.writeback import drain_outbox
    drain_outbox(engine, config, secrets, clients=clients, connection=spec.get("connection"))
else:
    from connectors.routing import execute_routing
    execute_routing(engine, config, secrets, clients=clients)
print("finished")
"""


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    yield from running_sim(700, 13)


def _child(sim: CRMSim, engine: Engine, job: str, *, routing: list | None = None, kill_after: list | None = None,
           connection: str | None = None) -> subprocess.Popen[str]:
    spec = {
        "config": app_config(sim, routing).model_dump(by_alias=True),
        "secrets": {name: {k: v.get_secret_value() for k in ("session_id", "access_token")
                           if (v := getattr(s, k)) is not None}
                    for name, s in secrets_for(sim).items()},
        "db": str(engine.url), "job": job, "kill_after": kill_after, "connection": connection,
    }
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_salesforce_drain_killed_after_the_crm_applied_the_batch(sim: CRMSim, sqlite_engine: Engine) -> None:
    # A mixed batch: every lead has a pending score write and a pending queue assignment, which
    # rides in the same Lead record of the same Composite call.
    routing = [{"to": "B", "actions": [{"type": "assign_owner", "queue": "SDR Queue", "connections": ["sf"]}]}]
    config = app_config(sim, routing)
    sf_ids = sf_lead_ids(sim, 300)
    assert len(sf_ids) == 300
    leads = add_leads(sqlite_engine, "sf", sf_ids)
    score(sqlite_engine, leads.values(), score_value=73, tier="B", hook=plan_routing(config))
    store = sim.salesforce.store
    queue_id = next(r.id for r in store.records["Group"].values() if r.values["Name"] == "SDR Queue")

    child = _child(sim, sqlite_engine, "drain", routing=routing, kill_after=["POST", "/composite"], connection="sf")
    _, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err
    # The CRM has every value and every owner; the database still says pending: nothing was confirmed.
    assert sf_api_writes(sim) == {crm_id: 1 for crm_id in sf_ids}
    assert sf_api_writes(sim, "OwnerId") == {crm_id: 1 for crm_id in sf_ids}
    assert outbox_statuses(sqlite_engine) == {"pending": 300}
    assert _action_statuses(sqlite_engine) == {"sending": 300}

    report = drain_outbox(sqlite_engine, config, secrets_for(sim))

    assert report.records_written == 300
    assert outbox_statuses(sqlite_engine) == {"sent": 300}
    # The interrupted owner changes rode again with the re-sent scores: no call of their own.
    assert report.connections["sf"].routing.done == {"assign_owner": 300}
    assert report.connections["sf"].write_calls == 1 and report.connections["sf"].retry_calls == 0
    assert _action_statuses(sqlite_engine) == {"done": 300}
    assert all(store.get(i).values["OwnerId"] == queue_id for i in sf_ids)  # type: ignore[union-attr]
    # Re-sending the same values made no second write in the CRM, of the score or of the owner.
    assert sf_api_writes(sim) == {crm_id: 1 for crm_id in sf_ids}
    assert sf_api_writes(sim, "OwnerId") == {crm_id: 1 for crm_id in sf_ids}
    again = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert again.done == {} and sum(again.api_calls.values()) == 0


def _action_statuses(engine: Engine) -> dict[str, int]:
    with unit_of_work(engine) as session:
        return {status: n for status, n in session.execute(
            select(RoutingAction.status, func.count()).group_by(RoutingAction.status))}


def test_hubspot_drain_killed_mid_run_then_restarted(sim: CRMSim, sqlite_engine: Engine) -> None:
    hs_ids = hs_contact_ids(sim, 300)
    assert len(hs_ids) == 300
    leads = add_leads(sqlite_engine, "hs", hs_ids)
    score(sqlite_engine, leads.values(), score_value=55, tier="C")
    sim.set_faults("hs.latency_ms=150")

    child = _child(sim, sqlite_engine, "drain", connection="hs")
    deadline = time.monotonic() + 60
    while len(hs_api_writes(sim)) < 100 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    sim.set_faults(None)
    landed = len(hs_api_writes(sim))
    assert 100 <= landed < 300, "the kill must land during the drain"
    assert outbox_statuses(sqlite_engine).get("pending", 0) >= 300 - landed

    drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim))

    assert outbox_statuses(sqlite_engine) == {"sent": 300}
    assert hs_api_writes(sim) == {crm_id: 1 for crm_id in hs_ids}


def test_routing_killed_after_the_task_was_created(sim: CRMSim, sqlite_engine: Engine) -> None:
    routing = [{"to": "A", "actions": [{"type": "create_task", "subject": "Call hot lead"},
                                       {"type": "pause_outreach", "connections": ["sf"]}]}]
    config = app_config(sim, routing)
    sf_ids = sf_lead_ids(sim, 3)
    leads = add_leads(sqlite_engine, "sf", sf_ids)
    score(sqlite_engine, leads.values(), tier="A", hook=plan_routing(config))

    # Killed right after the CRM answered the batch's Composite call (tasks created, statuses set).
    child = _child(sim, sqlite_engine, "route", routing=routing, kill_after=["POST", "/composite"])
    _, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err
    tasks_before = [r for r in sim.salesforce.store.records["Task"].values()
                    if "[leadscore #" in (r.values["Subject"] or "")]
    assert len(tasks_before) == 3

    report = execute_routing(sqlite_engine, config, secrets_for(sim))

    assert report.recovered == 3  # every task found by its marker, none created twice
    assert report.done == {"create_task": 3, "pause_outreach": 3}
    tasks = [r for r in sim.salesforce.store.records["Task"].values() if "[leadscore #" in (r.values["Subject"] or "")]
    assert sorted(t.values["WhoId"] for t in tasks) == sorted(sf_ids)
    # A second restart changes nothing.
    assert execute_routing(sqlite_engine, config, secrets_for(sim)).done == {}
