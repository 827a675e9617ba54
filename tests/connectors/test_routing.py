"""Routing and nurture actions against crmsim: planned on tier changes, run exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from config.errors import ConfigError
from connectors.actions import NAMES_LISTED
from connectors.routing import action_marker, execute_routing, plan_routing, round_robin_pick, validate_routing
from connectors.routing_validation import routing_problems
from connectors.writeback import make_client
from crmsim.app import CRMSim
from scoring.monitoring.freshness import routing_words
from store.db import unit_of_work
from store.models import RoutingAction
from tests.connectors.test_writeback_support import (
    SCORED_AT,
    add_leads,
    app_config,
    hs_contact_ids,
    score,
    secrets_for,
    sf_lead_ids,
    start_sim,
)

HS_OWNERS = ["maya.alvarez@vendor.example", "tom.becker@vendor.example"]
ROUTING: list[dict[str, Any]] = [
    {"to": "A", "actions": [
        {"type": "assign_owner", "queue": "SDR Queue", "connections": ["sf"]},
        {"type": "assign_owner", "round_robin": HS_OWNERS, "connections": ["hs"]},
        {"type": "create_task", "subject": "Call hot lead", "due_hours": 4},
        {"type": "enroll_workflow", "workflow_id": "1001", "trigger": "enrollment"},
    ]},
    {"to": "D", "actions": [
        {"type": "pause_outreach"},
        {"type": "add_to_campaign", "campaign": "Nurture Track: Evaluators"},
    ]},
    {"to": "B", "from": "A", "actions": [
        {"type": "set_property", "property": "hs_lead_status", "value": "IN_PROGRESS", "connections": ["hs"]},
    ]},
]


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    sim = start_sim(leads=80, seed=21)
    yield sim
    sim.stop()


def _hs_emails(sim: CRMSim, ids: list[str]) -> dict[str, str]:
    contacts = sim.hubspot.store.records["contacts"]
    return {i: contacts[int(i)].props["email"] for i in ids}


def _sf_tasks(sim: CRMSim, lead_id: str) -> list[dict[str, Any]]:
    return [r.values for r in sim.salesforce.store.records["Task"].values()
            if r.values["WhoId"] == lead_id and "[leadscore #" in (r.values["Subject"] or "")]


def _hs_tasks(sim: CRMSim, contact_id: str) -> list[dict[str, str]]:
    store = sim.hubspot.store
    linked = store.associated("contacts", int(contact_id), "tasks")
    return [store.records["tasks"][task_id].props for task_id in linked]


def _actions(engine: Engine) -> list[RoutingAction]:
    with unit_of_work(engine) as session:
        return list(session.scalars(select(RoutingAction).order_by(RoutingAction.id)))


def test_tier_changes_trigger_the_configured_actions_once(sim: CRMSim, sqlite_engine: Engine) -> None:
    config = app_config(sim, ROUTING)
    hook = plan_routing(config)
    sf_ids = sf_lead_ids(sim, 3)
    hs_ids = [i for i in hs_contact_ids(sim) if sim.hubspot.store.records["contacts"][int(i)].props.get("email")][:3]
    # Each lead with the owner it has in the CRM, as a sync stores it.
    sf_owners = {i: str(sim.salesforce.store.get(i).values["OwnerId"]) for i in sf_ids}  # type: ignore[union-attr]
    hs_owners = {i: str(sim.hubspot.store.records["contacts"][int(i)].props.get("hubspot_owner_id") or "")
                 for i in hs_ids}
    sf_leads = add_leads(sqlite_engine, "sf", sf_ids, owners=sf_owners)
    hs_leads = add_leads(sqlite_engine, "hs", hs_ids, emails=_hs_emails(sim, hs_ids), owners=hs_owners)
    score(sqlite_engine, [sf_leads[sf_ids[0]], sf_leads[sf_ids[1]], hs_leads[hs_ids[0]], hs_leads[hs_ids[1]]],
          tier="A", score_value=90, hook=hook)
    score(sqlite_engine, [sf_leads[sf_ids[2]], hs_leads[hs_ids[2]]], tier="D", score_value=8, hook=hook)

    planned = _actions(sqlite_engine)
    # SF A: queue + task; HS A: round robin + task + workflow; D: pause (+ campaign on SF only).
    assert sorted((a.lead_id, a.action) for a in planned) == sorted(
        [(sf_leads[i], t) for i in sf_ids[:2] for t in ("assign_owner", "create_task")]
        + [(hs_leads[i], t) for i in hs_ids[:2] for t in ("assign_owner", "create_task", "enroll_workflow")]
        + [(sf_leads[sf_ids[2]], "pause_outreach"), (sf_leads[sf_ids[2]], "add_to_campaign"),
           (hs_leads[hs_ids[2]], "pause_outreach")])
    assert all(a.status == "pending" and a.from_tier is None for a in planned)

    report = execute_routing(sqlite_engine, config, secrets_for(sim))

    assert report.errors == [] and report.failed == {}
    assert report.done == {"assign_owner": 4, "create_task": 4, "enroll_workflow": 2, "pause_outreach": 2,
                           "add_to_campaign": 1}
    assert report.summary() == {"assigned": 4, "nurtured": 3, "paused": 2}
    sf_store = sim.salesforce.store
    queue_id = next(r.id for r in sf_store.records["Group"].values() if r.values["Name"] == "SDR Queue")
    task_ids = {(a.lead_id, a.action.split("#")[0]): a.id for a in _actions(sqlite_engine)}
    for crm_id in sf_ids[:2]:
        assert sf_store.get(crm_id).values["OwnerId"] == queue_id  # type: ignore[union-attr]
        tasks = _sf_tasks(sim, crm_id)
        assert len(tasks) == 1 and tasks[0]["Subject"].startswith("Call hot lead [leadscore #")
        assert tasks[0]["Status"] == "Not Started" and tasks[0]["Priority"] == "High"
        # The lead went to a queue (which cannot own a Task): not the previous rep's task, but
        # leadscore's own user's, on the lead for whoever takes it from the queue.
        assert sf_owners[crm_id].startswith("005")
        assert tasks[0]["OwnerId"] != sf_owners[crm_id] and tasks[0]["OwnerId"] == sf_store.default_user_id
        # What the rep reads: the change, the score and its reasons, then the rule.
        task_id = task_ids[(sf_leads[crm_id], "create_task")]
        assert tasks[0]["Description"] == (
            "leadscore put this lead in tier A on its first score (score 90 of 99).\n"
            "Why:\nVisited pricing 3 times\nVP-level title\n"
            f"Made by routing rule routing.0.actions.2 (leadscore action {task_id}).")
    nurtured = sf_store.get(sf_ids[2]).values  # type: ignore[union-attr]
    assert nurtured["Status"] == "Nurturing"
    campaign_id = next(r.id for r in sf_store.records["Campaign"].values()
                       if r.values["Name"] == "Nurture Track: Evaluators")
    assert (campaign_id, sf_ids[2]) in sf_store._membership  # noqa: SLF001 - crmsim's membership index
    hs_store = sim.hubspot.store
    owner_ids = {o["email"]: o["id"] for o in hs_store.owners.values()}
    for crm_id in hs_ids[:2]:
        expected = owner_ids[round_robin_pick(HS_OWNERS, crm_id)]
        assert hs_store.records["contacts"][int(crm_id)].props["hubspot_owner_id"] == expected
        tasks = _hs_tasks(sim, crm_id)
        assert len(tasks) == 1 and tasks[0]["hs_task_subject"].startswith("Call hot lead [leadscore #")
        # The task goes to the rep the same tier change assigned, not to the contact's former owner.
        assert tasks[0]["hubspot_owner_id"] == expected
        assert tasks[0]["hs_task_body"].startswith("leadscore put this lead in tier A on its first score "
                                                   "(score 90 of 99).\nWhy:\nVisited pricing 3 times\n")
    assert sorted(e["contactId"] for e in hs_store.enrollments) == sorted(hs_ids[:2])
    assert hs_store.records["contacts"][int(hs_ids[2])].props["hs_lead_status"] == "BAD_TIMING"
    actions = _actions(sqlite_engine)
    assert all(a.status == "done" and a.crm_ref and a.done_at for a in actions)
    task_refs = {a.crm_ref for a in actions if a.action == "create_task"}
    assert all(ref is not None and (ref.startswith("00T") or ref.isdigit()) for ref in task_refs)

    # Running again does nothing and calls nothing, however often.
    sim.reset_counts()
    for _ in range(2):
        again = execute_routing(sqlite_engine, config, secrets_for(sim))
        assert again.done == {}
    assert sim.call_counts()["total"] == {"salesforce": 0, "hubspot": 0}
    # Planning the same tier change again (a re-run of scoring's hook) adds nothing.
    with unit_of_work(sqlite_engine) as session:
        from store.models import Lead, LeadScore
        lead = session.get(Lead, hs_leads[hs_ids[0]])
        assert lead is not None
        current = session.scalar(select(LeadScore).where(LeadScore.lead_id == lead.id,
                                                         LeadScore.is_current.is_(True)))
        assert current is not None
        hook(session, lead, None, current)
    assert len(_actions(sqlite_engine)) == len(actions)

    # A -> B runs only the A->B rule (HubSpot only).
    score(sqlite_engine, [hs_leads[hs_ids[0]], sf_leads[sf_ids[0]]], tier="B", score_value=65, hook=hook)
    third = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert third.done == {"set_property": 1}
    assert hs_store.records["contacts"][int(hs_ids[0])].props["hs_lead_status"] == "IN_PROGRESS"
    assert len(_sf_tasks(sim, sf_ids[0])) == 1


def test_an_action_another_run_holds_is_counted_not_silently_left(sim: CRMSim, committing_pg_engine: Engine) -> None:
    """PostgreSQL: an action the write-back drain (or another route) holds is skipped, and counted,
    so `route` can say why it is still pending; the next run completes it."""
    config = app_config(sim, [{"to": "A", "actions": [{"type": "create_task", "subject": "Call hot lead"}]}])
    leads = add_leads(committing_pg_engine, "sf", sf_lead_ids(sim, 2))
    score(committing_pg_engine, leads.values(), tier="A", hook=plan_routing(config))
    held_id, free_id = (a.id for a in _actions(committing_pg_engine))
    with committing_pg_engine.connect() as other:
        other.execute(select(RoutingAction.id).where(RoutingAction.id == held_id).with_for_update())
        report = execute_routing(committing_pg_engine, config, secrets_for(sim))
        assert (report.riding, report.done) == (1, {"create_task": 1}), report.to_dict()
        other.rollback()
    assert {a.id: a.status for a in _actions(committing_pg_engine)} == {held_id: "pending", free_id: "done"}
    again = execute_routing(committing_pg_engine, config, secrets_for(sim))
    assert (again.riding, again.done) == (0, {"create_task": 1})


def test_an_overtaken_tier_change_is_superseded(sim: CRMSim, sqlite_engine: Engine) -> None:
    config = app_config(sim, ROUTING)
    hook = plan_routing(config)
    crm_id = sf_lead_ids(sim, 1)[0]
    leads = add_leads(sqlite_engine, "sf", [crm_id])
    score(sqlite_engine, leads.values(), tier="A", hook=hook)
    score(sqlite_engine, leads.values(), tier="D", score_value=5, hook=hook)
    # Before `route` runs, `status` does not count the A actions as work waiting like the others.
    with unit_of_work(sqlite_engine) as session:
        assert routing_words(session) == ("pending 4 (2 for a tier the lead has left since: `leadscore route` marks "
                                          "them superseded)")

    report = execute_routing(sqlite_engine, config, secrets_for(sim))

    assert report.superseded == 2
    assert report.done == {"pause_outreach": 1, "add_to_campaign": 1}
    assert _sf_tasks(sim, crm_id) == []


def test_an_interrupted_action_is_found_in_the_crm_not_repeated(sim: CRMSim, sqlite_engine: Engine) -> None:
    """The crash window: the CRM created the Task but the action was never marked done."""
    config = app_config(sim, [{"to": "A", "actions": [{"type": "create_task", "subject": "Call now"},
                                                      {"type": "add_to_campaign", "campaign": "Product Updates"}]}])
    sf_id = sf_lead_ids(sim, 1)[0]
    hs_id = hs_contact_ids(sim, 1)[0]
    leads = add_leads(sqlite_engine, "sf", [sf_id]) | add_leads(sqlite_engine, "hs", [hs_id])
    score(sqlite_engine, leads.values(), tier="A", hook=plan_routing(config))
    actions = {(a.lead_id, a.action): a for a in _actions(sqlite_engine)}
    sf_task = actions[(leads[sf_id], "create_task")]
    hs_task = actions[(leads[hs_id], "create_task")]
    member = actions[(leads[sf_id], "add_to_campaign")]
    # What a killed worker leaves: the effects exist in the CRM, the actions say "sending".
    sf_store, hs_store = sim.salesforce.store, sim.hubspot.store
    task_id = sf_store.api_create("Task", {"WhoId": sf_id, "Subject": f"Call now {action_marker(sf_task.id)}"})
    hs_task_rec = hs_store.api_create(
        "tasks", {"hs_task_subject": f"Call now {action_marker(hs_task.id)}", "hs_timestamp": "2026-03-02T00:00:00Z"},
        [{"to": {"id": hs_id}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]}])
    campaign_id = next(r.id for r in sf_store.records["Campaign"].values() if r.values["Name"] == "Product Updates")
    member_id = sf_store.api_create("CampaignMember", {"CampaignId": campaign_id, "LeadId": sf_id})
    with unit_of_work(sqlite_engine) as session:
        for action in (sf_task, hs_task, member):
            session.get(RoutingAction, action.id).status = "sending"  # type: ignore[union-attr]

    report = execute_routing(sqlite_engine, config, secrets_for(sim))

    assert report.recovered == 3
    assert report.done == {"create_task": 2, "add_to_campaign": 1}
    refs = {a.id: a.crm_ref for a in _actions(sqlite_engine)}
    assert refs[sf_task.id] == task_id
    assert refs[hs_task.id] == str(hs_task_rec.id)
    assert refs[member.id] == member_id
    assert len(_sf_tasks(sim, sf_id)) == 1
    assert len(_hs_tasks(sim, hs_id)) == 1


def test_a_duplicate_campaign_member_counts_as_done(sim: CRMSim, sqlite_engine: Engine) -> None:
    config = app_config(sim, [{"to": "D", "actions": [{"type": "add_to_campaign", "campaign": "Product Updates"}]}])
    sf_id = sf_lead_ids(sim, 1)[0]
    leads = add_leads(sqlite_engine, "sf", [sf_id])
    store = sim.salesforce.store
    campaign_id = next(r.id for r in store.records["Campaign"].values() if r.values["Name"] == "Product Updates")
    existing = store.api_create("CampaignMember", {"CampaignId": campaign_id, "LeadId": sf_id})
    score(sqlite_engine, leads.values(), tier="D", hook=plan_routing(config))

    report = execute_routing(sqlite_engine, config, secrets_for(sim))

    assert report.done == {"add_to_campaign": 1}
    assert [a.crm_ref for a in _actions(sqlite_engine)] == [existing]


@pytest.mark.parametrize(("action", "message"), [
    ({"type": "assign_owner", "queue": "Nope Queue", "connections": ["sf"]},
     "routing.0.actions.0.queue: no queue named 'Nope Queue' in connection sf"),
    ({"type": "add_to_campaign", "campaign": "Summer Gala"},
     "routing.0.actions.0.campaign: no campaign named 'Summer Gala' in connection sf"),
    ({"type": "enroll_workflow", "workflow_id": "999"},
     "routing.0.actions.0.workflow_id: no workflow '999' in connection hs"),
    ({"type": "assign_owner", "round_robin": ["ghost@vendor.example"], "connections": ["hs"]},
     "routing.0.actions.0.round_robin.0: no owner 'ghost@vendor.example' in connection hs"),
    ({"type": "set_property", "property": "hs_lead_status", "value": "HOT", "connections": ["hs"]},
     "routing.0.actions.0.property: 'HOT' is not an option of the contact property hs_lead_status"),
    ({"type": "set_property", "property": "Rating__c", "value": "Hot", "connections": ["sf"]},
     "routing.0.actions.0.property: Lead has no field 'Rating__c' in connection sf"),
    ({"type": "add_to_campaign", "campaign": "Product Updates", "connections": ["hs"]},
     "routing.0.actions.0.connections: add_to_campaign cannot run on hubspot connection 'hs'"),
])
def test_routing_naming_what_the_crm_lacks_is_refused(sim: CRMSim, sqlite_engine: Engine, action: dict[str, Any],
                                                      message: str) -> None:
    config = app_config(sim, [{"to": "A", "actions": [action]}])
    conns = {c.name: c for c in config.connections}
    secrets = secrets_for(sim)
    clients = {name: make_client(conns[name], secrets[name]) for name in conns}
    with pytest.raises(ConfigError) as caught:
        validate_routing(config, clients)
    assert str(caught.value).startswith(message)
    # execute_routing refuses before running anything.
    lead_ids = add_leads(sqlite_engine, "sf", sf_lead_ids(sim, 1)) | add_leads(sqlite_engine, "hs",
                                                                                  hs_contact_ids(sim, 1))
    score(sqlite_engine, lead_ids.values(), tier="A", hook=plan_routing(config))
    with pytest.raises(ConfigError):
        execute_routing(sqlite_engine, config, secrets)
    assert {a.status for a in _actions(sqlite_engine)} <= {"pending"}


def test_valid_routing_passes_validation(sim: CRMSim) -> None:
    config = app_config(sim, ROUTING)
    conns = {c.name: c for c in config.connections}
    secrets = secrets_for(sim)
    validate_routing(config, {name: make_client(conns[name], secrets[name]) for name in conns})


@pytest.mark.parametrize(("data", "message"), [
    ({"routing": [{"to": "E", "actions": [{"type": "pause_outreach"}]}]}, "cfg.yaml: routing.0.to: unknown tier 'E'"),
    ({"routing": [{"to": "A", "from": "Z", "actions": [{"type": "pause_outreach"}]}]},
     "cfg.yaml: routing.0.from: unknown tier 'Z'"),
    ({"tiers": {"thresholds": {"A": 50, "B": 60, "C": 35}}}, "cfg.yaml: tiers: thresholds must be ordered A > B > C"),
    ({"routing": [{"to": "A", "actions": [{"type": "create_task"}]}]},
     "cfg.yaml: routing.0.actions.0: create_task needs 'subject'"),
    ({"routing": [{"to": "A", "actions": [{"type": "create_task", "subject": "Call", "overwrite": False}]}]},
     "cfg.yaml: routing.0.actions.0: 'overwrite' is an option of assign_owner, not of create_task"),
])
def test_bad_routing_or_tiers_are_refused_at_load(data: dict[str, Any], message: str) -> None:
    from config.app_config import parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config(data, "cfg.yaml")
    assert str(caught.value).startswith(message)


def test_scoring_plans_the_configured_actions_through_the_hook(sqlite_session: Any) -> None:
    """The real scoring service calling plan_routing: one action row per configured action and tier change."""
    from config.app_config import AppConfig, TierConfig
    from scoring import registry
    from scoring.service import score_leads
    from store.models import LeadScore
    from tests.factories import BASE_TIME, make_connection, synthetic_population, synthetic_training

    config = AppConfig.model_validate({
        "connections": [{"name": "sf", "kind": "salesforce", "instance_url": "https://sf.invalid"}],
        "routing": [{"to": tier, "actions": [{"type": "create_task", "subject": f"tier {tier}"},
                                             {"type": "enroll_workflow", "workflow_id": "1"}]}  # HubSpot only
                    for tier in ("A", "B")] + [{"to": "D", "actions": [{"type": "pause_outreach"}]}],
    })
    conn = make_connection(sqlite_session, name="sf")
    synthetic_population(sqlite_session, leads=200, seed=3, connection=conn)
    result, tset = synthetic_training()
    registry.register(sqlite_session, result, train_window=tset.window, status="champion")

    score_leads(sqlite_session, as_of=BASE_TIME + timedelta(days=500), tier_change_hook=plan_routing(config),
                tier_default=TierConfig(mode="capacity", thresholds={"A": 10, "B": 20, "C": 30}))

    tiers = dict(sqlite_session.execute(select(LeadScore.lead_id, LeadScore.tier)
                                        .where(LeadScore.is_current.is_(True))).all())
    planned = sqlite_session.execute(select(RoutingAction.lead_id, RoutingAction.action, RoutingAction.to_tier,
                                            RoutingAction.status)).all()
    expected = sorted([(lead_id, "create_task", tier, "pending") for lead_id, tier in tiers.items() if tier in "AB"]
                      + [(lead_id, "pause_outreach", "D", "pending") for lead_id, tier in tiers.items() if tier == "D"])
    assert sorted(tuple(row) for row in planned) == expected
    assert set(tiers.values()) == {"A", "B", "C", "D"}


def test_a_lead_back_in_its_tier_within_the_repeat_window_gets_no_second_task(
    sim: CRMSim, sqlite_engine: Engine
) -> None:
    # A -> B -> A (a threshold tried and taken back): one owner change and one hot-lead task in the
    # CRM, whether routing ran between the flips or not; after repeat_after_days, a new task.
    config = app_config(sim, ROUTING)
    hook = plan_routing(config)
    ran_between, not_yet = sf_lead_ids(sim, 2)
    leads = add_leads(sqlite_engine, "sf", [ran_between, not_yet])
    start = SCORED_AT
    score(sqlite_engine, [leads[ran_between]], tier="A", score_value=90, hook=hook, when=start)
    first = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert first.done == {"assign_owner": 1, "create_task": 1}
    score(sqlite_engine, [leads[not_yet]], tier="A", score_value=90, hook=hook, when=start)
    for lead in leads.values():
        score(sqlite_engine, [lead], tier="B", score_value=70, hook=hook, when=start + timedelta(days=1))
        score(sqlite_engine, [lead], tier="A", score_value=91, hook=hook, when=start + timedelta(days=2))

    report = execute_routing(sqlite_engine, config, secrets_for(sim))

    assert report.errors == [] and report.failed == {}
    assert report.done == {"assign_owner": 1, "create_task": 1}  # the lead not routed before: its first A
    for crm_id in (ran_between, not_yet):
        assert len(_sf_tasks(sim, crm_id)) == 1
    assert sorted(a.action for a in _actions(sqlite_engine)) == ["assign_owner", "assign_owner", "create_task",
                                                                  "create_task"]

    # Eight days after the first A, back in A again: the guard's 7 days are over.
    score(sqlite_engine, [leads[ran_between]], tier="C", score_value=40, hook=hook, when=start + timedelta(days=8))
    score(sqlite_engine, [leads[ran_between]], tier="A", score_value=92, hook=hook, when=start + timedelta(days=9))
    later = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert later.done == {"assign_owner": 1, "create_task": 1}
    assert len(_sf_tasks(sim, ran_between)) == 2


def test_repeat_after_days_zero_routes_every_tier_change(sim: CRMSim, sqlite_engine: Engine) -> None:
    rules = [{"to": "A", "actions": [{"type": "create_task", "subject": "Call hot lead", "repeat_after_days": 0}]}]
    config = app_config(sim, rules)
    hook = plan_routing(config)
    crm_id = sf_lead_ids(sim, 1)[0]
    leads = add_leads(sqlite_engine, "sf", [crm_id])
    for day, tier in enumerate(("A", "B", "A")):
        score(sqlite_engine, leads.values(), tier=tier, hook=hook, when=SCORED_AT + timedelta(days=day))
        execute_routing(sqlite_engine, config, secrets_for(sim))
    assert len(_sf_tasks(sim, crm_id)) == 2


def test_a_task_waits_for_its_tier_changes_owner_assignment(sim: CRMSim, sqlite_engine: Engine) -> None:
    # The write-back may be carrying the assignment (riding the score write) while routing runs:
    # the task waits for it, then goes to the owner it set; a failed assignment leaves the owner.
    from connectors.routing import lead_refs
    from store.models import Lead

    config = app_config(sim, ROUTING)
    crm_id = sf_lead_ids(sim, 1)[0]
    lead_id = add_leads(sqlite_engine, "sf", [crm_id], owners={crm_id: "005PREVIOUS"})[crm_id]
    score(sqlite_engine, [lead_id], tier="A", score_value=90, hook=plan_routing(config))

    def task_ref() -> tuple[str | None, bool]:
        with unit_of_work(sqlite_engine) as session:
            actions = list(session.scalars(select(RoutingAction)))
            task = next(a for a in actions if a.action.startswith("create_task"))
            refs, waiting = lead_refs(session, [task], {lead_id: session.get(Lead, lead_id)})  # type: ignore[dict-item]
            return refs[task.id].owner_crm_id, task.id in waiting

    def assignment(status: str, crm_ref: str | None = None) -> None:
        with unit_of_work(sqlite_engine) as session:
            assign = next(a for a in session.scalars(select(RoutingAction)) if a.action.startswith("assign_owner"))
            assign.status, assign.crm_ref = status, crm_ref

    assert task_ref() == ("005PREVIOUS", True)  # pending: wait
    assignment("sending")
    assert task_ref() == ("005PREVIOUS", True)
    assignment("done", "00GQUEUE")
    assert task_ref() == ("00GQUEUE", False)  # the Salesforce router then leaves OwnerId to the API user
    assignment("failed")
    assert task_ref() == ("005PREVIOUS", False)


def test_a_rule_naming_a_missing_campaign_or_workflow_lists_what_the_crm_has(sim: CRMSim) -> None:
    """An admin trial typed a campaign's name wrong: the line said it was missing, not what to write.
    Now it lists what the CRM has, the closest name first."""
    config = app_config(sim, [{"to": "A", "actions": [{"type": "add_to_campaign", "campaign": "Monthly Newsleter"},
                                                      {"type": "enroll_workflow", "workflow_id": "999"},
                                                      {"type": "assign_owner", "queue": "SDR Queu",
                                                       "connections": ["sf"]}]}])
    conns = {c.name: c for c in config.connections}
    secrets = secrets_for(sim)
    # Every problem's line (`leadscore config check` prints them all; a run stops at the first).
    text = "\n".join(routing_problems(config, {name: make_client(conns[name], secrets[name]) for name in conns}))
    campaigns = {str(r.values["Name"]) for r in sim.salesforce.store.records["Campaign"].values()}
    assert "Monthly Newsletter" in campaigns and len(campaigns) > NAMES_LISTED  # else the test shows nothing
    assert ("no campaign named 'Monthly Newsleter' in connection sf (its campaigns: 'Monthly Newsletter', "
            in text), text
    assert f" and {len(campaigns) - NAMES_LISTED} more)" in text, text
    queues = sorted(str(r.values["Name"]) for r in sim.salesforce.store.records["Group"].values()
                    if r.values.get("Type") == "Queue")
    assert "SDR Queue" in queues and len(queues) <= NAMES_LISTED
    # A queue is taken by its Name or DeveloperName; the line lists the Names, the closest first.
    closest = ["SDR Queue"] + sorted(q for q in queues if q != "SDR Queue")
    assert f"no queue named 'SDR Queu' in connection sf (its queues: {', '.join(map(repr, closest))})" in text, text
    workflows = sim.hubspot.store.workflows
    assert workflows
    assert "no workflow '999' in connection hs (its workflows: " in text, text
    # A run refuses in one line with the first, and says where all three are listed.
    with pytest.raises(ConfigError) as caught:
        validate_routing(config, {name: make_client(conns[name], secrets[name]) for name in conns})
    first = text.splitlines()[0]
    assert str(caught.value) == f"{first} (and 2 more: `leadscore crm setup` lists them all)", caught.value
    for workflow_id, workflow in workflows.items():
        assert repr(f"{workflow_id} {workflow['name']}") in text, text
