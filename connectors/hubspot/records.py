"""HubSpot objects → normalised leads and activities (pure functions, no I/O).

A lead is a contact plus its primary company (``associatedcompanyid``): the contact's own
values win, the company fills what the contact lacks; the head count comes from the company
(contacts only carry a bucket such as ``100-500``). ``raw`` keeps both payloads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from config.app_config import HUBSPOT_CLOSED_STATUSES, HUBSPOT_CONVERTED_STAGES
from connectors.base import ActivityRecord, LeadRecord, Merge
from connectors.errors import BadRecord
from connectors.hubspot.settings import (
    CONVERTED_STAGES,
    EMAIL_EVENT_TYPES,
    EMPLOYEE_BUCKETS,
    EVENT_TYPE_SUFFIXES,
)
from connectors.lifecycle import lifecycle_of
from connectors.normalise import (
    clean_email,
    clean_employees,
    clean_revenue,
    clean_text,
    company_key,
    mapped_attributes,
    require_id,
)
from connectors.timeparse import parse_crm_datetime, parse_optional_datetime
from store.models import LeadLifecycle


def props(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("properties")
    return value if isinstance(value, dict) else {}


def object_stamp(obj: dict[str, Any], modified_property: str) -> tuple[str, datetime]:
    """(id, modification time) of a CRM object: the cursor of a search page."""
    crm_id = require_id(obj.get("id"), "id")
    value = props(obj).get(modified_property) or obj.get("updatedAt")
    return crm_id, parse_crm_datetime(value, modified_property)


def company_id_of(contact: dict[str, Any]) -> str | None:
    value = clean_text(props(contact).get("associatedcompanyid"), 64)
    return value if value and value.isdigit() else None


def contact_lifecycle(contact: dict[str, Any],
                      closed_statuses: frozenset[str] = frozenset(HUBSPOT_CLOSED_STATUSES),
                      converted_stages: frozenset[str] = frozenset(HUBSPOT_CONVERTED_STAGES)) -> LeadLifecycle:
    """A contact's lifecycle from ``archived``, ``lifecyclestage`` and ``hs_lead_status``."""
    p = props(contact)
    stage = (clean_text(p.get("lifecyclestage")) or "").lower()
    return lifecycle_of(deleted=bool(contact.get("archived")), merged_into=None,
                        converted=stage in CONVERTED_STAGES or stage in converted_stages,
                        closed=clean_text(p.get("hs_lead_status"), 64) in closed_statuses)


def lead_record(contact: dict[str, Any], company: dict[str, Any] | None, field_map: dict[str, str],
                closed_statuses: frozenset[str] = frozenset(HUBSPOT_CLOSED_STATUSES),
                converted_stages: frozenset[str] = frozenset(HUBSPOT_CONVERTED_STAGES)) -> LeadRecord:
    """Normalise a contact (archived ones included: ``is_deleted``) with its company's firmographics.

    Its lifecycle: deleted (archived; merged once a merge names it), converted (``lifecyclestage``
    in ``converted_stages``, or the stages training counts as a conversion), closed
    (``hs_lead_status`` in ``closed_statuses``) or open.
    """
    crm_id, modified = object_stamp(contact, "lastmodifieddate")
    p = props(contact)
    c = props(company) if company else {}
    created = parse_crm_datetime(p.get("createdate") or contact.get("createdAt"), "createdate")
    email = clean_email(p.get("email"))
    name = clean_text(p.get("company")) or clean_text(c.get("name"))
    employees = clean_employees(c.get("numberofemployees"), "company.numberofemployees")
    if employees is None:
        employees = EMPLOYEE_BUCKETS.get(clean_text(p.get("numemployees")) or "")
    revenue = clean_revenue(p.get("annualrevenue"), "annualrevenue")
    if revenue is None:
        revenue = clean_revenue(c.get("annualrevenue"), "company.annualrevenue")
    stage = (clean_text(p.get("lifecyclestage")) or "").lower()
    converted = stage in CONVERTED_STAGES
    converted_at = None
    if converted:
        converted_at = (parse_optional_datetime(p.get("hs_lifecyclestage_opportunity_date"),
                                                "hs_lifecyclestage_opportunity_date")
                        or parse_optional_datetime(p.get("hs_lifecyclestage_customer_date"),
                                                   "hs_lifecyclestage_customer_date"))
    lead_status = clean_text(p.get("hs_lead_status"), 64)
    archived = bool(contact.get("archived"))
    archived_at = parse_optional_datetime(contact.get("archivedAt"), "archivedAt") if archived else None
    source: dict[str, Any] = dict(p)
    source.update({f"company.{k}": v for k, v in c.items()})
    return LeadRecord(
        crm_id=crm_id,
        crm_created_at=created,
        crm_modified_at=modified,
        email=email,
        first_name=clean_text(p.get("firstname")),
        last_name=clean_text(p.get("lastname")),
        title=clean_text(p.get("jobtitle")),
        company=name,
        company_key=company_key(name, email),
        industry=clean_text(p.get("industry"), 128) or clean_text(c.get("industry"), 128),
        employees=employees,
        annual_revenue=revenue,
        country=clean_text(p.get("country"), 128) or clean_text(c.get("country"), 128),
        lead_source=clean_text(p.get("hs_analytics_source_data_1"), 128)
        or clean_text(p.get("hs_analytics_source"), 128),
        campaign=clean_text(p.get("hs_analytics_first_touch_converting_campaign")),
        status=lead_status,
        owner_crm_id=clean_text(p.get("hubspot_owner_id"), 64),
        is_converted=converted,
        converted_at=converted_at,
        is_deleted=archived,
        deleted_at=(archived_at or modified) if archived else None,
        merged_into_crm_id=None,
        attributes=mapped_attributes(source, field_map),
        raw=lead_raw(contact, company),
        lifecycle=contact_lifecycle(contact, closed_statuses, converted_stages),
    )


def lead_raw(contact: dict[str, Any], company: dict[str, Any] | None) -> dict[str, Any]:
    """``lead.raw`` for HubSpot: both payloads, and the company id the engine looks leads up by."""
    return {"contact": contact, "company": company, "company_id": company_id_of(contact)}


def merges_of(contact: dict[str, Any], at: datetime) -> list[Merge]:
    """Contacts merged into this one (``hs_merged_object_ids``, ``;``-separated)."""
    survivor = str(contact.get("id"))
    value = props(contact).get("hs_merged_object_ids") or ""
    return [Merge(loser, survivor, at) for loser in str(value).split(";") if loser.strip().isdigit()
            and loser.strip() != survivor]


def engagement_record(object_type: str, obj: dict[str, Any], contact_id: str | None) -> ActivityRecord:
    """Normalise an email, meeting or call engagement."""
    crm_id, modified = object_stamp(obj, "hs_lastmodifieddate")
    p = props(obj)
    occurred = parse_crm_datetime(p.get("hs_timestamp") or p.get("hs_createdate") or obj.get("createdAt"),
                                  "hs_timestamp")
    if object_type == "emails":
        kind = EMAIL_EVENT_TYPES.get((clean_text(p.get("hs_email_event_type")) or "SENT").upper(), "email_send")
        detail = clean_text(p.get("hs_email_subject"), 512)
    elif object_type == "meetings":
        kind = "webinar" if (clean_text(p.get("hs_activity_type")) or "").lower() == "webinar" else "meeting"
        detail = clean_text(p.get("hs_meeting_title"), 512)
    elif object_type == "calls":
        kind = "call"
        detail = clean_text(p.get("hs_call_title"), 512)
    else:
        raise BadRecord("unknown_type", f"engagement type {object_type!r}")
    return ActivityRecord(
        crm_id=f"{object_type}:{crm_id}",
        lead_crm_id=contact_id,
        type=kind,
        occurred_at=occurred,
        crm_modified_at=modified,
        detail=detail,
        campaign=None,
        is_deleted=bool(obj.get("archived")),
        raw=obj,
    )


def event_record(event: dict[str, Any]) -> ActivityRecord | None:
    """Normalise an Events API event (page visit, form, download, campaign response); None for
    event types leadscore does not score."""
    crm_id = require_id(event.get("id"), "id")
    event_type = str(event.get("eventType") or "")
    kind = next((name for suffix, name in EVENT_TYPE_SUFFIXES if event_type.endswith(suffix)), None)
    if kind is None:
        return None
    occurred = parse_crm_datetime(event.get("occurredAt"), "occurredAt")
    p = event.get("properties") if isinstance(event.get("properties"), dict) else {}
    assert isinstance(p, dict)
    detail = {
        "web_visit": p.get("hs_page_path") or p.get("hs_url"),
        "form_submit": p.get("hs_form_title"),
        "content_download": p.get("content_title"),
        "campaign_response": p.get("hs_campaign_name"),
    }[kind]
    object_id = clean_text(event.get("objectId"), 64)
    return ActivityRecord(
        crm_id=f"event:{crm_id}",
        lead_crm_id=object_id if str(event.get("objectType", "contact")).lower() in ("contact", "0-1") else None,
        type=kind,
        occurred_at=occurred,
        crm_modified_at=occurred,
        detail=clean_text(detail, 512),
        campaign=clean_text(p.get("hs_campaign_name")),
        is_deleted=False,
        raw=event,
    )
