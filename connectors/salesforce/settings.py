"""Constants of the Salesforce connector: streams, the fields each reads, page sizes."""

from __future__ import annotations

# Largest REST query batch Salesforce returns; one keyset query per page of this size.
MAX_PAGE_SIZE = 2000
# Bulk API 2.0 first loads: records per results page (maxRecords) and how long a job may run.
BULK_PAGE_RECORDS = 50_000
BULK_MAX_WAIT_SECONDS = 4 * 3600.0

LEAD_FIELDS: tuple[str, ...] = (
    "Id", "IsDeleted", "MasterRecordId", "FirstName", "LastName", "Title", "Company", "Email", "Country",
    "LeadSource", "Status", "Industry", "AnnualRevenue", "NumberOfEmployees", "OwnerId", "IsConverted",
    "ConvertedDate", "ConvertedContactId", "CreatedDate", "LastModifiedDate", "SystemModstamp",
)
TASK_FIELDS: tuple[str, ...] = (
    "Id", "IsDeleted", "WhoId", "WhatId", "Subject", "ActivityDate", "Status", "Type", "TaskSubtype",
    "CallType", "CallDurationInSeconds", "CompletedDateTime", "Description", "CreatedDate", "SystemModstamp",
)
EVENT_FIELDS: tuple[str, ...] = (
    "Id", "IsDeleted", "WhoId", "WhatId", "Subject", "ActivityDateTime", "StartDateTime", "EndDateTime",
    "DurationInMinutes", "Type", "Description", "CreatedDate", "SystemModstamp",
)
CAMPAIGN_MEMBER_FIELDS: tuple[str, ...] = (
    "Id", "IsDeleted", "CampaignId", "Campaign.Name", "LeadId", "ContactId", "Status", "HasResponded",
    "FirstRespondedDate", "CreatedDate", "SystemModstamp",
)

# stream name -> (sObject, fields). Order matters: leads first, so activities find their lead.
STREAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "leads": ("Lead", LEAD_FIELDS),
    "tasks": ("Task", TASK_FIELDS),
    "events": ("Event", EVENT_FIELDS),
    "campaign_members": ("CampaignMember", CAMPAIGN_MEMBER_FIELDS),
}

# A partitioned sync (several workers) runs these stages one after the other, the streams of a stage
# side by side: campaign members set the campaign of leads already stored; tasks and events link
# to stored leads. Every stream is a keyset read on SystemModstamp, so a first load can be cut into
# time windows read in parallel (connectors/partition.py).
SYNC_STAGES: tuple[tuple[str, ...], ...] = (("leads",), ("tasks", "events", "campaign_members"))
WINDOWED_STREAMS: frozenset[str] = frozenset({"leads", "tasks", "events", "campaign_members"})

# Task.Type (as crmsim and common orgs use it) -> normalised activity type.
TASK_TYPE_MAP: dict[str, str] = {
    "email sent": "email_send",
    "email": "email_send",
    "email opened": "email_open",
    "email clicked": "email_click",
    "call": "call",
    "web visit": "web_visit",
    "form submit": "form_submit",
    "content download": "content_download",
    "meeting": "meeting",
    "webinar": "webinar",
}
# TaskSubtype fallback when Type is empty.
TASK_SUBTYPE_MAP: dict[str, str] = {"email": "email_send", "listemail": "email_send", "call": "call"}
EVENT_TYPE_MAP: dict[str, str] = {"meeting": "meeting", "webinar": "webinar", "call": "call"}
LEAD_ID_PREFIX = "00Q"
