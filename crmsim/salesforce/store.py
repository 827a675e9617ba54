"""The Salesforce simulator's record store: sObject records in API shape, fed by the funnel.

It implements :class:`crmsim.model.FunnelSink` (``put_owner``, ``put_queue``, ``put_campaign``,
``put_company``, ``put_person``, ``put_activity``, ``delete_person``, ``crm_id``) and the write
operations of the REST API (:meth:`SalesforceStore.api_create`, :meth:`api_update`,
:meth:`api_delete`). Every API update stamps ``LastModifiedDate``/``SystemModstamp`` from the
:class:`~crmsim.model.SimClock`, even when no value changed (as Salesforce does); a Task or
Event insert moves its Lead's ``SystemModstamp``; funnel (simulated user) writes stamp only
when a value changed. Writes append to :attr:`SalesforceStore.write_log`.

Values are kept as Python values (``datetime`` truncated to whole seconds, ``date``, ``float``...)
and encoded to API JSON lazily, once per record version (:meth:`SalesforceStore.encoded`); the
encoded dict of a version is never mutated, so query cursors can hold it as a snapshot.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

from crmsim.model import Activity, Campaign, Company, Owner, Person, Queue, SimClock
from crmsim.salesforce.accounts import account_values
from crmsim.salesforce.schema import SOBJECTS, SOBJECTS_LOWER, FieldDef, SObjectDef
from crmsim.salesforce.selection import StampIndex

_ALPHANUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CHECKSUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
NOT_PROVIDED = "[not provided]"


class RecordError(Exception):
    """A Salesforce error about one record: ``statusCode``/``errorCode``, message, fields."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None, http_status: int = 400):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fields = fields or []
        self.http_status = http_status


class UnknownEntity(KeyError):
    """The funnel referenced a person this store has never seen (it lives in another CRM?)."""


def to18(id15: str) -> str:
    """Salesforce's case-safe 18-character form of a 15-character id (already-18 ids pass)."""
    if len(id15) == 18:
        return id15
    suffix = ""
    for chunk in range(3):
        bits = 0
        for i, char in enumerate(id15[chunk * 5:chunk * 5 + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << i
        suffix += _CHECKSUM[bits]
    return id15 + suffix


def well_formed_id(value: str) -> bool:
    """True when ``value`` looks like a Salesforce id (15 or 18 alphanumerics, valid checksum)."""
    if not _ID_RE.match(value):
        return False
    return len(value) == 15 or to18(value[:15]) == value


def ms(when: datetime) -> datetime:
    """A timezone-aware UTC datetime truncated to the whole second: Salesforce stores dateTime
    values (and its stamps) in seconds; the API still writes ``.000`` milliseconds."""
    if when.tzinfo is not UTC:
        if when.tzinfo is None:
            raise ValueError("naive datetime")
        when = when.astimezone(UTC)
    return when.replace(microsecond=0) if when.microsecond else when


@lru_cache(maxsize=65536)
def encode_datetime(when: datetime) -> str:
    """``2024-05-01T10:00:00.000+0000``: how the REST API writes dateTime values."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


_DT_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_api_datetime(text: str) -> datetime:
    """Parse a dateTime as clients send it (``Z``, ``+00:00``, ``+0000``, optional fraction)."""
    match = _DT_RE.match(text.strip())
    if not match:
        raise ValueError(text)
    year, month, day, hour, minute, second, frac, zone = match.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    result = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro,
                      tzinfo=UTC)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        result -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return ms(result)


def encode_value(fdef: FieldDef, value: Any) -> Any:
    """The JSON value of a Python field value."""
    if value is None:
        return None
    kind = fdef.type
    if kind == "datetime":
        return encode_datetime(value)
    if kind == "date":
        return value.isoformat()
    if kind in ("double", "currency", "percent"):
        return float(value)
    return value


@dataclass
class AssignmentRule:
    """A lead assignment rule entry: first entry whose ``field >= min_value`` sets ``OwnerId``."""

    field: str
    min_value: float
    owner_id: str


@dataclass
class ValidationRule:
    """An org validation rule on ``sobject``: ``fails(values)`` on the merged record values after
    an update (or the values of a create) refuses the write with
    ``FIELD_CUSTOM_VALIDATION_EXCEPTION`` and ``message``. Salesforce evaluates the rules on every
    update, also when only unrelated fields were sent."""

    name: str
    sobject: str
    message: str
    fails: Callable[[dict[str, Any]], bool]
    fields: tuple[str, ...] = ()


def share_rule(share: float, *, seed: int = 0) -> ValidationRule:
    """A Lead rule failing for a stable ``share`` of Lead ids (as an org rule on data the
    integration does not write, e.g. a region or consent field some leads lack, would)."""
    def fails(values: dict[str, Any]) -> bool:
        digest = hashlib.sha256(f"{seed}:{values['Id']}".encode()).digest()
        return int.from_bytes(digest[:4], "big") < share * 2**32

    return ValidationRule("Region_Required", "Lead", "Region is required before this lead can be edited. "
                          "Ask your admin to complete the lead's address.", fails)


class Record:
    """One record version holder; ``values`` is replaced (never mutated) on every write."""

    __slots__ = ("sobject", "values", "encoded")

    def __init__(self, sobject: SObjectDef, values: dict[str, Any]) -> None:
        self.sobject = sobject
        self.values = values
        self.encoded: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return str(self.values["Id"])

    @property
    def deleted(self) -> bool:
        return bool(self.values.get("IsDeleted"))


_STATUS_MAP = {
    "Open": "Open - Not Contacted",
    "Working": "Working - Contacted",
    "Nurturing": "Nurturing",
    "Qualified": "Qualified",
    "Unqualified": "Closed - Not Converted",
    "Converted": "Closed - Converted",
}

# activity type -> (sObject, TaskSubtype or Event Type, Type, subject label)
ACTIVITY_MAPPING: dict[str, tuple[str, str, str, str]] = {
    "email_send": ("Task", "Email", "Email Sent", "Email Sent"),
    "email_open": ("Task", "Email", "Email Opened", "Email Opened"),
    "email_click": ("Task", "Email", "Email Clicked", "Email Clicked"),
    "call": ("Task", "Call", "Call", "Call"),
    "web_visit": ("Task", "Task", "Web Visit", "Web Visit"),
    "form_submit": ("Task", "Task", "Form Submit", "Form Submit"),
    "content_download": ("Task", "Task", "Content Download", "Content Download"),
    "meeting": ("Event", "Event", "Meeting", "Meeting"),
    "webinar": ("Event", "Event", "Webinar", "Webinar"),
    "campaign_response": ("CampaignMember", "", "", ""),
}
_EVENT_MINUTES = {"Meeting": 30, "Webinar": 60}


class SalesforceStore:
    """In-memory org: records by sObject, id generation, funnel projection and API writes.

    Thread-safe through one re-entrant lock (:attr:`lock`); the HTTP server holds it around each
    operation. ``custom_fields_present`` toggles the five ``Lead_*__c`` fields (describe, SOQL,
    writes). ``assignment_rules`` is applied on Lead API writes when ``Sforce-Auto-Assign`` is TRUE
    or absent (empty by default). ``converted_lead_edit`` (default False) models the org permission
    "View and Edit Converted Leads": without it, updating a converted Lead or referencing one
    (Task ``WhoId``, CampaignMember ``LeadId``) answers ``CANNOT_UPDATE_CONVERTED_LEAD``.
    """

    def __init__(self, clock: SimClock, *, seed: int = 0, write_log_max: int = 100_000) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        rng = random.Random(f"crmsim-salesforce-{seed}")
        self.pod = rng.choice(_ALPHANUM[1:]) + rng.choice(_ALPHANUM)
        self.org_id = to18("00D" + self.pod + "0000000001")
        self._counters: dict[str, int] = {}
        self._id_heads: dict[str, str] = {}
        self._templates: dict[str, dict[str, Any]] = {
            d.name: {f.name: (False if f.type == "boolean" else None) for f in d.fields} for d in SOBJECTS.values()}
        self.records: dict[str, dict[str, Record]] = {name: {} for name in SOBJECTS}
        self._by_id: dict[str, Record] = {}
        self._keys: dict[tuple[str, str], str] = {}  # (kind, world key) -> record id
        self.companies: dict[str, Company] = {}
        self._membership: dict[tuple[str, str], str] = {}  # (campaign id, lead id) -> member id
        self._custom_fields_present = True
        self.assignment_rules: list[AssignmentRule] = []
        self.validation_rules: list[ValidationRule] = []
        self._who_index: dict[str, list[str]] = {}  # WhoId -> Task/Event ids that had it (may be stale)
        self._member_index: dict[str, list[str]] = {}  # LeadId -> CampaignMember ids that had it (may be stale)
        self._lead_company: dict[str, str] = {}  # Lead id -> funnel company key (its Account on conversion)
        # The org permission "View and Edit Converted Leads": off, as in a default org, converted
        # Leads refuse updates and references with CANNOT_UPDATE_CONVERTED_LEAD.
        self.converted_lead_edit = False
        self.write_log: deque[dict[str, Any]] = deque(maxlen=write_log_max)
        self.write_counts: dict[str, int] = {"funnel": 0, "api": 0, "noop": 0}
        self.unmapped_activities: list[str] = []
        self._journal: list[tuple[str, Record, dict[str, Any] | None]] | None = None
        self._field_cache: dict[str, dict[str, FieldDef]] = {}
        # Records by (SystemModstamp, Id) for keyset queries; every write reports to it (_log).
        self.stamp_index = StampIndex()
        self.default_user_id = self._insert(SOBJECTS["User"], {
            "Username": "integration@acme.example", "FirstName": "Integration", "LastName": "User",
            "Email": "integration@acme.example", "IsActive": True}, "funnel")

    # ----------------------------------------------------------------- metadata
    @property
    def custom_fields_present(self) -> bool:
        return self._custom_fields_present

    @custom_fields_present.setter
    def custom_fields_present(self, present: bool) -> None:
        with self.lock:
            self._custom_fields_present = present
            self._field_cache.clear()
            for records in self.records.values():
                for rec in records.values():
                    rec.encoded = None

    def fields(self, sobject: str) -> dict[str, FieldDef]:
        """Visible fields of an sObject by lower-case name (custom ones hidden when switched off)."""
        cached = self._field_cache.get(sobject)
        if cached is None:
            definition = SOBJECTS[sobject]
            cached = {f.name.lower(): f for f in definition.fields
                      if self._custom_fields_present or not f.custom}
            self._field_cache[sobject] = cached
        return cached

    # ----------------------------------------------------------------- ids and reads
    def new_id(self, prefix: str) -> str:
        """Next deterministic 18-character id with the given 3-character key prefix."""
        count = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = count
        head = self._id_heads.get(prefix)
        if head is None:
            # The case-safe suffix of an all-digit counter is fixed: compute it once per prefix.
            head = self._id_heads[prefix] = to18(f"{prefix}{self.pod}0000000000")[15:]
        if count >= 10**10:
            raise OverflowError("id counter exhausted")
        return f"{prefix}{self.pod}{count:010d}{head}"

    def get(self, record_id: str) -> Record | None:
        """The record with this 15- or 18-character id (deleted ones included), or None."""
        if len(record_id) == 15 and _ID_RE.match(record_id):
            record_id = to18(record_id)
        return self._by_id.get(record_id)

    def encoded(self, rec: Record) -> dict[str, Any]:
        """The record's API JSON dict (with ``attributes``); cached until the next write."""
        enc = rec.encoded
        if enc is None:
            name = rec.sobject.name
            enc = {"attributes": {"type": name, "url": f"/services/data/v59.0/sobjects/{name}/{rec.id}"}}
            values = rec.values
            for fdef in self.fields(name).values():
                enc[fdef.name] = encode_value(fdef, values.get(fdef.name))
            rec.encoded = enc
        return enc

    def crm_id(self, person_key: str) -> str | None:
        """The Lead id of a funnel person, or None if it never reached this CRM."""
        return self._keys.get(("person", person_key))

    def id_for(self, kind: str, key: str) -> str | None:
        """The record id of a funnel entity: kind is owner, queue, campaign, person or activity."""
        return self._keys.get((kind, key))

    # ----------------------------------------------------------------- low-level writes
    def _now(self) -> datetime:
        return ms(self.clock.now())

    def _insert(self, sobject: SObjectDef, values: dict[str, Any], source: str,
                created: datetime | None = None) -> str:
        now = self._now()
        full = dict(self._templates[sobject.name])
        full.update(values)
        rec_id = self.new_id(sobject.key_prefix)
        full["Id"] = rec_id
        full["CreatedDate"] = ms(created) if created else now
        full["LastModifiedDate"] = now
        full["SystemModstamp"] = now
        _derive(sobject.name, full)
        rec = Record(sobject, full)
        if full.get("WhoId"):
            self._who_index.setdefault(full["WhoId"], []).append(rec_id)
        if sobject.name == "CampaignMember" and full.get("LeadId"):
            self._member_index.setdefault(full["LeadId"], []).append(rec_id)
        self.records[sobject.name][rec_id] = rec
        self._by_id[rec_id] = rec
        if self._journal is not None:
            self._journal.append(("create", rec, None))
        self._log(now, sobject.name, rec_id, sorted(values), source)
        return rec_id

    def _write(self, rec: Record, changes: dict[str, Any], source: str) -> bool:
        old = rec.values
        changed = [name for name, value in changes.items() if old.get(name) != value]
        if not changed:
            self.write_counts["noop"] += 1
            if source == "api":
                # An update DML bumps LastModifiedDate/SystemModstamp even when no value changed.
                self._touch(rec, ("LastModifiedDate", "SystemModstamp"), source)
            return False
        new = dict(old)
        for name in changed:
            new[name] = changes[name]
        _derive(rec.sobject.name, new)
        now = self._now()
        new["LastModifiedDate"] = now
        new["SystemModstamp"] = now
        if self._journal is not None:
            self._journal.append(("update", rec, old))
        rec.values = new
        rec.encoded = None
        if "WhoId" in changed and new["WhoId"]:
            self._who_index.setdefault(new["WhoId"], []).append(rec.id)
        if "LeadId" in changed and new["LeadId"] and rec.sobject.name == "CampaignMember":
            self._member_index.setdefault(new["LeadId"], []).append(rec.id)
        self._log(now, rec.sobject.name, rec.id, changed, source)
        return True

    def _touch(self, rec: Record, stamps: tuple[str, ...], source: str) -> None:
        """Move ``stamps`` to now without a value change (a no-op update, or a system change such
        as ``LastActivityDate`` when a Task is logged, which moves only SystemModstamp)."""
        now = self._now()
        new = dict(rec.values)
        for name in stamps:
            new[name] = now
        if self._journal is not None:
            self._journal.append(("update", rec, rec.values))
        rec.values = new
        rec.encoded = None
        self._log(now, rec.sobject.name, rec.id, [], source)

    def _log(self, now: datetime, sobject: str, rec_id: str, fields: list[str], source: str) -> None:
        self.stamp_index.touched(sobject, rec_id)
        self.write_counts[source] = self.write_counts.get(source, 0) + 1
        self.write_log.append({"time": now, "object": sobject, "id": rec_id, "fields": fields,
                               "source": source})

    @contextmanager
    def atomic(self) -> Iterator[Callable[[], None]]:
        """Hold the lock and journal writes; the yielded function undoes them (allOrNone).

        An exception inside the block also undoes them. Nested blocks share the journal.
        """
        with self.lock:
            outer = self._journal
            if outer is None:
                self._journal = []
            journal = self._journal
            assert journal is not None
            savepoint = len(journal)

            def rollback() -> None:
                self._rollback_to(journal, savepoint)

            try:
                yield rollback
            except BaseException:
                rollback()
                raise
            finally:
                if outer is None:
                    self._journal = None

    def _rollback_to(self, journal: list[tuple[str, Record, dict[str, Any] | None]], savepoint: int) -> None:
        while len(journal) > savepoint:
            action, rec, old = journal.pop()
            self.stamp_index.touched(rec.sobject.name, rec.id)
            if action == "create":
                self.records[rec.sobject.name].pop(rec.id, None)
                self._by_id.pop(rec.id, None)
                for key, member_id in list(self._membership.items()):
                    if member_id == rec.id:
                        del self._membership[key]
            else:
                assert old is not None
                rec.values = old
                rec.encoded = None
            if self.write_log and self.write_log[-1]["id"] == rec.id:
                entry = self.write_log.pop()
                self.write_counts[entry["source"]] -= 1

    # ----------------------------------------------------------------- funnel sink
    def put_owner(self, owner: Owner) -> None:
        """Create or update the User for a funnel owner."""
        first, _, last = owner.name.partition(" ")
        values = {"Username": owner.email, "FirstName": first if last else None,
                  "LastName": last or first, "Email": owner.email, "IsActive": True}
        with self.lock:
            self._upsert("owner", owner.key, SOBJECTS["User"], values)

    def put_queue(self, queue: Queue) -> None:
        """Create or update the queue (Group with Type 'Queue') for a funnel queue."""
        developer = re.sub(r"\W+", "_", queue.name).strip("_")
        values = {"Name": queue.name, "DeveloperName": developer, "Type": "Queue", "Email": None}
        with self.lock:
            queue_id = self._upsert("queue", queue.key, SOBJECTS["Group"], values)
            # A queue owns only the objects it lists (QueueSobject); the funnel's queues list Lead.
            if not self.queue_objects(queue_id):
                self.set_queue_objects(queue_id, ("Lead",))

    def deactivate_owners(self, count: int, *, seed: int = 0) -> list[str]:
        """Deactivate ``count`` funnel reps (a rep who left: their leads keep them as owner)."""
        with self.lock:
            owners = sorted(rec_id for (kind, _), rec_id in self._keys.items() if kind == "owner")
            chosen = random.Random(f"crmsim-inactive-{seed}").sample(owners, min(count, len(owners)))
            for user_id in chosen:
                self._write(self._by_id[user_id], {"IsActive": False}, "funnel")
            return sorted(chosen)

    def set_user_active(self, user_id: str, active: bool = True) -> None:
        """An admin (re)activates or deactivates a user in Setup (the API user cannot: updates of
        User are refused here, and need "Manage Users" in a real org)."""
        with self.lock:
            self._write(self._by_id[user_id], {"IsActive": active}, "funnel")

    def queue_objects(self, queue_id: str) -> set[str]:
        """The sObject types a queue supports (its QueueSobject rows)."""
        return {rec.values["SobjectType"] for rec in self.records["QueueSobject"].values()
                if rec.values["QueueId"] == queue_id and not rec.deleted}

    def set_queue_objects(self, queue_id: str, sobjects: tuple[str, ...]) -> None:
        """Make a queue support exactly ``sobjects`` (admin set-up, not an API write)."""
        with self.lock:
            current = {rec.values["SobjectType"]: rec for rec in self.records["QueueSobject"].values()
                       if rec.values["QueueId"] == queue_id}
            for name in sobjects:
                if name not in current:
                    self._insert(SOBJECTS["QueueSobject"], {"QueueId": queue_id, "SobjectType": name}, "funnel")
            for name, rec in current.items():
                if name not in sobjects:
                    self.records["QueueSobject"].pop(rec.id, None)
                    self._by_id.pop(rec.id, None)
                    self.stamp_index.touched("QueueSobject", rec.id)

    def put_campaign(self, campaign: Campaign) -> None:
        """Create or update the Campaign for a funnel campaign."""
        values = {"Name": campaign.name[:80], "Type": campaign.type, "Status": "In Progress", "IsActive": True}
        with self.lock:
            self._upsert("campaign", campaign.key, SOBJECTS["Campaign"], values)

    def put_company(self, company: Company) -> None:
        """Create or update the company's Account (leads still carry their own firmographics)."""
        with self.lock:
            self.companies[company.key] = company
            values = {**account_values(company), "OwnerId": self.default_user_id}
            self._upsert("company", company.key, SOBJECTS["Account"], values)

    def put_person(self, person: Person) -> None:
        """Project a funnel person onto a Lead (create or update; see docs/crmsim-salesforce.md)."""
        if person.crm != "salesforce":
            raise ValueError(f"person {person.key} lives in {person.crm}, not salesforce")
        with self.lock:
            now = self.clock.now()
            converted = person.converted_at is not None and person.converted_at <= now
            status = _STATUS_MAP.get(person.status, person.status)
            if converted:
                status = "Closed - Converted"
            elif status == "Closed - Converted":
                status = "Qualified"  # conversion not visible yet
            values: dict[str, Any] = {
                "FirstName": person.first_name,
                "LastName": person.last_name or NOT_PROVIDED,
                "Title": person.title,
                "Company": person.company_name or NOT_PROVIDED,
                "Email": person.email,
                "Phone": person.phone,
                "Country": person.country,
                "LeadSource": person.lead_source,
                "Status": status,
                "Industry": person.industry,
                "AnnualRevenue": float(person.annual_revenue) if person.annual_revenue is not None else None,
                "NumberOfEmployees": person.employees,
                "OwnerId": self._owner_id(person.owner_key),
                "IsConverted": converted,
                "ConvertedDate": person.converted_at.astimezone(UTC).date()
                if converted and person.converted_at else None,
            }
            lead_id = self._upsert("person", person.key, SOBJECTS["Lead"], values, created=person.created_at)
            if person.company_key:
                self._lead_company[lead_id] = person.company_key
            if converted and self._by_id[lead_id].values["ConvertedContactId"] is None:
                self._convert(lead_id)
            if person.campaign_key:
                campaign_id = self._keys.get(("campaign", person.campaign_key))
                if campaign_id and (campaign_id, lead_id) not in self._membership:
                    self._add_member(campaign_id, lead_id, "Sent", None, person.created_at, "funnel")
            if person.merged_into:
                self._merge(lead_id, person.merged_into)
            elif person.deleted:
                self._delete_lead(lead_id, "funnel")

    def put_activity(self, activity: Activity) -> None:
        """Project a funnel activity onto a Task, Event or CampaignMember (see ACTIVITY_MAPPING)."""
        mapping = ACTIVITY_MAPPING.get(activity.type)
        with self.lock:
            lead_id = self._keys.get(("person", activity.person_key))
            if lead_id is None:
                raise UnknownEntity(f"activity {activity.key}: person {activity.person_key} is not in salesforce")
            if mapping is None:
                self.unmapped_activities.append(activity.key)
                return
            sobject, subtype, type_, label = mapping
            when = activity.occurred_at
            lead = self._by_id[lead_id]
            who = lead.values["ConvertedContactId"] or lead_id  # a converted lead's activities go to its Contact
            owner = lead.values["OwnerId"]
            task_owner = owner if owner and owner.startswith("005") else self.default_user_id
            subject = f"{label}: {activity.detail}" if activity.detail else label
            if sobject == "Task":
                values: dict[str, Any] = {
                    "WhoId": who, "Subject": subject[:255], "ActivityDate": when.astimezone(UTC).date(),
                    "Status": "Completed", "Priority": "Normal", "OwnerId": task_owner,
                    "Description": activity.detail, "Type": type_, "TaskSubtype": subtype,
                    "CallType": "Outbound" if type_ == "Call" else None,
                    "CompletedDateTime": ms(when),
                }
                self._upsert("activity", activity.key, SOBJECTS["Task"], values, created=when)
            elif sobject == "Event":
                minutes = _EVENT_MINUTES[type_]
                values = {
                    "WhoId": who, "Subject": subject[:255], "ActivityDate": when.astimezone(UTC).date(),
                    "ActivityDateTime": ms(when), "StartDateTime": ms(when),
                    "EndDateTime": ms(when + timedelta(minutes=minutes)), "DurationInMinutes": minutes,
                    "Description": activity.detail, "Type": type_, "EventSubtype": "Event",
                    "OwnerId": task_owner,
                }
                self._upsert("activity", activity.key, SOBJECTS["Event"], values, created=when)
            else:
                campaign_key = activity.campaign_key or activity.detail
                campaign_id = self._keys.get(("campaign", campaign_key)) if campaign_key else None
                if campaign_id is None:
                    self.unmapped_activities.append(activity.key)
                    return
                member_id = self._membership.get((campaign_id, lead_id))
                responded = when.astimezone(UTC).date()
                if member_id is None:
                    member_id = self._add_member(campaign_id, lead_id, "Responded", responded, when, "funnel")
                else:
                    member = self._by_id[member_id]
                    first = member.values["FirstRespondedDate"]
                    self._write(member, {"Status": "Responded", "HasResponded": True,
                                         "FirstRespondedDate": min(first, responded) if first else responded},
                                "funnel")
                self._keys[("activity", activity.key)] = member_id

    def delete_person(self, person_key: str) -> None:
        """Move a person's Lead (and its activities) to the recycle bin: ``IsDeleted`` true."""
        with self.lock:
            lead_id = self._keys.get(("person", person_key))
            if lead_id is None:
                raise UnknownEntity(f"person {person_key} is not in salesforce")
            self._delete_lead(lead_id, "funnel")

    def _upsert(self, kind: str, key: str, sobject: SObjectDef, values: dict[str, Any],
                created: datetime | None = None) -> str:
        rec_id = self._keys.get((kind, key))
        if rec_id is None:
            rec_id = self._insert(sobject, values, "funnel", created=created)
            self._keys[(kind, key)] = rec_id
        else:
            self._write(self._by_id[rec_id], values, "funnel")
        return rec_id

    def _owner_id(self, owner_key: str | None) -> str:
        if owner_key:
            found = self._keys.get(("owner", owner_key)) or self._keys.get(("queue", owner_key))
            if found:
                return found
        return self.default_user_id

    def _add_member(self, campaign_id: str, lead_id: str, status: str, responded: date | None,
                    created: datetime | None, source: str) -> str:
        values = {"CampaignId": campaign_id, "LeadId": lead_id, "Status": status,
                  "HasResponded": status == "Responded", "FirstRespondedDate": responded}
        member_id = self._insert(SOBJECTS["CampaignMember"], values, source, created=created)
        self._membership[(campaign_id, lead_id)] = member_id
        return member_id

    def _children(self, lead_id: str) -> Iterator[Record]:
        """The lead's live Tasks, Events and campaign members, in that order, oldest first (from
        the indexes by WhoId and LeadId, not a scan of every record: a 100,000-lead world deletes
        thousands of leads while it is built)."""
        order = {"Task": 0, "Event": 1, "CampaignMember": 2}
        found: dict[str, Record] = {}
        for index, ref in ((self._who_index, "WhoId"), (self._member_index, "LeadId")):
            for child_id in index.get(lead_id, []):
                rec = self._by_id.get(child_id)
                if rec is not None and rec.sobject.name in order and rec.values.get(ref) == lead_id \
                        and not rec.deleted:
                    found[child_id] = rec
        # Ids count up per object: sorted, they are the records' creation order.
        yield from sorted(found.values(), key=lambda rec: (order[rec.sobject.name], rec.id))

    def _convert(self, lead_id: str) -> None:
        """Conversion's side effects: a Contact, and the lead's Tasks and Events moved to it
        (``WhoId`` 003..., their stamps bumped), as Salesforce does on convert."""
        lead = self._by_id[lead_id]
        v = lead.values
        owner = v["OwnerId"] if str(v["OwnerId"]).startswith("005") else self.default_user_id
        company = self._lead_company.get(lead_id)
        account_id = self._keys.get(("company", company)) if company else None
        contact_id = self._insert(SOBJECTS["Contact"], {"FirstName": v["FirstName"], "LastName": v["LastName"],
                                                        "Email": v["Email"], "OwnerId": owner,
                                                        "AccountId": account_id}, "funnel")
        self._write(lead, {"ConvertedContactId": contact_id, "ConvertedAccountId": account_id}, "funnel")
        for child_id in self._who_index.get(lead_id, []):
            child = self._by_id.get(child_id)
            if child is not None and child.values["WhoId"] == lead_id and not child.deleted:
                self._write(child, {"WhoId": contact_id}, "funnel")
        self._keys[("contact", lead_id)] = contact_id

    def _delete_lead(self, lead_id: str, source: str) -> None:
        lead = self._by_id[lead_id]
        if lead.deleted:
            return
        for child in list(self._children(lead_id)):
            self._delete_record(child, source)
        self._write(lead, {"IsDeleted": True}, source)

    def _delete_record(self, rec: Record, source: str) -> None:
        if rec.sobject.name == "CampaignMember":
            self._membership.pop((rec.values["CampaignId"], rec.values["LeadId"]), None)
        self._write(rec, {"IsDeleted": True}, source)

    def _merge(self, loser_id: str, survivor_key: str) -> None:
        loser = self._by_id[loser_id]
        survivor_id = self._keys.get(("person", survivor_key))
        if loser.deleted and loser.values["MasterRecordId"] == survivor_id:
            return
        if survivor_id is not None:
            # A merge reparents the loser's activities onto the survivor, as Salesforce does.
            for child in list(self._children(loser_id)):
                if child.sobject.name == "CampaignMember":
                    key = (child.values["CampaignId"], survivor_id)
                    if key in self._membership:
                        self._delete_record(child, "funnel")
                        continue
                    self._membership.pop((child.values["CampaignId"], loser_id), None)
                    self._membership[key] = child.id
                    self._write(child, {"LeadId": survivor_id}, "funnel")
                else:
                    self._write(child, {"WhoId": survivor_id}, "funnel")
        else:
            for child in list(self._children(loser_id)):
                self._delete_record(child, "funnel")
        self._write(loser, {"IsDeleted": True, "MasterRecordId": survivor_id}, "funnel")

    def convert_lead(self, lead_id: str, source: str = "funnel") -> None:
        """Convert a Lead now, as a rep's "Convert" does: ``IsConverted``, ``ConvertedDate``, closed status,
        and conversion's Contact (the lead's activities move to it)."""
        with self.lock:
            rec = self._api_target("Lead", lead_id)
            self._write(rec, {"IsConverted": True, "ConvertedDate": self._now().date(),
                              "Status": "Closed - Converted"}, source)
            if rec.values["ConvertedContactId"] is None:
                self._convert(lead_id)

    # ----------------------------------------------------------------- API writes
    def sobject(self, name: str) -> SObjectDef:
        """The sObject definition for a (case-insensitive) name; NOT_FOUND if unknown."""
        definition = SOBJECTS_LOWER.get(name.lower())
        if definition is None:
            raise RecordError("NOT_FOUND", "The requested resource does not exist", http_status=404)
        return definition

    def api_create(self, sobject_name: str, body: dict[str, Any], *, auto_assign: bool = True) -> str:
        """Create a record from an API body; returns its id or raises :class:`RecordError`."""
        definition = self.sobject(sobject_name)
        name = definition.name
        if not definition.createable:
            raise RecordError("INVALID_TYPE_FOR_OPERATION", f"entity type cannot be inserted: {name}")
        with self.lock:
            if any(k.lower() == "id" for k in body if k != "attributes"):
                raise RecordError("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
            values = self._coerce_body(definition, body, creating=True)
            self._check_required(definition, values)
            if name == "Lead":
                values.setdefault("Status", "Open - Not Contacted")
                values.setdefault("OwnerId", self.default_user_id)
                if auto_assign:
                    values.update(self._assign(values))
            elif name in ("Task", "Event"):
                values.setdefault("OwnerId", self.default_user_id)
                if name == "Task":
                    values.setdefault("Status", "Not Started")
                    values.setdefault("Priority", "Normal")
                    values.setdefault("TaskSubtype", "Task")
                else:
                    values.setdefault("EventSubtype", "Event")
            elif name == "CampaignMember":
                values.setdefault("Status", "Sent")
                key = (values["CampaignId"], values["LeadId"])
                if key in self._membership:
                    raise RecordError("DUPLICATE_VALUE", "Already a campaign member.", [])
            elif name == "Campaign":
                values.setdefault("Status", "Planned")
            elif name in ("Account", "Contact"):
                values.setdefault("OwnerId", self.default_user_id)
            if name == "CampaignMember" and values.get("Status") == "Responded":
                values["HasResponded"] = True
                values["FirstRespondedDate"] = self._now().date()
            if self.validation_rules:  # Salesforce runs them on inserts too
                self._validate(name, values)
            rec_id = self._insert(definition, values, "api")
            if name == "CampaignMember":
                self._membership[(values["CampaignId"], values["LeadId"])] = rec_id
            who = self.get(values["WhoId"]) if name in ("Task", "Event") and values.get("WhoId") else None
            if who is not None and who.sobject.name == "Lead":
                # Logging an activity changes the lead's LastActivityDate: a system change that
                # moves its SystemModstamp (not LastModifiedDate).
                self._touch(who, ("SystemModstamp",), "api")
            return rec_id

    def api_update(self, sobject_name: str | None, record_id: str, body: dict[str, Any], *,
                   auto_assign: bool = True) -> bool:
        """Update a record from an API body; True if anything changed. Raises :class:`RecordError`.

        ``sobject_name`` None means "take the type from the id" (Collections with a type mismatch
        are reported as MALFORMED_ID).
        """
        with self.lock:
            rec = self._api_target(sobject_name, record_id)
            definition = rec.sobject
            if not definition.updateable:
                raise RecordError("INVALID_TYPE_FOR_OPERATION", f"entity type cannot be updated: {definition.name}")
            if definition.name == "Lead" and rec.values.get("IsConverted") and not self.converted_lead_edit:
                raise _converted_lead()
            values = self._coerce_body(definition, body, creating=False)
            if definition.name == "Lead" and auto_assign:
                merged = dict(rec.values)
                merged.update(values)
                values.update(self._assign(merged))
            if definition.name == "CampaignMember" and values.get("Status") == "Responded" \
                    and not rec.values["HasResponded"]:
                values["HasResponded"] = True
                values["FirstRespondedDate"] = self._now().date()
            if self.validation_rules:
                merged = dict(rec.values)
                merged.update(values)
                self._validate(definition.name, merged)
            return self._write(rec, values, "api")

    def _validate(self, sobject: str, values: dict[str, Any]) -> None:
        for rule in self.validation_rules:
            if rule.sobject == sobject and rule.fails(values):
                raise RecordError("FIELD_CUSTOM_VALIDATION_EXCEPTION", rule.message, list(rule.fields))

    def api_delete(self, sobject_name: str | None, record_id: str) -> None:
        """Delete (recycle) a record; Lead deletes cascade to its activities."""
        with self.lock:
            rec = self._api_target(sobject_name, record_id)
            if not rec.sobject.deletable:
                raise RecordError("INVALID_TYPE_FOR_OPERATION", f"entity type cannot be deleted: {rec.sobject.name}")
            if rec.sobject.name == "Lead":
                self._delete_lead(rec.id, "api")
            else:
                self._delete_record(rec, "api")

    def _api_target(self, sobject_name: str | None, record_id: str) -> Record:
        definition = self.sobject(sobject_name) if sobject_name else None
        if not isinstance(record_id, str) or not well_formed_id(record_id):
            label = definition.name if definition else "Record"
            raise RecordError("MALFORMED_ID", f"{label} ID: id value of incorrect type: {record_id}", ["Id"])
        if definition and not record_id.startswith(definition.key_prefix):
            raise RecordError("MALFORMED_ID",
                              f"{definition.name} ID: id value of incorrect type: {record_id}", ["Id"])
        rec = self.get(record_id)
        if rec is None:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
        if rec.deleted:
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [])
        return rec

    def _assign(self, values: dict[str, Any]) -> dict[str, Any]:
        for rule in self.assignment_rules:
            value = values.get(rule.field)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= rule.min_value:
                return {"OwnerId": rule.owner_id}
        return {}

    def _check_required(self, definition: SObjectDef, values: dict[str, Any]) -> None:
        required = {"Lead": ("LastName", "Company"), "Campaign": ("Name",), "Event": ("StartDateTime",),
                    "Account": ("Name",), "Contact": ("LastName",),
                    "CampaignMember": ("CampaignId", "LeadId")}.get(definition.name, ())
        missing = [name for name in required if values.get(name) in (None, "")]
        if missing:
            raise RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                              missing)

    def _coerce_body(self, definition: SObjectDef, body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        visible = self.fields(definition.name)
        values: dict[str, Any] = {}
        readonly: list[str] = []
        for key, raw in body.items():
            if key == "attributes" or (key.lower() == "id" and not creating):
                continue
            fdef = visible.get(key.lower())
            if fdef is None:
                raise RecordError("INVALID_FIELD", f"No such column '{key}' on sobject of type {definition.name}",
                                  [key])
            if not (fdef.createable if creating else fdef.updateable):
                readonly.append(fdef.name)
                continue
            values[fdef.name] = self._coerce(definition, fdef, raw)
        if readonly:
            raise RecordError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(readonly)}. Please check the security settings "
                "of this field and verify that it is read/write for your profile or permission set.",
                readonly)
        return values

    def _coerce(self, definition: SObjectDef, fdef: FieldDef, raw: Any) -> Any:
        label = fdef.display_label
        if raw is None or raw == "":
            if not fdef.nillable and fdef.type != "boolean":
                raise RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{fdef.name}]",
                                  [fdef.name])
            return None if fdef.type != "boolean" else False
        kind = fdef.type
        if kind in ("double", "currency", "percent", "int"):
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise _type_error(fdef, raw)
            try:
                number = float(raw)
            except ValueError:
                raise _type_error(fdef, raw) from None
            if kind == "int":
                if number != int(number):
                    raise _type_error(fdef, raw)
                return int(number)
            # Salesforce rounds half up to the field's scale (Python's round() is half-even).
            number = float(Decimal(repr(number)).quantize(Decimal(1).scaleb(-fdef.scale), rounding=ROUND_HALF_UP))
            if fdef.precision and abs(number) >= 10 ** (fdef.precision - fdef.scale):
                raise RecordError("NUMBER_OUTSIDE_VALID_RANGE",
                                  f"{label}: value outside of valid range on numeric field: {raw}", [fdef.name])
            return number
        if kind == "boolean":
            if not isinstance(raw, bool):
                raise _type_error(fdef, raw)
            return raw
        if kind == "datetime":
            try:
                return parse_api_datetime(str(raw)) if isinstance(raw, str) else _raise(fdef, raw)
            except ValueError:
                raise _type_error(fdef, raw) from None
        if kind == "date":
            try:
                return date.fromisoformat(raw[:10]) if isinstance(raw, str) else _raise(fdef, raw)
            except ValueError:
                raise _type_error(fdef, raw) from None
        if not isinstance(raw, str):
            raise _type_error(fdef, raw)
        if kind == "reference":
            return self._check_reference(definition, fdef, raw)
        if fdef.length and len(raw) > fdef.length:
            raise RecordError("STRING_TOO_LONG",
                              f"{label}: data value too large: {raw[:40]} (max length={fdef.length})", [fdef.name])
        if kind == "picklist" and fdef.restricted and raw not in fdef.picklist:
            raise RecordError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                              f"{label}: bad value for restricted picklist field: {raw}", [fdef.name])
        if kind == "email" and not _EMAIL_RE.match(raw):
            raise RecordError("INVALID_EMAIL_ADDRESS", f"{label}: invalid email address: {raw}", [fdef.name])
        return raw

    def _check_reference(self, definition: SObjectDef, fdef: FieldDef, raw: str) -> str:
        target = self.get(raw) if well_formed_id(raw) else None
        allowed = fdef.reference_to
        ok = target is not None and not target.deleted and target.sobject.name in allowed
        if ok and target is not None and target.sobject.name == "Group":
            ok = target.values["Type"] == "Queue"
        if fdef.name == "OwnerId" and target is not None and not target.deleted:
            if target.sobject.name == "Group" and target.values["Type"] == "Queue" \
                    and definition.name not in self.queue_objects(target.id):
                # A queue owns only the objects listed among its supported objects; Task owners
                # are never queues ("Assigned To ID").
                raise RecordError("FIELD_INTEGRITY_EXCEPTION",
                                  f"{fdef.display_label}: id value of incorrect type: {target.id}", [fdef.name])
            if target.sobject.name == "User" and not target.values["IsActive"]:
                raise RecordError("INACTIVE_OWNER_OR_USER", "operation performed with inactive user "
                                  f"[{target.id}] as owner of {definition.name.lower()}", [])
        if not ok or target is None:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY",
                              f"invalid cross reference id: {fdef.display_label} ({raw})", [fdef.name])
        if target.sobject.name == "Lead" and target.values.get("IsConverted") and not self.converted_lead_edit:
            # A Task's WhoId or a CampaignMember's LeadId may not name a converted Lead (only its
            # ConvertedContactId), whatever the record being written.
            raise _converted_lead()
        return target.id


def _converted_lead() -> RecordError:
    """What Salesforce answers for an update of, or a reference to, a converted Lead."""
    return RecordError("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead", [])


def _type_error(fdef: FieldDef, raw: Any) -> RecordError:
    kind = {"int": "int", "boolean": "boolean", "datetime": "datetime", "date": "date"}.get(fdef.type, "double")
    if fdef.type in ("string", "picklist", "email", "phone", "textarea", "combobox", "reference", "url"):
        kind = "String"
    return RecordError("JSON_PARSER_ERROR",
                       f"Cannot deserialize instance of {kind} from {type(raw).__name__} value {raw!r} "
                       "or request may be missing a required field", [fdef.name])


def _raise(fdef: FieldDef, raw: Any) -> Any:
    raise _type_error(fdef, raw)


def _derive(sobject: str, values: dict[str, Any]) -> None:
    """Fields Salesforce computes: Name, IsClosed, HasResponded."""
    if sobject in ("Lead", "User"):
        first, last = values.get("FirstName"), values.get("LastName")
        values["Name"] = " ".join(part for part in (first, last) if part) or None
    elif sobject == "Task":
        values["IsClosed"] = values.get("Status") == "Completed"
