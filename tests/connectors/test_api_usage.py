"""Every CRM call leadscore makes lands in ``api_usage`` (``store.usage``), whichever entry point
made it: the CLI's one-process sync and the workers' partitioned sync, write-back and routing.
The day's totals there are what the CRMs received (crmsim counts every request it served,
logins included), what the CLI printed and what `leadscore status` and the console show.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select

from connectors.partition import sync_in_threads
from connectors.routing import execute_routing, plan_routing
from connectors.sync import sync_connection
from connectors.writeback import drain_outbox
from crmsim.app import CRMSim
from crmsim.faults import COUNT_SUMMARIES
from store.db import unit_of_work
from store.models import Connection, SyncRun
from store.queries import connection_activity
from store.usage import calls_on
from tests.connectors.conftest import hubspot_config, salesforce_config
from tests.connectors.test_writeback import FAST
from tests.connectors.test_writeback_support import (
    add_leads,
    app_config,
    hs_contact_ids,
    running_sim,
    score,
    secrets_for,
    sf_lead_ids,
)
from worker.cli.ops import api_calls_line


def _received(sim: CRMSim, crm: str) -> int:
    """Every request the simulated CRM served (token requests included), by its own counters."""
    return sum(n for label, n in sim.call_counts()[crm].items() if label not in COUNT_SUMMARIES)


def _ledger(engine: Engine) -> dict[str, dict[str, int]]:
    with unit_of_work(engine) as session:
        names = dict(session.execute(select(Connection.id, Connection.name)).tuples().all())
        return {names[cid]: counts for cid, counts in calls_on(session).items()}


def test_sync_calls_recorded_equal_what_the_crm_received_and_the_cli_printed(
        small_sim: CRMSim, committing_pg_engine: Engine) -> None:
    engine = committing_pg_engine
    sf, sf_secrets = salesforce_config(small_sim, "sf", page_size=200)
    hs, hs_secrets = hubspot_config(small_sim, "hs", page_size=50, first_load_windows=3)
    small_sim.reset_counts()

    report = sync_connection(engine, sf, sf_secrets)  # `leadscore sync`
    sf_received = _received(small_sim, "salesforce")
    outcomes = sync_in_threads(engine, hs, hs_secrets, threads=2)  # what the workers' tasks call
    hs_received = _received(small_sim, "hubspot")

    ledger = _ledger(engine)
    assert report.status == "succeeded" and report.records > 0
    assert ledger["sf"]["total"] == report.api_calls == sf_received > 0
    assert ledger["hs"]["total"] == hs_received > sum(o.api_calls for o in outcomes) > 0
    for name in ("sf", "hs"):
        with unit_of_work(engine) as session:
            in_runs = session.scalar(select(func.sum(SyncRun.api_calls)).join(Connection)
                                     .where(Connection.name == name))
        # Stream pages are on their runs; logins and the CRM's clock only here.
        assert ledger[name]["sync"] > in_runs > 0
        assert ledger[name]["writeback"] == ledger[name]["routing"] == 0
    assert ledger["sf"]["accounts"] == report.accounts["api_calls"]  # type: ignore[index]
    assert ledger["sf"]["sync"] + ledger["sf"]["accounts"] == report.api_calls

    # A second sync adds its own calls to the day's counts.
    small_sim.reset_counts()
    again = sync_connection(engine, sf, sf_secrets)
    assert _ledger(engine)["sf"]["total"] == report.api_calls + again.api_calls == sf_received + _received(
        small_sim, "salesforce")

    # `leadscore status` and the console's overview read the same counts.
    with unit_of_work(engine) as session:
        shown = {row["name"]: row["api_calls_today"] for row in connection_activity(session)}
        line = api_calls_line(session)
    assert shown == _ledger(engine)
    totals = {name: counts["total"] for name, counts in shown.items()}
    assert f"hs {totals['hs']} (sync {shown['hs']['sync']}, accounts {shown['hs']['accounts']}, " in line
    assert f"sf {totals['sf']} (sync " in line


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    yield from running_sim(200, 5)


def test_writeback_and_routing_calls_recorded_with_faults(sim: CRMSim, sqlite_engine: Engine) -> None:
    sf_ids = sf_lead_ids(sim, 60)
    hs_ids = hs_contact_ids(sim, 60)
    leads = add_leads(sqlite_engine, "sf", sf_ids) | add_leads(sqlite_engine, "hs", hs_ids)
    routed = app_config(sim, [{"to": "D", "actions": [{"type": "create_task", "subject": "Check in"}]}])
    score(sqlite_engine, leads.values(), score_value=12, tier="D", hook=plan_routing(routed))
    # Throttling, dropped connections and refused records: every retry is a call the CRM received.
    sim.set_faults("record_fail=0.2,sf.rate_503=0.3,hs.rate_429=0.3,drop=0.1", seed=7)
    sim.reset_counts()
    try:
        report = drain_outbox(sqlite_engine, routed, secrets_for(sim), policy=FAST)
        written = {crm: _received(sim, crm) for crm in ("salesforce", "hubspot")}
        sim.reset_counts()
        routing = execute_routing(sqlite_engine, routed, secrets_for(sim))
        routed_calls = {crm: _received(sim, crm) for crm in ("salesforce", "hubspot")}
    finally:
        sim.set_faults(None)

    ledger = _ledger(sqlite_engine)
    assert report.records_written > 0 and sum(routing.done.values()) > 0
    assert sim.salesforce.injected_counts().get("503", 0) > 0
    assert ledger["sf"]["writeback"] == written["salesforce"] >= report.connections["sf"].api_calls > 0
    assert ledger["hs"]["writeback"] == written["hubspot"] >= report.connections["hs"].api_calls > 0
    # What `leadscore writeback` prints per connection (its login included) adds up to the ledger.
    for name in ("sf", "hs"):
        entries = [e for e in (report.connections.get(name), report.accounts.get(name)) if e is not None]
        assert sum(e.calls_recorded for e in entries) == ledger[name]["writeback"], (name, entries)
    assert ledger["sf"]["routing"] == routed_calls["salesforce"] >= routing.api_calls["sf"] > 0
    assert ledger["hs"]["routing"] == routed_calls["hubspot"] >= routing.api_calls["hs"] > 0
    assert ledger["sf"]["sync"] == ledger["hs"]["sync"] == 0


def test_crm_setup_calls_recorded_equal_what_the_crm_received(sim: CRMSim, sqlite_engine: Engine) -> None:
    """`crm setup` counts against the day's budget like every other call (it was left out: an admin
    saw "none recorded" after it): its Salesforce login and field describes, and the HubSpot
    properties it read and created, recorded as ``setup``."""
    from config.app_config import AppConfig
    from connectors.setup import crm_setup

    sf, sf_secrets = salesforce_config(sim, "sf")  # client credentials: the login is a call too
    hs, hs_secrets = hubspot_config(sim, "hs")
    config = AppConfig.model_validate({"connections": [sf.model_dump(), hs.model_dump()]})
    sim.reset_counts()
    results = {r.connection: r for r in crm_setup(config, {"sf": sf_secrets, "hs": hs_secrets},
                                                   engine=sqlite_engine)}
    received = {name: _received(sim, crm) for name, crm in (("sf", "salesforce"), ("hs", "hubspot"))}

    ledger = _ledger(sqlite_engine)
    assert results["hs"].created  # the properties were created: calls that changed the CRM
    for name in ("sf", "hs"):
        assert ledger[name]["setup"] == ledger[name]["total"] == received[name] == results[name].api_calls > 0
    with unit_of_work(sqlite_engine) as session:
        line = api_calls_line(session)
    assert f"sf {received['sf']} (sync 0, accounts 0, write-back 0, routing 0, setup {received['sf']})" in line

    # Without a store (a setup before `db upgrade`) nothing is recorded and setup still runs.
    sim.reset_counts()
    [again] = crm_setup(config, {"sf": sf_secrets, "hs": hs_secrets}, connection="hs")
    assert again.ok and again.api_calls == _received(sim, "hubspot") > 0
    assert _ledger(sqlite_engine)["hs"]["setup"] == received["hs"]


def test_a_dropped_request_counts_and_a_connection_never_made_does_not() -> None:
    """A server that reads the request and closes without answering may have served it: a call.
    A port nobody listens on was never reached: no call."""
    import socket
    import threading

    import requests

    from connectors.errors import sent_unanswered

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def drop_one() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    threading.Thread(target=drop_one, daemon=True).start()
    with pytest.raises(requests.exceptions.ConnectionError) as dropped:
        requests.get(f"http://127.0.0.1:{port}/services/data", timeout=5)
    listener.close()
    with pytest.raises(requests.exceptions.ConnectionError) as refused:
        requests.get(f"http://127.0.0.1:{port}/services/data", timeout=5)
    assert sent_unanswered(dropped.value)
    assert not sent_unanswered(refused.value)
