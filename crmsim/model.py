"""The simulated funnel's entities and the contract between the funnel and the API servers.

The funnel (``crmsim.funnel``) owns *what happens*: companies, people, activity events and
conversions over simulated time, with a hidden true conversion probability per person.
Each API server (``crmsim.salesforce``, ``crmsim.hubspot``) owns *how a CRM shows it*: it keeps
its own record store and implements :class:`FunnelSink`, projecting entities into API records
(Salesforce Lead/Task/Event/CampaignMember, HubSpot contacts/companies/engagements).

Every person lives in exactly one CRM (``Person.crm``), so the two servers never show the same
lead. All times are timezone-aware UTC; the simulated clock is :class:`SimClock`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from store.models import ACTIVITY_TYPES as ACTIVITY_TYPES  # re-exported: the funnel's vocabulary

CRMName = Literal["salesforce", "hubspot"]

# Normalised activity types the funnel emits (leadscore's vocabulary: store.models.ACTIVITY_TYPES).
# Servers map them to CRM objects; connectors map CRM objects back to these names.


class SimClock:
    """A thread-safe simulated clock. It only moves when told to (``set``/``advance``).

    Frozen time is deliberate: many records then share one modification stamp, which is what
    incremental sync must survive.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("SimClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now = self._now + delta
            return self._now


@dataclass
class Company:
    key: str  # world id, e.g. "C000042"
    name: str
    domain: str  # e.g. "acme-logistics.com"
    industry: str | None
    employees: int | None
    annual_revenue: float | None  # USD
    country: str | None


@dataclass
class Owner:
    key: str  # "U001"
    name: str
    email: str


@dataclass
class Queue:
    key: str  # "Q01"
    name: str  # e.g. "SDR Queue", "Nurture Queue"


@dataclass
class Campaign:
    key: str  # "K001"
    name: str
    type: str  # "Webinar", "Email", "Paid Search", "Trade Show", "Content"


@dataclass
class Person:
    """A lead (Salesforce) or contact (HubSpot). Field values are what the CRM holds: they may
    carry data-quality faults ("N/A", "Select", wrong casing, absurd numbers, very long strings)."""

    key: str  # world id, e.g. "P000123"; unique across both CRMs
    crm: CRMName
    company_key: str | None
    first_name: str | None
    last_name: str | None
    email: str | None
    title: str | None
    phone: str | None
    lead_source: str | None  # "Web", "Paid Search", "Referral", "Trade Show", "Partner", "Outbound", ...
    campaign_key: str | None
    status: str  # "Open", "Working", "Nurturing", "Qualified", "Unqualified", "Converted"
    owner_key: str | None
    created_at: datetime
    # Denormalised firmographics as typed on the record (Salesforce Lead carries them itself;
    # HubSpot takes them from the associated company). May differ from the company's truth.
    company_name: str | None = None
    industry: str | None = None
    employees: int | None = None
    annual_revenue: float | None = None
    country: str | None = None
    converted_at: datetime | None = None  # set when conversion happens (visible once clock passes it)
    deleted: bool = False
    merged_into: str | None = None  # Person.key of the surviving duplicate
    # Hidden ground truth: never served by the CRM APIs, only by the admin endpoint.
    true_probability: float = 0.0
    will_convert: bool = False
    dq_faults: list[str] = field(default_factory=list)


@dataclass
class Activity:
    key: str  # world id, e.g. "A0000001"
    person_key: str
    type: str  # one of ACTIVITY_TYPES
    occurred_at: datetime
    detail: str | None = None  # page path ("/pricing"), content title, email subject, campaign key
    campaign_key: str | None = None


class FunnelSink(Protocol):
    """What an API server implements so the funnel can feed it.

    Calls happen in simulated-time order; the server stamps modification times from the shared
    :class:`SimClock` (the funnel sets the clock to the event's time before calling during
    history generation). ``put_*`` creates or updates (all fields of the entity are the new
    truth); a server must bump its modification stamp only when something changed.
    """

    def put_owner(self, owner: Owner) -> None: ...

    def put_queue(self, queue: Queue) -> None: ...

    def put_campaign(self, campaign: Campaign) -> None: ...

    def put_company(self, company: Company) -> None: ...

    def put_person(self, person: Person) -> None: ...

    def put_activity(self, activity: Activity) -> None: ...

    def delete_person(self, person_key: str) -> None: ...

    def crm_id(self, person_key: str) -> str | None:
        """The CRM's id of a person (for the admin endpoint's ground-truth export)."""
        ...
