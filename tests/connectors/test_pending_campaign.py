"""A campaign membership read before its lead (the lead was modified after the sync plan's clock,
so a later plan reads it) waits for the lead and sets its campaign when it arrives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connectors.base import LeadRecord
from connectors.page_writer import apply_lead_campaigns, upsert_leads
from store.models import Lead, PendingCampaign
from tests.factories import make_connection

CREATED = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def _lead(crm_id: str, modified: datetime) -> LeadRecord:
    # Salesforce's Lead carries no campaign: it comes from the CampaignMember created with it.
    return LeadRecord(crm_id=crm_id, crm_created_at=CREATED, crm_modified_at=modified, email=f"{crm_id}@acme.com",
                      company="Acme", lead_source="Web")


def test_a_membership_read_before_its_lead_sets_the_campaign_when_the_lead_arrives(any_session: Session) -> None:
    session = any_session
    conn = make_connection(session)
    now = datetime.now(UTC)
    # This plan's leads unit read L1 (modified before its clock) but not L2 (modified after it);
    # its campaign_members unit then reads both leads' memberships, and one of L2's later ones.
    upsert_leads(session, conn.id, [_lead("L1", CREATED)], now)
    apply_lead_campaigns(session, conn.id, [("L1", "Spring Webinar", CREATED), ("L2", "Trade Show", CREATED),
                                            ("L2", "Newsletter", CREATED + timedelta(days=9))], now)
    campaigns = dict(session.execute(select(Lead.crm_id, Lead.campaign)).tuples().all())
    assert campaigns == {"L1": "Spring Webinar"}
    assert session.scalar(select(func.count()).select_from(PendingCampaign)) == 2  # L2's, until L2 is stored
    # The next plan reads L2; its memberships are not read again.
    upsert_leads(session, conn.id, [_lead("L2", CREATED + timedelta(days=10))], now)
    lead = session.scalars(select(Lead).where(Lead.crm_id == "L2")).one()
    assert lead.campaign == "Trade Show"  # the membership created with the lead, not the later one
    assert lead.inputs_changed_at is not None
    assert session.scalar(select(func.count()).select_from(PendingCampaign)) == 0
    # Re-reading a membership of a stored lead changes nothing and leaves nothing waiting.
    apply_lead_campaigns(session, conn.id, [("L2", "Trade Show", CREATED)], now)
    assert session.scalar(select(func.count()).select_from(PendingCampaign)) == 0


def test_the_same_membership_read_twice_waits_once(any_session: Session) -> None:
    session = any_session
    conn = make_connection(session)
    now = datetime.now(UTC)
    for _ in range(2):  # an overlap or a resumed unit reads a page again
        apply_lead_campaigns(session, conn.id, [("L3", "Spring Webinar", CREATED)], now)
    assert session.scalar(select(func.count()).select_from(PendingCampaign)) == 1
    upsert_leads(session, conn.id, [_lead("L3", CREATED)], now)
    assert session.scalars(select(Lead.campaign).where(Lead.crm_id == "L3")).one() == "Spring Webinar"
