"""Constants of the HubSpot connector: streams, properties read, page sizes, type mappings."""

from __future__ import annotations

SEARCH_PAGE_SIZE = 200  # the most a CRM search page returns
LIST_PAGE_SIZE = 100  # the most a list (GET objects) page returns
BATCH_SIZE = 100  # inputs per batch read (objects and v4 associations)
EVENTS_PAGE_SIZE = 1000

CONTACT_PROPERTIES: tuple[str, ...] = (
    "email", "firstname", "lastname", "jobtitle", "company", "industry", "numemployees", "annualrevenue",
    "country", "hs_lead_status", "lifecyclestage", "hs_lifecyclestage_opportunity_date",
    "hs_lifecyclestage_customer_date", "hs_analytics_source", "hs_analytics_source_data_1",
    "hs_analytics_first_touch_converting_campaign", "hubspot_owner_id", "associatedcompanyid",
    "hs_merged_object_ids", "createdate", "lastmodifieddate", "hs_object_id",
)
COMPANY_PROPERTIES: tuple[str, ...] = (
    "name", "domain", "industry", "numberofemployees", "annualrevenue", "country", "hs_lastmodifieddate",
    "hs_object_id",
)
ENGAGEMENT_PROPERTIES: dict[str, tuple[str, ...]] = {
    "emails": ("hs_timestamp", "hs_email_direction", "hs_email_subject", "hs_email_status",
               "hs_email_event_type", "hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
    "meetings": ("hs_timestamp", "hs_meeting_title", "hs_activity_type", "hs_meeting_start_time",
                 "hs_meeting_outcome", "hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
    "calls": ("hs_timestamp", "hs_call_title", "hs_call_direction", "hs_call_status", "hs_call_duration",
              "hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
}

# Stream order: companies before contacts (firmographics); archived contacts before live ones, so
# a merged-away (archived) contact is stored when its survivor's page records the merge; contacts
# before their activities.
STREAMS: tuple[str, ...] = ("companies", "contacts_archived", "contacts", "emails", "meetings", "calls",
                            "events")
# A partitioned sync runs these stages one after the other (the order above, which merges and
# firmographics need), the engagement streams side by side. No stream is cut into time windows: a
# first load of engagements reads the list endpoint (no time filter), and searches share one
# account-wide limit of 5 per second that parallel windows would only queue behind.
SYNC_STAGES: tuple[tuple[str, ...], ...] = (("companies",), ("contacts_archived",), ("contacts",),
                                            ("emails", "meetings", "calls", "events"))
WINDOWED_STREAMS: frozenset[str] = frozenset()
# The modification property search filters and sorts on, per object type.
MODIFIED_PROPERTY: dict[str, str] = {"contacts": "lastmodifieddate"}
DEFAULT_MODIFIED_PROPERTY = "hs_lastmodifieddate"

EMAIL_EVENT_TYPES: dict[str, str] = {"SENT": "email_send", "OPEN": "email_open", "CLICK": "email_click"}
# Events API event types -> activity type (custom behavioural events end with these names).
EVENT_TYPE_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("e_visited_page", "web_visit"),
    ("e_submitted_form", "form_submit"),
    ("content_downloaded", "content_download"),
    ("campaign_responded", "campaign_response"),
)
CONVERTED_STAGES = frozenset({"opportunity", "customer"})
# HubSpot's contact head-count buckets -> the bucket's lower bound (companies carry exact counts).
EMPLOYEE_BUCKETS: dict[str, int] = {"1-5": 1, "5-25": 5, "25-50": 25, "50-100": 50, "100-500": 100,
                                    "500-1000": 500, "1000+": 1000}
