"""HubSpot streams: keyset-paged CRM search, archived listings, engagement lists and events.

Search pages are keyset-paged, never offset-paged::

    (lastmodifieddate > ts) OR (lastmodifieddate = ts AND hs_object_id > id),  AND < sync start
    sorted by lastmodifieddate ascending, limit 200, no ``after``

Each page is a fresh query starting after the previous page's last (stamp, id), so the 10,000
results cap of one search never applies (no ``after`` offset is ever sent), records modified
while paging cannot shift offsets, and thousands of records sharing one stamp cross page
boundaries without loss or repeat. HubSpot documents no order for equal sort values, so the id
tie-break is ours: when a full page ends on stamp T, its T records are held back and the whole
tie group is read again with ``prop = T`` sorted by ``hs_object_id`` (see ``_search``). The stamp
order is verified on every page: a stamp going backwards stops the stream with
:class:`FatalCRMError` instead of silently skipping records.

First load of engagements (no cursor): the list endpoint with ``associations=contacts`` reads 100
records *with* their contact per call; later runs search on ``hs_lastmodifieddate`` and resolve
contacts through v4 batch association reads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy.engine import Engine

from config.app_config import ConnectionConfig
from connectors.base import ConnectionSecrets, Cursor, LeadRecord, Page, QuarantinedItem
from connectors.errors import BadRecord, FatalCRMError
from connectors.hubspot.client import HubSpotClient, make_hubspot
from connectors.hubspot.records import (
    company_id_of,
    engagement_record,
    event_record,
    lead_record,
    merges_of,
    object_stamp,
)
from connectors.hubspot.settings import (
    BATCH_SIZE,
    COMPANY_PROPERTIES,
    CONTACT_PROPERTIES,
    DEFAULT_MODIFIED_PROPERTY,
    ENGAGEMENT_PROPERTIES,
    EVENTS_PAGE_SIZE,
    LIST_PAGE_SIZE,
    MODIFIED_PROPERTY,
    SEARCH_PAGE_SIZE,
    STREAMS,
)
from connectors.retry import DEFAULT_POLICY, RetryPolicy
from connectors.timeparse import epoch_ms, iso_utc, parse_crm_datetime

logger = logging.getLogger(__name__)


def search_filter_groups(prop: str, start: Cursor | None, until: datetime) -> list[dict[str, Any]]:
    """Filter groups (ORed) selecting records after ``start`` and before ``until`` on ``prop``."""
    before = {"propertyName": prop, "operator": "LT", "value": str(epoch_ms(until))}
    if start is None:
        groups = [[before]]
    else:
        ts = str(epoch_ms(start.ts))
        if start.crm_id:
            groups = [
                [{"propertyName": prop, "operator": "GT", "value": ts}, before],
                [{"propertyName": prop, "operator": "EQ", "value": ts},
                 {"propertyName": "hs_object_id", "operator": "GT", "value": start.crm_id}, before],
            ]
        else:
            groups = [[{"propertyName": prop, "operator": "GTE", "value": ts}, before]]
    return [{"filters": group} for group in groups]


# One generated-API call each (raw responses: the client parses JSON and reads the headers).
def _search_call(c: HubSpotClient, *, object_type: str, body: dict[str, Any]) -> Any:
    return c.api("objects.search").do_search(object_type, body, _preload_content=False,
                                             _request_timeout=c.timeout)


def _list_call(c: HubSpotClient, *, object_type: str, kwargs: dict[str, Any]) -> Any:
    return c.api("objects.basic").get_page(object_type, _preload_content=False,
                                           _request_timeout=c.timeout, **kwargs)


def batch_read_call(c: HubSpotClient, *, object_type: str, body: dict[str, Any]) -> Any:
    return c.api("objects.batch").read(object_type, body, archived=False, _preload_content=False,
                                       _request_timeout=c.timeout)


def _associations_call(c: HubSpotClient, *, object_type: str, body: dict[str, Any]) -> Any:
    return c.api("associations.batch").get_page(object_type, "contacts", body, _preload_content=False,
                                                _request_timeout=c.timeout)


def _events_call(c: HubSpotClient, *, kwargs: dict[str, Any]) -> Any:
    return c.api("events").get_page(_preload_content=False, _request_timeout=c.timeout, **kwargs)


def _stamp_cursor(obj: dict[str, Any], prop: str) -> Cursor:
    crm_id, modified = object_stamp(obj, prop)
    return Cursor(modified, crm_id)


def _id_key(crm_id: str) -> tuple[int, str]:
    return (int(crm_id), crm_id) if crm_id.isdigit() else (-1, crm_id)


class HubSpotConnector:
    """The :class:`connectors.base.Connector` for one HubSpot portal."""

    kind = "hubspot"

    def __init__(self, conn: ConnectionConfig, secrets: ConnectionSecrets, *,
                 policy: RetryPolicy = DEFAULT_POLICY, client: HubSpotClient | None = None) -> None:
        self.conn = conn
        self.name = conn.name
        self.client = client or make_hubspot(conn, secrets, policy=policy)
        self.search_page_size = min(conn.page_size or SEARCH_PAGE_SIZE, SEARCH_PAGE_SIZE)
        self.list_page_size = min(conn.page_size or LIST_PAGE_SIZE, LIST_PAGE_SIZE)
        score = set(conn.score_fields.model_dump().values()) if conn.score_fields else set()
        self.field_map = {k: v for k, v in conn.field_map.items() if k not in score}
        extra = [k for k in self.field_map if not k.startswith("company.") and k not in CONTACT_PROPERTIES]
        # Rep feedback on the score is read back like any contact property (kept in lead.raw).
        feedback = [getattr(conn.score_fields, k, None) for k in ("feedback", "feedback_comment")] \
            if conn.score_fields else []
        self.contact_properties = list(CONTACT_PROPERTIES) + extra + [
            f for f in feedback if f and f not in CONTACT_PROPERTIES and f not in extra]
        self.companies: dict[str, dict[str, Any]] = {}  # company id -> payload, read this run
        self.skipped_streams: dict[str, str] = {}  # stream -> why it was skipped this run

    @property
    def api_calls(self) -> int:
        return self.client.api_calls

    def streams(self) -> list[str]:
        return list(STREAMS)

    def server_time(self) -> datetime:
        return self.client.server_time()

    def use_store(self, engine: Engine, connection_id: int) -> None:
        return None  # every activity names its contact (= the lead): nothing to look up

    def relink_company(self, lead_raw: dict[str, Any], company: dict[str, Any]) -> LeadRecord | None:
        contact = lead_raw.get("contact")
        if not isinstance(contact, dict):
            return None
        try:
            return lead_record(contact, company, self.field_map, self.conn.closed_statuses,
                               self.conn.converted_stages)
        except BadRecord:
            return None  # the contact's own values are bad: its quarantine entry already says so

    # ------------------------------------------------------------------ reads
    def _search(self, object_type: str, prop: str, properties: list[str], start: Cursor | None,
                until: datetime) -> Iterator[list[dict[str, Any]]]:
        """Pages of records after ``start``, each sorted by our keyset (stamp, id).

        HubSpot sorts by ``prop`` but documents no order for equal values, so the id tie-break is
        ours: a full page's last stamp T may be cut mid-tie, so its T records are held back and
        the whole tie group is read again sorted by ``hs_object_id`` (no ties there).
        """
        vanished: datetime | None = None  # a tie group found empty when re-read
        while True:
            objects = self._search_page(object_type, prop, properties,
                                        search_filter_groups(prop, start, until), prop)
            if not objects:
                return
            keyed = self._keyed(object_type, prop, objects, start)
            if len(objects) < self.search_page_size:
                yield [obj for _, obj in keyed]
                return
            tie_ts = keyed[-1][0][0]
            before = [obj for key, obj in keyed if key[0] < tie_ts]
            if before:
                yield before
            after_id = start.crm_id if start is not None and start.ts == tie_ts else None
            last_id: str | None = None
            for group in self._tie_group(object_type, prop, properties, tie_ts, after_id, until):
                yield group
                last_id = str(group[-1]["id"])
            if last_id is None and after_id is None:
                if vanished == tie_ts:
                    raise FatalCRMError(f"HubSpot {object_type} search for {prop} = {epoch_ms(tie_ts)} found "
                                        "nothing that the page before showed, twice: refusing to loop")
                # Every record of the tie group was modified since the page was read (a score
                # write-back running beside the sync): their new stamps are after the sync's start,
                # so the next run reads them. Go on from the stamp, inclusively, once.
                vanished = tie_ts
                start = Cursor(tie_ts, None)
                continue
            start = Cursor(tie_ts, last_id or after_id)

    def _search_page(self, object_type: str, prop: str, properties: list[str],
                     groups: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
        body = {"filterGroups": groups, "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
                "properties": properties, "limit": self.search_page_size}
        result = self.client.request(partial(_search_call, object_type=object_type, body=body))
        return [o for o in result.get("results", []) if isinstance(o, dict)]

    def _tie_group(self, object_type: str, prop: str, properties: list[str], tie_ts: datetime,
                   after_id: str | None, until: datetime) -> Iterator[list[dict[str, Any]]]:
        """Every record stamped exactly ``tie_ts`` (after ``after_id``), in id order."""
        ts = str(epoch_ms(tie_ts))
        before = {"propertyName": prop, "operator": "LT", "value": str(epoch_ms(until))}
        while True:
            filters = [{"propertyName": prop, "operator": "EQ", "value": ts}, before]
            if after_id:
                filters.append({"propertyName": "hs_object_id", "operator": "GT", "value": after_id})
            objects = self._search_page(object_type, prop, properties, [{"filters": filters}], "hs_object_id")
            if not objects:
                return
            keyed = self._keyed(object_type, prop, objects, None)
            if any(key[0] != tie_ts for key, _ in keyed) or [k for k, _ in keyed] != sorted(k for k, _ in keyed):
                raise FatalCRMError(f"HubSpot {object_type} search for {prop} = {ts} sorted by id returned other "
                                    "stamps or an unsorted page: refusing to continue (records could be skipped)")
            yield [obj for _, obj in keyed]
            if len(objects) < self.search_page_size:
                return
            after_id = str(keyed[-1][1]["id"])

    def _keyed(self, object_type: str, prop: str, objects: list[dict[str, Any]],
               start: Cursor | None) -> list[tuple[tuple[datetime, tuple[int, str]], dict[str, Any]]]:
        """``objects`` with their (stamp, id) keys, sorted by that keyset.

        The server's stamp order is verified (a stamp going backwards, or one not after ``start``,
        stops the stream: records could be skipped); the order of equal stamps is not trusted.
        """
        keyed = []
        previous: datetime | None = None
        floor = (start.ts, _id_key(start.crm_id or "0")) if start is not None else None
        for obj in objects:
            try:
                crm_id, modified = object_stamp(obj, prop)
            except BadRecord as exc:
                raise FatalCRMError(f"HubSpot {object_type} search returned a record without id/{prop}: "
                                    f"{exc}") from exc
            key = (modified, _id_key(crm_id))
            if (previous is not None and modified < previous) or (floor is not None and key < floor):
                raise FatalCRMError(f"HubSpot {object_type} search results are not sorted by {prop}: "
                                    f"refusing to continue (records could be skipped)")
            previous = modified
            keyed.append((key, obj))
        keyed.sort(key=lambda pair: pair[0])
        return keyed

    def _list(self, object_type: str, properties: list[str], *, archived: bool,
              associations: list[str] | None = None) -> Iterator[tuple[list[dict[str, Any]], bool]]:
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.list_page_size, "properties": properties,
                                      "archived": archived}
            if after is not None:
                kwargs["after"] = after
            if associations:
                kwargs["associations"] = associations
            result = self.client.request(partial(_list_call, object_type=object_type, kwargs=kwargs))
            objects = [o for o in result.get("results", []) if isinstance(o, dict)]
            paging = result.get("paging") or {}
            nxt = (paging.get("next") or {}).get("after") if isinstance(paging, dict) else None
            yield objects, nxt is None
            if nxt is None:
                return
            if str(nxt) == after:
                raise FatalCRMError(f"HubSpot {object_type} list repeated its paging token {nxt!r}")
            after = str(nxt)

    def _fetch_companies(self, ids: set[str]) -> None:
        missing = sorted(i for i in ids if i not in self.companies)
        for offset in range(0, len(missing), BATCH_SIZE):
            chunk = missing[offset:offset + BATCH_SIZE]
            body = {"inputs": [{"id": i} for i in chunk], "properties": list(COMPANY_PROPERTIES)}
            result = self.client.request(partial(batch_read_call, object_type="companies", body=body))
            for company in result.get("results", []):
                if isinstance(company, dict) and company.get("id") is not None:
                    self.companies[str(company["id"])] = company

    def _contact_ids(self, object_type: str, ids: list[str]) -> dict[str, str]:
        """Engagement id -> its (lowest) contact id, through v4 batch association reads."""
        out: dict[str, str] = {}
        for offset in range(0, len(ids), BATCH_SIZE):
            chunk = ids[offset:offset + BATCH_SIZE]
            body = {"inputs": [{"id": i} for i in chunk]}
            result = self.client.request(partial(_associations_call, object_type=object_type, body=body))
            for item in result.get("results", []):
                if not isinstance(item, dict):
                    continue
                source = str((item.get("from") or {}).get("id"))
                targets = sorted(_id_key(str(t.get("toObjectId"))) for t in item.get("to") or []
                                 if isinstance(t, dict) and t.get("toObjectId") is not None)
                if targets:
                    out[source] = targets[0][1]
        return out

    def read_stream(self, stream: str, cursor: Cursor | None, *, until: datetime) -> Iterator[Page]:
        """Pages of ``stream`` modified after ``cursor`` (minus the overlap) and before ``until``."""
        if stream not in STREAMS:
            raise FatalCRMError(f"unknown HubSpot stream {stream!r}")
        start = cursor
        if cursor is not None and self.conn.overlap_seconds > 0:
            start = Cursor(cursor.ts - timedelta(seconds=self.conn.overlap_seconds), None)
        if stream == "companies":
            yield from self._companies_stream(start, until)
        elif stream == "contacts":
            yield from self._contacts_stream(start, until)
        elif stream == "contacts_archived":
            yield from self._archived_stream(start, until)
        elif stream == "events":
            yield from self._events_stream(start, until)
        else:
            yield from self._engagement_stream(stream, start, until)

    def _companies_stream(self, start: Cursor | None, until: datetime) -> Iterator[Page]:
        prop = DEFAULT_MODIFIED_PROPERTY
        for objects in self._search("companies", prop, list(COMPANY_PROPERTIES), start, until):
            page = Page(stream="companies", cursor=None, records_read=len(objects))
            for company in objects:
                self.companies[str(company["id"])] = company
                page.company_updates[str(company["id"])] = company
            page.cursor = _stamp_cursor(objects[-1], prop)
            yield page

    def _lead_page(self, stream: str, contacts: list[dict[str, Any]]) -> Page:
        self._fetch_companies({cid for c in contacts if (cid := company_id_of(c))})
        page = Page(stream=stream, cursor=None, records_read=len(contacts))
        for contact in contacts:
            try:
                cid = company_id_of(contact)
                lead = lead_record(contact, self.companies.get(cid) if cid else None, self.field_map,
                                   self.conn.closed_statuses, self.conn.converted_stages)
            except BadRecord as exc:
                page.quarantined.append(QuarantinedItem(
                    crm_id=str(contact.get("id")) if contact.get("id") else None, reason=exc.reason,
                    detail=exc.detail, raw=contact))
                continue
            page.leads.append(lead)
            page.merges.extend(merges_of(contact, lead.crm_modified_at))
        return page

    def _contacts_stream(self, start: Cursor | None, until: datetime) -> Iterator[Page]:
        prop = MODIFIED_PROPERTY["contacts"]
        for objects in self._search("contacts", prop, self.contact_properties, start, until):
            page = self._lead_page("contacts", objects)
            page.cursor = _stamp_cursor(objects[-1], prop)
            yield page

    def _archived_stream(self, start: Cursor | None, until: datetime) -> Iterator[Page]:
        # Search never returns archived records, and the archived list has no date filter: read
        # it whole, keep those archived since the cursor, move the cursor only at the end.
        newest: datetime | None = None
        for objects, last_page in self._list("contacts", self.contact_properties, archived=True):
            fresh = []
            for obj in objects:
                try:
                    archived_at = parse_crm_datetime(obj.get("archivedAt") or obj.get("updatedAt"), "archivedAt")
                except BadRecord:
                    fresh.append(obj)  # quarantined by _lead_page with the same reason
                    continue
                if archived_at >= until:
                    continue
                if start is None or archived_at >= start.ts:
                    fresh.append(obj)
                    newest = archived_at if newest is None or archived_at > newest else newest
            page = self._lead_page("contacts_archived", fresh)
            page.records_read = len(objects)
            if last_page and newest is not None:
                page.cursor = Cursor(newest, None)
            yield page

    def _engagement_stream(self, object_type: str, start: Cursor | None, until: datetime) -> Iterator[Page]:
        properties = list(ENGAGEMENT_PROPERTIES[object_type])
        if start is None:
            # First load: the list carries each engagement's contacts, 100 per call. Its order is
            # by id, so the cursor is set once, at the end, to the sync's start.
            for objects, last_page in self._list(object_type, properties, archived=False,
                                                 associations=["contacts"]):
                contacts = {}
                for obj in objects:
                    results = ((obj.get("associations") or {}).get("contacts") or {}).get("results") or []
                    ids = sorted(_id_key(str(r.get("id"))) for r in results if isinstance(r, dict) and r.get("id"))
                    if ids:
                        contacts[str(obj.get("id"))] = ids[0][1]
                page = self._activity_page(object_type, objects, contacts)
                if last_page:
                    page.cursor = Cursor(until - timedelta(seconds=1), None)
                yield page
            return
        prop = DEFAULT_MODIFIED_PROPERTY
        for objects in self._search(object_type, prop, properties, start, until):
            contacts = self._contact_ids(object_type, [str(o["id"]) for o in objects])
            page = self._activity_page(object_type, objects, contacts)
            page.cursor = _stamp_cursor(objects[-1], prop)
            yield page

    def _activity_page(self, stream: str, objects: list[dict[str, Any]], contacts: dict[str, str]) -> Page:
        page = Page(stream=stream, cursor=None, records_read=len(objects))
        for obj in objects:
            try:
                page.activities.append(engagement_record(stream, obj, contacts.get(str(obj.get("id")))))
            except BadRecord as exc:
                page.quarantined.append(QuarantinedItem(
                    crm_id=str(obj.get("id")) if obj.get("id") else None, reason=exc.reason, detail=exc.detail,
                    raw=obj))
        return page

    def _events_stream(self, start: Cursor | None, until: datetime) -> Iterator[Page]:
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"object_type": "contact", "sort": ["ASCENDING"], "limit": EVENTS_PAGE_SIZE,
                                      "occurred_before": iso_utc(until)}
            if start is not None:
                kwargs["occurred_after"] = iso_utc(start.ts)
            if after is not None:
                kwargs["after"] = after
            try:
                result = self.client.request(partial(_events_call, kwargs=kwargs))
            except FatalCRMError as exc:
                if exc.status != 403 or after is not None:
                    raise
                # The Events API needs an Enterprise hub: without it, skip the stream (web visits
                # and form submits are then not synced) instead of failing every sync.
                self.skipped_streams["events"] = f"HubSpot answered 403 ({exc.code or 'forbidden'}): the events " \
                                                 "API needs an Enterprise hub"
                logger.warning("HubSpot connection %s: events stream skipped: %s", self.name,
                               self.skipped_streams["events"])
                return
            events = [e for e in result.get("results", []) if isinstance(e, dict)]
            if events:
                yield self._event_page(events)
            paging = result.get("paging") or {}
            nxt = (paging.get("next") or {}).get("after") if isinstance(paging, dict) else None
            if not nxt or not events:
                return
            if str(nxt) == after:
                raise FatalCRMError(f"HubSpot events repeated their paging token {nxt!r}")
            after = str(nxt)

    def _event_page(self, events: list[dict[str, Any]]) -> Page:
        page = Page(stream="events", cursor=None, records_read=len(events))
        last: Cursor | None = None
        for event in events:
            try:
                record = event_record(event)
                last = Cursor(parse_crm_datetime(event.get("occurredAt"), "occurredAt"), str(event.get("id")))
            except BadRecord as exc:
                page.quarantined.append(QuarantinedItem(
                    crm_id=str(event.get("id")) if event.get("id") else None, reason=exc.reason,
                    detail=exc.detail, raw=event))
                continue
            if record is not None:
                page.activities.append(record)
            else:
                page.skipped[f"event type {str(event.get('eventType') or '')!r} is not scored"] += 1
        page.cursor = last
        return page

