"""The HubSpot record store: objects, properties, associations, owners, events, workflows.

It implements :class:`crmsim.model.FunnelSink` (the funnel projects its world into HubSpot
shapes here) and the reads/writes the HTTP server needs. All access goes through one re-entrant
lock, so the funnel may write while the server reads. Every write stamps modification times from
the shared :class:`~crmsim.model.SimClock`, and only when a value really changed; each such write
is appended to :attr:`HubSpotStore.write_log`.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
import uuid
import zlib
from bisect import bisect_right, insort
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from crmsim.hubspot import schema
from crmsim.hubspot.errors import HubSpotAPIError, not_found, property_error, validation_error
from crmsim.model import Activity, Campaign, Company, Owner, Person, Queue, SimClock

Source = Literal["funnel", "api"]

# First id per object type: distinct ranges make a wrong-type lookup fail loudly in tests.
_FIRST_ID = {
    "contacts": 101,
    "companies": 5_000_001,
    "emails": 20_000_001,
    "meetings": 30_000_001,
    "calls": 40_000_001,
    "notes": 50_000_001,
    "tasks": 60_000_001,
}
_EVENT_NAMESPACE = uuid.UUID("6f1c4a52-7d55-4c1e-9b1e-5d3a0c2b9e11")


@dataclass(slots=True)
class Record:
    """One CRM object. ``props`` holds only set values, all strings."""

    id: int
    object_type: str
    props: dict[str, str]
    created_at: datetime
    updated_at: datetime
    archived: bool = False
    archived_at: datetime | None = None
    # Comparable forms of property values for search, filled lazily, dropped on write.
    typed: dict[str, Any] = field(default_factory=dict)
    created_s: str = ""
    updated_s: str = ""
    props_shared: bool = False
    # time.monotonic() from which search sees the record's latest write (Strictness.search_lag)
    indexed_after: float = 0.0


@dataclass(frozen=True, slots=True)
class WriteLogEntry:
    """One write that changed a record: when (simulated), what, which properties, by whom."""

    at: datetime
    object_type: str
    object_id: str
    changed: Mapping[str, str | None]  # for an insert: all initial values
    source: Source


@dataclass(frozen=True, slots=True)
class Event:
    """A web-analytics / custom behavioural event served by ``/events/v3/events/``."""

    id: str
    event_type: str
    occurred_at: datetime
    object_type: str  # "contact"
    object_id: str
    properties: dict[str, str]

    def sort_key(self) -> tuple[datetime, str]:
        return (self.occurred_at, self.id)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "eventType": self.event_type,
            "occurredAt": schema.format_ts(self.occurred_at),
            "objectType": self.object_type,
            "objectId": self.object_id,
            "properties": self.properties,
        }


def _normalise_number(value: str) -> str:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return repr(number)


class HubSpotStore:
    """In-memory HubSpot portal. Thread-safe; see the module docstring."""

    def __init__(self, clock: SimClock, *, seed: int = 0) -> None:
        self.clock = clock
        self.seed = seed
        self.lock = threading.RLock()
        self.properties: dict[str, dict[str, dict[str, Any]]] = schema.default_properties()
        self._property_meta: dict[tuple[str, str], tuple[datetime, datetime]] = {}
        self.records: dict[str, dict[int, Record]] = {t: {} for t in schema.OBJECT_TYPES}
        self.order: dict[str, list[int]] = {t: [] for t in schema.OBJECT_TYPES}
        self.versions: dict[str, int] = {t: 0 for t in schema.OBJECT_TYPES}
        self._next_id = dict(_FIRST_ID)
        # (type, id) -> to_type -> to_id -> [association type ids]
        self.associations: dict[tuple[str, int], dict[str, dict[int, list[int]]]] = {}
        self.owners: dict[int, dict[str, Any]] = {}
        self.teams: dict[int, dict[str, Any]] = {}
        self.campaigns: dict[str, dict[str, Any]] = {}
        self.events: list[Event] = []
        self.workflows: dict[int, dict[str, Any]] = {
            1001: {"id": 1001, "name": "SDR fast lane", "type": "DRIP_DELAY", "enabled": True},
            1002: {"id": 1002, "name": "Nurture: educational series", "type": "DRIP_DELAY", "enabled": True},
            1003: {"id": 1003, "name": "Pause outreach", "type": "DRIP_DELAY", "enabled": True},
        }
        self.enrollments: list[dict[str, Any]] = []
        self.write_log: list[WriteLogEntry] = []
        # Positions in write_log per record, so property history costs O(record's writes).
        self._log_index: dict[tuple[str, int], list[int]] = {}
        self._person_ids: dict[str, int] = {}
        self._company_ids: dict[str, int] = {}
        self._owner_ids: dict[str, int] = {}
        self._team_ids: dict[str, int] = {}
        self._activity_ids: dict[str, tuple[str, str]] = {}
        self._persons: dict[str, Person] = {}
        self._email_index: dict[str, int] = {}
        self._pending_conversions: list[tuple[datetime, str]] = []
        self._pending_merges: dict[str, list[str]] = {}
        # "survivor": the survivor keeps its id, the loser is archived (HubSpot before its merge
        # change). "new_id": a merge creates a new record both old ids point to (current HubSpot).
        self.merge_mode = "survivor"
        self.search_lag = 0.0  # seconds (wall clock) before search sees a write
        self.merged_to: dict[int, int] = {}  # contact id merged away -> the record it now is
        self.retired: dict[int, Record] = {}  # merged-away contacts as they were (no longer readable)

    # ------------------------------------------------------------------ property schema

    def property_def(self, object_type: str, name: str) -> dict[str, Any] | None:
        """The definition of a property, or None when it does not exist."""
        return self.properties[object_type].get(name)

    def create_property(self, object_type: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Create a custom property; 409 CONFLICT when the name exists, 400 on a bad spec."""
        name = spec.get("name")
        with self.lock:
            if (
                not isinstance(name, str)
                or not name
                or not name.replace("_", "a").isalnum()
                or not name[0].isalpha()
                or name != name.lower()
            ):
                raise HubSpotAPIError(
                    400,
                    "VALIDATION_ERROR",
                    f"Property name {name!r} is invalid: use lower-case [a-z][a-z0-9_]*",
                )
            for key in ("label", "type", "fieldType", "groupName"):
                if not isinstance(spec.get(key), str) or not spec.get(key):
                    raise HubSpotAPIError(
                        400, "VALIDATION_ERROR", f"Missing required field {key!r}", context={"field": [key]}
                    )
            if spec["type"] not in ("string", "number", "date", "datetime", "enumeration", "bool"):
                raise HubSpotAPIError(400, "VALIDATION_ERROR", f"Invalid property type {spec['type']!r}")
            if name in self.properties[object_type]:
                raise HubSpotAPIError(
                    409,
                    "OBJECT_ALREADY_EXISTS",
                    f"A property named '{name}' already exists.",
                    sub_category="PropertyError.PROPERTY_EXISTS",
                    context={"name": [name]},
                )
            options = spec.get("options") or []
            definition: dict[str, Any] = {
                "name": name,
                "label": spec["label"],
                "type": spec["type"],
                "fieldType": spec["fieldType"],
                "groupName": spec["groupName"],
                "description": spec.get("description", ""),
                "options": [dict(o) for o in options if isinstance(o, dict)],
                "hubspotDefined": False,
                "readOnlyValue": False,
                "hasUniqueValue": bool(spec.get("hasUniqueValue", False)),
                "hidden": bool(spec.get("hidden", False)),
                "formField": bool(spec.get("formField", False)),
                "displayOrder": spec.get("displayOrder", -1),
            }
            self.properties[object_type][name] = definition
            now = self.clock.now()
            self._property_meta[(object_type, name)] = (now, now)
            return self.property_json(object_type, name)

    def property_json(self, object_type: str, name: str) -> dict[str, Any]:
        """A property definition in the API's ``Property`` shape."""
        d = self.properties[object_type][name]
        created, updated = self._property_meta.get((object_type, name), (None, None))
        out: dict[str, Any] = {
            "name": d["name"],
            "label": d["label"],
            "type": d["type"],
            "fieldType": d["fieldType"],
            "groupName": d["groupName"],
            "description": d.get("description", ""),
            "options": d["options"],
            "displayOrder": d.get("displayOrder", -1),
            "calculated": False,
            "externalOptions": False,
            "hasUniqueValue": d.get("hasUniqueValue", False),
            "hidden": d.get("hidden", False),
            "hubspotDefined": d["hubspotDefined"],
            "formField": d.get("formField", False),
            "archived": False,
            "modificationMetadata": {
                "archivable": not d["hubspotDefined"],
                "readOnlyDefinition": d["hubspotDefined"],
                "readOnlyValue": d["readOnlyValue"],
            },
        }
        if created is not None and updated is not None:
            out["createdAt"] = schema.format_ts(created)
            out["updatedAt"] = schema.format_ts(updated)
        return out

    # ------------------------------------------------------------------ validation

    def _normalise_value(
        self, object_type: str, name: str, raw: Any, *, check_read_only: bool
    ) -> tuple[str | None, dict[str, Any] | None]:
        """(normalised value or None to clear, error detail or None)."""
        definition = self.properties[object_type].get(name)
        if definition is None:
            return None, property_error(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
        if check_read_only and definition["readOnlyValue"]:
            return None, property_error(
                name, "READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be set.'
            )
        if raw is None:
            return None, None
        if isinstance(raw, bool):
            value = "true" if raw else "false"
        elif isinstance(raw, int | float | str):
            value = str(raw)
        else:
            return None, property_error(name, "INVALID_VALUE", f"{raw!r} is not a valid value for {name}")
        if value == "":
            return None, None
        kind = definition["type"]
        try:
            if kind == "number":
                value = _normalise_number(value)
            elif kind in ("datetime", "date"):
                value = schema.format_ts(schema.parse_ts(value))
            elif kind == "bool":
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                value = value.lower()
        except (ValueError, OverflowError, OSError):
            return None, property_error(
                name,
                "INVALID_" + ("INTEGER" if kind == "number" else kind.upper()),
                f"{value!r} was not a valid {kind}.",
            )
        if kind == "enumeration":
            if name == "hubspot_owner_id":
                if not value.isdigit() or int(value) not in self.owners:
                    return None, property_error(
                        name, "INVALID_OPTION", f"{value!r} was not one of the allowed options (owner ids)"
                    )
            elif definition["options"]:
                allowed = {o.get("value") for o in definition["options"]}
                values = value.split(";") if definition["fieldType"] == "checkbox" else [value]
                bad = [v for v in values if v not in allowed]
                if bad:
                    return None, property_error(
                        name,
                        "INVALID_OPTION",
                        f"{bad[0]!r} was not one of the allowed options: {sorted(a for a in allowed if a)}",
                    )
        if name == "email" and "@" not in value:
            return None, property_error(name, "INVALID_EMAIL", f"Email address {value} is invalid")
        return value, None

    def validate(
        self, object_type: str, props: dict[str, Any], *, check_read_only: bool = True
    ) -> tuple[dict[str, str | None], list[dict[str, Any]]]:
        """Normalise API-written property values; returns (values, error details)."""
        out: dict[str, str | None] = {}
        errors: list[dict[str, Any]] = []
        for name, raw in props.items():
            value, error = self._normalise_value(object_type, str(name), raw, check_read_only=check_read_only)
            if error is not None:
                errors.append(error)
            else:
                out[str(name)] = value
        return out, errors

    # ------------------------------------------------------------------ writes

    def _new_id(self, object_type: str) -> int:
        new = self._next_id[object_type]
        self._next_id[object_type] = new + 1
        return new

    @staticmethod
    def _own_props(rec: Record) -> None:
        """Copy-on-write: an inserted record shares its props dict with its write-log entry."""
        if rec.props_shared:
            rec.props = dict(rec.props)
            rec.props_shared = False

    def _stamp(self, rec: Record, now: datetime) -> None:
        self._own_props(rec)
        stamp = schema.format_ts(now)
        rec.props["hs_lastmodifieddate"] = stamp
        rec.typed.pop("hs_lastmodifieddate", None)
        if rec.object_type == "contacts":
            rec.props["lastmodifieddate"] = stamp
            rec.typed.pop("lastmodifieddate", None)
        rec.updated_at = now
        rec.updated_s = stamp
        if self.search_lag > 0:
            rec.indexed_after = time.monotonic() + self.search_lag

    def _insert(
        self,
        object_type: str,
        values: dict[str, str | None],
        source: Source,
        created_at: datetime | None = None,
    ) -> Record:
        with self.lock:
            now = self.clock.now()
            created = created_at or now
            new_id = self._new_id(object_type)
            props = {k: v for k, v in values.items() if v is not None}
            created_s = schema.format_ts(created)
            props["hs_object_id"] = str(new_id)
            props["hs_createdate"] = created_s
            if object_type in ("contacts", "companies"):
                props["createdate"] = created_s
            stamp = schema.format_ts(now)
            props["hs_lastmodifieddate"] = stamp
            if object_type == "contacts":
                props["lastmodifieddate"] = stamp
            rec = Record(
                id=new_id,
                object_type=object_type,
                props=props,
                created_at=created,
                updated_at=now,
                created_s=created_s,
                updated_s=stamp,
                props_shared=True,
            )
            if self.search_lag > 0:
                rec.indexed_after = time.monotonic() + self.search_lag
            self.records[object_type][new_id] = rec
            self.order[object_type].append(new_id)
            if object_type == "contacts" and "email" in props:
                self._email_index.setdefault(props["email"].lower(), new_id)
            self.versions[object_type] += 1
            # The entry shares the props dict until the record's next write (see _own_props).
            self._log(WriteLogEntry(now, object_type, str(new_id), props, source), new_id)
            return rec

    def _apply(self, rec: Record, values: dict[str, str | None], source: Source) -> bool:
        """Apply changed values; stamp and log only if something changed. True when changed."""
        changed: dict[str, str | None] = {}
        for name, value in values.items():
            if rec.props.get(name) != value:
                changed[name] = value
        if not changed:
            return False
        if rec.object_type == "contacts" and "email" in changed:
            old = rec.props.get("email")
            if old is not None and self._email_index.get(old.lower()) == rec.id:
                del self._email_index[old.lower()]
            new = changed["email"]
            if new is not None:
                self._email_index.setdefault(new.lower(), rec.id)
        self._own_props(rec)
        for name, value in changed.items():
            if value is None:
                rec.props.pop(name, None)
            else:
                rec.props[name] = value
            rec.typed.pop(name, None)
        now = self.clock.now()
        self._stamp(rec, now)
        self.versions[rec.object_type] += 1
        self._log(WriteLogEntry(now, rec.object_type, str(rec.id), changed, source), rec.id)
        return True

    def _archive(self, rec: Record, source: Source) -> bool:
        if rec.archived:
            return False
        now = self.clock.now()
        rec.archived = True
        rec.archived_at = now
        self._stamp(rec, now)
        self.versions[rec.object_type] += 1
        self._log(WriteLogEntry(now, rec.object_type, str(rec.id), {"archived": "true"}, source), rec.id)
        return True

    def _log(self, entry: WriteLogEntry, object_id: int) -> None:
        self._log_index.setdefault((entry.object_type, object_id), []).append(len(self.write_log))
        self.write_log.append(entry)

    def history(self, rec: Record, names: list[str]) -> dict[str, list[dict[str, Any]]]:
        """``propertiesWithHistory`` for a record: each property's values, newest first.

        Stamps are the simulated times of the writes; ``sourceType`` is ``CRM_UI`` for funnel
        writes and ``INTEGRATION`` for API writes.
        """
        with self.lock:
            out: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            for position in reversed(self._log_index.get((rec.object_type, rec.id), [])):
                entry = self.write_log[position]
                for name in names:
                    if name in entry.changed:
                        value = entry.changed[name]
                        out[name].append(
                            {
                                "value": "" if value is None else value,
                                "timestamp": schema.format_ts(entry.at),
                                "sourceType": "CRM_UI" if entry.source == "funnel" else "INTEGRATION",
                            }
                        )
            return out

    def resolve_merged(self, object_type: str, object_id: int | str) -> int | None:
        """The record a merged-away contact id now points to (None: not merged away)."""
        if object_type != "contacts":
            return None
        try:
            current = int(object_id)
        except (TypeError, ValueError):
            return None
        if current not in self.merged_to:
            return None
        while current in self.merged_to:
            current = self.merged_to[current]
        return current

    def get(self, object_type: str, object_id: int | str, *, archived: bool = False) -> Record:
        """A record by id; 404 when unknown or when its archived state differs from ``archived``.

        A merged-away contact id answers the record it was merged into (under its new id)."""
        with self.lock:
            merged = self.resolve_merged(object_type, object_id)
            if merged is not None:
                object_id = merged
            try:
                rec = self.records[object_type].get(int(object_id))
            except (TypeError, ValueError):
                rec = None
            if rec is None or rec.archived != archived:
                raise not_found(f"Object not found.  objectId are usually numeric. ({object_id})")
            return rec

    def find_by_property(self, object_type: str, name: str, value: str) -> Record | None:
        """The first live record whose property equals ``value`` (case-insensitive for email)."""
        with self.lock:
            if object_type == "contacts" and name == "email":
                found = self._email_index.get(value.lower())
                if found is not None and not self.records["contacts"][found].archived:
                    return self.records["contacts"][found]
            wanted = value.lower() if name == "email" else value
            for rec in self.records[object_type].values():
                have = rec.props.get(name)
                if have is not None and not rec.archived and (have.lower() if name == "email" else have) == wanted:
                    return rec
            return None

    def api_create(
        self, object_type: str, props: dict[str, Any], associations: list[dict[str, Any]] | None = None
    ) -> Record:
        """Create through the API (validated, read-only properties refused)."""
        with self.lock:
            values, errors = self.validate(object_type, props)
            if object_type == "tasks" and not values.get("hs_timestamp"):
                # The tasks API requires hs_timestamp (the due date) on create (checklist #29;
                # the exact error code is unverified).
                errors.append(property_error("hs_timestamp", "REQUIRED_PROPERTY",
                                             "hs_timestamp is required to create a task"))
            if errors:
                raise validation_error(errors)
            targets: list[tuple[str, int, list[int]]] = []
            for assoc in associations or []:
                to = assoc.get("to") or {}
                type_ids = [int(t.get("associationTypeId", 0)) for t in assoc.get("types") or []]
                target = self._find_association_target(object_type, str(to.get("id", "")), type_ids)
                targets.append((target[0], target[1], type_ids))
            rec = self._insert(object_type, values, "api")
            for to_type, to_id, type_ids in targets:
                self.associate(object_type, rec.id, to_type, to_id, type_ids)
            return rec

    def _find_association_target(self, object_type: str, to_id: str, type_ids: list[int]) -> tuple[str, int]:
        for (from_type, to_type), types in schema.ASSOCIATION_TYPES.items():
            if from_type == object_type and any(t in {tid for tid, _ in types} for t in type_ids):
                rec = self.records[to_type].get(int(to_id)) if to_id.isdigit() else None
                if rec is not None and not rec.archived:
                    return to_type, rec.id
        raise HubSpotAPIError(400, "VALIDATION_ERROR", f"Association target {to_id} with types {type_ids} is invalid")

    def api_update(self, object_type: str, object_id: int | str, props: dict[str, Any]) -> Record:
        """Update through the API: validated; stamps only when a value changed."""
        with self.lock:
            rec = self.get(object_type, object_id)
            values, errors = self.validate(object_type, props)
            if errors:
                raise validation_error(errors)
            self._apply(rec, values, "api")
            return rec

    def api_archive(self, object_type: str, object_id: int | str) -> None:
        """Archive through the API; archiving an unknown or archived id is a no-op, like HubSpot."""
        with self.lock:
            try:
                rec = self.records[object_type].get(int(object_id))
            except (TypeError, ValueError):
                return
            if rec is not None:
                self._archive(rec, "api")

    # ------------------------------------------------------------------ associations

    def associate(self, from_type: str, from_id: int, to_type: str, to_id: int, type_ids: list[int]) -> None:
        """Record an association in both directions (the inverse type ids on the way back)."""
        with self.lock:
            fwd = self.associations.setdefault((from_type, from_id), {}).setdefault(to_type, {})
            back = self.associations.setdefault((to_type, to_id), {}).setdefault(from_type, {})
            have = fwd.setdefault(to_id, [])
            have_back = back.setdefault(from_id, [])
            for tid in type_ids:
                if tid not in have:
                    have.append(tid)
                inv = schema.INVERSE_TYPE_ID.get(tid, tid)
                if inv not in have_back:
                    have_back.append(inv)

    def dissociate_all(self, from_type: str, from_id: int, to_type: str) -> None:
        """Drop every association from a record to records of ``to_type`` (both directions)."""
        with self.lock:
            fwd = self.associations.get((from_type, from_id), {}).pop(to_type, {})
            for to_id in fwd:
                self.associations.get((to_type, to_id), {}).get(from_type, {}).pop(from_id, None)

    def associated(self, from_type: str, from_id: int, to_type: str) -> dict[int, list[int]]:
        """Live associated ids of ``to_type`` with their type ids, sorted by id."""
        with self.lock:
            targets = self.associations.get((from_type, from_id), {}).get(to_type, {})
            live = self.records[to_type]
            return {
                tid: list(types) for tid, types in sorted(targets.items()) if tid in live and not live[tid].archived
            }

    # ------------------------------------------------------------------ events

    def add_event(self, event: Event) -> None:
        """Insert an event keeping (occurredAt, id) order."""
        with self.lock:
            insort(self.events, event, key=Event.sort_key)

    def events_page(
        self,
        *,
        object_type: str | None,
        object_id: str | None,
        event_type: str | None,
        occurred_after: datetime | None,
        occurred_before: datetime | None,
        descending: bool,
        offset: int,
        limit: int,
    ) -> tuple[list[Event], int | None]:
        """One page of events matching the filters; returns (events, next offset or None).

        ``occurred_after`` is inclusive and ``occurred_before`` exclusive (see the docs).
        """
        with self.lock:
            events = self.events
            lo = 0
            hi = len(events)
            if occurred_after is not None:
                lo = bisect_right(events, (occurred_after, ""), key=Event.sort_key)
                while lo > 0 and events[lo - 1].occurred_at >= occurred_after:
                    lo -= 1
            if occurred_before is not None:
                hi = bisect_right(events, (occurred_before, ""), key=Event.sort_key)
                while hi > lo and events[hi - 1].occurred_at >= occurred_before:
                    hi -= 1
            window = events[lo:hi]
            if descending:
                window = window[::-1]
            matched = [
                e
                for e in window
                if (object_type is None or e.object_type == object_type)
                and (object_id is None or e.object_id == object_id)
                and (event_type is None or e.event_type == event_type)
            ]
            page = matched[offset : offset + limit]
            nxt = offset + limit if offset + limit < len(matched) else None
            return page, nxt

    # ------------------------------------------------------------------ FunnelSink

    def apply_due(self) -> None:
        """Reveal conversions whose time the simulated clock has passed (called before reads and writes)."""
        with self.lock:
            now = self.clock.now()
            while self._pending_conversions and self._pending_conversions[0][0] <= now:
                _, key = heapq.heappop(self._pending_conversions)
                person = self._persons.get(key)
                if person is not None:
                    self._project_person(person)

    def put_owner(self, owner: Owner) -> None:
        """Create or update a HubSpot owner (``/crm/v3/owners``)."""
        with self.lock:
            now = self.clock.now()
            first, _, last = owner.name.partition(" ")
            owner_id = self._owner_ids.get(owner.key)
            if owner_id is None:
                owner_id = 70_000_001 + len(self._owner_ids)
                self._owner_ids[owner.key] = owner_id
                self.owners[owner_id] = {
                    "id": str(owner_id),
                    "userId": 9_000_001 + len(self._owner_ids),
                    "createdAt": schema.format_ts(now),
                    "archived": False,
                    "type": "PERSON",
                    "teams": [],
                }
            entry = self.owners[owner_id]
            new = {"email": owner.email, "firstName": first, "lastName": last}
            if any(entry.get(k) != v for k, v in new.items()):
                entry.update(new)
                entry["updatedAt"] = schema.format_ts(now)
                entry["userIdIncludingInactive"] = entry["userId"]

    def put_queue(self, queue: Queue) -> None:
        """Queues become HubSpot teams (HubSpot has no lead queues); kept in :attr:`teams`."""
        with self.lock:
            team_id = self._team_ids.setdefault(queue.key, 800_001 + len(self._team_ids))
            self.teams[team_id] = {"id": str(team_id), "name": queue.name, "primary": True}

    def put_campaign(self, campaign: Campaign) -> None:
        """Campaigns are kept for event properties (no campaign endpoint is served)."""
        with self.lock:
            existing = self.campaigns.get(campaign.key)
            campaign_id = existing["id"] if existing else str(uuid.uuid5(_EVENT_NAMESPACE, f"campaign:{campaign.key}"))
            self.campaigns[campaign.key] = {"id": campaign_id, "name": campaign.name, "type": campaign.type}

    def put_company(self, company: Company) -> None:
        """Create or update the company record of a funnel company."""
        with self.lock:
            values: dict[str, str | None] = {
                "name": company.name,
                "domain": company.domain,
                "industry": company.industry,
                "numberofemployees": None if company.employees is None else str(company.employees),
                "annualrevenue": None
                if company.annual_revenue is None
                else _normalise_number(str(company.annual_revenue)),
                "country": company.country,
            }
            company_id = self._company_ids.get(company.key)
            if company_id is None:
                rec = self._insert("companies", values, "funnel")
                self._company_ids[company.key] = rec.id
            else:
                self._apply(self.records["companies"][company_id], values, "funnel")
            self.apply_due()

    def put_person(self, person: Person) -> None:
        """Create or update the contact of a HubSpot person (Salesforce persons are refused)."""
        if person.crm != "hubspot":
            raise ValueError(f"person {person.key} lives in {person.crm}, not hubspot")
        with self.lock:
            self._persons[person.key] = person
            self._project_person(person)
            self.apply_due()

    def _project_person(self, person: Person) -> None:
        now = self.clock.now()
        converted = person.converted_at is not None and person.converted_at <= now
        if person.converted_at is not None and not converted:
            heapq.heappush(self._pending_conversions, (person.converted_at, person.key))
        company_id = self._company_ids.get(person.company_key) if person.company_key else None
        owner_id = self._owner_ids.get(person.owner_key) if person.owner_key else None
        campaign = self.campaigns.get(person.campaign_key) if person.campaign_key else None
        if converted:
            stage = "opportunity"
        else:
            stage = schema.LIFECYCLE_FOR_STATUS.get(person.status, "lead")
            if stage == "opportunity":  # status says converted but the time has not come yet
                stage = "salesqualifiedlead"
        values: dict[str, str | None] = {
            "email": person.email,
            "firstname": person.first_name,
            "lastname": person.last_name,
            "jobtitle": person.title,
            "phone": person.phone,
            "company": person.company_name,
            "industry": person.industry,
            "numemployees": schema.employee_bucket(person.employees),
            "annualrevenue": None if person.annual_revenue is None else _normalise_number(str(person.annual_revenue)),
            "country": person.country,
            "hs_lead_status": schema.LEAD_STATUS_MAP.get(person.status, "OPEN"),
            "lifecyclestage": stage,
            "hs_lifecyclestage_lead_date": schema.format_ts(person.created_at),
            "hs_lifecyclestage_opportunity_date": schema.format_ts(person.converted_at)
            if converted and person.converted_at is not None
            else None,
            "hs_analytics_source": None
            if person.lead_source is None
            else schema.SOURCE_MAP.get(person.lead_source, "OTHER_CAMPAIGNS"),
            "hs_analytics_source_data_1": person.lead_source,
            "hs_analytics_first_touch_converting_campaign": campaign["name"] if campaign else None,
            "hubspot_owner_id": None if owner_id is None else str(owner_id),
            "associatedcompanyid": None if company_id is None else str(company_id),
        }
        contact_id = self._person_ids.get(person.key)
        if contact_id is not None and contact_id in self.merged_to:
            return  # merged away into a new record: the person lives on as that record
        if contact_id is None:
            if owner_id is not None:
                values["hubspot_owner_assigneddate"] = schema.format_ts(person.created_at)
            rec = self._insert("contacts", values, "funnel", created_at=person.created_at)
            contact_id = rec.id
            self._person_ids[person.key] = contact_id
        else:
            rec = self.records["contacts"][contact_id]
            if rec.props.get("hubspot_owner_id") != values["hubspot_owner_id"]:
                values["hubspot_owner_assigneddate"] = schema.format_ts(now) if owner_id is not None else None
            self._apply(rec, values, "funnel")
        if company_id is not None:
            current = self.associations.get(("contacts", contact_id), {}).get("companies", {})
            if set(current) != {company_id}:
                self.dissociate_all("contacts", contact_id, "companies")
                self.associate("contacts", contact_id, "companies", company_id, [1, 279])
        for loser_key in self._pending_merges.pop(person.key, []):
            self._merge(loser_key, person.key)
        if person.merged_into is not None:
            self._merge(person.key, person.merged_into)
        if person.deleted:
            self._archive(rec, "funnel")

    def _merge(self, loser_key: str, survivor_key: str) -> None:
        loser_id = self._person_ids.get(loser_key)
        survivor_id = self._person_ids.get(survivor_key)
        if survivor_id is None:
            self._pending_merges.setdefault(survivor_key, []).append(loser_key)
            return
        if loser_id is None:
            return
        if loser_id in self.merged_to or loser_id == survivor_id:
            return
        if self.merge_mode == "new_id":
            self._merge_new_id(loser_id, survivor_id, survivor_key)
            return
        survivor = self.records["contacts"][survivor_id]
        merged = [m for m in (survivor.props.get("hs_merged_object_ids") or "").split(";") if m]
        if str(loser_id) not in merged:
            merged.append(str(loser_id))
            self._apply(survivor, {"hs_merged_object_ids": ";".join(merged)}, "funnel")
        self._archive(self.records["contacts"][loser_id], "funnel")

    def _merge_new_id(self, loser_id: int, survivor_id: int, survivor_key: str) -> None:
        """HubSpot's merge since its change: a NEW contact (new id) with the primary's values; both
        old ids point to it (reads by old id answer it), neither is listed as archived, and
        associations move to it."""
        contacts = self.records["contacts"]
        loser, survivor = contacts[loser_id], contacts[survivor_id]
        if loser.archived or survivor.archived:
            self._archive(loser, "funnel")  # merging into/from a deleted contact: nothing to merge
            return
        system = {"hs_object_id", "hs_createdate", "createdate", "hs_lastmodifieddate", "lastmodifieddate"}
        values: dict[str, str | None] = {k: v for k, v in survivor.props.items() if k not in system}
        merged = [m for rec in (survivor, loser) for m in (rec.props.get("hs_merged_object_ids") or "").split(";")
                  if m]
        merged += [str(loser_id), str(survivor_id)]
        values["hs_merged_object_ids"] = ";".join(dict.fromkeys(merged))
        for old in (loser_id, survivor_id):
            rec = contacts.pop(old)
            self.retired[old] = rec
            self.order["contacts"].remove(old)
            email = rec.props.get("email")
            if email and self._email_index.get(email.lower()) == old:
                del self._email_index[email.lower()]
        new = self._insert("contacts", values, "funnel", created_at=min(loser.created_at, survivor.created_at))
        for old in (loser_id, survivor_id):
            self.merged_to[old] = new.id
            for to_type, targets in list(self.associations.pop(("contacts", old), {}).items()):
                for to_id, type_ids in targets.items():
                    self.associations.get((to_type, to_id), {}).get("contacts", {}).pop(old, None)
                    self.associate("contacts", new.id, to_type, to_id, type_ids)
        self._person_ids[survivor_key] = new.id

    def delete_person(self, person_key: str) -> None:
        """Archive the contact of a deleted person."""
        with self.lock:
            contact_id = self._person_ids.get(person_key)
            if contact_id is not None and contact_id not in self.merged_to:
                self._archive(self.records["contacts"][contact_id], "funnel")

    def crm_id(self, person_key: str) -> str | None:
        """The HubSpot contact id of a person, or None if it never reached HubSpot."""
        with self.lock:
            contact_id = self._person_ids.get(person_key)
            return None if contact_id is None else str(contact_id)

    def company_id(self, company_key: str) -> str | None:
        """The HubSpot company id of a funnel company, or None."""
        with self.lock:
            found = self._company_ids.get(company_key)
            return None if found is None else str(found)

    def owner_id(self, owner_key: str) -> str | None:
        """The HubSpot owner id of a funnel owner, or None."""
        with self.lock:
            found = self._owner_ids.get(owner_key)
            return None if found is None else str(found)

    def activity_ref(self, activity_key: str) -> tuple[str, str] | None:
        """Where an activity landed: ("emails"|"meetings"|"calls", id) or ("events", event id)."""
        with self.lock:
            return self._activity_ids.get(activity_key)

    def put_activity(self, activity: Activity) -> None:
        """Project an activity: engagement (emails/meetings/calls) or event (see docs for the mapping)."""
        with self.lock:
            contact_id = self._person_ids.get(activity.person_key)
            if contact_id is None:
                raise ValueError(f"activity {activity.key}: person {activity.person_key} is not in HubSpot")
            contact_id = self.resolve_merged("contacts", contact_id) or contact_id
            person = self._persons[activity.person_key]
            owner_id = self._owner_ids.get(person.owner_key) if person.owner_key else None
            campaign = self.campaigns.get(activity.campaign_key) if activity.campaign_key else None
            kind = activity.type
            when = schema.format_ts(activity.occurred_at)
            if kind in schema.EVENT_TYPE_FOR_ACTIVITY:
                self._put_event(activity, contact_id, campaign)
                self.apply_due()
                return
            values: dict[str, str | None]
            if kind in schema.EMAIL_EVENT_FOR_ACTIVITY:
                object_type = "emails"
                values = {
                    "hs_timestamp": when,
                    "hs_email_direction": "EMAIL",
                    "hs_email_status": "SENT",
                    "hs_email_event_type": schema.EMAIL_EVENT_FOR_ACTIVITY[kind],
                    "hs_email_subject": activity.detail or (campaign["name"] if campaign else None),
                }
            elif kind in ("meeting", "webinar"):
                object_type = "meetings"
                minutes = 60 if kind == "webinar" else 30
                values = {
                    "hs_timestamp": when,
                    "hs_meeting_title": activity.detail or kind.title(),
                    "hs_activity_type": "Webinar" if kind == "webinar" else "Meeting",
                    "hs_meeting_start_time": when,
                    "hs_meeting_end_time": schema.format_ts(activity.occurred_at + timedelta(minutes=minutes)),
                    "hs_meeting_outcome": "COMPLETED",
                    "hubspot_owner_id": None if owner_id is None else str(owner_id),
                }
            elif kind == "call":
                object_type = "calls"
                duration = 60_000 * (2 + zlib.crc32(activity.key.encode()) % 25)
                values = {
                    "hs_timestamp": when,
                    "hs_call_title": activity.detail or "Call",
                    "hs_call_direction": "OUTBOUND",
                    "hs_call_status": "COMPLETED",
                    "hs_call_disposition": schema.CALL_DISPOSITION_CONNECTED,
                    "hs_call_duration": str(duration),
                    "hubspot_owner_id": None if owner_id is None else str(owner_id),
                }
            else:
                raise ValueError(f"activity {activity.key}: unknown type {kind!r}")
            ref = self._activity_ids.get(activity.key)
            if ref is None:
                rec = self._insert(object_type, values, "funnel")
                self._activity_ids[activity.key] = (object_type, str(rec.id))
                type_ids = [tid for tid, _ in schema.ASSOCIATION_TYPES[(object_type, "contacts")]]
                self.associate(object_type, rec.id, "contacts", contact_id, type_ids)
            else:
                self._apply(self.records[ref[0]][int(ref[1])], values, "funnel")
            self.apply_due()

    def _put_event(self, activity: Activity, contact_id: int, campaign: dict[str, Any] | None) -> None:
        if activity.key in self._activity_ids:
            return  # events are immutable
        kind = activity.type
        props: dict[str, str] = {}
        if kind == "web_visit":
            path = activity.detail or "/"
            props = {"hs_url": schema.SITE_URL + path, "hs_page_path": path}
        elif kind == "form_submit":
            props = {"hs_form_title": activity.detail or "Contact us", "hs_url": schema.SITE_URL + "/contact"}
        elif kind == "content_download":
            props = {"content_title": activity.detail or "Content"}
        if campaign is not None:
            props.update(
                {
                    "hs_campaign_id": campaign["id"],
                    "hs_campaign_name": campaign["name"],
                    "hs_campaign_type": campaign["type"],
                }
            )
        elif kind == "campaign_response" and activity.detail:
            props["hs_campaign_name"] = activity.detail
        event_id = str(uuid.uuid5(_EVENT_NAMESPACE, f"{self.seed}:{activity.key}"))
        self.add_event(
            Event(
                event_id,
                schema.EVENT_TYPE_FOR_ACTIVITY[kind],
                activity.occurred_at,
                "contact",
                str(contact_id),
                props,
            )
        )
        self._activity_ids[activity.key] = ("events", event_id)

    # ------------------------------------------------------------------ workflows

    def enroll(self, workflow_id: int, email: str) -> None:
        """Record a workflow enrollment; 404 for an unknown workflow or contact email."""
        with self.lock:
            if workflow_id not in self.workflows:
                raise not_found(f"Workflow {workflow_id} not found")
            contact = self.find_by_property("contacts", "email", email)
            if contact is None:
                raise not_found(f"No contact with email {email}")
            self.enrollments.append(
                {
                    "workflowId": workflow_id,
                    "email": email,
                    "contactId": str(contact.id),
                    "at": self.clock.now(),
                }
            )
