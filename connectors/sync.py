"""The generic sync engine: read a page, upsert it, move the cursor, commit; repeat.

One transaction per page holds the page's leads, activities, quarantined records, the stream's
cursor and the ``sync_run`` counters, so a process killed at any point resumes from the last
committed page: nothing is lost (the cursor never passes an uncommitted record) and nothing is
duplicated (rows are keyed by (connection, CRM id)). See docs/sync.md.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from config.app_config import ConnectionConfig
from config.errors import ConfigError
from connectors.base import (
    ActivityRecord,
    ConnectionSecrets,
    Connector,
    Cursor,
    LeadRecord,
    Merge,
    Page,
    QuarantinedItem,
)
from connectors.errors import CRMError, FatalCRMError, QuotaExhaustedError
from connectors.lifecycle import cancel_not_open
from connectors.normalise import INPUT_FIELDS, inputs_hash
from connectors.registry import make_connector
from store.db import unit_of_work
from store.models import Activity, Connection, Lead, LeadLifecycle, QuarantinedRecord, SyncCursor, SyncRun
from store.upsert import upsert_rows

logger = logging.getLogger(__name__)

# The CRM's Date header has whole seconds: the sync's upper bound is the next whole second, so a
# record stamped a fraction after the header's second (simulated clocks sit still) is included.
DATE_HEADER_RESOLUTION = timedelta(seconds=1)


@dataclass
class StreamReport:
    """What one stream's sync did."""

    stream: str
    records: int = 0
    leads: int = 0
    activities: int = 0
    quarantined: int = 0
    pages: int = 0
    api_calls: int = 0
    status: str = "running"
    error: str | None = None
    quarantined_by_reason: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "leads": self.leads, "activities": self.activities,
                "quarantined": self.quarantined, "pages": self.pages, "api_calls": self.api_calls,
                "status": self.status, "error": self.error,
                "quarantined_by_reason": dict(self.quarantined_by_reason)}


@dataclass
class SyncReport:
    """The result of :func:`sync_connection`: per-stream counts, quarantine reasons, API calls."""

    connection: str
    kind: str
    full: bool
    started_at: datetime
    server_time: datetime | None = None
    finished_at: datetime | None = None
    status: str = "running"  # succeeded | stopped | failed
    error: str | None = None
    api_calls: int = 0
    streams: dict[str, StreamReport] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(s.records for s in self.streams.values())

    @property
    def quarantined_by_reason(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for report in self.streams.values():
            total.update(report.quarantined_by_reason)
        return total

    @property
    def duration_seconds(self) -> float:
        end = self.finished_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (datetimes as ISO strings)."""
        return {
            "connection": self.connection,
            "kind": self.kind,
            "full": self.full,
            "status": self.status,
            "error": self.error,
            "records": self.records,
            "api_calls": self.api_calls,
            "duration_seconds": round(self.duration_seconds, 3),
            "server_time": self.server_time.isoformat() if self.server_time else None,
            "quarantined_by_reason": dict(self.quarantined_by_reason),
            "streams": {name: s.to_dict() for name, s in self.streams.items()},
        }


@dataclass(frozen=True)
class ProgressEvent:
    """Sent to the ``progress`` callback at a stream's start, after each page and at its end."""

    connection: str
    stream: str
    kind: str  # "start" | "page" | "end"
    records: int
    api_calls: int


ProgressCallback = Callable[[ProgressEvent], None]


def sync_connection(
    engine: Engine,
    conn: ConnectionConfig,
    secrets: ConnectionSecrets,
    *,
    full: bool = False,
    streams: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    connector: Connector | None = None,
) -> SyncReport:
    """Sync ``conn`` into the database behind ``engine``: every stream, page by page.

    ``full`` ignores the stored cursors (the cursors still only move forward). ``streams`` narrows
    the streams (default: ``conn.streams`` or all). Opens its own transactions, one per page.
    Returns a :class:`SyncReport` whose ``status`` is ``succeeded`` or ``stopped`` (API quota or
    budget reached: recorded on ``sync_run``, logged as an alert, not retried). Other
    :class:`CRMError` are recorded on ``sync_run`` and re-raised (with ``.report`` attached).
    """
    report = SyncReport(connection=conn.name, kind=conn.kind, full=full, started_at=datetime.now(UTC))
    started = time.monotonic()
    connector = connector or make_connector(conn, secrets)
    selected = _select_streams(conn, connector, streams)
    connection_id = _ensure_connection(engine, conn)
    _close_interrupted_runs(engine, connection_id)
    try:
        server_time = connector.server_time()
    except (CRMError, OSError) as exc:
        # OSError: what the HTTP stack raises below the connector's own errors (a CA file that
        # cannot be read, a socket error not wrapped by the client library).
        report.status = _status_for(exc) if isinstance(exc, CRMError) else "failed"
        report.error = str(exc) if isinstance(exc, CRMError) else f"{exc.__class__.__name__}: {exc}"
        report.api_calls = connector.api_calls
        report.finished_at = datetime.now(UTC)
        # The CRM did not answer before any stream started: record it on every selected stream,
        # so `leadscore status` shows the failure instead of the last success.
        _record_failed_start(engine, connection_id, selected, full, report)
        if isinstance(exc, QuotaExhaustedError):
            logger.error("ALERT sync %s stopped: %s", conn.name, exc)
            return report
        exc.report = report  # type: ignore[union-attr]
        raise
    report.server_time = server_time
    until = server_time + DATE_HEADER_RESOLUTION
    for stream in selected:
        stream_report = StreamReport(stream=stream)
        report.streams[stream] = stream_report
        try:
            _sync_stream(engine, connector, conn, connection_id, stream, full, server_time, until,
                         stream_report, progress)
        except CRMError as exc:
            report.status, report.error = _status_for(exc), f"{stream}: {exc}"
            report.api_calls = connector.api_calls
            report.finished_at = datetime.now(UTC)
            if isinstance(exc, QuotaExhaustedError):
                logger.error("ALERT sync %s stopped in stream %s: %s", conn.name, stream, exc)
                return report
            exc.report = report  # type: ignore[attr-defined]
            raise
    report.status = "succeeded"
    report.api_calls = connector.api_calls
    report.finished_at = datetime.now(UTC)
    logger.info("sync %s: %d records, %d API calls in %.1fs", conn.name, report.records,
                report.api_calls, time.monotonic() - started)
    return report


def _record_failed_start(engine: Engine, connection_id: int, streams: Sequence[str], full: bool,
                         report: SyncReport) -> None:
    now = datetime.now(UTC)
    with unit_of_work(engine) as session:
        for stream in streams:
            report.streams[stream] = StreamReport(stream=stream, status=report.status, error=report.error)
            session.add(SyncRun(connection_id=connection_id, stream=stream, full=full, status=report.status,
                                started_at=report.started_at, finished_at=now, error=report.error,
                                api_calls=0))


def _status_for(exc: CRMError) -> str:
    return "stopped" if isinstance(exc, QuotaExhaustedError) else "failed"


def _select_streams(conn: ConnectionConfig, connector: Connector, streams: Sequence[str] | None) -> list[str]:
    known = connector.streams()
    wanted = list(streams) if streams is not None else (conn.streams or known)
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise ConfigError(
            f"connection {conn.name!r}: unknown stream {unknown[0]!r} (known: {', '.join(known)})"
        )
    # Parents before children, whatever order the caller gave.
    return [s for s in known if s in wanted]


def _ensure_connection(engine: Engine, conn: ConnectionConfig) -> int:
    with unit_of_work(engine) as session:
        row = session.execute(select(Connection).where(Connection.name == conn.name)).scalar_one_or_none()
        if row is None:
            upsert_rows(session, Connection, [{"name": conn.name, "kind": conn.kind}],
                        conflict_columns=["name"], update_columns=[])
            row = session.execute(select(Connection).where(Connection.name == conn.name)).scalar_one()
        if row.kind != conn.kind:
            raise ConfigError(
                f"connection {conn.name!r} is configured as {conn.kind} but the database holds a "
                f"{row.kind} connection of that name"
            )
        return row.id


def _close_interrupted_runs(engine: Engine, connection_id: int) -> None:
    # Syncs of one connection never overlap (the worker holds a lock), so a run still marked
    # "running" belongs to a process that died; its committed pages are kept.
    with unit_of_work(engine) as session:
        session.execute(
            update(SyncRun)
            .where(SyncRun.connection_id == connection_id, SyncRun.status == "running")
            .values(status="failed", error="worker lost (interrupted): the process ended before the run finished",
                    finished_at=datetime.now(UTC))
        )


def _load_cursor(session: Session, connection_id: int, stream: str) -> Cursor | None:
    row = session.execute(
        select(SyncCursor).where(SyncCursor.connection_id == connection_id, SyncCursor.stream == stream)
    ).scalar_one_or_none()
    if row is None or row.cursor_ts is None:
        return None
    return Cursor(row.cursor_ts, row.cursor_id or None)


def _cursor_key(cursor: Cursor) -> tuple[datetime, int, str]:
    # Length first: numeric ids (HubSpot) then order as numbers; fixed-length ids (Salesforce's 18
    # characters, event UUIDs) order as the CRM sorts them.
    crm_id = cursor.crm_id or ""
    return (cursor.ts, len(crm_id), crm_id)


def _sync_stream(
    engine: Engine,
    connector: Connector,
    conn: ConnectionConfig,
    connection_id: int,
    stream: str,
    full: bool,
    server_time: datetime,
    until: datetime,
    report: StreamReport,
    progress: ProgressCallback | None,
) -> None:
    calls_at_start = connector.api_calls
    with unit_of_work(engine) as session:
        stored = _load_cursor(session, connection_id, stream)
        run = SyncRun(connection_id=connection_id, stream=stream, full=full, status="running",
                      server_time=server_time)
        session.add(run)
        session.flush()
        run_id = run.id
    start = None if full else stored
    previous: Cursor | None = None
    _notify(progress, conn.name, stream, "start", report)
    try:
        for page in connector.read_stream(stream, start, until=until):
            if page.cursor is not None:
                if previous is not None and _cursor_key(page.cursor) <= _cursor_key(previous):
                    # A paginator that does not move would loop forever (or skip records).
                    raise FatalCRMError(
                        f"stream {stream} did not advance: cursor {page.cursor} after {previous}"
                    )
                previous = page.cursor
            with unit_of_work(engine) as session:
                counts = apply_page(session, connector, connection_id, page, run_id)
                if page.cursor is not None:
                    _advance_cursor(session, connection_id, stream, page.cursor)
                report.records += page.records_read
                report.leads += counts["leads"]
                report.activities += counts["activities"]
                report.quarantined += len(page.quarantined)
                report.quarantined_by_reason.update(q.reason for q in page.quarantined)
                report.pages += 1
                report.api_calls = connector.api_calls - calls_at_start
                session.execute(
                    update(SyncRun).where(SyncRun.id == run_id).values(
                        records=report.records, quarantined=report.quarantined, api_calls=report.api_calls)
                )
            _notify(progress, conn.name, stream, "page", report)
    except CRMError as exc:
        report.status = _status_for(exc)
        report.error = str(exc)
        report.api_calls = connector.api_calls - calls_at_start
        _finish_run(engine, run_id, report)
        raise
    except BaseException as exc:
        # A bug or an interrupt: record it on the run (so the operator sees it), then propagate.
        report.status = "failed"
        report.error = f"{exc.__class__.__name__}: {exc}"
        report.api_calls = connector.api_calls - calls_at_start
        _finish_run(engine, run_id, report)
        raise
    report.status = "succeeded"
    report.api_calls = connector.api_calls - calls_at_start
    _finish_run(engine, run_id, report)
    _notify(progress, conn.name, stream, "end", report)


def _notify(progress: ProgressCallback | None, connection: str, stream: str, kind: str,
            report: StreamReport) -> None:
    if progress is not None:
        progress(ProgressEvent(connection, stream, kind, report.records, report.api_calls))


def _finish_run(engine: Engine, run_id: int, report: StreamReport) -> None:
    with unit_of_work(engine) as session:
        session.execute(
            update(SyncRun).where(SyncRun.id == run_id).values(
                status=report.status, error=report.error, finished_at=datetime.now(UTC),
                records=report.records, quarantined=report.quarantined, api_calls=report.api_calls)
        )


def _advance_cursor(session: Session, connection_id: int, stream: str, cursor: Cursor) -> None:
    stored = _load_cursor(session, connection_id, stream)
    # Only forward: a full re-read or an overlap page never rewinds what is already committed.
    if stored is not None and _cursor_key(cursor) <= _cursor_key(stored):
        return
    upsert_rows(
        session,
        SyncCursor,
        [{"connection_id": connection_id, "stream": stream, "cursor_ts": cursor.ts,
          "cursor_id": cursor.crm_id, "updated_at": datetime.now(UTC)}],
        conflict_columns=["connection_id", "stream"],
    )


def apply_page(session: Session, connector: Connector, connection_id: int, page: Page,
               run_id: int | None = None) -> dict[str, int]:
    """Write one page (leads, merges, company refreshes, activities, quarantine) in ``session``.

    Runs in the caller's transaction. Returns counts of lead and activity rows written.
    """
    now = datetime.now(UTC)
    leads = list(page.leads)
    if page.company_updates:
        leads.extend(_relinked_leads(session, connector, connection_id, page.company_updates))
    written_leads = upsert_leads(session, connection_id, leads, now)
    if page.merges:
        apply_merges(session, connection_id, page.merges, now)
    if page.lead_campaigns:
        apply_lead_campaigns(session, connection_id, page.lead_campaigns, now)
    written_activities = upsert_activities(session, connection_id, page.activities, now)
    _quarantine(session, connection_id, page.stream, page.quarantined, run_id)
    return {"leads": written_leads, "activities": written_activities}


# Lead columns learnt from another record than the lead itself: a merge (from the survivor, HubSpot)
# and the original campaign (from the CampaignMember, Salesforce). Re-reading the lead, which does
# not carry them, must not erase them.
KEPT_WHEN_NULL: tuple[str, ...] = ("merged_into_crm_id", "campaign")


def _bulk_upsert(session: Session, model: type[Any], rows: Sequence[dict[str, Any]],
                 conflict: Sequence[str]) -> None:
    """INSERT .. ON CONFLICT DO UPDATE as one executemany: the statement compiles once (cached),
    which is several times faster than a multi-VALUES statement per page."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        upsert_rows(session, model, rows, conflict_columns=conflict)
        return
    insert_fn: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = sa_inspect(model).local_table
    stmt = insert_fn(table)
    updates = [c for c in rows[0] if c not in conflict]
    set_: dict[str, Any] = {c: stmt.excluded[c] for c in updates}
    for column in KEPT_WHEN_NULL:
        if column in set_:
            set_[column] = func.coalesce(stmt.excluded[column], table.c[column])
    stmt = stmt.on_conflict_do_update(index_elements=list(conflict), set_=set_)
    session.execute(stmt, list(rows))


def _last_by_id(records: Iterable[Any]) -> list[Any]:
    # PostgreSQL refuses one INSERT .. ON CONFLICT touching a row twice: keep each id's last version.
    by_id: dict[str, Any] = {}
    for record in records:
        by_id[record.crm_id] = record
    return list(by_id.values())


_LEAD_COLUMNS = (
    "email", "first_name", "last_name", "title", "company", "company_key", "industry", "employees",
    "annual_revenue", "country", "lead_source", "campaign", "status", "owner_crm_id", "is_converted",
    "converted_at", "crm_created_at", "crm_modified_at", "is_deleted", "deleted_at", "merged_into_crm_id",
    "attributes", "raw", "lifecycle",
)


def upsert_leads(session: Session, connection_id: int, records: Sequence[LeadRecord], now: datetime) -> int:
    """Upsert leads; ``inputs_changed_at`` moves only for leads whose ``inputs_hash`` changed,
    and activities waiting for these leads get linked."""
    records = _last_by_id(records)
    if not records:
        return 0
    ids = [r.crm_id for r in records]
    existing: dict[str, str | None] = {}
    kept: dict[str, dict[str, Any]] = {}
    for crm_id, digest, merged_into, campaign in session.execute(
            select(Lead.crm_id, Lead.inputs_hash, Lead.merged_into_crm_id, Lead.campaign)
            .where(Lead.connection_id == connection_id, Lead.crm_id.in_(ids))):
        existing[crm_id] = digest
        kept[crm_id] = {"merged_into_crm_id": merged_into, "campaign": campaign}
    changed: list[dict[str, Any]] = []
    unchanged: list[dict[str, Any]] = []
    for record in records:
        row: dict[str, Any] = {"connection_id": connection_id, "crm_id": record.crm_id}
        row.update({name: getattr(record, name) for name in _LEAD_COLUMNS})
        stored = kept.get(record.crm_id, {})
        keep = {c: stored[c] for c in KEPT_WHEN_NULL if getattr(record, c) is None and stored.get(c) is not None}
        if keep:
            # The upsert keeps these (COALESCE): hash what will be stored.
            record = replace(record, **keep)
            if record.is_deleted and record.merged_into_crm_id:
                # A merge learnt from the survivor: the loser stays "merged" when re-read archived.
                row["lifecycle"] = LeadLifecycle.merged
        digest = inputs_hash(record)
        row["inputs_hash"] = digest
        row["synced_at"] = now
        if record.crm_id in existing and existing[record.crm_id] == digest:
            unchanged.append(row)
        else:
            row["inputs_changed_at"] = now
            changed.append(row)
    conflict = ["connection_id", "crm_id"]
    _bulk_upsert(session, Lead, changed, conflict)
    _bulk_upsert(session, Lead, unchanged, conflict)
    lead_id = select(Lead.id).where(Lead.connection_id == connection_id,
                                    Lead.crm_id == Activity.lead_crm_id).scalar_subquery()
    session.execute(
        update(Activity)
        .where(Activity.connection_id == connection_id, Activity.lead_crm_id.in_(ids),
               Activity.lead_id.is_(None))
        .values(lead_id=lead_id)
        .execution_options(synchronize_session=False)
    )
    # Leads that left "open" lose their pending writes and routing actions (reason recorded).
    cancel_not_open(session, connection_id, ids)
    return len(records)


def _row_hash(row: Lead) -> str:
    """The inputs hash of a stored lead, as :func:`inputs_hash` computes it for a record."""
    record = LeadRecord(crm_id=row.crm_id, crm_created_at=row.crm_created_at, crm_modified_at=row.crm_modified_at,
                        **{name: getattr(row, name) for name in INPUT_FIELDS if name != "crm_created_at"})
    return inputs_hash(record)


def apply_merges(session: Session, connection_id: int, merges: Sequence[Merge], now: datetime) -> None:
    """Mark each merged-away lead deleted and pointing at its survivor (rows are never removed)."""
    winners = {m.loser_crm_id: m for m in merges}
    rows = session.execute(
        select(Lead).where(Lead.connection_id == connection_id, Lead.crm_id.in_(sorted(winners)))
    ).scalars().all()
    for row in rows:
        merge = winners[row.crm_id]
        if row.is_deleted and row.merged_into_crm_id == merge.winner_crm_id:
            continue
        row.is_deleted = True
        row.merged_into_crm_id = merge.winner_crm_id
        row.lifecycle = LeadLifecycle.merged
        row.deleted_at = row.deleted_at or merge.at
        digest = _row_hash(row)
        if digest != row.inputs_hash:
            row.inputs_hash = digest
            row.inputs_changed_at = now
    session.flush()
    cancel_not_open(session, connection_id, [row.crm_id for row in rows])


def apply_lead_campaigns(session: Session, connection_id: int, joined: Sequence[tuple[str, str, datetime]],
                         now: datetime) -> None:
    """Set a lead's ``campaign`` from the membership created together with the lead."""
    by_lead = {lead: (name, created) for lead, name, created in joined}
    rows = session.execute(
        select(Lead).where(Lead.connection_id == connection_id, Lead.crm_id.in_(sorted(by_lead)))
    ).scalars().all()
    for row in rows:
        name, created = by_lead[row.crm_id]
        if created != row.crm_created_at or row.campaign == name:
            continue
        row.campaign = name
        digest = _row_hash(row)
        if digest != row.inputs_hash:
            row.inputs_hash = digest
            row.inputs_changed_at = now
    session.flush()


def upsert_activities(session: Session, connection_id: int, records: Sequence[ActivityRecord],
                      now: datetime) -> int:
    """Upsert activities, linking each to its lead when the lead is already stored; a lead gets a
    new ``inputs_changed_at`` when one of its activities is new or was deleted/restored."""
    records = _last_by_id(records)
    if not records:
        return 0
    ids = [r.crm_id for r in records]
    before = {
        crm_id: (lead_crm_id, deleted)
        for crm_id, lead_crm_id, deleted in session.execute(
            select(Activity.crm_id, Activity.lead_crm_id, Activity.is_deleted)
            .where(Activity.connection_id == connection_id, Activity.crm_id.in_(ids))
        ).all()
    }
    lead_crm_ids = sorted({r.lead_crm_id for r in records if r.lead_crm_id})
    lead_ids: dict[str, int] = {
        crm_id: lead_id for crm_id, lead_id in session.execute(
            select(Lead.crm_id, Lead.id).where(Lead.connection_id == connection_id, Lead.crm_id.in_(lead_crm_ids)))
    } if lead_crm_ids else {}
    rows = []
    touched: set[str] = set()
    for record in records:
        rows.append({
            "connection_id": connection_id,
            "crm_id": record.crm_id,
            "lead_crm_id": record.lead_crm_id,
            "lead_id": lead_ids.get(record.lead_crm_id) if record.lead_crm_id else None,
            "type": record.type,
            "occurred_at": record.occurred_at,
            "detail": record.detail,
            "campaign": record.campaign,
            "crm_modified_at": record.crm_modified_at,
            "is_deleted": record.is_deleted,
            "raw": record.raw,
            "synced_at": now,
        })
        previous = before.get(record.crm_id)
        if record.lead_crm_id and (previous is None or previous != (record.lead_crm_id, record.is_deleted)):
            touched.add(record.lead_crm_id)
            if previous is not None and previous[0] and previous[0] != record.lead_crm_id:
                touched.add(previous[0])
    _bulk_upsert(session, Activity, rows, ["connection_id", "crm_id"])
    if touched:
        session.execute(
            update(Lead)
            .where(Lead.connection_id == connection_id, Lead.crm_id.in_(sorted(touched)))
            .values(inputs_changed_at=now)
            .execution_options(synchronize_session=False)
        )
    return len(rows)


def _relinked_leads(session: Session, connector: Connector, connection_id: int,
                    companies: dict[str, dict[str, Any]]) -> list[LeadRecord]:
    company_id = Lead.raw["company_id"].as_string()
    rows = session.execute(
        select(Lead.raw).where(Lead.connection_id == connection_id, company_id.in_(sorted(companies)))
    ).scalars().all()
    out: list[LeadRecord] = []
    for raw in rows:
        company = companies.get(str(raw.get("company_id")))
        if company is None:
            continue
        record = connector.relink_company(raw, company)
        if record is not None:
            out.append(record)
    return out


def _quarantine(session: Session, connection_id: int, stream: str, items: Sequence[QuarantinedItem],
                run_id: int | None) -> None:
    for item in items:
        reason = f"{item.reason}: {item.detail}" if item.detail else item.reason
        # A re-read (overlap, restart) of the same bad record is not a new quarantine entry.
        same = and_(QuarantinedRecord.connection_id == connection_id, QuarantinedRecord.stream == stream,
                    QuarantinedRecord.reason == reason)
        if item.crm_id is not None:
            seen = session.execute(
                select(QuarantinedRecord.id).where(same, QuarantinedRecord.crm_id == item.crm_id).limit(1)
            ).first()
            if seen is not None:
                continue
        else:
            payloads = session.execute(
                select(QuarantinedRecord.raw).where(same, QuarantinedRecord.crm_id.is_(None))
            ).scalars().all()
            if any(payload == item.raw for payload in payloads):
                continue
        session.add(QuarantinedRecord(connection_id=connection_id, stream=stream, crm_id=item.crm_id,
                                      reason=reason, raw=item.raw, sync_run_id=run_id))
    session.flush()
