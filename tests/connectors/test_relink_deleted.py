"""A company's change re-derives its contacts' leads (their company fields are features); a
contact merged away in HubSpot must stay merged when that happens.

Before: the page writer rebuilt every stored lead at a changed company from its stored raw
contact, merged-away ones included. A merge learnt from the survivor's ``hs_merged_object_ids``
leaves the loser's raw contact as it was last read (live), so the rebuilt lead came back open
(rescored, written to, and every write refused with MERGED) while still naming its survivor.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from connectors.base import Merge
from connectors.page_writer import apply_merges
from connectors.sync import sync_connection
from store.db import unit_of_work
from store.models import Lead, LeadLifecycle
from tests.connectors.test_writeback_support import app_config, secrets_for, start_sim


def _state(engine: Engine, crm_id: str) -> tuple[bool, LeadLifecycle, str | None]:
    with unit_of_work(engine) as session:
        lead = session.scalars(select(Lead).where(Lead.crm_id == crm_id)).one()
        return lead.is_deleted, lead.lifecycle, lead.merged_into_crm_id


def test_a_merged_away_contact_stays_merged_when_its_company_changes(sqlite_engine: Engine) -> None:
    sim = start_sim(leads=200, seed=3)
    try:
        conn = next(c for c in app_config(sim).connections if c.kind == "hubspot")
        secrets = secrets_for(sim)[conn.name]
        assert sync_connection(sqlite_engine, conn, secrets).status == "succeeded"
        with unit_of_work(sqlite_engine) as session:
            leads = session.scalars(select(Lead).where(Lead.is_deleted.is_(False)).order_by(Lead.id)).all()
            lead = next(lead for lead in leads if (lead.raw or {}).get("company_id"))
            crm_id, company_id, connection_id = lead.crm_id, str(lead.raw["company_id"]), lead.connection_id
            winner = next(other.crm_id for other in leads if other.crm_id != crm_id)
            # What the sync does when the survivor's hs_merged_object_ids names this contact.
            apply_merges(session, connection_id, [Merge(crm_id, winner, datetime.now(UTC))], datetime.now(UTC))
        merged = _state(sqlite_engine, crm_id)
        assert merged == (True, LeadLifecycle.merged, winner)

        sim.world.clock.advance(timedelta(minutes=5))
        sim.hubspot.store.api_update("companies", company_id, {"numberofemployees": "4321"})
        assert sync_connection(sqlite_engine, conn, secrets).status == "succeeded"

        assert _state(sqlite_engine, crm_id) == merged  # before: (False, open, winner)
        with unit_of_work(sqlite_engine) as session:  # the company's change did reach its live contacts
            colleagues = session.scalars(select(Lead).where(Lead.is_deleted.is_(False))).all()
            at_company = [c for c in colleagues if (c.raw or {}).get("company_id") == company_id]
            assert at_company and all(c.employees == 4321 for c in at_company)
    finally:
        sim.stop()
