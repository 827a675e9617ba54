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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from config.app_config import ConnectionConfig
from config.errors import ConfigError
from connectors.accounts import link_accounts
from connectors.base import ConnectionSecrets, Connector, Cursor, Page
from connectors.errors import CRMError, FatalCRMError, QuotaExhaustedError
from connectors.page_writer import apply_page
from connectors.registry import crm_for, make_account_finder, make_connector
from store.db import unit_of_work
from store.models import ApiPurpose, Connection, SyncCursor, SyncRun, SyncStatus
from store.upsert import upsert_rows
from store.usage import CallMeter, add_api_calls, record_api_calls

logger = logging.getLogger(__name__)

# The CRM's Date header has whole seconds: the sync's upper bound is the next whole second, so a
# record stamped a fraction after the header's second (simulated clocks sit still) is included.
DATE_HEADER_RESOLUTION = timedelta(seconds=1)
ANALYZE_FIRST = 10_000  # records read by one run before it first refreshes the planner statistics
DEADLOCK_DETECTED = "40P01"  # PostgreSQL's SQLSTATE
DEADLOCK_ATTEMPTS = 5


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
    status: SyncStatus = SyncStatus.running
    error: str | None = None
    quarantined_by_reason: Counter[str] = field(default_factory=Counter)
    # Records read and deliberately not stored (not engagement), by why: see Page.skipped.
    skipped_by_reason: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "leads": self.leads, "activities": self.activities,
                "quarantined": self.quarantined, "pages": self.pages, "api_calls": self.api_calls,
                "status": self.status, "error": self.error,
                "quarantined_by_reason": dict(self.quarantined_by_reason),
                "skipped_by_reason": dict(self.skipped_by_reason)}


@dataclass
class SyncReport:
    """The result of :func:`sync_connection`: per-stream counts, quarantine reasons, API calls."""

    connection: str
    kind: str
    full: bool
    started_at: datetime
    server_time: datetime | None = None
    finished_at: datetime | None = None
    status: SyncStatus = SyncStatus.running
    error: str | None = None
    api_calls: int = 0
    streams: dict[str, StreamReport] = field(default_factory=dict)
    accounts: dict[str, Any] | None = None  # the account look-up after the streams (connectors.accounts)

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
            "accounts": self.accounts,
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
    handed_in = connector is not None
    if connector is None:
        try:
            connector = connect_or_record(engine, conn, secrets, full=full, streams=streams)
        except QuotaExhaustedError as exc:
            logger.error("ALERT sync %s stopped: %s", conn.name, exc)
            return exc.report  # type: ignore[attr-defined,no-any-return]
    meter = sync_meter(connector, handed_in)
    connection_id = ensure_connection(engine, conn)
    try:
        return _sync_streams(engine, conn, connection_id, connector, report, streams, started, progress)
    finally:
        # The calls no stream recorded (logins, the CRM's clock, look-ups before the streams).
        record_outside_streams(engine, connection_id, meter, report.streams.values(),
                               int((report.accounts or {}).get("api_calls", 0)))


def sync_meter(connector: Connector, handed_in: bool) -> CallMeter:
    """The connector's calls from here on (a connector made for this step: its login too)."""
    return CallMeter(lambda: connector.api_calls, None if handed_in else 0)


def record_outside_streams(engine: Engine, connection_id: int, meter: CallMeter,
                           streams: Iterable[StreamReport], account_calls: int = 0) -> None:
    """Record as ``sync`` calls the meter's calls that neither the streams' pages nor the account
    look-up (``account_calls``) recorded."""
    recorded = sum(s.api_calls for s in streams) + account_calls
    record_api_calls(engine, connection_id, ApiPurpose.sync, meter.take() - recorded)


def _sync_streams(engine: Engine, conn: ConnectionConfig, connection_id: int, connector: Connector,
                  report: SyncReport, streams: Sequence[str] | None, started: float,
                  progress: ProgressCallback | None) -> SyncReport:
    selected = select_streams(conn, connector, streams)
    _close_interrupted_runs(engine, connection_id)
    try:
        server_time = connector.server_time()
    except (CRMError, OSError) as exc:
        # OSError: what the HTTP stack raises below the connector's own errors (a CA file that
        # cannot be read, a socket error not wrapped by the client library).
        report.status, report.error = start_failure(exc)
        report.api_calls = connector.api_calls
        report.finished_at = datetime.now(UTC)
        # The CRM did not answer before any stream started: record it on every selected stream,
        # so `leadscore status` shows the failure instead of the last success.
        record_failed_start(engine, connection_id, selected, report.full, report)
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
            with unit_of_work(engine) as session:
                stored = None if report.full else load_cursor(session, connection_id, stream)
            read_range(engine, connector, StreamRange(conn.name, connection_id, stream, stored, until,
                                                      server_time, report.full), stream_report, progress)
        except CRMError as exc:
            report.status, report.error = _status_for(exc), f"{stream}: {exc}"
            report.api_calls = connector.api_calls
            report.finished_at = datetime.now(UTC)
            if isinstance(exc, QuotaExhaustedError):
                logger.error("ALERT sync %s stopped in stream %s: %s", conn.name, stream, exc)
                return report
            exc.report = report  # type: ignore[attr-defined]
            raise
    # The account look-up records its own calls (purpose "accounts"), and so does not count here.
    report.accounts = link_accounts_after_sync(engine, conn, connector)
    report.status = SyncStatus.succeeded
    report.api_calls = connector.api_calls
    report.finished_at = datetime.now(UTC)
    logger.info("sync %s: %d records, %d API calls in %.1fs", conn.name, report.records,
                report.api_calls, time.monotonic() - started)
    return report


def link_accounts_after_sync(engine: Engine, conn: ConnectionConfig, connector: Connector) -> dict[str, Any]:
    """Place the leads that need it at their CRM accounts; a CRM error here is reported, and the
    sync (already committed) still succeeds: the next run looks those leads up again."""
    before = connector.api_calls
    try:
        return link_accounts(engine, conn, make_account_finder(conn, connector.client)).to_dict()
    except CRMError as exc:
        logger.warning("account look-up for %s stopped: %s", conn.name, exc)
        return {"connection": conn.name, "error": f"{type(exc).__name__}: {exc}",
                "api_calls": connector.api_calls - before}


def connect_or_record(engine: Engine, conn: ConnectionConfig, secrets: ConnectionSecrets, *, full: bool,
                      streams: Sequence[str] | None = None) -> Connector:
    """The sync connector for ``conn``; when making it fails (Salesforce's client logs in as it
    is made: a CRM that does not answer, refused credentials), the failure is recorded on each
    stream as :func:`record_failed_start` does and re-raised with ``.report`` (a sync that
    failed there recorded nothing: `leadscore status` kept showing the last success)."""
    started = datetime.now(UTC)
    try:
        return make_connector(conn, secrets)
    except (CRMError, OSError) as exc:
        exc.report = failed_start(engine, conn, ensure_connection(engine, conn),  # type: ignore[union-attr]
                                  _wanted_streams(conn, streams), full, started, exc)
        raise


def secrets_or_record(engine: Engine, conn: ConnectionConfig, *, full: bool,
                      streams: Sequence[str] | None = None) -> ConnectionSecrets:
    """``conn``'s secrets from this process's environment. A variable the config names that is
    unset is recorded as a failed start on each stream, as a refused login is
    (:func:`connect_or_record`), and its ConfigError re-raised with ``.report``: a worker started
    without the variable failed every sync while `leadscore status` showed the last success."""
    started = datetime.now(UTC)
    try:
        return ConnectionSecrets.from_env(conn)
    except ConfigError as exc:
        exc.report = failed_start(engine, conn, ensure_connection(engine, conn),  # type: ignore[attr-defined]
                                  _wanted_streams(conn, streams), full, started, exc)
        raise


def _wanted_streams(conn: ConnectionConfig, streams: Sequence[str] | None) -> list[str]:
    known = [s for stage in crm_for(conn).sync_stages for s in stage]
    wanted = set(streams if streams is not None else (conn.streams or known))
    return [s for s in known if s in wanted]


def failed_start(engine: Engine, conn: ConnectionConfig, connection_id: int, streams: Sequence[str], full: bool,
                 started: datetime, exc: CRMError | OSError | ConfigError) -> SyncReport:
    """The report of a sync whose CRM failed before any stream started, recorded on ``streams``
    (:func:`record_failed_start`)."""
    status, error = start_failure(exc)
    report = SyncReport(connection=conn.name, kind=conn.kind, full=full, started_at=started, status=status,
                        error=error, finished_at=datetime.now(UTC))
    record_failed_start(engine, connection_id, streams, full, report)
    return report


def record_failed_start(engine: Engine, connection_id: int, streams: Sequence[str], full: bool,
                        report: SyncReport) -> None:
    """The CRM failed before any stream started: a failed run on each stream (with the error), so
    `leadscore status` shows the failure instead of the last success. The CLI's sync and the
    workers' partitioned sync (:func:`connectors.partition.start_plan`) both record it here."""
    now = datetime.now(UTC)
    with unit_of_work(engine) as session:
        for stream in streams:
            report.streams[stream] = StreamReport(stream=stream, status=report.status, error=report.error)
            session.add(SyncRun(connection_id=connection_id, stream=stream, full=full, status=report.status,
                                started_at=report.started_at, finished_at=now, error=report.error,
                                api_calls=0))


def start_failure(exc: CRMError | OSError | ConfigError) -> tuple[SyncStatus, str]:
    """The status and error of a sync that failed before any stream started (OSError: what the
    HTTP stack raises below the connector's own errors; ConfigError: a secret that is not set)."""
    if isinstance(exc, CRMError):
        return _status_for(exc), str(exc)
    if isinstance(exc, ConfigError):
        return SyncStatus.failed, str(exc)
    return SyncStatus.failed, f"{exc.__class__.__name__}: {exc}"


def _status_for(exc: CRMError) -> SyncStatus:
    return SyncStatus.stopped if isinstance(exc, QuotaExhaustedError) else SyncStatus.failed


def select_streams(conn: ConnectionConfig, connector: Connector, streams: Sequence[str] | None) -> list[str]:
    known = connector.streams()
    wanted = list(streams) if streams is not None else (conn.streams or known)
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise ConfigError(
            f"connection {conn.name!r}: unknown stream {unknown[0]!r} (known: {', '.join(known)})"
        )
    # Parents before children, whatever order the caller gave.
    return [s for s in known if s in wanted]


def ensure_connection(engine: Engine, conn: ConnectionConfig) -> int:
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
            .where(SyncRun.connection_id == connection_id, SyncRun.status == SyncStatus.running)
            .values(status=SyncStatus.failed, finished_at=datetime.now(UTC),
                    error="worker lost (interrupted): the process ended before the run finished")
        )


def load_cursor(session: Session, connection_id: int, stream: str) -> Cursor | None:
    row = session.execute(
        select(SyncCursor).where(SyncCursor.connection_id == connection_id, SyncCursor.stream == stream)
    ).scalar_one_or_none()
    if row is None or row.cursor_ts is None:
        return None
    return Cursor(row.cursor_ts, row.cursor_id or None)


def cursor_key(cursor: Cursor) -> tuple[datetime, int, str]:
    # Length first: numeric ids (HubSpot) then order as numbers; fixed-length ids (Salesforce's 18
    # characters, event UUIDs) order as the CRM sorts them.
    crm_id = cursor.crm_id or ""
    return (cursor.ts, len(crm_id), crm_id)


@dataclass(frozen=True)
class StreamRange:
    """What one read covers: ``stream``'s records after ``start`` and before ``until``.

    ``advance`` stores the cursor of each committed page, in the page's transaction; the default
    moves the stream's ``sync_cursor``. A time window of a partitioned first load stores its own.
    """

    connection: str
    connection_id: int
    stream: str
    start: Cursor | None
    until: datetime
    server_time: datetime
    full: bool = False
    advance: Callable[[Session, Cursor], None] | None = None
    # Called with the new sync_run's id in the transaction that creates it.
    run_started: Callable[[Session, int], None] | None = None


def read_range(engine: Engine, connector: Connector, span: StreamRange, report: StreamReport,
               progress: ProgressCallback | None = None) -> None:
    """Read ``span`` page by page into the store: one transaction per page holds the page's rows,
    its cursor (``span.advance``) and the ``sync_run`` counters. Records a ``sync_run`` row;
    CRM errors are recorded on it and re-raised."""
    stream, connection_id = span.stream, span.connection_id
    advance = span.advance or (lambda session, cursor: advance_cursor(session, connection_id, stream, cursor))
    calls_at_start = connector.api_calls
    connector.use_store(engine, connection_id)
    with unit_of_work(engine) as session:
        run = SyncRun(connection_id=connection_id, stream=stream, full=span.full, status=SyncStatus.running,
                      server_time=span.server_time)
        session.add(run)
        session.flush()
        run_id = run.id
        if span.run_started is not None:
            span.run_started(session, run_id)
    start, until = span.start, span.until
    previous: Cursor | None = None
    conn_name = span.connection
    _notify(progress, conn_name, stream, "start", report)
    analyze_after = ANALYZE_FIRST
    try:
        for page in connector.read_stream(stream, start, until=until):
            if page.cursor is not None:
                if previous is not None and cursor_key(page.cursor) <= cursor_key(previous):
                    # A paginator that does not move would loop forever (or skip records).
                    raise FatalCRMError(
                        f"stream {stream} did not advance: cursor {page.cursor} after {previous}"
                    )
                previous = page.cursor
            counts = _commit_page(engine, connector, connection_id, page, run_id, advance, report,
                                  connector.api_calls - calls_at_start)
            report.records += page.records_read
            report.leads += counts["leads"]
            report.activities += counts["activities"]
            report.quarantined += len(page.quarantined)
            report.quarantined_by_reason.update(q.reason for q in page.quarantined)
            report.skipped_by_reason.update(page.skipped)
            report.pages += 1
            report.api_calls = connector.api_calls - calls_at_start
            analyze_after = refresh_planner_statistics(engine, report.records, analyze_after)
            _notify(progress, conn_name, stream, "page", report)
    except CRMError as exc:
        report.status = _status_for(exc)
        report.error = str(exc)
        report.api_calls = connector.api_calls - calls_at_start
        _finish_run(engine, run_id, report)
        raise
    except BaseException as exc:
        # A bug or an interrupt: record it on the run (so the operator sees it), then propagate.
        report.status = SyncStatus.failed
        report.error = f"{exc.__class__.__name__}: {exc}"
        report.api_calls = connector.api_calls - calls_at_start
        _finish_run(engine, run_id, report)
        raise
    report.status = SyncStatus.succeeded
    report.api_calls = connector.api_calls - calls_at_start
    _finish_run(engine, run_id, report)
    _notify(progress, conn_name, stream, "end", report)


def refresh_planner_statistics(engine: Engine, records: int, due: int) -> int:
    """PostgreSQL plans the sync's look-ups (stored activities and leads by CRM id, one page at a
    time) from table statistics; a large first load grows the tables faster than autovacuum
    analyzes them (or autovacuum is off), and a plan made for an empty table scans the whole
    table once per page: measured, a 100,000-lead first load slowed to 380 records/s at 96,000
    activities. So a run analyzes the tables it fills after its first :data:`ANALYZE_FIRST`
    records and whenever its count has grown tenfold since. Returns the next count due."""
    if records < due:
        return due
    started = time.monotonic()
    if analyze_synced_tables(engine):
        logger.info("analyzed lead and activity after %d records in %.2fs", records, time.monotonic() - started)
    return max(due, records) * 10


def analyze_synced_tables(engine: Engine) -> bool:
    """``ANALYZE lead, activity`` on PostgreSQL (what a large sync leaves the store with: see
    :func:`refresh_planner_statistics`); False elsewhere, where nothing is done."""
    if engine.dialect.name != "postgresql":
        return False
    with unit_of_work(engine) as session:
        session.execute(text("ANALYZE lead, activity"))
    return True


def _commit_page(engine: Engine, connector: Connector, connection_id: int, page: Page, run_id: int,
                 advance: Callable[[Session, Cursor], None], report: StreamReport, api_calls: int) -> dict[str, int]:
    """One page, its cursor and the run's counters in one transaction.

    Units of a partitioned sync write side by side and touch the same leads (an activity moves
    its lead's ``inputs_changed_at``): PostgreSQL may pick one of two such transactions as a
    deadlock victim. Its work is all in ``page``, so it is simply committed again.
    """
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        try:
            with unit_of_work(engine) as session:
                counts = apply_page(session, connector, connection_id, page, run_id)
                if page.cursor is not None:
                    advance(session, page.cursor)
                session.execute(update(SyncRun).where(SyncRun.id == run_id).values(
                    records=report.records + page.records_read,
                    quarantined=report.quarantined + len(page.quarantined), api_calls=api_calls))
                # Last, so the day's row is held only while this transaction commits.
                add_api_calls(session, connection_id, ApiPurpose.sync, api_calls - report.api_calls)
            return counts
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != DEADLOCK_DETECTED or attempt == DEADLOCK_ATTEMPTS:
                raise
            logger.warning("page of %s chosen as a deadlock victim (attempt %d); committing it again",
                           page.stream, attempt)
    raise AssertionError("unreachable")


def _notify(progress: ProgressCallback | None, connection: str, stream: str, kind: str,
            report: StreamReport) -> None:
    if progress is not None:
        progress(ProgressEvent(connection, stream, kind, report.records, report.api_calls))


def _finish_run(engine: Engine, run_id: int, report: StreamReport) -> None:
    with unit_of_work(engine) as session:
        run = session.execute(select(SyncRun.connection_id, SyncRun.api_calls).where(SyncRun.id == run_id)).one()
        # The calls since the last committed page (the last, empty one; a refused request).
        add_api_calls(session, run.connection_id, ApiPurpose.sync, report.api_calls - run.api_calls)
        session.execute(
            update(SyncRun).where(SyncRun.id == run_id).values(
                status=report.status, error=report.error, finished_at=datetime.now(UTC),
                records=report.records, quarantined=report.quarantined, api_calls=report.api_calls)
        )


def advance_cursor(session: Session, connection_id: int, stream: str, cursor: Cursor) -> None:
    stored = load_cursor(session, connection_id, stream)
    # Only forward: a full re-read or an overlap page never rewinds what is already committed.
    if stored is not None and cursor_key(cursor) <= cursor_key(stored):
        return
    upsert_rows(
        session,
        SyncCursor,
        [{"connection_id": connection_id, "stream": stream, "cursor_ts": cursor.ts,
          "cursor_id": cursor.crm_id, "updated_at": datetime.now(UTC)}],
        conflict_columns=["connection_id", "stream"],
    )
