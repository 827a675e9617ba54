"""Routing actions the CRM refused for good go again once the cause is fixed (`route --retry-failed`).

A hot lead owned by a rep who left gets no task (INACTIVE_OWNER_OR_USER); `leadscore status` says
why. Scoring plans actions only when a tier changes, so without a requeue the lead would stay
uncalled after the admin reactivates the rep.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from connectors.routing import execute_routing, plan_routing, requeue_failed_actions
from crmsim.app import CRMSim
from store.db import unit_of_work
from store.models import RoutingAction
from tests.connectors.test_writeback_support import (
    SCORED_AT,
    add_leads,
    app_config,
    running_sim,
    score,
    secrets_for,
    sf_lead_ids,
    sf_set_owners,
)

ROUTING = [{"to": "A", "actions": [{"type": "create_task", "subject": "Call hot lead", "connections": ["sf"]}]}]


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    yield from running_sim(120, 43)


def _tasks(sim: CRMSim, crm_id: str) -> list[dict[str, object]]:
    return [r.values for r in sim.salesforce.store.records["Task"].values()
            if r.values["WhoId"] == crm_id and "[leadscore #" in (r.values["Subject"] or "")]


def _actions(engine: Engine) -> list[tuple[int, str, str, int]]:
    with unit_of_work(engine) as session:
        return [tuple(r) for r in session.execute(  # type: ignore[misc]
            select(RoutingAction.lead_id, RoutingAction.to_tier, RoutingAction.status, RoutingAction.attempts)
            .order_by(RoutingAction.id))]


def test_a_task_refused_for_an_inactive_owner_goes_once_the_rep_is_back(sim: CRMSim, sqlite_engine: Engine) -> None:
    config = app_config(sim, ROUTING)
    left = sim.inactive_owner_ids[0]
    active = next(r.id for r in sim.salesforce.store.records["User"].values()
                  if r.values["IsActive"] and r.id not in sim.inactive_owner_ids)
    crm_ids = sf_lead_ids(sim, 3)
    owners = {crm_ids[0]: left, crm_ids[1]: active, crm_ids[2]: left}
    sf_set_owners(sim, owners)
    leads = add_leads(sqlite_engine, "sf", crm_ids, owners=owners)
    score(sqlite_engine, leads.values(), tier="A", hook=plan_routing(config))

    first = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert first.done == {"create_task": 1} and first.failed == {"INACTIVE_OWNER_OR_USER": 2}
    assert _tasks(sim, crm_ids[0]) == [] and len(_tasks(sim, crm_ids[1])) == 1

    # Nothing matches another reason; an unfixed cause fails again, once, with the same code.
    with unit_of_work(sqlite_engine) as session:
        assert requeue_failed_actions(session, reason="validation_rule") == {}
    with unit_of_work(sqlite_engine) as session:
        assert requeue_failed_actions(session, reason="INACTIVE_OWNER") == {"sf": 2}
    again = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert again.failed == {"INACTIVE_OWNER_OR_USER": 2} and again.done == {}

    # The admin reactivates the rep; the requeue (by the word `status` uses) sends both tasks.
    sim.salesforce.store.set_user_active(left)
    with unit_of_work(sqlite_engine) as session:
        assert requeue_failed_actions(session, reason="inactive_owner") == {"sf": 2}
    fixed = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert fixed.done == {"create_task": 2} and fixed.failed == {}
    assert [t["OwnerId"] for t in _tasks(sim, crm_ids[0])] == [left]
    assert len(_tasks(sim, crm_ids[1])) == 1  # the one done before is not sent again
    # Nothing left to requeue, and a further run sends nothing.
    with unit_of_work(sqlite_engine) as session:
        assert requeue_failed_actions(session) == {}
    assert execute_routing(sqlite_engine, config, secrets_for(sim)).done == {}


def test_only_a_leads_newest_action_of_its_kind_is_requeued(sim: CRMSim, sqlite_engine: Engine) -> None:
    """A → B → A: the first tier change's task failed, the second's was done. Requeueing the old
    one would give the lead a second task for the same hot spell."""
    config = app_config(sim, [{"to": "A", "actions": [
        {"type": "create_task", "subject": "Call hot lead", "connections": ["sf"], "repeat_after_days": 0}]}])
    left = sim.inactive_owner_ids[0]
    crm_id = sf_lead_ids(sim, 1)[0]
    sf_set_owners(sim, {crm_id: left})
    lead = add_leads(sqlite_engine, "sf", [crm_id], owners={crm_id: left})[crm_id]
    score(sqlite_engine, [lead], tier="A", hook=plan_routing(config))
    assert execute_routing(sqlite_engine, config, secrets_for(sim)).failed == {"INACTIVE_OWNER_OR_USER": 1}
    sim.salesforce.store.set_user_active(left)
    for day, tier in ((1, "B"), (2, "A")):
        score(sqlite_engine, [lead], tier=tier, hook=plan_routing(config), when=SCORED_AT + timedelta(days=day))
    assert execute_routing(sqlite_engine, config, secrets_for(sim)).done == {"create_task": 1}
    with unit_of_work(sqlite_engine) as session:
        assert requeue_failed_actions(session) == {}
    assert [a[2] for a in _actions(sqlite_engine)] == ["failed", "done"]
    assert len(_tasks(sim, crm_id)) == 1
