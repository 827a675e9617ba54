"""leadscore against crmsim's realistic refusals (docs/crmsim.md, checklist items #3-#16), through
the real clients over real sockets: each test shows what a real org refuses and what leadscore
does about it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceGeneralError
from sqlalchemy import Engine, select

from connectors.errors import QuotaExhaustedError
from connectors.hubspot.streams import HubSpotConnector
from connectors.retry import RetryPolicy
from connectors.routing import execute_routing, plan_routing
from connectors.salesforce.client import make_salesforce
from connectors.salesforce.session import simulator_session
from connectors.setup import crm_setup
from connectors.sync import sync_connection
from connectors.writeback import WritebackPolicy, drain_outbox
from crmsim.app import CRMSim
from crmsim.salesforce.store import AssignmentRule
from store.db import unit_of_work
from store.models import Lead, Outbox, RoutingAction
from tests.connectors.conftest import hubspot_config, salesforce_config
from tests.connectors.test_writeback_support import (
    add_leads,
    app_config,
    create_hubspot_score_properties,
    hs_contact_ids,
    outbox_statuses,
    score,
    secrets_for,
    sf_lead_ids,
)

FAST = WritebackPolicy(max_attempts=5, base_delay=timedelta(0))
QUICK = RetryPolicy(attempts=8, initial_wait=0.01, max_wait=0.5)


def _sim(strict: str | None = None, faults: str | None = None, leads: int = 400, seed: int = 5) -> CRMSim:
    return CRMSim(leads=leads, seed=seed, admin=False, activity_scale=0.05, history_days=60, faults=faults,
                  strict=strict).start()


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    running = _sim()
    create_hubspot_score_properties(running)
    yield running
    running.stop()


def _raw_sf(sim: CRMSim) -> Salesforce:
    info = sim.info()["salesforce"]
    return Salesforce(session_id=info["session_id"], instance_url=info["instance_url"], version="59.0",
                      session=simulator_session(info["ca_bundle"], info["instance_url"]))


# --- #3 Composite subrequests inherit only Accept/Authorization/Content-Type ---------------------

def test_score_writes_do_not_rerun_assignment_rules_inside_composite(sim: CRMSim, sqlite_engine: Engine) -> None:
    store = sim.salesforce.store
    queue_id = next(r.id for r in store.records["Group"].values() if r.values["Type"] == "Queue")
    store.assignment_rules.append(AssignmentRule("Lead_Score__c", 80, queue_id))
    ids = sf_lead_ids(sim, 30)
    owners = {i: store.get(i).values["OwnerId"] for i in ids}  # type: ignore[union-attr]
    assert queue_id not in owners.values()
    score(sqlite_engine, add_leads(sqlite_engine, "sf", ids).values(), score_value=95, tier="A")

    report = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim), policy=FAST)

    assert report.connections["sf"].records_written == 30
    # The header rode in each subrequest's httpHeaders: no rule ran, no owner changed.
    assert {i: store.get(i).values["OwnerId"] for i in ids} == owners  # type: ignore[union-attr]
    assert sim.salesforce.auto_assign_headers[-1] == "FALSE"

    # The same header only on the outer request does not reach the subrequests (as in Salesforce).
    sf = _raw_sf(sim)
    body = {"allOrNone": False, "compositeRequest": [{
        "method": "PATCH", "url": "/services/data/v59.0/composite/sobjects", "referenceId": "c0",
        "body": {"allOrNone": False, "records": [{"attributes": {"type": "Lead"}, "id": ids[0],
                                                   "Lead_Score__c": 96}]}}]}
    sf.restful("composite", method="POST", json=body, headers={"Sforce-Auto-Assign": "FALSE"})
    assert store.get(ids[0]).values["OwnerId"] == queue_id  # type: ignore[union-attr]


# --- #7 validation rules ------------------------------------------------------------------------

def test_validation_rule_on_5_percent_of_leads_fails_those_writes_only(sqlite_engine: Engine) -> None:
    sim = _sim(strict="validation_rule=0.05", leads=1200)
    try:
        ids = sf_lead_ids(sim, 400)
        leads = add_leads(sqlite_engine, "sf", ids)
        score(sqlite_engine, leads.values(), score_value=70, tier="B")

        report = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim), policy=FAST)
        again = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim), policy=FAST)
    finally:
        sim.stop()
    failed = report.connections["sf"].failed_by_reason.get("FIELD_CUSTOM_VALIDATION_EXCEPTION", 0)
    assert 5 <= failed <= 40  # ~5 % of 400, by the rule's own hash
    assert report.connections["sf"].records_written == 400 - failed
    assert outbox_statuses(sqlite_engine) == {"sent": 400 - failed, "failed": failed}
    assert again.connections == {}  # nothing left to retry: failed rows stay failed
    with unit_of_work(sqlite_engine) as session:
        rows = session.scalars(select(Outbox).where(Outbox.status == "failed")).all()
        assert all(r.attempts == 1 for r in rows)
        assert all(str(r.last_error).startswith("FIELD_CUSTOM_VALIDATION_EXCEPTION: Region is required")
                   for r in rows)


def test_validation_rule_refuses_a_single_patch_with_the_real_shape() -> None:
    sim = _sim(strict="validation_rule=1", leads=50)
    try:
        sf = _raw_sf(sim)
        lead_id = sf_lead_ids(sim, 1)[0]
        with pytest.raises(Exception) as caught:
            sf.Lead.update(lead_id, {"Lead_Score__c": 10})
        assert caught.value.status == 400  # type: ignore[attr-defined]
        assert caught.value.content[0]["errorCode"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"  # type: ignore[attr-defined]
    finally:
        sim.stop()


# --- #6 REQUEST_LIMIT_EXCEEDED: concurrency is retried, the daily quota stops -------------------

def test_concurrency_limit_is_retried_and_the_daily_quota_stops(committing_pg_engine: Engine,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    sim = _sim(faults="sf.concurrent_limit=0.3", leads=300)
    caplog.set_level(logging.INFO, logger="connectors.retry")
    try:
        conn, secrets = salesforce_config(sim, "conc-sf", page_size=200)
        client = make_salesforce(conn, secrets, policy=QUICK)
        from connectors.salesforce.streams import SalesforceConnector

        report = sync_connection(committing_pg_engine, conn, secrets,
                                 connector=SalesforceConnector(conn, secrets, client=client))
        assert report.status == "succeeded", report.error
        assert sim.salesforce.faults.injected.get("concurrent", 0) > 0
        # Each retry is logged with the connection, the CRM's own error and the wait.
        retries = [r.getMessage() for r in caplog.records if r.name == "connectors.retry"]
        assert retries and all(m.startswith("connection 'conc-sf' (Salesforce): retrying in ") for m in retries)
        assert any("Salesforce concurrency limit" in m for m in retries), retries[:3]
        # The waits are QUICK's 0.01-0.5 s backoff: none reads as no wait at all ("0.0s").
        waits = [float(m.split("retrying in ", 1)[1].split("s ", 1)[0]) for m in retries]
        assert all(w > 0 for w in waits), retries[:3]
        sim.set_faults(f"sf.daily_limit={sim.salesforce.api_calls}")
        with pytest.raises(QuotaExhaustedError):
            client.request(lambda sf: sf.query("SELECT Id FROM Lead LIMIT 1"))
    finally:
        sim.stop()


# --- #8/#9 queue supported objects, inactive owners ---------------------------------------------

def test_owner_refusals_have_the_real_codes_and_crm_setup_reports_them(sim: CRMSim) -> None:
    store = sim.salesforce.store
    sf = _raw_sf(sim)
    queue = next(r for r in store.records["Group"].values() if r.values["Type"] == "Queue")
    lead_id = sf_lead_ids(sim, 1)[0]
    store.set_queue_objects(queue.id, ("Case",))
    with pytest.raises(Exception) as caught:
        sf.Lead.update(lead_id, {"OwnerId": queue.id}, headers={"Sforce-Auto-Assign": "FALSE"})
    assert caught.value.content[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"  # type: ignore[attr-defined]
    assert sim.inactive_owner_ids  # the realistic default: one rep has left
    with pytest.raises(Exception) as caught:
        sf.Task.create({"WhoId": lead_id, "Subject": "Call", "OwnerId": sim.inactive_owner_ids[0]})
    assert caught.value.content[0]["errorCode"] == "INACTIVE_OWNER_OR_USER"  # type: ignore[attr-defined]

    config = app_config(sim, routing=[{"to": "A", "actions": [
        {"type": "assign_owner", "queue": queue.values["Name"], "connections": ["sf"]},
        {"type": "create_task", "subject": "Call now", "connections": ["sf"]}]}])
    results = {r.connection: r for r in crm_setup(config, secrets_for(sim), connection="sf")}
    problems = results["sf"].problems
    assert any("does not list Lead among its supported objects" in p for p in problems), problems
    # Leads of a rep who left: refused per record at run time, reported, but setup is not blocked.
    assert any("owned by inactive users" in w for w in results["sf"].warnings), results["sf"].warnings
    store.set_queue_objects(queue.id, ("Lead",))
    fixed = crm_setup(config, secrets_for(sim), connection="sf")[0]
    assert fixed.ok and fixed.warnings, (fixed.problems, fixed.warnings)


# --- #10 realistic stamps: every update bumps, Task inserts bump the lead, whole seconds ---------

def test_echo_reads_from_our_own_writes_are_not_input_changes(sim: CRMSim, committing_pg_engine: Engine) -> None:
    conn, secrets = salesforce_config(sim, "echo-sf")
    assert sync_connection(committing_pg_engine, conn, secrets).status == "succeeded"
    store = sim.salesforce.store
    lead_id = sf_lead_ids(sim, 1)[0]
    before = dict(store.get(lead_id).values)  # type: ignore[union-attr]
    sim.advance(0.01)
    sf = _raw_sf(sim)
    sf.Lead.update(lead_id, {"Lead_Score__c": before["Lead_Score__c"]})  # the same value again
    after = store.get(lead_id).values  # type: ignore[union-attr]
    assert after["LastModifiedDate"] > before["LastModifiedDate"]  # bumped though nothing changed
    assert after["SystemModstamp"].microsecond == 0
    sim.advance(0.01)
    sf.Task.create({"WhoId": lead_id, "Subject": "Follow up", "Status": "Not Started"})
    touched = store.get(lead_id).values  # type: ignore[union-attr]
    assert touched["SystemModstamp"] > after["SystemModstamp"]
    assert touched["LastModifiedDate"] == after["LastModifiedDate"]
    with unit_of_work(committing_pg_engine) as session:
        row = session.scalars(select(Lead).where(Lead.crm_id == lead_id)).one()
        digest, changed_at = row.inputs_hash, row.inputs_changed_at

    assert sync_connection(committing_pg_engine, conn, secrets).status == "succeeded"

    with unit_of_work(committing_pg_engine) as session:
        row = session.scalars(select(Lead).where(Lead.crm_id == lead_id)).one()
        assert row.crm_modified_at == touched["SystemModstamp"]  # the echo was read ...
        assert (row.inputs_hash, row.inputs_changed_at) == (digest, changed_at)  # ... and is no input change


# --- #4 HubSpot search ties in no documented order ----------------------------------------------

def test_hubspot_keyset_survives_shuffled_ties(sim: CRMSim, committing_pg_engine: Engine) -> None:
    conn, secrets = hubspot_config(sim, "ties-hs", page_size=40)
    assert sync_connection(committing_pg_engine, conn, secrets).status == "succeeded"
    store = sim.hubspot.store
    ids = hs_contact_ids(sim, 150)
    sim.advance(0.01)
    for crm_id in ids:  # 150 writes at one simulated instant: 150 records share one stamp
        store.api_update("contacts", crm_id, {"jobtitle": "VP Ties"})
    found = sim.hubspot.search_engine.search("contacts", {
        "filterGroups": [{"filters": [{"propertyName": "jobtitle", "operator": "EQ", "value": "VP Ties"}]}],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}], "limit": 200})
    order = [int(r["id"]) for r in found["results"]]
    assert len(order) == 150 and order != sorted(order)  # the server's tie order is not id order

    report = sync_connection(committing_pg_engine, conn, secrets)

    assert report.status == "succeeded", report.error
    with unit_of_work(committing_pg_engine) as session:
        titles = dict(session.execute(select(Lead.crm_id, Lead.title).where(Lead.crm_id.in_(ids))).all())
    assert titles == {crm_id: "VP Ties" for crm_id in ids}


# --- #5 HubSpot merges create a new id ----------------------------------------------------------

def test_hubspot_merge_new_id_is_resolved(sim: CRMSim, sqlite_engine: Engine) -> None:
    store = sim.hubspot.store
    keys = {v: k for k, v in store._person_ids.items()}  # noqa: SLF001 - pick two live people
    loser, survivor = (int(i) for i in hs_contact_ids(sim, 2))
    with store.lock:
        store._merge(keys[loser], keys[survivor])  # noqa: SLF001 - the funnel's merge
    new_id = store.resolve_merged("contacts", loser)
    assert new_id is not None and new_id not in (loser, survivor)
    # A read by an old id answers the new record under its new id.
    info = sim.info()["hubspot"]
    got = requests.get(f"{info['host']}/crm/v3/objects/contacts/{survivor}", timeout=10,
                       headers={"Authorization": f"Bearer {info['access_token']}"}, verify=False)
    assert got.json()["id"] == str(new_id)
    leads = add_leads(sqlite_engine, "hs", [str(loser), str(survivor)])
    score(sqlite_engine, leads.values(), score_value=50, tier="C")

    report = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim), policy=FAST)

    assert report.connections["hs"].failed_by_reason == {"MERGED": 2}
    with unit_of_work(sqlite_engine) as session:
        errors = {r.crm_id: str(r.last_error) for r in session.scalars(select(Outbox))}
    assert errors[str(loser)] == f"MERGED: HubSpot contact merged into {new_id}; the next sync links the lead to it"
    assert store.records["contacts"][new_id].props.get("leadscore_score") is None  # nothing written anywhere


# --- #12 whole-request 400 for an invalid value in batch/update -----------------------------------

def test_one_invalid_value_fails_that_record_and_the_rest_lands(sim: CRMSim, sqlite_engine: Engine) -> None:
    ids = hs_contact_ids(sim, 60)
    leads = add_leads(sqlite_engine, "hs", ids)
    score(sqlite_engine, [leads[i] for i in ids[:59]], score_value=80, tier="A")
    score(sqlite_engine, [leads[ids[59]]], score_value=80, tier="E")  # not an option of the tier property

    report = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim), policy=FAST)

    assert report.connections["hs"].failed_by_reason == {"INVALID_OPTION": 1}
    assert report.connections["hs"].records_written == 59
    assert sim.call_counts()["hubspot"]["POST contacts/batch/update"] > 1  # the 400 was split apart


# --- #13 Events API on a hub below Enterprise ----------------------------------------------------

def test_events_stream_is_skipped_with_one_warning_below_enterprise(committing_pg_engine: Engine,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    sim = _sim(strict="hub_tier=professional", leads=200)
    try:
        conn, secrets = hubspot_config(sim, "pro-hs")
        connector = HubSpotConnector(conn, secrets)
        with caplog.at_level("WARNING", logger="connectors.hubspot.streams"):
            report = sync_connection(committing_pg_engine, conn, secrets, connector=connector)
        assert report.status == "succeeded", report.error
        assert "events" in connector.skipped_streams
        warnings = [r for r in caplog.records if "events stream skipped" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        sim.stop()


# --- #17 QUERY_TIMEOUT: the same query times out again, a smaller page does not -----------------

def test_query_timeout_shrinks_the_page_instead_of_repeating_the_query(committing_pg_engine: Engine) -> None:
    from tests.connectors import expected

    sim = _sim(faults="sf.query_timeout_rows=300", leads=1500)
    try:
        conn, secrets = salesforce_config(sim, "slow-sf")
        report = sync_connection(committing_pg_engine, conn, secrets)
        assert report.status == "succeeded", report.error
        timeouts = sim.salesforce.faults.injected.get("query_timeout", 0)
        # One timeout per halving (2000 -> 1000 -> 500 -> 250) per stream that big, not 8 repeats.
        assert 0 < timeouts <= 3 * 4
        expected.assert_database_matches(committing_pg_engine, "slow-sf", expected.salesforce(sim))
    finally:
        sim.stop()


# --- #23 row locks on single-record DML --------------------------------------------------------

def test_routing_rides_out_row_locks_on_its_records(sqlite_engine: Engine) -> None:
    # Routing writes through sObject Collections inside Composite: a row lock is a per-record
    # UNABLE_TO_LOCK_ROW there (record_fail), which returns that action to pending for the next run.
    from connectors.routing import execute_routing, plan_routing
    from tests.connectors.test_routing import ROUTING, _sf_tasks

    sim = _sim(leads=80, seed=21)
    try:
        config = app_config(sim, [r for r in ROUTING if r["to"] == "A"])
        ids = [i for i in sf_lead_ids(sim) if sim.salesforce.store.get(i).values["OwnerId"]  # type: ignore[union-attr]
               not in sim.inactive_owner_ids][:4]
        leads = add_leads(sqlite_engine, "sf", ids)
        score(sqlite_engine, leads.values(), tier="A", score_value=90, hook=plan_routing(config))
        sim.set_faults("sf.record_fail=0.4", seed=3)

        done: dict[str, int] = {}
        for _ in range(8):  # each run retries what a lock refused; bounded like the 8 attempts
            report = execute_routing(sqlite_engine, config, secrets_for(sim))
            assert report.failed == {}
            for kind, n in report.done.items():
                done[kind] = done.get(kind, 0) + n
            if report.retry_later == 0:
                break

        assert sim.salesforce.faults.injected.get("record_fail", 0) > 0
        assert done == {"assign_owner": 4, "create_task": 4}
        assert all(len(_sf_tasks(sim, crm_id)) == 1 for crm_id in ids)  # a refused insert created nothing
    finally:
        sim.stop()


# --- REST URI and headers at most 16,384 bytes: long Id lists are split ------------------------------

def test_a_query_past_the_rest_uri_limit_is_refused_and_routing_splits_its_id_lists(sqlite_engine: Engine) -> None:
    """Salesforce answers 414 URI Too Long when a GET's URI passes 16,384 bytes (help article
    000386264): a SOQL ``Id IN (...)`` of 600 quoted 18-character ids is about 17 KB. Routing asks
    for lead states and for existing campaign members by id: 650 leads must cost split queries."""
    sim = _sim(leads=2400, seed=12)
    try:
        ids = sf_lead_ids(sim)[:650]
        assert len(ids) == 650
        def soql(some: list[str]) -> str:
            return "SELECT Id FROM Lead WHERE Id IN (" + ", ".join(f"'{i}'" for i in some) + ")"

        with pytest.raises(SalesforceGeneralError) as refused:
            _raw_sf(sim).query(soql(ids))
        assert refused.value.status == 414
        assert len(_raw_sf(sim).query(soql(ids[:300]))["records"]) == 300

        # Every lead already a member of the campaign (a rep added them): each create answers
        # DUPLICATE_VALUE, and routing looks the members up by lead id.
        store = sim.salesforce.store
        campaign = next(r for r in store.records["Campaign"].values()
                        if r.values["Name"] == "Nurture Track: Evaluators")
        with store.lock:
            for lead_id in ids:
                if (campaign.id, lead_id) not in store._membership:  # noqa: SLF001
                    store._add_member(campaign.id, lead_id, "Sent", None, None, "api")  # noqa: SLF001
        config = app_config(sim, [{"to": "B", "actions": [
            {"type": "add_to_campaign", "campaign": "Nurture Track: Evaluators", "connections": ["sf"]}]}])
        leads = add_leads(sqlite_engine, "sf", ids)
        score(sqlite_engine, leads.values(), tier="B", hook=plan_routing(config))

        routed = execute_routing(sqlite_engine, config, secrets_for(sim))

        assert routed.errors == [] and routed.failed == {} and routed.done == {"add_to_campaign": 650}
        with unit_of_work(sqlite_engine) as session:
            refs = {a.crm_ref for a in session.scalars(select(RoutingAction))}
        members = {store._membership[(campaign.id, i)] for i in ids}  # noqa: SLF001
        assert refs == members
    finally:
        sim.stop()
