"""Shared set-up for the write-back, routing and setup tests (no tests here).

A running crmsim, connection configs pointing at it, and store rows (connection, lead, score,
outbox) for leads that exist in crmsim, created through the ORM the way scoring creates them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from config.app_config import AppConfig, ConnectionConfig
from connectors.base import ConnectionSecrets
from connectors.hubspot.records import contact_lifecycle
from connectors.salesforce.records import lead_lifecycle
from crmsim.app import CRMSim
from scoring.service import outbox_payload, payload_hash
from store.db import unit_of_work
from store.models import Connection, Lead, LeadLifecycle, LeadScore, Outbox

SCORED_AT = datetime(2026, 3, 2, 9, 30, 15, tzinfo=UTC)
_seq = itertools.count(1)


def start_sim(leads: int = 60, seed: int = 7, faults: str | None = None) -> CRMSim:
    """A small, fast crmsim (few activities, short history)."""
    return CRMSim(leads=leads, seed=seed, admin=False, activity_scale=0.05, history_days=60,
                  faults=faults).start()


def sf_conn(sim: CRMSim, name: str = "sf") -> ConnectionConfig:
    info = sim.info()["salesforce"]
    return ConnectionConfig(name=name, kind="salesforce", instance_url=info["instance_url"],
                            ca_bundle=info["ca_bundle"], login_via_instance=True,
                            session_id_env="LEADSCORE_TEST_SF_SESSION")


def hs_conn(sim: CRMSim, name: str = "hs") -> ConnectionConfig:
    info = sim.info()["hubspot"]
    return ConnectionConfig(name=name, kind="hubspot", host=info["host"],
                            access_token_env="LEADSCORE_TEST_HS_TOKEN")


def secrets_for(sim: CRMSim) -> dict[str, ConnectionSecrets]:
    info = sim.info()
    return {"sf": ConnectionSecrets(session_id=info["salesforce"]["session_id"]),
            "hs": ConnectionSecrets(access_token=info["hubspot"]["access_token"])}


def app_config(sim: CRMSim, routing: list[dict[str, Any]] | None = None) -> AppConfig:
    return AppConfig.model_validate({
        "connections": [sf_conn(sim).model_dump(), hs_conn(sim).model_dump()],
        "routing": routing or [],
    })


def sf_lead_ids(sim: CRMSim, n: int | None = None) -> list[str]:
    """Open Leads, as a sync stores them: leadscore writes and routes no other (converted Leads
    refuse updates, and routing reads each lead's state from the CRM before it acts)."""
    store = sim.salesforce.store
    ids = sorted(r.id for r in store.records["Lead"].values()
                 if not r.deleted and lead_lifecycle(r.values) == LeadLifecycle.open)
    return ids if n is None else ids[:n]


def sf_active_lead_ids(sim: CRMSim, n: int | None = None) -> list[str]:
    """Open Leads whose owner is an active rep (a task for a Lead goes to its owner in the CRM,
    and Salesforce refuses one for a rep who left: crmsim deactivates one)."""
    store = sim.salesforce.store
    ids = [i for i in sf_lead_ids(sim) if store.get(i).values["OwnerId"] not in sim.inactive_owner_ids]  # type: ignore[union-attr]
    return ids if n is None else ids[:n]


def sf_set_owners(sim: CRMSim, owners: dict[str, str]) -> None:
    """Leads' owners in Salesforce (what a rep or an assignment rule set), as ``add_leads`` stores them:
    routing reads a lead's owner from the CRM right before its calls."""
    for crm_id, owner in owners.items():
        sim.salesforce.store.get(crm_id).values["OwnerId"] = owner  # type: ignore[union-attr]


def hs_contact_ids(sim: CRMSim, n: int | None = None) -> list[str]:
    """Open contacts (see :func:`sf_lead_ids`)."""
    store = sim.hubspot.store
    ids = sorted(str(r.id) for r in store.records["contacts"].values()
                 if not r.archived and contact_lifecycle({"properties": r.props}) == LeadLifecycle.open)
    return ids if n is None else ids[:n]


def ensure_connections(engine: Engine, names: Iterable[tuple[str, str]] = (("sf", "salesforce"),
                                                                           ("hs", "hubspot"))) -> dict[str, int]:
    out = {}
    with unit_of_work(engine) as session:
        for name, kind in names:
            row = session.scalar(select(Connection).where(Connection.name == name))
            if row is None:
                row = Connection(name=name, kind=kind)
                session.add(row)
                session.flush()
            out[name] = row.id
    return out


def add_leads(engine: Engine, connection: str, crm_ids: Iterable[str], emails: dict[str, str] | None = None,
              owners: dict[str, str] | None = None) -> dict[str, int]:
    """Lead rows for CRM records; {crm id: lead id}."""
    conns = ensure_connections(engine)
    out = {}
    with unit_of_work(engine) as session:
        for crm_id in crm_ids:
            lead = Lead(connection_id=conns[connection], crm_id=crm_id, email=(emails or {}).get(crm_id),
                        owner_crm_id=(owners or {}).get(crm_id),
                        crm_created_at=SCORED_AT - timedelta(days=30), crm_modified_at=SCORED_AT - timedelta(days=1),
                        attributes={}, raw={})
            session.add(lead)
            session.flush()
            out[crm_id] = lead.id
    return out


def score(engine: Engine, lead_ids: Iterable[int], *, score_value: int = 87, tier: str = "A",
          reasons: list[str] | None = None, model: str = "catboost-v1", when: datetime = SCORED_AT,
          hook: Any = None) -> list[int]:
    """A new current LeadScore and a pending Outbox row per lead, as scoring writes them;
    ``hook`` is called like scoring's tier_change_hook when the tier changed. Returns outbox ids."""
    reasons = reasons if reasons is not None else ["Visited pricing 3 times", "VP-level title"]
    out = []
    with unit_of_work(engine) as session:
        for lead_id in lead_ids:
            lead = session.get(Lead, lead_id)
            assert lead is not None
            previous = session.scalar(select(LeadScore).where(LeadScore.lead_id == lead_id,
                                                              LeadScore.is_current.is_(True)))
            if previous is not None:
                previous.is_current = False
                session.flush()
            current = LeadScore(lead_id=lead_id, probability=score_value / 100, score=score_value, tier=tier,
                                reasons=reasons, is_current=True, scored_at=when)
            session.add(current)
            session.flush()
            session.execute(
                update(Outbox).where(Outbox.lead_id == lead_id, Outbox.status == "pending")
                .values(status="superseded"), execution_options={"synchronize_session": False})
            payload = outbox_payload(score_value, tier, reasons, model, when)
            row = Outbox(connection_id=lead.connection_id, lead_id=lead_id, crm_id=lead.crm_id,
                         kind="score_fields", payload=payload, payload_hash=payload_hash(payload),
                         status="pending", lead_score_id=current.id, created_at=when, next_attempt_at=when)
            session.add(row)
            session.flush()
            out.append(row.id)
            if hook is not None and (previous is None or previous.tier != tier):
                hook(session, lead, previous, current)
    return out


def outbox_statuses(engine: Engine) -> dict[str, int]:
    with unit_of_work(engine) as session:
        rows = session.execute(select(Outbox.status)).scalars().all()
    counts: dict[str, int] = {}
    for status in rows:
        counts[status] = counts.get(status, 0) + 1
    return counts


def sf_api_writes(sim: CRMSim, field: str = "Lead_Score__c") -> dict[str, int]:
    """Writes per Lead id in crmsim's Salesforce write_log (API writes touching ``field``)."""
    counts: dict[str, int] = {}
    for entry in sim.salesforce.store.write_log:
        if entry["source"] == "api" and entry["object"] == "Lead" and field in entry["fields"]:
            counts[entry["id"]] = counts.get(entry["id"], 0) + 1
    return counts


def hs_api_writes(sim: CRMSim, prop: str = "leadscore_score") -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in sim.hubspot.store.write_log:
        if entry.source == "api" and entry.object_type == "contacts" and prop in entry.changed:
            counts[entry.object_id] = counts.get(entry.object_id, 0) + 1
    return counts


def running_sim(leads: int, seed: int) -> Iterator[CRMSim]:
    """A fixture's body: :func:`start_sim` with the leadscore_* HubSpot properties, stopped after."""
    sim = start_sim(leads=leads, seed=seed)
    create_hubspot_score_properties(sim)
    yield sim
    sim.stop()


def create_hubspot_score_properties(sim: CRMSim) -> None:
    """Every leadscore_* contact property, created directly in crmsim's store (what `crm setup` does)."""
    from config.app_config import HubSpotFields
    from connectors.hubspot.setup import hubspot_property_specs

    store = sim.hubspot.store
    for spec in hubspot_property_specs(HubSpotFields()):
        if store.property_def("contacts", spec["name"]) is None:
            store.create_property("contacts", dict(spec))
