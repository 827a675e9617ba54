"""HubSpot object types, property definitions, association types and the funnel mappings.

Everything here is data: the store and the server read it, the docs (docs/crmsim-hubspot.md)
describe it. Property names and types follow HubSpot's own internal names.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

# The simulated portal (account) id; custom behavioural event names embed it, as HubSpot's do.
PORTAL_ID = 4200042

# Canonical plural object type names, with the aliases a path may use.
OBJECT_TYPES: tuple[str, ...] = ("contacts", "companies", "emails", "meetings", "calls", "notes", "tasks")
ENGAGEMENT_TYPES: tuple[str, ...] = ("emails", "meetings", "calls", "notes", "tasks")
OBJECT_TYPE_IDS: dict[str, str] = {
    "contacts": "0-1",
    "companies": "0-2",
    "tasks": "0-27",
    "notes": "0-46",
    "meetings": "0-47",
    "calls": "0-48",
    "emails": "0-49",
}
SINGULAR: dict[str, str] = {
    "contacts": "contact",
    "companies": "company",
    "emails": "email",
    "meetings": "meeting",
    "calls": "call",
    "notes": "note",
    "tasks": "task",
}
_ALIASES: dict[str, str] = {}
for _plural, _single in SINGULAR.items():
    _ALIASES[_plural] = _plural
    _ALIASES[_single] = _plural
    _ALIASES[OBJECT_TYPE_IDS[_plural]] = _plural


def canonical_type(name: str) -> str | None:
    """The plural object type for a path segment (``contact``, ``contacts``, ``0-1``), or None."""
    return _ALIASES.get(name.lower())


# Association type ids (all HUBSPOT_DEFINED). Key: (from, to) -> [(typeId, label)].
PRIMARY_LABEL = "Primary"
ASSOCIATION_TYPES: dict[tuple[str, str], list[tuple[int, str | None]]] = {
    ("contacts", "companies"): [(1, PRIMARY_LABEL), (279, None)],
    ("companies", "contacts"): [(2, PRIMARY_LABEL), (280, None)],
    ("emails", "contacts"): [(198, None)],
    ("contacts", "emails"): [(197, None)],
    ("meetings", "contacts"): [(200, None)],
    ("contacts", "meetings"): [(199, None)],
    ("calls", "contacts"): [(194, None)],
    ("contacts", "calls"): [(193, None)],
    ("notes", "contacts"): [(202, None)],
    ("contacts", "notes"): [(201, None)],
    ("tasks", "contacts"): [(204, None)],
    ("contacts", "tasks"): [(203, None)],
}
# The inverse of each association type id, so a PUT in one direction is visible from the other.
INVERSE_TYPE_ID: dict[int, int] = {
    1: 2,
    2: 1,
    279: 280,
    280: 279,
    198: 197,
    197: 198,
    200: 199,
    199: 200,
    194: 193,
    193: 194,
    202: 201,
    201: 202,
    204: 203,
    203: 204,
}

# Property types as HubSpot names them.
PropertyDef = dict[str, object]


def _prop(
    name: str,
    label: str,
    type_: str,
    field_type: str,
    group: str,
    options: list[str] | None = None,
    read_only: bool = False,
) -> PropertyDef:
    return {
        "name": name,
        "label": label,
        "type": type_,
        "fieldType": field_type,
        "groupName": group,
        "options": [{"label": o, "value": o, "displayOrder": i, "hidden": False} for i, o in enumerate(options or [])],
        "hubspotDefined": True,
        "readOnlyValue": read_only,
    }


LIFECYCLE_STAGES = [
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
]
LEAD_STATUSES = [
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
    "BAD_TIMING",
]
ANALYTICS_SOURCES = [
    "ORGANIC_SEARCH",
    "PAID_SEARCH",
    "EMAIL_MARKETING",
    "SOCIAL_MEDIA",
    "REFERRALS",
    "OTHER_CAMPAIGNS",
    "DIRECT_TRAFFIC",
    "OFFLINE",
    "PAID_SOCIAL",
]
EMPLOYEE_BUCKETS = ["1-5", "5-25", "25-50", "50-100", "100-500", "500-1000", "1000+"]


def _common(group: str) -> list[PropertyDef]:
    return [
        _prop("hs_object_id", "Record ID", "number", "number", group, read_only=True),
        _prop("hs_createdate", "Create date", "datetime", "date", group, read_only=True),
        _prop("hs_lastmodifieddate", "Object last modified date/time", "datetime", "date", group, read_only=True),
        _prop("hubspot_owner_id", "Owner", "enumeration", "select", group),
    ]


def default_properties() -> dict[str, dict[str, PropertyDef]]:
    """The HubSpot-defined properties per object type (a fresh copy each call)."""
    ci = "contactinformation"
    contacts = _common(ci) + [
        _prop("email", "Email", "string", "text", ci),
        _prop("firstname", "First name", "string", "text", ci),
        _prop("lastname", "Last name", "string", "text", ci),
        _prop("jobtitle", "Job title", "string", "text", ci),
        _prop("phone", "Phone number", "string", "text", ci),
        _prop("company", "Company name", "string", "text", ci),
        _prop("industry", "Industry", "string", "text", ci),
        _prop("numemployees", "Number of employees", "enumeration", "select", ci, EMPLOYEE_BUCKETS),
        _prop("annualrevenue", "Annual revenue", "string", "text", ci),
        _prop("country", "Country/Region", "string", "text", ci),
        _prop("hs_lead_status", "Lead status", "enumeration", "radio", ci, LEAD_STATUSES),
        _prop("lifecyclestage", "Lifecycle stage", "enumeration", "radio", ci, LIFECYCLE_STAGES),
        _prop("hs_lifecyclestage_lead_date", "Became a Lead date", "datetime", "date", ci, read_only=True),
        _prop(
            "hs_lifecyclestage_opportunity_date",
            "Became an Opportunity date",
            "datetime",
            "date",
            ci,
            read_only=True,
        ),
        _prop(
            "hs_analytics_source",
            "Original traffic source",
            "enumeration",
            "select",
            "analyticsinformation",
            ANALYTICS_SOURCES,
            read_only=True,
        ),
        _prop(
            "hs_analytics_source_data_1",
            "Original traffic source drill-down 1",
            "string",
            "text",
            "analyticsinformation",
            read_only=True,
        ),
        _prop(
            "hs_analytics_first_touch_converting_campaign",
            "First touch converting campaign",
            "string",
            "text",
            "analyticsinformation",
            read_only=True,
        ),
        _prop("createdate", "Create date", "datetime", "date", ci, read_only=True),
        _prop("lastmodifieddate", "Last modified date", "datetime", "date", ci, read_only=True),
        _prop("associatedcompanyid", "Primary associated company ID", "number", "number", ci, read_only=True),
        _prop("hs_merged_object_ids", "Merged record IDs", "enumeration", "checkbox", ci, read_only=True),
        _prop("hubspot_owner_assigneddate", "Owner assigned date", "datetime", "date", ci, read_only=True),
    ]
    ci = "companyinformation"
    companies = _common(ci) + [
        _prop("name", "Company name", "string", "text", ci),
        _prop("domain", "Company domain name", "string", "text", ci),
        _prop("industry", "Industry", "string", "text", ci),
        _prop("numberofemployees", "Number of employees", "number", "number", ci),
        _prop("annualrevenue", "Annual revenue", "number", "number", ci),
        _prop("country", "Country/Region", "string", "text", ci),
        _prop("createdate", "Create date", "datetime", "date", ci, read_only=True),
    ]
    eng = "engagement"
    common_eng = [_prop("hs_timestamp", "Activity date", "datetime", "date", eng)]
    emails = (
        _common(eng)
        + common_eng
        + [
            _prop(
                "hs_email_direction",
                "Email direction",
                "enumeration",
                "select",
                eng,
                ["EMAIL", "INCOMING_EMAIL", "FORWARDED_EMAIL"],
            ),
            _prop("hs_email_subject", "Email subject", "string", "text", eng),
            _prop("hs_email_text", "Email body", "string", "textarea", eng),
            _prop(
                "hs_email_status",
                "Email send status",
                "enumeration",
                "select",
                eng,
                ["BOUNCED", "FAILED", "SCHEDULED", "SENDING", "SENT"],
            ),
            _prop(
                "hs_email_event_type",
                "Email event (crmsim)",
                "enumeration",
                "select",
                eng,
                ["SENT", "OPEN", "CLICK"],
            ),
        ]
    )
    meetings = (
        _common(eng)
        + common_eng
        + [
            _prop("hs_meeting_title", "Meeting name", "string", "text", eng),
            _prop("hs_meeting_body", "Meeting description", "string", "textarea", eng),
            _prop("hs_meeting_start_time", "Start time", "datetime", "date", eng),
            _prop("hs_meeting_end_time", "End time", "datetime", "date", eng),
            _prop(
                "hs_meeting_outcome",
                "Meeting outcome",
                "enumeration",
                "select",
                eng,
                ["SCHEDULED", "COMPLETED", "RESCHEDULED", "NO_SHOW", "CANCELED"],
            ),
            _prop(
                "hs_activity_type",
                "Call and meeting type",
                "enumeration",
                "select",
                eng,
                ["Meeting", "Webinar", "Discovery call"],
            ),
        ]
    )
    calls = (
        _common(eng)
        + common_eng
        + [
            _prop("hs_call_title", "Call title", "string", "text", eng),
            _prop("hs_call_body", "Call notes", "string", "textarea", eng),
            _prop("hs_call_direction", "Call direction", "enumeration", "select", eng, ["INBOUND", "OUTBOUND"]),
            _prop("hs_call_disposition", "Call outcome", "string", "text", eng),
            _prop("hs_call_duration", "Call duration (ms)", "number", "number", eng),
            _prop(
                "hs_call_status",
                "Call status",
                "enumeration",
                "select",
                eng,
                [
                    "BUSY",
                    "CALLING_CRM_USER",
                    "CANCELED",
                    "COMPLETED",
                    "CONNECTING",
                    "FAILED",
                    "IN_PROGRESS",
                    "NO_ANSWER",
                    "QUEUED",
                    "RINGING",
                ],
            ),
            _prop(
                "hs_activity_type",
                "Call and meeting type",
                "enumeration",
                "select",
                eng,
                ["Meeting", "Webinar", "Discovery call"],
            ),
        ]
    )
    notes = _common(eng) + common_eng + [_prop("hs_note_body", "Note body", "string", "textarea", eng)]
    tasks = (
        _common(eng)
        + common_eng
        + [
            _prop("hs_task_subject", "Task title", "string", "text", eng),
            _prop("hs_task_body", "Task notes", "string", "textarea", eng),
            _prop(
                "hs_task_status",
                "Task status",
                "enumeration",
                "select",
                eng,
                ["NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"],
            ),
            _prop(
                "hs_task_priority",
                "Priority",
                "enumeration",
                "select",
                eng,
                ["NONE", "LOW", "MEDIUM", "HIGH"],
            ),
            _prop("hs_task_type", "Task type", "enumeration", "select", eng, ["CALL", "EMAIL", "TODO"]),
        ]
    )
    by_type = {
        "contacts": contacts,
        "companies": companies,
        "emails": emails,
        "meetings": meetings,
        "calls": calls,
        "notes": notes,
        "tasks": tasks,
    }
    return {t: {p["name"]: p for p in props} for t, props in by_type.items()}  # type: ignore[misc]


# Properties a search/list returns when the request names none (HubSpot's defaults).
DEFAULT_RETURNED: dict[str, tuple[str, ...]] = {
    "contacts": ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"),
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
}
ENGAGEMENT_DEFAULT_RETURNED: tuple[str, ...] = ("hs_createdate", "hs_lastmodifieddate", "hs_object_id")

# Funnel -> HubSpot value mappings (documented in docs/crmsim-hubspot.md).
LEAD_STATUS_MAP: dict[str, str] = {
    "Open": "NEW",
    "Working": "IN_PROGRESS",
    "Nurturing": "OPEN",
    "Qualified": "CONNECTED",
    "Unqualified": "UNQUALIFIED",
    "Converted": "OPEN_DEAL",
}
LIFECYCLE_FOR_STATUS: dict[str, str] = {
    "Qualified": "salesqualifiedlead",
    "Converted": "opportunity",
}
SOURCE_MAP: dict[str, str] = {
    "Web": "ORGANIC_SEARCH",
    "Organic Search": "ORGANIC_SEARCH",
    "Paid Search": "PAID_SEARCH",
    "Email": "EMAIL_MARKETING",
    "Social": "SOCIAL_MEDIA",
    "Paid Social": "PAID_SOCIAL",
    "Referral": "REFERRALS",
    "Partner": "REFERRALS",
    "Trade Show": "OFFLINE",
    "Outbound": "OFFLINE",
    "Direct": "DIRECT_TRAFFIC",
}

# Activity type -> Events API event type (web analytics and custom behavioural events).
EVENT_TYPE_FOR_ACTIVITY: dict[str, str] = {
    "web_visit": "e_visited_page",
    "form_submit": "e_submitted_form",
    "content_download": f"pe{PORTAL_ID}_content_downloaded",
    "campaign_response": f"pe{PORTAL_ID}_campaign_responded",
}
EMAIL_EVENT_FOR_ACTIVITY: dict[str, str] = {
    "email_send": "SENT",
    "email_open": "OPEN",
    "email_click": "CLICK",
}
SITE_URL = "https://www.example-vendor.com"
# HubSpot's built-in "Connected" call disposition GUID.
CALL_DISPOSITION_CONNECTED = "f240bbac-87c9-4f6e-bf70-924b57d47db7"


def employee_bucket(employees: int | None) -> str | None:
    """HubSpot's contact ``numemployees`` option for a head count (None stays None)."""
    if employees is None:
        return None
    for upper, bucket in (
        (5, "1-5"),
        (25, "5-25"),
        (50, "25-50"),
        (100, "50-100"),
        (500, "100-500"),
        (1000, "500-1000"),
    ):
        if employees <= upper:
            return bucket
    return "1000+"


@lru_cache(maxsize=65_536)
def format_ts(when: datetime) -> str:
    """HubSpot's datetime wire format: ISO 8601 UTC with milliseconds and ``Z``.

    Cached: the simulated clock is frozen between advances, so stamps repeat; the cache also lets
    records share one string per stamp.
    """
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def epoch_ms(when: datetime) -> int:
    """Milliseconds since the epoch (HubSpot's numeric datetime form)."""
    return int(when.timestamp() * 1000)


def parse_ts(value: str) -> datetime:
    """Parse a HubSpot datetime value: epoch milliseconds or ISO 8601 (naive means UTC).

    Raises ValueError when the value is neither.
    """
    text = value.strip()
    if text.lstrip("-").isdigit():
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
