"""Salesforce streams: keyset-paged ``queryAll`` reads of Lead, Task, Event and CampaignMember.

Each page is one SOQL query::

    SELECT ... FROM Lead
    WHERE (SystemModstamp > :ts OR (SystemModstamp = :ts AND Id > :id)) AND SystemModstamp < :until
    ORDER BY SystemModstamp ASC, Id ASC LIMIT 2000

against ``queryAll`` (deleted and merged rows included). The page's last (SystemModstamp, Id) is
its cursor; the next page starts strictly after it, so 5,000 records sharing one stamp are read
across page boundaries with neither loss nor repeat, and a restart resumes at the last committed
page. A new run starts ``overlap_seconds`` before the stored cursor (inclusive) to pick up records
committed late with an earlier stamp; re-reading them is harmless (upserts).

A first load (no cursor: a new connection or ``--full``) whose first page is full and whose stream
holds more than the connection's ``bulk_threshold`` records (``SELECT COUNT()``) reads through one Bulk API 2.0
``queryAll`` job instead (:mod:`connectors.salesforce.bulk`): ``SystemModstamp < :until``, in no
order. Its pages are committed without moving the cursor; the last page carries the newest
(SystemModstamp, Id) of the whole snapshot, so a job that fails midway leaves the cursor where it
was (the retry reads everything again: upserts) and the next run continues with REST pages from
that cursor (minus the overlap), exactly as after a REST first load.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import requests
from simple_salesforce import format_soql
from sqlalchemy import select
from sqlalchemy.engine import Engine

from config.app_config import ConnectionConfig
from connectors.base import ActivityRecord, ConnectionSecrets, Cursor, LeadRecord, Page, QuarantinedItem
from connectors.errors import BadRecord, FatalCRMError
from connectors.retry import DEFAULT_POLICY, RetryPolicy
from connectors.salesforce.bulk import BulkQueryReader
from connectors.salesforce.client import SalesforceClient, make_salesforce
from connectors.salesforce.records import (
    campaign_member_record,
    event_record,
    lead_record,
    membership,
    raw_payload,
    skip_reason,
    stamps,
    task_record,
)
from connectors.salesforce.settings import MAX_PAGE_SIZE, STREAMS
from connectors.timeparse import soql_datetime
from store.db import unit_of_work
from store.models import Lead

CONTACT_ID_PREFIX = "003"
MIN_PAGE_SIZE = 200  # the smallest page a timed-out query is re-asked with

logger = logging.getLogger(__name__)


def _after(one: Cursor, other: Cursor) -> bool:
    """``one`` comes after ``other`` in (SystemModstamp, Id) order (Salesforce ids: fixed length)."""
    return (one.ts, one.crm_id or "") > (other.ts, other.crm_id or "")


def keyset_soql(sobject: str, fields: list[str], start: Cursor | None, until: datetime, limit: int) -> str:
    """The SOQL of one page: records after ``start`` (exclusive on (stamp, Id); inclusive on the
    stamp when ``start.crm_id`` is None) and strictly before ``until``, oldest first."""
    conditions = []
    if start is not None:
        ts = soql_datetime(start.ts)
        if start.crm_id:
            conditions.append(format_soql("(SystemModstamp > {ts:literal} OR (SystemModstamp = {ts:literal} "
                                          "AND Id > {id}))", ts=ts, id=start.crm_id))
        else:
            conditions.append(f"SystemModstamp >= {ts}")
    conditions.append(f"SystemModstamp < {soql_datetime(until)}")
    # Field and object names come from the connector's own stream definitions; every value above
    # went through format_soql.
    return (f"SELECT {', '.join(fields)} FROM {sobject} WHERE {' AND '.join(conditions)} "  # noqa: S608
            f"ORDER BY SystemModstamp ASC, Id ASC LIMIT {int(limit)}")


def snapshot_soql(sobject: str, fields: list[str], until: datetime) -> str:
    """Every record before ``until``, in no order: the COUNT() and the Bulk 2.0 job of a first load."""
    # Field and object names come from the connector's own stream definitions; the one value is a
    # dateTime literal we format.
    return f"SELECT {', '.join(fields)} FROM {sobject} WHERE SystemModstamp < {soql_datetime(until)}"  # noqa: S608


class SalesforceConnector:
    """The :class:`connectors.base.Connector` for one Salesforce org."""

    kind = "salesforce"

    def __init__(self, conn: ConnectionConfig, secrets: ConnectionSecrets, *,
                 session: requests.Session | None = None, policy: RetryPolicy = DEFAULT_POLICY,
                 client: SalesforceClient | None = None, bulk_poll_seconds: float = 2.0) -> None:
        self.conn = conn
        self.name = conn.name
        self.client = client or make_salesforce(conn, secrets, session=session, policy=policy)
        self.page_size = min(conn.page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        self.bulk = BulkQueryReader(self.client, poll_seconds=bulk_poll_seconds)
        self.bulk_streams: list[str] = []  # the streams this connector read through Bulk 2.0
        # The score fields leadscore writes never feed the model: keep them out of attributes.
        score = conn.score_fields.model_dump().values() if conn.score_fields else []
        self.field_map = {k: v for k, v in conn.field_map.items() if k not in set(score)}
        self._contact_leads: dict[str, str] = {}  # converted Contact id -> its Lead id, read this run
        self._stored_conversions: Callable[[], dict[str, str]] | None = None
        self.feedback_missing = False  # set when the org refused the feedback fields this run

    @property
    def api_calls(self) -> int:
        return self.client.api_calls

    def streams(self) -> list[str]:
        return list(STREAMS)

    def server_time(self) -> datetime:
        return self.client.server_time()

    def relink_company(self, lead_raw: dict[str, Any], company: dict[str, Any]) -> LeadRecord | None:
        return None  # Salesforce leads carry their own firmographics

    def use_store(self, engine: Engine, connection_id: int) -> None:
        """Converted leads already stored name their Contact (``ConvertedContactId``, read with every
        lead): activities moved to those Contacts are linked without asking Salesforce. Read once,
        when a page first holds such an activity (after the leads stream of the same run)."""
        def stored() -> dict[str, str]:
            contact = Lead.raw["ConvertedContactId"].as_string()
            with unit_of_work(engine) as session:
                rows = session.execute(select(contact, Lead.crm_id).where(
                    Lead.connection_id == connection_id, Lead.is_converted.is_(True), contact.is_not(None)))
                return {str(c): str(lead) for c, lead in rows if c}
        self._stored_conversions = stored

    def _fields(self, stream: str) -> list[str]:
        sobject, fields = STREAMS[stream]
        out = list(fields)
        if sobject == "Lead":
            out += [f for f in self.field_map if f not in out]
            out += [f for f in self._feedback_fields() if f not in out]
        return out

    def _feedback_fields(self) -> list[str]:
        """Rep feedback on the score, read back like any lead field (kept in lead.raw); optional:
        an org that has not deployed the two fields yet is synced without them."""
        if self.feedback_missing:
            return []
        names = self.conn.score_fields
        feedback = [getattr(names, k, None) for k in ("feedback", "feedback_comment")] if names else []
        return [f for f in feedback if f]

    def _query(self, soql: str) -> dict[str, Any]:
        result = self.client.request(lambda sf: sf.query(soql, include_deleted=True))
        if not isinstance(result, dict):
            raise FatalCRMError("Salesforce query returned no JSON object")
        return result

    def _query_more(self, url: str) -> dict[str, Any]:
        result = self.client.request(
            lambda sf: sf.query_more(url, identifier_is_url=True))
        if not isinstance(result, dict):
            raise FatalCRMError("Salesforce queryMore returned no JSON object")
        return result

    def _without_feedback(self, exc: FatalCRMError, sobject: str) -> bool:
        """True (and the feedback fields dropped) when ``exc`` refused our optional feedback fields."""
        if exc.code == "INVALID_FIELD" and sobject == "Lead" and self._feedback_fields():
            # The feedback fields are the only optional ones we select: an org without them
            # (crm setup not deployed yet) is synced without feedback rather than not at all.
            self.feedback_missing = True
            logger.warning("Salesforce %s: the rep feedback fields are not readable in this org "
                           "(deploy them with `leadscore crm setup`); syncing without feedback", self.name)
            return True
        return False

    def read_stream(self, stream: str, cursor: Cursor | None, *, until: datetime) -> Iterator[Page]:
        """Pages of ``stream`` modified after ``cursor`` (minus the overlap) and before ``until``;
        a first load above ``bulk_threshold`` records reads through Bulk API 2.0."""
        if stream not in STREAMS:
            raise FatalCRMError(f"unknown Salesforce stream {stream!r}")
        sobject, _ = STREAMS[stream]
        # A first load may go through Bulk 2.0; it is worth a COUNT() only when the first page is full.
        may_bulk = cursor is None and self.conn.bulk_threshold is not None
        fields = self._fields(stream)
        start = cursor
        if cursor is not None and self.conn.overlap_seconds > 0:
            start = Cursor(cursor.ts - timedelta(seconds=self.conn.overlap_seconds), None)
        normalise = self._normaliser(stream)
        size = self.page_size
        while True:
            try:
                result = self._query(keyset_soql(sobject, fields, start, until, size))
            except FatalCRMError as exc:
                if self._without_feedback(exc, sobject):
                    fields = self._fields(stream)
                    continue
                if exc.code != "QUERY_TIMEOUT" or size <= MIN_PAGE_SIZE:
                    raise
                # Repeating a query that timed out times out again: ask for a smaller page.
                size = max(MIN_PAGE_SIZE, size // 2)
                logger.warning("Salesforce %s: query timed out; retrying with pages of %d", stream, size)
                continue
            if may_bulk:
                may_bulk = False
                if self._may_exceed_threshold(result, size, until) and self._bulk_worth_it(stream, sobject, until):
                    yield from self._read_bulk(stream, sobject, until)  # (re-reads this page's records)
                    return
            fetched = 0
            while True:
                records = [r for r in result.get("records", []) if isinstance(r, dict)]
                fetched += len(records)
                if records:
                    page = self._page(stream, records, normalise)
                    start = page.cursor
                    yield page
                if result.get("done", True) or not result.get("nextRecordsUrl"):
                    break
                result = self._query_more(str(result["nextRecordsUrl"]))
            if fetched < size:
                return

    def _may_exceed_threshold(self, first: dict[str, Any], size: int, until: datetime) -> bool:
        """Whether the stream may hold more than ``bulk_threshold`` records, judged from its first
        keyset page: a full page whose records span a tenth of the time to ``until`` suggests about
        ten pages. Worth a COUNT() call only when that estimate reaches half the threshold (a
        misjudged stream is still read completely, through REST pages)."""
        records = [r for r in first.get("records") or [] if isinstance(r, dict)]
        threshold = self.conn.bulk_threshold
        if threshold is None or len(records) < size:
            return False
        try:
            oldest, newest = stamps(records[0])[1], stamps(records[-1])[1]
        except BadRecord:
            return True  # no usable span: let COUNT() decide
        covered = (newest - oldest).total_seconds()
        if covered <= 0:
            return True  # the whole page shares one stamp (a mass import): count
        estimate = len(records) * max((until - oldest).total_seconds(), covered) / covered
        return estimate >= threshold / 2

    def _bulk_worth_it(self, stream: str, sobject: str, until: datetime) -> bool:
        """True when the stream holds more than ``bulk_threshold`` records before ``until``."""
        threshold = self.conn.bulk_threshold
        if threshold is None:
            return False
        try:
            counted = self._query(snapshot_soql(sobject, ["COUNT()"], until))
        except FatalCRMError as exc:
            if exc.code != "QUERY_TIMEOUT":
                raise
            # Size unknown: stay on REST pages, which already shrink when a query times out.
            logger.warning("Salesforce %s: counting %s timed out: reading it through REST pages", self.name, stream)
            return False
        total = int(counted.get("totalSize") or 0)
        if total <= threshold:
            return False
        logger.info("Salesforce %s: first load of %s (%d records > bulk_threshold %d) through Bulk API 2.0",
                    self.name, stream, total, threshold)
        return True

    def _read_bulk(self, stream: str, sobject: str, until: datetime) -> Iterator[Page]:
        """The whole stream before ``until`` from one Bulk 2.0 ``queryAll`` job, committed in pages of
        ``page_size``; only the last page moves the cursor (to the newest record of the snapshot)."""
        while True:
            fields = self._fields(stream)
            soql = snapshot_soql(sobject, fields, until)
            try:
                job_id = self.bulk.start(sobject, soql)
            except FatalCRMError as exc:
                if self._without_feedback(exc, sobject):
                    continue
                raise
            break
        self.bulk_streams.append(stream)
        self.bulk.wait(sobject, job_id)
        normalise = self._normaliser(stream)
        newest: Cursor | None = None
        for records, last_page in self.bulk.pages(sobject, job_id):
            chunks = [records[i:i + self.page_size] for i in range(0, len(records), self.page_size)] or [[]]
            for n, chunk in enumerate(chunks):
                page = self._page(stream, chunk, normalise, ordered=False)
                if page.cursor is not None and (newest is None or _after(page.cursor, newest)):
                    newest = page.cursor
                final = last_page and n == len(chunks) - 1
                page.cursor = newest if final else None
                if chunk or page.cursor is not None:
                    yield page

    def _normaliser(self, stream: str) -> Callable[[dict[str, Any]], LeadRecord | ActivityRecord | None]:
        if stream == "leads":
            return lambda r: lead_record(r, self.field_map, self.conn.closed_statuses)
        if stream == "tasks":
            return task_record
        if stream == "events":
            return event_record
        return campaign_member_record

    def _page(self, stream: str, records: list[dict[str, Any]],
              normalise: Callable[[dict[str, Any]], LeadRecord | ActivityRecord | None], *,
              ordered: bool = True) -> Page:
        """Normalise one page. Its cursor is the last record's (``ordered``: keyset pages) or the
        newest record's (Bulk pages come in no order); None when no record had a usable stamp."""
        page = Page(stream=stream, cursor=None, records_read=len(records))
        last: Cursor | None = None
        for record in records:
            try:
                crm_id, modified = stamps(record)
                here = Cursor(modified, crm_id)
                if ordered or last is None or _after(here, last):
                    last = here
                normalised = normalise(record)
            except BadRecord as exc:
                raw_id = record.get("Id")
                page.quarantined.append(QuarantinedItem(
                    crm_id=str(raw_id) if isinstance(raw_id, str) and raw_id else None,
                    reason=exc.reason, detail=exc.detail, raw=raw_payload(record)))
                continue
            if stream == "campaign_members":
                joined = membership(record)
                if joined is not None:
                    page.lead_campaigns.append(joined)
            if isinstance(normalised, LeadRecord):
                page.leads.append(normalised)
            elif isinstance(normalised, ActivityRecord):
                page.activities.append(normalised)
            else:
                page.skipped[skip_reason(stream, record)] += 1
        if last is None and ordered:
            # Not one record had a usable (Id, SystemModstamp): the keyset cannot move past them.
            raise FatalCRMError(f"Salesforce {stream}: a page without a single valid Id/SystemModstamp")
        if stream in ("tasks", "events"):
            self._link_converted(page, records)
        page.cursor = last
        return page

    def _link_converted(self, page: Page, records: list[dict[str, Any]]) -> None:
        """Conversion moves a lead's Tasks and Events to its new Contact (``WhoId`` 003...): link
        them back to the lead through ``Lead.ConvertedContactId`` so its history is kept."""
        who = {str(r.get("Id")): str(r.get("WhoId")) for r in records
               if isinstance(r.get("WhoId"), str) and str(r.get("WhoId")).startswith(CONTACT_ID_PREFIX)}
        if not who:
            return
        lead_of = self._contact_leads  # a conversion's moved activities often span pages: ask once
        if self._stored_conversions is not None:
            lead_of.update(self._stored_conversions())
            self._stored_conversions = None
        # Only a lead converted after the store last read it is asked of Salesforce.
        contacts = sorted(set(who.values()) - set(lead_of))
        for offset in range(0, len(contacts), 200):  # keeps the SOQL well under its length limit
            result = self._query(format_soql("SELECT Id, ConvertedContactId FROM Lead WHERE ConvertedContactId IN {}",
                                             contacts[offset:offset + 200]))
            for row in result.get("records") or []:
                if isinstance(row, dict) and row.get("ConvertedContactId"):
                    lead_of[str(row["ConvertedContactId"])] = str(row["Id"])
        for i, activity in enumerate(page.activities):
            if activity.lead_crm_id is None and activity.crm_id in who:
                page.activities[i] = dataclasses.replace(activity, lead_crm_id=lead_of.get(who[activity.crm_id]))
