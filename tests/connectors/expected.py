"""What the database must hold after syncing crmsim: derived from the simulators' record stores
with the test's own mapping tables (independent of the connector code), and compared row by row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from crmsim.app import CRMSim
from store.models import Activity, Connection, Lead, QuarantinedRecord

SF_TASK_TYPES = {"Email Sent": "email_send", "Email Opened": "email_open", "Email Clicked": "email_click",
                 "Call": "call", "Web Visit": "web_visit", "Form Submit": "form_submit",
                 "Content Download": "content_download"}
SF_EVENT_TYPES = {"Meeting": "meeting", "Webinar": "webinar"}
HS_EMAIL_TYPES = {"SENT": "email_send", "OPEN": "email_open", "CLICK": "email_click"}
HS_EVENT_TYPES = {"e_visited_page": "web_visit", "e_submitted_form": "form_submit"}


@dataclass
class Expected:
    leads: dict[str, dict[str, Any]] = field(default_factory=dict)
    activities: dict[str, dict[str, Any]] = field(default_factory=dict)
    quarantined: set[str] = field(default_factory=set)
    # Leads that may or may not be stored (HubSpot contacts merged away into a new record: stored
    # only if a sync saw them before the merge); checked when present.
    optional_leads: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Activity -> lead ids it may be linked to (its contact was merged into a new record: the link
    # leadscore read depends on whether it synced the engagement before or after the merge).
    lead_alternatives: dict[str, set[str]] = field(default_factory=dict)


def salesforce(sim: CRMSim) -> Expected:
    store = sim.salesforce.store
    out = Expected()
    with store.lock:
        original_campaign: dict[str, str] = {}
        for rec in store.records["CampaignMember"].values():
            lead = store.get(rec.values["LeadId"])
            campaign = store.get(rec.values["CampaignId"])
            if (lead is not None and campaign is not None and not rec.values["IsDeleted"]
                    and rec.values["CreatedDate"] == lead.values["CreatedDate"]):
                original_campaign[lead.id] = campaign.values["Name"]
        for rec in store.records["Lead"].values():
            v = rec.values
            employees, revenue = v.get("NumberOfEmployees"), v.get("AnnualRevenue")
            if (employees is not None and employees > 5_000_000) or (revenue is not None and revenue < 0):
                out.quarantined.add(rec.id)
                continue
            out.leads[rec.id] = {
                "is_deleted": bool(v["IsDeleted"]),
                "merged_into_crm_id": v.get("MasterRecordId") if v["IsDeleted"] else None,
                "crm_modified_at": v["SystemModstamp"],
                "email": (v.get("Email") or "").lower() or None,
                "employees": employees,
                "is_converted": bool(v["IsConverted"]),
            }
            if not v["IsDeleted"]:  # a merged-away lead keeps the campaign it had
                out.leads[rec.id]["campaign"] = original_campaign.get(rec.id)
        # Conversion moves activities to the lead's Contact: leadscore links them back to the lead.
        lead_of_contact = {rec.values["ConvertedContactId"]: rec.id for rec in store.records["Lead"].values()
                           if rec.values.get("ConvertedContactId")}
        for name, types, ref in (("Task", SF_TASK_TYPES, "WhoId"), ("Event", SF_EVENT_TYPES, "WhoId")):
            for rec in store.records[name].values():
                kind = types.get(rec.values.get("Type") or "")
                if kind is None:
                    continue
                who = rec.values[ref]
                out.activities[rec.id] = {"type": kind, "lead_crm_id": lead_of_contact.get(who, who),
                                          "is_deleted": bool(rec.values["IsDeleted"]),
                                          "crm_modified_at": rec.values["SystemModstamp"]}
        for rec in store.records["CampaignMember"].values():
            if rec.values["HasResponded"]:
                out.activities[rec.id] = {"type": "campaign_response", "lead_crm_id": rec.values["LeadId"],
                                          "is_deleted": bool(rec.values["IsDeleted"]),
                                          "crm_modified_at": rec.values["SystemModstamp"]}
    return out


def _ts(value: str) -> datetime:
    from connectors.timeparse import parse_crm_datetime

    return parse_crm_datetime(value)


def hubspot(sim: CRMSim) -> Expected:
    store = sim.hubspot.store
    out = Expected()
    with store.lock:
        merged_into: dict[str, str] = {}
        for rec in store.records["contacts"].values():
            for loser in (rec.props.get("hs_merged_object_ids") or "").split(";"):
                if loser:
                    merged_into[loser] = str(rec.id)
        # New-id merges: the old records are gone from the API; a lead synced before the merge is
        # marked deleted and merged into the new record (its other values as last read).
        for old_id in store.retired:
            out.optional_leads[str(old_id)] = {"is_deleted": True,
                                               "merged_into_crm_id": str(store.resolve_merged("contacts", old_id))}
        merged_from: dict[str, set[str]] = {}
        for old, new in merged_into.items():
            merged_from.setdefault(new, set()).add(old)
        for rec in store.records["contacts"].values():
            revenue = rec.props.get("annualrevenue")
            if revenue is not None and float(revenue) < 0:
                out.quarantined.add(str(rec.id))
                continue
            out.leads[str(rec.id)] = {
                "is_deleted": rec.archived,
                "merged_into_crm_id": merged_into.get(str(rec.id)),
                "crm_modified_at": _ts(rec.props["lastmodifieddate"]),
                "email": (rec.props.get("email") or "").lower() or None,
            }
        for object_type in ("emails", "meetings", "calls"):
            for rec in store.records[object_type].values():
                if rec.archived:
                    continue
                if object_type == "emails":
                    kind = HS_EMAIL_TYPES[rec.props.get("hs_email_event_type", "SENT")]
                elif object_type == "meetings":
                    kind = "webinar" if rec.props.get("hs_activity_type") == "Webinar" else "meeting"
                else:
                    kind = "call"
                # Archiving a contact hides its associations from the API, but the engagement does
                # not change, so leadscore keeps the link it read (the lead is marked deleted, the
                # activity stays attributed to it): expect every association ever made.
                contacts = sorted(store.associations.get((object_type, rec.id), {}).get("contacts", {}))
                key = f"{object_type}:{rec.id}"
                out.activities[key] = {
                    "type": kind, "lead_crm_id": str(contacts[0]) if contacts else None, "is_deleted": False,
                    "crm_modified_at": _ts(rec.props["hs_lastmodifieddate"])}
                if contacts and str(contacts[0]) in merged_from:
                    out.lead_alternatives[key] = {str(contacts[0])} | merged_from[str(contacts[0])]
        for event in store.events:
            kind = HS_EVENT_TYPES.get(event.event_type)
            if kind is None:
                kind = "content_download" if event.event_type.endswith("content_downloaded") else "campaign_response"
            out.activities[f"event:{event.id}"] = {"type": kind, "lead_crm_id": event.object_id,
                                                   "is_deleted": False, "crm_modified_at": event.occurred_at}
    return out


def assert_database_matches(engine: Engine, connection: str, expected: Expected) -> None:
    """Same leads and activities, same key values, no duplicates, lead links resolved."""
    with Session(engine) as session:
        conn_id = session.execute(select(Connection.id).where(Connection.name == connection)).scalar_one()
        leads = {row.crm_id: row for row in session.execute(
            select(Lead).where(Lead.connection_id == conn_id)).scalars()}
        missing = set(expected.leads) - set(leads)
        extra = set(leads) - set(expected.leads) - set(expected.optional_leads)
        assert not missing and not extra, f"missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}"
        for crm_id, want in expected.optional_leads.items():
            if crm_id in leads:
                got = {key: getattr(leads[crm_id], key) for key in want}
                assert got == want, f"merged-away lead {crm_id}: {got} != {want}"
        for crm_id, want in expected.leads.items():
            row = leads[crm_id]
            got = {key: getattr(row, key) for key in want}
            assert got == want, f"lead {crm_id}: {got} != {want}"
            assert row.inputs_hash is not None or row.merged_into_crm_id is not None
        activities = {row.crm_id: row for row in session.execute(
            select(Activity).where(Activity.connection_id == conn_id)).scalars()}
        assert set(activities) == set(expected.activities), (
            f"missing {sorted(set(expected.activities) - set(activities))[:5]}, "
            f"extra {sorted(set(activities) - set(expected.activities))[:5]}")
        lead_ids = {crm_id: row.id for crm_id, row in leads.items()}
        for crm_id, want in expected.activities.items():
            row = activities[crm_id]
            got = {key: getattr(row, key) for key in want}
            if got.get("lead_crm_id") in expected.lead_alternatives.get(crm_id, set()):
                got["lead_crm_id"] = want["lead_crm_id"]
            assert got == want, f"activity {crm_id}: {got} != {want}"
            assert row.lead_id == lead_ids.get(row.lead_crm_id), f"activity {crm_id} not linked to its lead"
        quarantined = set(session.execute(select(QuarantinedRecord.crm_id).where(
            QuarantinedRecord.connection_id == conn_id)).scalars())
        assert expected.quarantined <= quarantined
        for model in (Lead, Activity):
            dupes = session.execute(select(model.crm_id).where(model.connection_id == conn_id)
                                    .group_by(model.crm_id).having(func.count() > 1)).all()
            assert not dupes
