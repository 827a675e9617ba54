"""``assign_owner`` with ``overwrite: false`` keeps a rep's leads, against crmsim.

A lead a user owns (a rep working it) keeps that owner: planning leaves the assignment out when
the store says a user owns the lead; routing and the score write-back cancel it when the CRM says
so right before the call (a rep took the lead after the last sync). A lead in a queue (Salesforce)
or without an owner (HubSpot) is assigned. With ``overwrite`` left true, the preview counts the
assignments that would take leads from their reps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from connectors.routing import OWNER_KEPT, execute_routing, plan_routing, round_robin_pick
from connectors.writeback import drain_outbox
from crmsim.app import CRMSim
from scoring.pipeline import routing_preview
from store.db import unit_of_work
from store.models import Lead, LeadScore, RoutingAction
from tests.connectors.test_writeback_support import (
    add_leads,
    app_config,
    hs_contact_ids,
    running_sim,
    score,
    secrets_for,
    sf_lead_ids,
)

HS_OWNERS = ["maya.alvarez@vendor.example", "tom.becker@vendor.example"]


def _routing(overwrite: bool | None) -> list[dict[str, Any]]:
    keep = {} if overwrite is None else {"overwrite": overwrite}
    return [{"to": "A", "actions": [
        {"type": "assign_owner", "queue": "SDR Queue", "connections": ["sf"], **keep},
        {"type": "assign_owner", "round_robin": HS_OWNERS, "connections": ["hs"], **keep},
        {"type": "create_task", "subject": "Call hot lead", "due_hours": 4},
    ]}]


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    yield from running_sim(120, 17)


def _queue(sim: CRMSim, name: str) -> str:
    return next(r.id for r in sim.salesforce.store.records["Group"].values() if r.values["Name"] == name)


def _sf_owner(sim: CRMSim, crm_id: str) -> str:
    return str(sim.salesforce.store.get(crm_id).values["OwnerId"])  # type: ignore[union-attr]


def _hs_props(sim: CRMSim, crm_id: str) -> dict[str, Any]:
    return sim.hubspot.store.records["contacts"][int(crm_id)].props


def _statuses(engine: Engine) -> dict[int, dict[str, tuple[str, str | None]]]:
    with unit_of_work(engine) as session:
        out: dict[int, dict[str, tuple[str, str | None]]] = {}
        for a in session.scalars(select(RoutingAction).order_by(RoutingAction.id)):
            out.setdefault(a.lead_id, {})[a.action] = (str(a.status), a.error)
        return out


def _store_owners(engine: Engine) -> dict[str, str | None]:
    """The store's owner of each lead, by CRM id (what a preview and planning read)."""
    with unit_of_work(engine) as session:
        return {crm_id: owner for crm_id, owner in session.execute(select(Lead.crm_id, Lead.owner_crm_id))}


def _crm_owners(sim: CRMSim, w: dict[str, Any]) -> dict[str, str | None]:
    """The CRMs' owner of the same leads, as a sync would read them."""
    sf = {i: _sf_owner(sim, i) for i in w["sf_ids"]}
    hs = {i: (str(o) if (o := _hs_props(sim, i).get("hubspot_owner_id")) else None) for i in w["hs_ids"]}
    return {**sf, **hs}


def _world(sim: CRMSim, engine: Engine) -> dict[str, Any]:
    """Three Salesforce leads and three HubSpot contacts, as the store last synced them:
    ``rep``: a user owns it; ``queue`` / ``nobody``: in the Nurture Queue (Salesforce) or without an
    owner (HubSpot); ``taken``: the same at the sync, but a rep took it in the CRM since."""
    # Leads of active reps (crmsim deactivates one rep, as a real org has reps who left).
    sf_ids = [i for i in sf_lead_ids(sim) if _sf_owner(sim, i) not in sim.inactive_owner_ids][:3]
    hs_ids = [i for i in hs_contact_ids(sim) if _hs_props(sim, i).get("email")][:3]
    nurture = _queue(sim, "Nurture Queue")
    rep = {"sf": _sf_owner(sim, sf_ids[0]), "hs": str(_hs_props(sim, hs_ids[0])["hubspot_owner_id"])}
    assert rep["sf"].startswith("005") and rep["hs"].isdigit()
    for crm_id in sf_ids[1:]:
        sim.salesforce.store.get(crm_id).values["OwnerId"] = nurture  # type: ignore[union-attr]
    for crm_id in hs_ids[1:]:
        _hs_props(sim, crm_id)["hubspot_owner_id"] = None
    sf_leads = add_leads(engine, "sf", sf_ids, owners={sf_ids[0]: rep["sf"], sf_ids[1]: nurture, sf_ids[2]: nurture})
    hs_leads = add_leads(engine, "hs", hs_ids, emails={i: str(_hs_props(sim, i)["email"]) for i in hs_ids},
                         owners={hs_ids[0]: rep["hs"]})
    return {"sf_ids": sf_ids, "hs_ids": hs_ids, "sf": sf_leads, "hs": hs_leads, "rep": rep, "nurture": nurture}


def _rep_takes_the_third(sim: CRMSim, w: dict[str, Any]) -> None:
    """After the sync: a rep takes the third lead of each CRM (the store still says queue / nobody)."""
    sim.salesforce.store.get(w["sf_ids"][2]).values["OwnerId"] = w["rep"]["sf"]  # type: ignore[union-attr]
    _hs_props(sim, w["hs_ids"][2])["hubspot_owner_id"] = w["rep"]["hs"]


def test_overwrite_false_keeps_a_reps_leads_in_planning_and_in_the_crm(sim: CRMSim, sqlite_engine: Engine) -> None:
    config = app_config(sim, _routing(False))
    w = _world(sim, sqlite_engine)
    score(sqlite_engine, [*w["sf"].values(), *w["hs"].values()], tier="A", score_value=92, hook=plan_routing(config))

    planned = _statuses(sqlite_engine)
    # The lead a rep owns gets its hot-lead task; its assignment is recorded as cancelled, with
    # why (the lead's trail shows it), and never runs. The others get both, to run.
    for leads, ids, owner in ((w["sf"], w["sf_ids"], w["rep"]["sf"]), (w["hs"], w["hs_ids"], w["rep"]["hs"])):
        assert planned[leads[ids[0]]] == {"assign_owner": ("cancelled", f"{OWNER_KEPT} ({owner})"),
                                          "create_task": ("pending", None)}
        assert planned[leads[ids[1]]] == planned[leads[ids[2]]] == {"assign_owner": ("pending", None),
                                                                     "create_task": ("pending", None)}

    _rep_takes_the_third(sim, w)
    report = execute_routing(sqlite_engine, config, secrets_for(sim))

    assert report.errors == [] and report.failed == {}
    assert report.done == {"assign_owner": 2, "create_task": 6}
    assert report.owner_kept == 2 and report.cancelled == 2
    after = _statuses(sqlite_engine)
    for leads, ids, owner in ((w["sf"], w["sf_ids"], w["rep"]["sf"]), (w["hs"], w["hs_ids"], w["rep"]["hs"])):
        status, error = after[leads[ids[2]]]["assign_owner"]
        assert status == "cancelled" and error == f"{OWNER_KEPT} ({owner})"
    # In the CRMs: the queued lead went to the SDR Queue, the unowned contact to its round-robin
    # rep; the reps' leads kept their reps, and their tasks went to those reps.
    assert _sf_owner(sim, w["sf_ids"][1]) == _queue(sim, "SDR Queue")
    assert _sf_owner(sim, w["sf_ids"][0]) == _sf_owner(sim, w["sf_ids"][2]) == w["rep"]["sf"]
    owners = {o["email"]: o["id"] for o in sim.hubspot.store.owners.values()}
    assert _hs_props(sim, w["hs_ids"][1])["hubspot_owner_id"] == owners[round_robin_pick(HS_OWNERS, w["hs_ids"][1])]
    assert _hs_props(sim, w["hs_ids"][0])["hubspot_owner_id"] == w["rep"]["hs"]
    assert _hs_props(sim, w["hs_ids"][2])["hubspot_owner_id"] == w["rep"]["hs"]
    tasks = {r.values["WhoId"]: r.values["OwnerId"] for r in sim.salesforce.store.records["Task"].values()
             if "[leadscore #" in (r.values["Subject"] or "")}
    assert tasks[w["sf_ids"][0]] == tasks[w["sf_ids"][2]] == w["rep"]["sf"]
    # The store took the new owners from the CRM's answers (no sync since): the leads moved read
    # their new owner; the ones a rep took since the sync still read queue / nobody until it runs.
    stored = _store_owners(sqlite_engine)
    assert stored[w["sf_ids"][1]] == _queue(sim, "SDR Queue") and stored[w["sf_ids"][0]] == w["rep"]["sf"]
    assert stored[w["hs_ids"][1]] == _hs_props(sim, w["hs_ids"][1])["hubspot_owner_id"]
    assert stored[w["sf_ids"][2]] == w["nurture"] and stored[w["hs_ids"][2]] is None

    # `leadscore status` says why they were cancelled: two at planning, two right before the call.
    from scoring.monitoring.freshness import routing_words

    with unit_of_work(sqlite_engine) as session:
        assert routing_words(session) == "cancelled 4 (owner_kept 4), done 8"
    # `leadscore explain` (and the console's lead page, from the same call) tells why the lead kept its rep.
    from scoring.explain import explain_lead
    from worker.cli.scoring import _routing_lines

    with unit_of_work(sqlite_engine) as session:
        told = explain_lead(session, w["sf_ids"][2])
    task_ref = next(a["crm_ref"] for a in told["routing_actions"] if a["action"] == "create_task")
    assert str(task_ref).startswith("00T")
    assert _routing_lines(told["routing_actions"]) == [
        "routing: 2 actions planned by tier changes",
        f"  first score -> A: assign_owner cancelled ({OWNER_KEPT} ({w['rep']['sf']}))",
        f"  first score -> A: create_task done ({task_ref})",
    ]


def test_overwrite_false_holds_for_an_owner_change_riding_the_score_write(sim: CRMSim, sqlite_engine: Engine) -> None:
    config = app_config(sim, _routing(False))
    w = _world(sim, sqlite_engine)
    score(sqlite_engine, w["sf"].values(), tier="A", score_value=92, hook=plan_routing(config))
    _rep_takes_the_third(sim, w)

    drained = drain_outbox(sqlite_engine, config, secrets_for(sim))

    sf = drained.connections["sf"]
    assert drained.failed == 0 and sf.routing.done == {"assign_owner": 1} and sf.routing.owner_kept == 1
    assert _sf_owner(sim, w["sf_ids"][1]) == _queue(sim, "SDR Queue")
    assert _sf_owner(sim, w["sf_ids"][2]) == w["rep"]["sf"]
    assert _statuses(sqlite_engine)[w["sf"][w["sf_ids"][2]]]["assign_owner"][0] == "cancelled"
    assert _store_owners(sqlite_engine)[w["sf_ids"][1]] == _queue(sim, "SDR Queue")  # from the write's answer


def test_overwrite_left_true_moves_every_lead_and_the_preview_counts_the_reps_leads(
    sim: CRMSim, sqlite_engine: Engine,
) -> None:
    config = app_config(sim, _routing(None))
    w = _world(sim, sqlite_engine)
    score(sqlite_engine, [*w["sf"].values(), *w["hs"].values()], tier="B", score_value=60)

    with unit_of_work(sqlite_engine) as session:
        preview = routing_preview(session, config, "score", {"A": 50, "B": 30, "C": 10})
        assert session.scalar(select(LeadScore.id).where(LeadScore.tier == "A")) is None
    # Six leads to A, each with an assignment and a task; two of them owned by a rep.
    assert preview == {"leads": 6, "actions": {"assign_owner": 6, "create_task": 6}, "total": 12,
                       "reassigned_from_users": 2, "held": 0}

    score(sqlite_engine, [*w["sf"].values(), *w["hs"].values()], tier="A", score_value=92, hook=plan_routing(config))
    _rep_takes_the_third(sim, w)
    report = execute_routing(sqlite_engine, config, secrets_for(sim))
    assert report.done == {"assign_owner": 6, "create_task": 6} and report.owner_kept == 0
    assert _sf_owner(sim, w["sf_ids"][0]) == _sf_owner(sim, w["sf_ids"][2]) == _queue(sim, "SDR Queue")
    # Every lead moved: the store reads the owners the CRMs now hold, before any sync.
    assert {k: v for k, v in _store_owners(sqlite_engine).items() if k in _crm_owners(sim, w)} == _crm_owners(sim, w)

