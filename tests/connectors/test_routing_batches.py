"""Routing in the fewest calls: batches through sObject Collections in Composite and HubSpot batch APIs.

N actions of one type cost at most ceil(N/200) calls on Salesforce and ceil(N/100) on HubSpot; a
property-triggered HubSpot workflow costs none (the written tier property enrolls the contact).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from connectors.routing import execute_routing, plan_routing
from connectors.writeback import drain_outbox
from crmsim.app import CRMSim
from crmsim.faults import FaultPlan
from crmsim.salesforce.store import ValidationRule
from store.db import unit_of_work
from store.models import RoutingAction
from tests.connectors.test_writeback_support import (
    add_leads,
    app_config,
    hs_contact_ids,
    running_sim,
    score,
    secrets_for,
    sf_active_lead_ids,
    sf_api_writes,
    sf_lead_ids,
)

N_SF, N_HS = 250, 150
ROUTING: list[dict[str, Any]] = [{"to": "A", "actions": [
    {"type": "assign_owner", "queue": "SDR Queue", "connections": ["sf"]},
    {"type": "assign_owner", "round_robin": ["maya.alvarez@vendor.example", "tom.becker@vendor.example"],
     "connections": ["hs"]},
    {"type": "create_task", "subject": "Call hot lead", "due_hours": 4},
    {"type": "add_to_campaign", "campaign": "Nurture Track: Evaluators"},
    {"type": "enroll_workflow", "workflow_id": "1001"},  # trigger: property (the default)
]}]


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    yield from running_sim(900, 41)


def _ceil(n: int, size: int) -> int:
    return -(-n // size)


def _statuses(engine: Engine) -> dict[tuple[str, str], int]:
    with unit_of_work(engine) as session:
        return {(action, status): n for action, status, n in session.execute(
            select(RoutingAction.action, RoutingAction.status, func.count()).group_by(
                RoutingAction.action, RoutingAction.status))}


def test_routing_runs_in_batches_within_the_call_bounds(sim: CRMSim, sqlite_engine: Engine) -> None:
    config = app_config(sim, ROUTING)
    sf_ids, hs_ids = sf_lead_ids(sim, N_SF), hs_contact_ids(sim, N_HS)
    assert len(sf_ids) == N_SF and len(hs_ids) == N_HS
    leads = {**add_leads(sqlite_engine, "sf", sf_ids), **add_leads(sqlite_engine, "hs", hs_ids)}
    score(sqlite_engine, leads.values(), tier="A", score_value=92, hook=plan_routing(config))

    # Before the tier is written, a property-triggered workflow waits (nothing in HubSpot enrolls yet).
    first = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert first.failed == {} and first.errors == []
    assert first.done == {"assign_owner": N_SF + N_HS, "create_task": N_SF + N_HS, "add_to_campaign": N_SF}
    # Per action type: <= ceil(N/200) Salesforce calls, <= ceil(N/100) HubSpot calls; and the
    # leads' states read once per run: ceil(N/300) Salesforce queries, ceil(N/100) HubSpot reads.
    assert first.api_calls["sf"] <= 3 * _ceil(N_SF, 200) + _ceil(N_SF, 300)
    assert first.api_calls["hs"] <= 2 * _ceil(N_HS, 100) + _ceil(N_HS, 100)
    assert _statuses(sqlite_engine)[("enroll_workflow", "pending")] == N_HS
    assert first.awaiting_write == N_HS  # counted, so `route` says why they stay pending

    store = sim.salesforce.store
    queue_id = next(r.id for r in store.records["Group"].values() if r.values["Name"] == "SDR Queue")
    assert all(store.get(i).values["OwnerId"] == queue_id for i in sf_ids)  # type: ignore[union-attr]
    tasks = [r.values["WhoId"] for r in store.records["Task"].values() if "[leadscore #" in (r.values["Subject"] or "")]
    assert sorted(tasks) == sorted(sf_ids)  # one task per lead, none twice
    hs_store = sim.hubspot.store
    assert all(len(hs_store.associated("contacts", int(i), "tasks")) == 1 for i in hs_ids)

    # The tier lands with the score write-back; the next routing run marks the workflow actions done
    # without a single HubSpot call, and no v2 enrollment was made.
    drained = drain_outbox(sqlite_engine, config, secrets_for(sim))
    assert drained.failed == 0
    sim.reset_counts()
    second = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert second.done == {"enroll_workflow": N_HS} and second.api_calls.get("hs", 0) == 0
    assert hs_store.enrollments == []
    assert {k: v for k, v in _statuses(sqlite_engine).items() if k[1] != "done"} == {}

    # Nothing left: a third run changes nothing.
    third = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert third.done == {} and sum(third.api_calls.values()) == 0


def test_per_record_refusals_fail_that_action_only(sim: CRMSim, sqlite_engine: Engine) -> None:
    config = app_config(sim, [{"to": "A", "actions": [
        {"type": "create_task", "subject": "Call hot lead", "connections": ["sf"]},
        {"type": "set_property", "property": "Status", "value": "Working - Contacted", "connections": ["sf"]},
    ]}])
    sf_ids = sf_active_lead_ids(sim, 5)
    leads = add_leads(sqlite_engine, "sf", sf_ids)
    score(sqlite_engine, leads.values(), tier="A", hook=plan_routing(config))
    # The org's rules refuse both actions for one lead (its Task and its Status change).
    refused = sf_ids[0]
    sim.salesforce.store.validation_rules += [
        ValidationRule("Task_Needs_Consent", "Task", "No tasks without consent.", lambda v: v.get("WhoId") == refused),
        ValidationRule("Status_Locked", "Lead", "Status is locked.",
                       lambda v: v["Id"] == refused and v["Status"] == "Working - Contacted", ("Status",)),
    ]

    report = execute_routing(sqlite_engine, config, secrets_for(sim))

    assert report.done == {"create_task": 4, "set_property": 4}
    assert report.failed == {"FIELD_CUSTOM_VALIDATION_EXCEPTION": 2}
    with unit_of_work(sqlite_engine) as session:
        failed = list(session.scalars(select(RoutingAction).where(RoutingAction.status == "failed")))
    assert {a.lead_id for a in failed} == {leads[refused]}
    assert sorted(str(a.error) for a in failed) == [
        "FIELD_CUSTOM_VALIDATION_EXCEPTION: No tasks without consent.",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION: Status is locked."]
    assert all(a.attempts == 1 for a in failed)
    # Never retried: the next run sends nothing.
    again = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert again.done == {} and again.failed == {} and sum(again.api_calls.values()) == 0


def test_owner_changes_ride_in_the_score_write(sim: CRMSim, sqlite_engine: Engine) -> None:
    config = app_config(sim, [{"to": "A", "actions": [
        {"type": "assign_owner", "queue": "SDR Queue", "connections": ["sf"]},
        {"type": "create_task", "subject": "Call hot lead", "connections": ["sf"]},
    ]}])
    sf_ids = sf_lead_ids(sim, N_SF)
    leads = add_leads(sqlite_engine, "sf", sf_ids)
    score(sqlite_engine, leads.values(), tier="A", score_value=92, hook=plan_routing(config))
    sim.reset_counts()

    drained = drain_outbox(sqlite_engine, config, secrets_for(sim))

    sf = drained.connections["sf"]
    assert drained.records_written == N_SF and drained.failed == 0
    assert sf.routing.done == {"assign_owner": N_SF}
    assert sf.write_calls == 1 and sf.retry_calls == 0  # one Composite call: 200 + 50 Lead records, each
    # with OwnerId and the score; one look-up of the queue's id, one query of the 250 leads' states
    counts = sim.salesforce.call_counts()
    assert sum(n for label, n in counts.items() if label.startswith("POST composite")) == 1, counts
    assert sf.lookup_calls == 2 and sf.api_calls == 3
    store = sim.salesforce.store
    queue_id = next(r.id for r in store.records["Group"].values() if r.values["Name"] == "SDR Queue")
    assert all(store.get(i).values["OwnerId"] == queue_id for i in sf_ids)  # type: ignore[union-attr]
    assert _statuses(sqlite_engine) == {("assign_owner", "done"): N_SF, ("create_task", "pending"): N_SF}

    # Routing then creates the tasks only: ceil(N/200) collections in one Composite call.
    routed = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert routed.done == {"create_task": N_SF} and routed.failed == {}
    assert routed.api_calls["sf"] <= 1 + _ceil(N_SF, 1000) + 1  # look-ups (queues, campaigns) + the call
    assert sf_api_writes(sim, "OwnerId") == {i: 1 for i in sf_ids}


def test_a_record_refused_for_a_value_is_split(sim: CRMSim, sqlite_engine: Engine) -> None:
    """An org rule refuses the queue as owner for some leads: their score still lands (sent again
    alone), and the owner change then fails on its own with the CRM's code."""
    config = app_config(sim, [{"to": "A", "actions": [
        {"type": "assign_owner", "queue": "SDR Queue", "connections": ["sf"]}]}])
    sf_ids = sf_lead_ids(sim, 6)
    refused = set(sf_ids[:2])
    store = sim.salesforce.store
    queue_id = next(r.id for r in store.records["Group"].values() if r.values["Name"] == "SDR Queue")
    store.validation_rules.append(ValidationRule(
        "No_Queue_For_Key_Accounts", "Lead", "Key accounts stay with their owner.",
        lambda v: v["Id"] in refused and v["OwnerId"] == queue_id, ("OwnerId",)))
    leads = add_leads(sqlite_engine, "sf", sf_ids)
    score(sqlite_engine, leads.values(), tier="A", hook=plan_routing(config))

    drained = drain_outbox(sqlite_engine, config, secrets_for(sim))

    assert drained.records_written == 6 and drained.failed == 0
    assert set(sf_api_writes(sim)) == set(sf_ids)  # every score landed
    assert drained.connections["sf"].routing.done == {"assign_owner": 4}
    routed = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert routed.failed == {"FIELD_CUSTOM_VALIDATION_EXCEPTION": 2} and routed.done == {}
    assert {i for i in sf_ids if store.get(i).values["OwnerId"] == queue_id} == set(sf_ids) - refused  # type: ignore[union-attr]


def test_a_token_refused_midway_records_what_was_answered_and_gives_back_the_rest(
    sim: CRMSim, sqlite_engine: Engine
) -> None:
    """The contacts' batch update is answered, then the token expires and the tasks' batch create
    is refused whole (401): the updates are done, the tasks pending again with no attempt counted
    (the CRM applied nothing of a refused call), and the next run creates them in one call without
    looking any action up. They stayed "sending" before: every action of the batch, answered or
    not, was looked up one by one on the next run."""
    config = app_config(sim, [{"to": "A", "actions": [
        {"type": "set_property", "property": "hs_lead_status", "value": "OPEN", "connections": ["hs"]},
        {"type": "create_task", "subject": "Call hot lead", "connections": ["hs"]},
    ]}])
    hs_ids = hs_contact_ids(sim, 5)
    leads = add_leads(sqlite_engine, "hs", hs_ids)
    score(sqlite_engine, leads.values(), tier="A", hook=plan_routing(config))
    # Routing reads the contact properties (rule check) and the contacts' states, updates the
    # contacts, then creates the tasks: the token expires after the third of those calls.
    hs_store = sim.hubspot.store
    tasks_before = {i: len(hs_store.associated("contacts", int(i), "tasks")) for i in hs_ids}
    sim.hubspot.faults.set_plan(FaultPlan(expire_after=3))

    first = execute_routing(sqlite_engine, config, secrets_for(sim))

    assert len(first.errors) == 1 and "hs: AuthError" in first.errors[0], first.errors
    assert first.done == {"set_property": 5}
    assert {i: len(hs_store.associated("contacts", int(i), "tasks")) for i in hs_ids} == tasks_before
    with unit_of_work(sqlite_engine) as session:
        tasks = list(session.scalars(select(RoutingAction).where(RoutingAction.action == "create_task")))
    assert {(a.status, a.attempts) for a in tasks} == {("pending", 0)}
    assert all(a.error is not None and "EXPIRED_AUTHENTICATION" in a.error for a in tasks), [a.error for a in tasks]

    sim.hubspot.faults.set_plan(FaultPlan())
    sim.reset_counts()
    second = execute_routing(sqlite_engine, config, secrets_for(sim))  # the token in use now

    assert second.errors == [] and second.done == {"create_task": 5}
    calls = sim.hubspot.call_counts()
    assert calls.get("POST tasks/batch/create") == 1
    assert not any("search" in endpoint for endpoint in calls), calls  # nothing looked up
    assert {i: len(hs_store.associated("contacts", int(i), "tasks")) - n for i, n in tasks_before.items()} \
        == dict.fromkeys(hs_ids, 1)
    assert _statuses(sqlite_engine) == {("set_property", "done"): 5, ("create_task", "done"): 5}
