"""The simulated org's metadata: which sObjects exist, their fields, types and key prefixes.

Field types use Salesforce's describe names (``id``, ``string``, ``picklist``, ``double``, ...).
Everything else (describe output, SOQL type checks, value encoding, write coercion) reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldDef:
    """One field of an sObject as describe shows it."""

    name: str
    type: str
    label: str = ""
    length: int = 0
    custom: bool = False
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    precision: int = 0
    scale: int = 0

    @property
    def display_label(self) -> str:
        return self.label or self.name.removesuffix("__c").replace("_", " ")


@dataclass(frozen=True)
class SObjectDef:
    """An sObject: its name, key prefix and fields (in describe order)."""

    name: str
    key_prefix: str
    label: str
    label_plural: str
    fields: tuple[FieldDef, ...]
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    by_lower: dict[str, FieldDef] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.by_lower.update({f.name.lower(): f for f in self.fields})

    @property
    def has_is_deleted(self) -> bool:
        return "isdeleted" in self.by_lower


def _ro(name: str, type_: str, **kw: object) -> FieldDef:
    return FieldDef(name, type_, createable=False, updateable=False, **kw)  # type: ignore[arg-type]


def _system(deletable: bool = True) -> tuple[FieldDef, ...]:
    out = [
        _ro("CreatedDate", "datetime", label="Created Date", nillable=False),
        _ro("LastModifiedDate", "datetime", label="Last Modified Date", nillable=False),
        _ro("SystemModstamp", "datetime", label="System Modstamp", nillable=False),
    ]
    if deletable:
        out.append(_ro("IsDeleted", "boolean", label="Deleted", nillable=False))
    return tuple(out)


ID = _ro("Id", "id", length=18, nillable=False)

LEAD_STATUSES = ("Open - Not Contacted", "Working - Contacted", "Nurturing", "Qualified",
                 "Closed - Converted", "Closed - Not Converted")
LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other", "Paid Search",
                "Referral", "Trade Show", "Partner", "Outbound", "Event", "Content")
INDUSTRIES = ("Agriculture", "Apparel", "Banking", "Biotechnology", "Chemicals", "Communications",
              "Construction", "Consulting", "Education", "Electronics", "Energy", "Engineering",
              "Entertainment", "Environmental", "Finance", "Food & Beverage", "Government",
              "Healthcare", "Hospitality", "Insurance", "Machinery", "Manufacturing", "Media",
              "Not For Profit", "Recreation", "Retail", "Shipping", "Technology",
              "Telecommunications", "Transportation", "Utilities", "Other")
TASK_TYPES = ("Call", "Email", "Meeting", "Other", "Email Sent", "Email Opened", "Email Clicked",
              "Web Visit", "Form Submit", "Content Download")
CUSTOM_LEAD_FIELDS = ("Lead_Score__c", "Lead_Tier__c", "Lead_Score_Reasons__c", "Lead_Score_Model__c",
                      "Lead_Scored_At__c", "Lead_Conversion_Likelihood__c", "Lead_Fit_Score__c",
                      "Lead_Engagement_Score__c", "Lead_Score_Change__c", "Lead_Score_Feedback__c",
                      "Lead_Score_Feedback_Comment__c")

LEAD = SObjectDef("Lead", "00Q", "Lead", "Leads", (
    ID,
    _ro("IsDeleted", "boolean", label="Deleted", nillable=False),
    _ro("MasterRecordId", "reference", label="Master Record ID", length=18, reference_to=("Lead",),
        relationship_name="MasterRecord"),
    FieldDef("LastName", "string", length=80, nillable=False),
    FieldDef("FirstName", "string", length=40),
    _ro("Name", "string", length=121, label="Full Name"),
    FieldDef("Title", "string", length=128),
    FieldDef("Company", "string", length=255, nillable=False),
    FieldDef("Email", "email", length=80),
    FieldDef("Phone", "phone", length=40),
    FieldDef("Country", "string", length=80),
    FieldDef("LeadSource", "picklist", length=255, picklist=LEAD_SOURCES, label="Lead Source"),
    FieldDef("Status", "picklist", length=255, picklist=LEAD_STATUSES, nillable=False),
    FieldDef("Industry", "picklist", length=255, picklist=INDUSTRIES),
    FieldDef("AnnualRevenue", "currency", precision=18, scale=0, label="Annual Revenue"),
    FieldDef("NumberOfEmployees", "int", precision=8, label="Employees"),
    FieldDef("OwnerId", "reference", length=18, nillable=False, reference_to=("Group", "User"),
             relationship_name="Owner", label="Owner ID"),
    FieldDef("HasOptedOutOfEmail", "boolean", nillable=False, label="Email Opt Out"),
    FieldDef("DoNotCall", "boolean", nillable=False, label="Do Not Call"),
    _ro("IsConverted", "boolean", label="Converted", nillable=False),
    _ro("ConvertedDate", "date", label="Converted Date"),
    _ro("ConvertedContactId", "reference", length=18, label="Converted Contact ID", reference_to=("Contact",),
        relationship_name="ConvertedContact"),
    _ro("ConvertedAccountId", "reference", length=18, label="Converted Account ID", reference_to=("Account",),
        relationship_name="ConvertedAccount"),
    *_system(deletable=False),
    FieldDef("Lead_Score__c", "double", custom=True, precision=3, scale=0, label="Lead Score"),
    FieldDef("Lead_Tier__c", "picklist", custom=True, length=255, picklist=("A", "B", "C", "D"),
             restricted=True, label="Lead Tier"),
    FieldDef("Lead_Score_Reasons__c", "string", custom=True, length=255, label="Lead Score Reasons"),
    FieldDef("Lead_Score_Model__c", "string", custom=True, length=64, label="Lead Score Model"),
    FieldDef("Lead_Scored_At__c", "datetime", custom=True, label="Lead Scored At"),
    FieldDef("Lead_Conversion_Likelihood__c", "percent", custom=True, precision=4, scale=1,
             label="Lead Conversion Likelihood"),
    FieldDef("Lead_Fit_Score__c", "double", custom=True, precision=2, scale=0, label="Lead Fit Score"),
    FieldDef("Lead_Engagement_Score__c", "double", custom=True, precision=2, scale=0,
             label="Lead Engagement Score"),
    FieldDef("Lead_Score_Change__c", "double", custom=True, precision=3, scale=0, label="Lead Score Change"),
    FieldDef("Lead_Score_Feedback__c", "picklist", custom=True, length=255,
             picklist=("Too high", "Too low", "About right"), restricted=True, label="Lead Score Feedback"),
    FieldDef("Lead_Score_Feedback_Comment__c", "string", custom=True, length=255,
             label="Lead Score Feedback Comment"),
))

TASK = SObjectDef("Task", "00T", "Task", "Tasks", (
    ID,
    FieldDef("WhoId", "reference", length=18, reference_to=("Contact", "Lead"), relationship_name="Who",
             label="Name ID"),
    FieldDef("WhatId", "reference", length=18, reference_to=("Account", "Campaign"),
             relationship_name="What", label="Related To ID"),
    FieldDef("Subject", "combobox", length=255),
    FieldDef("ActivityDate", "date", label="Due Date Only"),
    FieldDef("Status", "picklist", length=255, nillable=False,
             picklist=("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred")),
    FieldDef("Priority", "picklist", length=255, nillable=False, picklist=("High", "Normal", "Low")),
    FieldDef("OwnerId", "reference", length=18, nillable=False, reference_to=("User",),
             relationship_name="Owner", label="Assigned To ID"),
    FieldDef("Description", "textarea", length=32000, label="Comments"),
    FieldDef("Type", "picklist", length=255, picklist=TASK_TYPES),
    FieldDef("TaskSubtype", "picklist", length=255, updateable=False,
             picklist=("Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn")),
    FieldDef("CallType", "picklist", length=255, picklist=("Internal", "Inbound", "Outbound")),
    FieldDef("CallDurationInSeconds", "int", precision=8),
    _ro("IsClosed", "boolean", label="Closed", nillable=False),
    _ro("CompletedDateTime", "datetime", label="Completed Date/Time"),
    *_system(),
))

EVENT = SObjectDef("Event", "00U", "Event", "Events", (
    ID,
    FieldDef("WhoId", "reference", length=18, reference_to=("Contact", "Lead"), relationship_name="Who",
             label="Name ID"),
    FieldDef("WhatId", "reference", length=18, reference_to=("Account", "Campaign"),
             relationship_name="What", label="Related To ID"),
    FieldDef("Subject", "combobox", length=255),
    FieldDef("ActivityDate", "date", label="Due Date Only"),
    FieldDef("ActivityDateTime", "datetime", label="Due Date Time"),
    FieldDef("StartDateTime", "datetime", label="Start Date Time"),
    FieldDef("EndDateTime", "datetime", label="End Date Time"),
    FieldDef("DurationInMinutes", "int", precision=8, label="Duration"),
    FieldDef("Description", "textarea", length=32000),
    FieldDef("Type", "picklist", length=255, picklist=("Call", "Email", "Meeting", "Other", "Webinar")),
    _ro("EventSubtype", "picklist", length=255, picklist=("Event",)),
    FieldDef("OwnerId", "reference", length=18, nillable=False, reference_to=("User",),
             relationship_name="Owner", label="Assigned To ID"),
    *_system(),
))

CAMPAIGN_MEMBER = SObjectDef("CampaignMember", "00v", "Campaign Member", "Campaign Members", (
    ID,
    FieldDef("CampaignId", "reference", length=18, nillable=False, updateable=False,
             reference_to=("Campaign",), relationship_name="Campaign", label="Campaign ID"),
    FieldDef("LeadId", "reference", length=18, updateable=False, reference_to=("Lead",),
             relationship_name="Lead", label="Lead ID"),
    FieldDef("ContactId", "reference", length=18, updateable=False, reference_to=("Contact",),
             relationship_name="Contact", label="Contact ID"),
    FieldDef("Status", "picklist", length=255, picklist=("Planned", "Sent", "Received", "Responded",
                                                          "Attended", "Registered")),
    _ro("HasResponded", "boolean", label="Responded", nillable=False),
    _ro("FirstRespondedDate", "date", label="First Responded Date"),
    *_system(),
))

CAMPAIGN = SObjectDef("Campaign", "701", "Campaign", "Campaigns", (
    ID,
    FieldDef("Name", "string", length=80, nillable=False),
    FieldDef("Type", "picklist", length=255, picklist=("Webinar", "Email", "Paid Search", "Trade Show",
                                                        "Content", "Conference", "Other")),
    FieldDef("Status", "picklist", length=255, picklist=("Planned", "In Progress", "Completed",
                                                          "Aborted")),
    FieldDef("IsActive", "boolean", nillable=False, label="Active"),
    *_system(),
))

USER = SObjectDef("User", "005", "User", "Users", (
    ID,
    FieldDef("Username", "string", length=80, nillable=False),
    FieldDef("FirstName", "string", length=40),
    FieldDef("LastName", "string", length=80, nillable=False),
    _ro("Name", "string", length=121, label="Full Name"),
    FieldDef("Email", "email", length=128, nillable=False),
    FieldDef("IsActive", "boolean", nillable=False, label="Active"),
    *_system(deletable=False),
), createable=False, updateable=False, deletable=False)

GROUP = SObjectDef("Group", "00G", "Group", "Groups", (
    ID,
    FieldDef("Name", "string", length=40),
    FieldDef("DeveloperName", "string", length=80, label="Developer Name"),
    FieldDef("Type", "picklist", length=255, nillable=False, picklist=("Queue", "Regular")),
    FieldDef("Email", "email", length=80),
    *_system(deletable=False),
), createable=False, updateable=False, deletable=False)

# The Contact a converted Lead became (only what conversion needs: leadscore reads Contacts only
# to find a lead's Account by e-mail).
CONTACT = SObjectDef("Contact", "003", "Contact", "Contacts", (
    ID,
    FieldDef("AccountId", "reference", length=18, reference_to=("Account",), relationship_name="Account",
             label="Account ID"),
    FieldDef("LastName", "string", length=80, nillable=False),
    FieldDef("FirstName", "string", length=40),
    FieldDef("Email", "email", length=80),
    FieldDef("OwnerId", "reference", length=18, nillable=False, reference_to=("User",), relationship_name="Owner",
             label="Owner ID"),
    *_system(),
))

ACCOUNT_TYPES = ("Prospect", "Customer - Direct", "Customer - Channel", "Channel Partner / Reseller",
                 "Installation Partner", "Technology Partner", "Other")
CUSTOM_ACCOUNT_FIELDS = ("Account_Lead_Score__c", "Account_Engaged_People__c")

# One Account per funnel company (docs/crmsim-salesforce.md). The two custom fields exist only
# while ``custom_fields_present`` is on, like the Lead ones (an admin deploys them together).
ACCOUNT = SObjectDef("Account", "001", "Account", "Accounts", (
    ID,
    _ro("IsDeleted", "boolean", label="Deleted", nillable=False),
    _ro("MasterRecordId", "reference", label="Master Record ID", length=18, reference_to=("Account",),
        relationship_name="MasterRecord"),
    FieldDef("Name", "string", length=255, nillable=False, label="Account Name"),
    FieldDef("Type", "picklist", length=255, picklist=ACCOUNT_TYPES, label="Account Type"),
    FieldDef("ParentId", "reference", length=18, reference_to=("Account",), relationship_name="Parent",
             label="Parent Account ID"),
    FieldDef("BillingCountry", "string", length=80, label="Billing Country"),
    FieldDef("Phone", "phone", length=40, label="Account Phone"),
    FieldDef("Website", "url", length=255),
    FieldDef("Industry", "picklist", length=255, picklist=INDUSTRIES),
    FieldDef("AnnualRevenue", "currency", precision=18, scale=0, label="Annual Revenue"),
    FieldDef("NumberOfEmployees", "int", precision=8, label="Employees"),
    FieldDef("OwnerId", "reference", length=18, nillable=False, reference_to=("User",), relationship_name="Owner",
             label="Owner ID"),
    *_system(deletable=False),
    FieldDef("Account_Lead_Score__c", "double", custom=True, precision=2, scale=0, label="Account Lead Score"),
    FieldDef("Account_Engaged_People__c", "double", custom=True, precision=5, scale=0,
             label="Account Engaged People"),
))

# Which sObjects a queue may own records of (Setup > Queues > Supported Objects).
QUEUE_SOBJECT = SObjectDef("QueueSobject", "03g", "Queue Sobject", "Queue Sobjects", (
    ID,
    FieldDef("QueueId", "reference", length=18, nillable=False, reference_to=("Group",), relationship_name="Queue",
             label="Group ID"),
    FieldDef("SobjectType", "picklist", length=40, nillable=False, label="Sobject Type",
             picklist=("Lead", "Task", "Case", "Contact", "Opportunity")),
    *_system(deletable=False),
), createable=False, updateable=False, deletable=False)

SOBJECTS: dict[str, SObjectDef] = {d.name: d for d in (LEAD, TASK, EVENT, CAMPAIGN_MEMBER, CAMPAIGN, USER,
                                                      GROUP, QUEUE_SOBJECT, CONTACT, ACCOUNT)}
SOBJECTS_LOWER: dict[str, SObjectDef] = {name.lower(): d for name, d in SOBJECTS.items()}
PREFIXES: dict[str, str] = {d.key_prefix: d.name for d in SOBJECTS.values()}
