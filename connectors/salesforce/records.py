"""Salesforce records → normalised leads and activities (pure functions, no I/O).

Each ``*_record`` function raises :class:`BadRecord` when a record cannot be normalised; the
stream reader turns that into a quarantine entry and carries on with the rest of the page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from config.app_config import SALESFORCE_CLOSED_STATUSES
from connectors.actions import MARKER_RE
from connectors.base import NEVER_RESPONDED, ROUTING_TASK, ActivityRecord, LeadRecord
from connectors.errors import BadRecord
from connectors.lifecycle import lifecycle_of
from connectors.normalise import (
    clean_bool,
    clean_email,
    clean_employees,
    clean_revenue,
    clean_text,
    company_key,
    mapped_attributes,
    require_id,
)
from connectors.salesforce.settings import EVENT_TYPE_MAP, LEAD_ID_PREFIX, TASK_SUBTYPE_MAP, TASK_TYPE_MAP
from connectors.timeparse import parse_crm_datetime, parse_optional_datetime
from store.models import LeadLifecycle


def raw_payload(record: dict[str, Any]) -> dict[str, Any]:
    """The record as received, minus the ``attributes`` envelopes (type and URL) of it and of its
    parent objects (``Campaign``): Bulk 2.0 CSV has no such envelopes, and both paths store one raw."""
    return {k: raw_payload(v) if isinstance(v, dict) else v for k, v in record.items() if k != "attributes"}


def stamps(record: dict[str, Any]) -> tuple[str, datetime]:
    """(Id, SystemModstamp) of any record; the cursor of the page is built from these."""
    return require_id(record.get("Id")), parse_crm_datetime(record.get("SystemModstamp"), "SystemModstamp")


def lead_lifecycle(record: dict[str, Any],
                   closed_statuses: frozenset[str] = frozenset(SALESFORCE_CLOSED_STATUSES)) -> LeadLifecycle:
    """A Lead's lifecycle from ``IsDeleted``, ``MasterRecordId``, ``IsConverted`` and ``Status``."""
    deleted = clean_bool(record.get("IsDeleted"))
    master = clean_text(record.get("MasterRecordId"), 64)
    return lifecycle_of(deleted=deleted, merged_into=master, converted=clean_bool(record.get("IsConverted")),
                        closed=clean_text(record.get("Status"), 64) in closed_statuses)


def lead_record(record: dict[str, Any], field_map: dict[str, str],
                closed_statuses: frozenset[str] = frozenset(SALESFORCE_CLOSED_STATUSES)) -> LeadRecord:
    """Normalise a Lead (deleted and merged leads included: ``IsDeleted``/``MasterRecordId``).

    Its lifecycle: merged (deleted with a ``MasterRecordId``), deleted, converted
    (``IsConverted``), closed (``Status`` in ``closed_statuses``) or open.
    """
    crm_id, modified = stamps(record)
    created = parse_crm_datetime(record.get("CreatedDate"), "CreatedDate")
    email = clean_email(record.get("Email"))
    company = clean_text(record.get("Company"))
    deleted = clean_bool(record.get("IsDeleted"))
    converted = clean_bool(record.get("IsConverted"))
    master = clean_text(record.get("MasterRecordId"), 64)
    status = clean_text(record.get("Status"), 64)
    return LeadRecord(
        crm_id=crm_id,
        crm_created_at=created,
        crm_modified_at=modified,
        email=email,
        first_name=clean_text(record.get("FirstName")),
        last_name=clean_text(record.get("LastName")),
        title=clean_text(record.get("Title")),
        company=company,
        company_key=company_key(company, email),
        industry=clean_text(record.get("Industry"), 128),
        employees=clean_employees(record.get("NumberOfEmployees"), "NumberOfEmployees"),
        annual_revenue=clean_revenue(record.get("AnnualRevenue"), "AnnualRevenue"),
        country=clean_text(record.get("Country"), 128),
        lead_source=clean_text(record.get("LeadSource"), 128),
        campaign=None,
        status=status,
        owner_crm_id=clean_text(record.get("OwnerId"), 64),
        is_converted=converted,
        converted_at=parse_optional_datetime(record.get("ConvertedDate"), "ConvertedDate") if converted else None,
        is_deleted=deleted,
        deleted_at=modified if deleted else None,
        merged_into_crm_id=master if deleted else None,
        attributes=mapped_attributes(record, field_map),
        raw=raw_payload(record),
        lifecycle=lead_lifecycle(record, closed_statuses),
    )


def _lead_ref(value: Any) -> str | None:
    text = clean_text(value, 64)
    return text if text and text.startswith(LEAD_ID_PREFIX) else None


def _who_activity(record: dict[str, Any], crm_id: str, modified: datetime, kind: str,
                  occurred: datetime) -> ActivityRecord:
    """An activity attached to a lead through ``WhoId`` (Tasks and Events share this shape)."""
    return ActivityRecord(
        crm_id=crm_id,
        lead_crm_id=_lead_ref(record.get("WhoId")),
        type=kind,
        occurred_at=occurred,
        crm_modified_at=modified,
        detail=clean_text(record.get("Description") or record.get("Subject"), 512),
        campaign=None,
        is_deleted=clean_bool(record.get("IsDeleted")),
        raw=raw_payload(record),
    )


def task_record(record: dict[str, Any]) -> ActivityRecord | None:
    """Normalise a Task; None for tasks that are not engagement (e.g. a to-do created by routing)."""
    crm_id, modified = stamps(record)
    kind = TASK_TYPE_MAP.get((clean_text(record.get("Type")) or "").lower())
    if kind is None:
        kind = TASK_SUBTYPE_MAP.get((clean_text(record.get("TaskSubtype")) or "").lower())
    if kind is None:
        return None
    occurred = (parse_optional_datetime(record.get("CompletedDateTime"), "CompletedDateTime")
                or parse_optional_datetime(record.get("ActivityDate"), "ActivityDate")
                or parse_crm_datetime(record.get("CreatedDate"), "CreatedDate"))
    return _who_activity(record, crm_id, modified, kind, occurred)


def skip_reason(stream: str, record: dict[str, Any]) -> str:
    """Why a record of ``stream`` normalised to None is not stored (the sync report counts these)."""
    kind = clean_text(record.get("Type"))
    if stream == "tasks":
        if MARKER_RE.search(str(record.get("Subject") or "")):
            return ROUTING_TASK
        subtype = clean_text(record.get("TaskSubtype"))
        return (f"Task Type {kind!r} is not an engagement type" if kind else "Task without Type") + (
            f" (TaskSubtype {subtype!r})" if subtype else "")
    if stream == "events":
        return f"Event Type {kind!r} is not Meeting, Webinar or Call" if kind else "Event without Type"
    if stream == "campaign_members":
        return NEVER_RESPONDED
    return f"{stream} record not stored"


def event_record(record: dict[str, Any]) -> ActivityRecord | None:
    """Normalise an Event (meeting, webinar, call); None for other calendar entries."""
    crm_id, modified = stamps(record)
    kind = EVENT_TYPE_MAP.get((clean_text(record.get("Type")) or "").lower())
    if kind is None:
        return None
    occurred = (parse_optional_datetime(record.get("StartDateTime"), "StartDateTime")
                or parse_optional_datetime(record.get("ActivityDateTime"), "ActivityDateTime")
                or parse_crm_datetime(record.get("CreatedDate"), "CreatedDate"))
    return _who_activity(record, crm_id, modified, kind, occurred)


def membership(record: dict[str, Any]) -> tuple[str, str, datetime] | None:
    """(lead id, campaign name, created) of a CampaignMember, for the lead's original campaign."""
    lead = _lead_ref(record.get("LeadId"))
    parent = record.get("Campaign")
    name = clean_text(parent.get("Name")) if isinstance(parent, dict) else None
    if lead is None or name is None or clean_bool(record.get("IsDeleted")):
        return None
    return lead, name, parse_crm_datetime(record.get("CreatedDate"), "CreatedDate")


def campaign_member_record(record: dict[str, Any]) -> ActivityRecord | None:
    """A responded CampaignMember as a ``campaign_response``; None for members that never responded.

    The response time is the member's creation when it was created responding (same day), else
    the start of ``FirstRespondedDate`` (Salesforce keeps only the date).
    """
    crm_id, modified = stamps(record)
    if not clean_bool(record.get("HasResponded")):
        return None
    created = parse_crm_datetime(record.get("CreatedDate"), "CreatedDate")
    responded = parse_optional_datetime(record.get("FirstRespondedDate"), "FirstRespondedDate")
    if responded is None:
        raise BadRecord("missing_timestamp", "HasResponded without FirstRespondedDate")
    occurred = created if created.date() == responded.date() else max(created, responded)
    parent = record.get("Campaign")
    name = parent.get("Name") if isinstance(parent, dict) else None
    return ActivityRecord(
        crm_id=crm_id,
        lead_crm_id=_lead_ref(record.get("LeadId")),
        type="campaign_response",
        occurred_at=occurred,
        crm_modified_at=modified,
        detail=clean_text(record.get("Status"), 512),
        campaign=clean_text(name) or clean_text(record.get("CampaignId"), 64),
        is_deleted=clean_bool(record.get("IsDeleted")),
        raw=raw_payload(record),
    )
