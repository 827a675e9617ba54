"""Lead lifecycle: derived from the CRM at sync, and only open leads are written and routed.

Against crmsim over real sockets with the real clients: a lead converted or closed in the CRM
loses its pending score write and routing actions at the next sync (reason recorded), and a lead
converted before leadscore synced it is refused by the CRM (CANNOT_UPDATE_CONVERTED_LEAD), which
marks the write failed once, never retried.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import hubspot
import pytest
from simple_salesforce import Salesforce
from sqlalchemy import Engine, select

from config.app_config import AppConfig, parse_config
from config.errors import ConfigError
from connectors.hubspot.records import lead_record as hs_lead_record
from connectors.routing import execute_routing, plan_routing
from connectors.salesforce.records import lead_record as sf_lead_record
from connectors.salesforce.session import simulator_session
from connectors.sync import sync_connection
from connectors.writeback import drain_outbox
from crmsim.app import CRMSim
from store.db import unit_of_work
from store.models import Connection, Lead, LeadLifecycle, Outbox, RoutingAction
from tests.connectors.test_writeback_support import (
    app_config,
    running_sim,
    score,
    secrets_for,
    sf_api_writes,
)

ROUTING: list[dict[str, Any]] = [{"to": "A", "actions": [
    {"type": "create_task", "subject": "Call hot lead", "due_hours": 4},
    {"type": "assign_owner", "queue": "SDR Queue", "connections": ["sf"]},
]}]


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    yield from running_sim(80, 33)


def _sf(sim: CRMSim) -> Salesforce:
    info = sim.info()["salesforce"]
    return Salesforce(session_id=info["session_id"], instance_url=info["instance_url"], version="59.0",
                      session=simulator_session(info["ca_bundle"], info["instance_url"]))


def _hs(sim: CRMSim) -> hubspot.Client:
    info = sim.info()["hubspot"]
    return hubspot.Client.create(access_token=info["access_token"], host=info["host"], base_url=info["host"])


def _sync(engine: Engine, config: AppConfig, sim: CRMSim, *, full: bool = False) -> None:
    secrets = secrets_for(sim)
    for conn in config.connections:
        sync_connection(engine, conn, secrets[conn.name], full=full)


def _states(engine: Engine, connection: str) -> dict[str, LeadLifecycle]:
    with unit_of_work(engine) as session:
        return {crm_id: LeadLifecycle(state) for crm_id, state in session.execute(
            select(Lead.crm_id, Lead.lifecycle).join(Connection).where(Connection.name == connection))}


def _lead_ids(engine: Engine, crm_ids: list[str]) -> list[int]:
    with unit_of_work(engine) as session:
        by_crm = {crm: i for crm, i in session.execute(select(Lead.crm_id, Lead.id).where(Lead.crm_id.in_(crm_ids)))}
    return [by_crm[c] for c in crm_ids]


def _expected_sf(values: dict[str, Any]) -> LeadLifecycle:
    if values["IsDeleted"]:
        return LeadLifecycle.merged if values.get("MasterRecordId") else LeadLifecycle.deleted
    if values["IsConverted"]:
        return LeadLifecycle.converted
    if values["Status"] in ("Closed - Converted", "Closed - Not Converted"):
        return LeadLifecycle.closed
    return LeadLifecycle.open


def test_sync_derives_each_leads_lifecycle_from_the_crm(sim: CRMSim, sqlite_engine: Engine) -> None:
    config = app_config(sim)
    _sync(sqlite_engine, config, sim, full=True)
    sf_states = _states(sqlite_engine, "sf")
    expected = {r.id: _expected_sf(r.values) for r in sim.salesforce.store.records["Lead"].values()}
    assert len(sf_states) > 30 and set(sf_states) <= set(expected)
    assert sf_states == {k: expected[k] for k in sf_states}
    assert LeadLifecycle.converted in sf_states.values() and LeadLifecycle.open in sf_states.values()
    hs_states = _states(sqlite_engine, "hs")
    contacts = sim.hubspot.store.records["contacts"]
    for crm_id, state in hs_states.items():
        rec = contacts[int(crm_id)]
        if rec.archived:
            assert state in (LeadLifecycle.deleted, LeadLifecycle.merged)
        elif (rec.props.get("lifecyclestage") or "") in ("opportunity", "customer", "evangelist"):
            assert state == LeadLifecycle.converted, crm_id
        elif rec.props.get("hs_lead_status") == "UNQUALIFIED":
            assert state == LeadLifecycle.closed, crm_id
        else:
            assert state == LeadLifecycle.open, crm_id
    assert LeadLifecycle.converted in hs_states.values()


def test_leads_leaving_open_lose_pending_writes_and_actions(sim: CRMSim, sqlite_engine: Engine) -> None:
    config = app_config(sim, ROUTING)
    _sync(sqlite_engine, config, sim, full=True)
    sf_open = sorted(k for k, v in _states(sqlite_engine, "sf").items() if v == LeadLifecycle.open)
    hs_open = sorted(k for k, v in _states(sqlite_engine, "hs").items() if v == LeadLifecycle.open)
    converted, closed, kept = sf_open[:3]
    hs_converted, hs_closed, hs_kept = hs_open[:3]
    lead_ids = _lead_ids(sqlite_engine, [converted, closed, kept, hs_converted, hs_closed, hs_kept])
    score(sqlite_engine, lead_ids, tier="A", score_value=91, hook=plan_routing(config))

    # In the CRMs: a rep converts one lead and disqualifies another; HubSpot likewise.
    sim.world.clock.advance(timedelta(minutes=5))
    sim.salesforce.store.convert_lead(converted)
    _sf(sim).Lead.update(closed, {"Status": "Closed - Not Converted"})
    contacts = _hs(sim).crm.contacts.basic_api
    contacts.update(hs_converted, {"properties": {"lifecyclestage": "opportunity"}})
    contacts.update(hs_closed, {"properties": {"hs_lead_status": "UNQUALIFIED"}})
    sim.world.clock.advance(timedelta(minutes=5))
    _sync(sqlite_engine, config, sim)

    states = {**_states(sqlite_engine, "sf"), **_states(sqlite_engine, "hs")}
    assert [states[k] for k in (converted, closed, kept)] == ["converted", "closed", "open"]
    assert [states[k] for k in (hs_converted, hs_closed, hs_kept)] == ["converted", "closed", "open"]
    with unit_of_work(sqlite_engine) as session:
        outbox = {crm: (status, err) for crm, status, err in session.execute(
            select(Outbox.crm_id, Outbox.status, Outbox.last_error))}
        actions = [(crm, a.status, a.error) for crm, a in session.execute(
            select(Lead.crm_id, RoutingAction).join(Lead, Lead.id == RoutingAction.lead_id))]
    assert outbox[converted][0] == "cancelled" and outbox[converted][1].startswith("LEAD_CONVERTED: ")
    assert outbox[closed][0] == "cancelled" and outbox[closed][1].startswith("LEAD_CLOSED: ")
    assert outbox[hs_converted][0] == outbox[hs_closed][0] == "cancelled"
    assert outbox[kept] == ("pending", None) and outbox[hs_kept] == ("pending", None)
    gone = {converted, closed, hs_converted, hs_closed}
    assert actions and all(status == "cancelled" and err.startswith("LEAD_")
                           for crm, status, err in actions if crm in gone)
    assert all(status == "pending" for crm, status, _ in actions if crm not in gone)

    # Write-back and routing then touch only the leads still open.
    drained = drain_outbox(sqlite_engine, config, secrets_for(sim))
    assert drained.records_written == 2 and drained.failed == 0
    assert set(sf_api_writes(sim)) == {kept}
    # The SF owner change rode in the score write's record; routing runs the two tasks.
    assert drained.connections["sf"].routing.done == {"assign_owner": 1}
    routed = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert routed.failed == {} and routed.done == {"create_task": 2}  # SF task, HS task
    tasks = [r.values["WhoId"] for r in sim.salesforce.store.records["Task"].values()
             if "[leadscore #" in (r.values["Subject"] or "")]
    assert tasks == [kept]
    hs_store = sim.hubspot.store
    assert hs_store.associated("contacts", int(hs_kept), "tasks")
    assert not hs_store.associated("contacts", int(hs_converted), "tasks")


def test_a_lead_converted_before_the_sync_is_refused_once_and_never_retried(sim: CRMSim,
                                                                            sqlite_engine: Engine) -> None:
    config = app_config(sim, ROUTING)
    _sync(sqlite_engine, config, sim, full=True)
    lead = sorted(k for k, v in _states(sqlite_engine, "sf").items() if v == LeadLifecycle.open)[0]
    score(sqlite_engine, _lead_ids(sqlite_engine, [lead]), tier="A", hook=plan_routing(config))
    sim.salesforce.store.convert_lead(lead)  # leadscore has not synced since

    drained = drain_outbox(sqlite_engine, config, secrets_for(sim))
    assert drained.failed == 1 and drained.failed_by_reason() == {"CANNOT_UPDATE_CONVERTED_LEAD": 1}
    # The owner change and the task are not sent: the drain (for what rides with the score) and
    # routing read the lead's state from Salesforce first.
    assert drained.connections["sf"].routing.failed == {} and drained.connections["sf"].routing.cancelled == 1
    routed = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert routed.failed == {} and routed.done == {} and routed.cancelled == 1
    with unit_of_work(sqlite_engine) as session:
        row = session.scalars(select(Outbox)).one()
        assert (row.status, row.attempts) == ("failed", 1)
        assert row.last_error == "CANNOT_UPDATE_CONVERTED_LEAD: cannot reference converted lead"
    # Nothing left to retry: a second run sends nothing.
    assert drain_outbox(sqlite_engine, config, secrets_for(sim)).connections == {}
    assert sum(execute_routing(sqlite_engine, config, secrets_for(sim)).done.values()) == 0

    # The next sync learns the lead was converted: its refusals are no longer failures to fix
    # (`status` listed them as such in a user trial), they are cancelled with the refusal kept.
    sim.world.clock.advance(timedelta(minutes=5))
    _sync(sqlite_engine, config, sim)
    with unit_of_work(sqlite_engine) as session:
        row = session.scalars(select(Outbox)).one()
        actions = session.scalars(select(RoutingAction)).all()
    assert row.status == "cancelled"
    assert row.last_error == ("LEAD_CONVERTED: the lead was converted in the CRM before the write ran (it had "
                              "failed: CANNOT_UPDATE_CONVERTED_LEAD: cannot reference converted lead)")
    read_first = ("LEAD_CONVERTED: the lead was converted in the CRM before the action ran (read from the CRM "
                  "right before the call; the next sync records it)")
    assert sorted((a.action, a.status, a.error) for a in actions) == [
        ("assign_owner", "cancelled", read_first), ("create_task", "cancelled", read_first)]


def _sf_record(**values: Any) -> dict[str, Any]:
    base = {"Id": "00Q000000000001AAA", "SystemModstamp": "2024-05-01T10:00:00.000+0000",
            "CreatedDate": "2024-04-01T10:00:00.000+0000", "LastName": "Lee", "Company": "Acme",
            "IsDeleted": False, "IsConverted": False, "MasterRecordId": None, "Status": "Open - Not Contacted"}
    return {**base, **values}


@pytest.mark.parametrize(("values", "state"), [
    ({}, "open"),
    ({"Status": "Working - Contacted"}, "open"),
    ({"Status": "Closed - Not Converted"}, "closed"),
    ({"Status": "Closed - Converted"}, "closed"),
    ({"IsConverted": True, "Status": "Closed - Converted", "ConvertedDate": "2024-05-01"}, "converted"),
    ({"IsDeleted": True}, "deleted"),
    ({"IsDeleted": True, "MasterRecordId": "00Q000000000002AAA"}, "merged"),
    ({"IsDeleted": True, "IsConverted": True}, "deleted"),
])
def test_salesforce_lifecycle_rules(values: dict[str, Any], state: str) -> None:
    assert sf_lead_record(_sf_record(**values), {}).lifecycle == state


def test_salesforce_closed_statuses_are_configurable() -> None:
    record = _sf_record(Status="Disqualified")
    assert sf_lead_record(record, {}).lifecycle == "open"
    assert sf_lead_record(record, {}, frozenset({"Disqualified"})).lifecycle == "closed"


def _contact(archived: bool = False, **props: str) -> dict[str, Any]:
    return {"id": "101", "archived": archived, "properties": {
        "lastmodifieddate": "2024-05-01T10:00:00.000Z", "createdate": "2024-04-01T10:00:00.000Z", **props}}


@pytest.mark.parametrize(("contact", "state"), [
    (_contact(lifecyclestage="lead"), "open"),
    (_contact(lifecyclestage="salesqualifiedlead", hs_lead_status="IN_PROGRESS"), "open"),
    (_contact(lifecyclestage="opportunity"), "converted"),
    (_contact(lifecyclestage="customer"), "converted"),
    (_contact(lifecyclestage="evangelist"), "converted"),
    (_contact(lifecyclestage="lead", hs_lead_status="UNQUALIFIED"), "closed"),
    (_contact(archived=True, lifecyclestage="lead"), "deleted"),
])
def test_hubspot_lifecycle_rules(contact: dict[str, Any], state: str) -> None:
    assert hs_lead_record(contact, None, {}).lifecycle == state


def test_hubspot_lists_are_configurable_and_validated() -> None:
    config = parse_config({"connections": [{"name": "hs", "kind": "hubspot", "lifecycle": {
        "closed_statuses": ["UNQUALIFIED", "BAD_FIT"], "converted_stages": ["customer"]}}]}, "t.yaml")
    conn = config.connections[0]
    assert conn.closed_statuses == {"UNQUALIFIED", "BAD_FIT"} and conn.converted_stages == {"customer"}
    contact = _contact(lifecyclestage="salesqualifiedlead", hs_lead_status="BAD_FIT")
    assert hs_lead_record(contact, None, {}, conn.closed_statuses, conn.converted_stages).lifecycle == "closed"
    sf = {"name": "sf", "kind": "salesforce", "instance_url": "https://x.example"}
    cases = [
        ({**sf, "lifecycle": {"converted_stages": ["customer"]}}, "lifecycle.converted_stages is for hubspot"),
        ({**sf, "lifecycle": {"closed_statuses": ["Dead", "Dead"]}}, "'Dead' is listed twice"),
        ({**sf, "lifecycle": {"closed_statuses": [" "]}}, "an empty value"),
        ({**sf, "lifecycle": {"closed": ["Dead"]}},
         "connections.0.lifecycle.closed: unknown key \\(did you mean 'closed_statuses'\\?\\)"),
    ]
    for conn_data, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_config({"connections": [conn_data]}, "t.yaml")


def test_a_lead_that_left_open_after_the_last_sync_gets_nothing_from_routing(sim: CRMSim,
                                                                              sqlite_engine: Engine) -> None:
    """`route` (or `tiers set` then `route`) runs on what the last sync stored; reps convert,
    disqualify, delete and merge leads meanwhile. Routing reads each lead's state from the CRM
    right before it acts, so none of those gets a task (a user trial saw a task land on a lead
    closed after the sync: Salesforce accepts a Task on a closed Lead, HubSpot on any contact)."""
    config = app_config(sim, [{"to": "A", "actions": [{"type": "create_task", "subject": "Call hot lead"}]}])
    _sync(sqlite_engine, config, sim, full=True)
    sf_open = sorted(k for k, v in _states(sqlite_engine, "sf").items() if v == LeadLifecycle.open)
    hs_open = sorted(k for k, v in _states(sqlite_engine, "hs").items() if v == LeadLifecycle.open)
    sf_converted, sf_closed, sf_deleted, sf_loser, sf_kept = sf_open[:5]
    hs_converted, hs_closed, hs_archived, hs_loser, hs_survivor, hs_kept = hs_open[:6]
    score(sqlite_engine, _lead_ids(sqlite_engine, sf_open[:5] + hs_open[:6]), tier="A", hook=plan_routing(config))

    # In the CRMs, after leadscore's sync: what reps and merges do, through the real clients where
    # the API can (a merge is the simulated org's own).
    sim.world.clock.advance(timedelta(minutes=5))
    sf = _sf(sim)
    sim.salesforce.store.convert_lead(sf_converted)
    sf.Lead.update(sf_closed, {"Status": "Closed - Not Converted"})
    sf.Lead.delete(sf_deleted)
    sf_store = sim.salesforce.store
    with sf_store.lock:
        sf_store._merge(sf_loser, next(k for (kind, k), v in sf_store._keys.items()  # noqa: SLF001
                                       if kind == "person" and v == sf_kept))
    contacts = _hs(sim).crm.contacts.basic_api
    contacts.update(hs_converted, {"properties": {"lifecyclestage": "customer"}})
    contacts.update(hs_closed, {"properties": {"hs_lead_status": "UNQUALIFIED"}})
    contacts.archive(hs_archived)
    hs_store = sim.hubspot.store
    keys = {v: k for k, v in hs_store._person_ids.items()}  # noqa: SLF001
    with hs_store.lock:
        hs_store._merge(keys[int(hs_loser)], keys[int(hs_survivor)])  # noqa: SLF001 - a new id for both
    sim.reset_counts()

    routed = execute_routing(sqlite_engine, config, secrets_for(sim))

    assert routed.errors == [] and routed.failed == {}
    assert routed.done == {"create_task": 2} and routed.cancelled == 9
    tasks = [r.values["WhoId"] for r in sf_store.records["Task"].values()
             if "[leadscore #" in (r.values["Subject"] or "")]
    assert tasks == [sf_kept]
    assert [c for c in hs_open[:6] if int(c) in hs_store.records["contacts"]
            and hs_store.associated("contacts", int(c), "tasks")] == [hs_kept]
    with unit_of_work(sqlite_engine) as session:
        errors = {crm: (a.status, a.error) for crm, a in session.execute(
            select(Lead.crm_id, RoutingAction).join(Lead, Lead.id == RoutingAction.lead_id))}
    expected = {sf_converted: "converted", sf_closed: "closed", sf_deleted: "deleted", sf_loser: "merged",
                hs_converted: "converted", hs_closed: "closed", hs_archived: "deleted", hs_loser: "merged",
                hs_survivor: "merged"}
    assert {crm: errors[crm] for crm in expected} == {
        crm: ("cancelled", f"LEAD_{state.upper()}: the lead was {state} in the CRM before the action ran "
                           "(read from the CRM right before the call; the next sync records it)")
        for crm, state in expected.items()}
    assert errors[sf_kept][0] == errors[hs_kept][0] == "done"
    # The states cost one Salesforce query and one HubSpot batch read.
    assert sim.salesforce.call_counts().get("GET queryAll") == 1, sim.salesforce.call_counts()
    assert sim.hubspot.call_counts().get("POST contacts/batch/read") == 1, sim.hubspot.call_counts()


def test_an_owner_change_riding_a_score_write_skips_a_lead_closed_after_the_sync(sim: CRMSim,
                                                                                  sqlite_engine: Engine) -> None:
    """A Salesforce owner change rides in the score write's record (connectors.riders): it too is
    checked against the lead's state in the CRM first, so a lead a rep disqualified after the sync
    is not moved to the SDR queue."""
    config = app_config(sim, ROUTING)
    _sync(sqlite_engine, config, sim, full=True)
    closed, kept = sorted(k for k, v in _states(sqlite_engine, "sf").items() if v == LeadLifecycle.open)[:2]
    score(sqlite_engine, _lead_ids(sqlite_engine, [closed, kept]), tier="A", hook=plan_routing(config))
    sim.world.clock.advance(timedelta(minutes=5))
    owner_before = sim.salesforce.store.get(closed).values["OwnerId"]  # type: ignore[union-attr]
    _sf(sim).Lead.update(closed, {"Status": "Closed - Not Converted"})

    drained = drain_outbox(sqlite_engine, config, secrets_for(sim))

    assert drained.failed == 0 and drained.connections["sf"].routing.done == {"assign_owner": 1}
    queue = next(r.id for r in sim.salesforce.store.records["Group"].values() if r.values["Name"] == "SDR Queue")
    assert sim.salesforce.store.get(kept).values["OwnerId"] == queue  # type: ignore[union-attr]
    assert sim.salesforce.store.get(closed).values["OwnerId"] == owner_before  # type: ignore[union-attr]
    with unit_of_work(sqlite_engine) as session:
        owner_action = session.scalars(select(RoutingAction).join(Lead, Lead.id == RoutingAction.lead_id).where(
            Lead.crm_id == closed, RoutingAction.action == "assign_owner")).one()
    assert (owner_action.status, owner_action.error) == (
        "cancelled", "LEAD_CLOSED: the lead was closed in the CRM before the action ran (read from the CRM right "
                     "before the call; the next sync records it)")
