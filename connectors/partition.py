"""The partitioned sync: a connection's sync cut into units that several workers run side by side.

A *plan* (numbered per connection) reads the CRM's clock once (its upper bound ``until``) and runs the CRM's
``sync_stages`` (:mod:`connectors.registry`) one after the other; the streams of a stage run side
by side, one ``sync_window`` row each. A windowed stream's first load (no cursor yet, or a full
sync) is cut into ``first_load_windows`` time windows ``[start, end)`` of its modification stamp,
their bounds at quantiles of the stored leads' creation times (the first window is open at the
start, the last ends at ``until``, so bounds only balance the work: no record falls outside).

Nothing is lost or duplicated: every page commits with its unit's cursor (an incremental unit
moves the stream's ``sync_cursor`` as :func:`connectors.sync.sync_connection` does; a window
keeps its own, read with no overlap), so a killed unit resumes after its last committed page;
the stream's cursor moves to the last window's cursor only when every window of the stream is
done. The unit that finishes a stage creates the next stage's units, under a row lock on the
plan's rows, so two units finishing together create them once.

The Celery tasks (``worker.tasks``) call :func:`start_plan` (the beat's per-connection tick) and
:func:`run_window` (one task per unit); ``leadscore sync`` and the one-process loop call
:func:`connectors.sync.sync_connection`, the same page loop (:func:`connectors.sync.read_range`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from config.app_config import ConnectionConfig
from connectors.base import ConnectionSecrets, Connector, Cursor
from connectors.errors import CRMError, QuotaExhaustedError
from connectors.registry import crm_for, make_connector
from connectors.sync import (
    DATE_HEADER_RESOLUTION,
    StreamRange,
    StreamReport,
    advance_cursor,
    connect_or_record,
    cursor_key,
    ensure_connection,
    failed_start,
    link_accounts_after_sync,
    load_cursor,
    read_range,
    record_outside_streams,
    select_streams,
    sync_meter,
)
from store.db import unit_of_work
from store.models import Lead, SyncRun, SyncStatus, SyncWindow, WindowStatus

logger = logging.getLogger(__name__)

DONE = WindowStatus.done
INTERRUPTED = "worker lost (interrupted): the process ended before the unit finished"


@dataclass
class WindowOutcome:
    """What :func:`run_window` did, and the units that may start now."""

    window_id: int
    stream: str
    status: str  # done | already done | failed | stopped
    records: int = 0
    api_calls: int = 0
    error: str | None = None
    next_windows: list[int] = field(default_factory=list)
    plan_done: bool = False
    accounts: dict[str, Any] | None = None  # the account look-up after the plan's last unit
    skipped_by_reason: dict[str, int] = field(default_factory=dict)  # read, not stored (StreamReport's)

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window_id, "stream": self.stream, "status": self.status, "records": self.records,
                "api_calls": self.api_calls, "error": self.error, "next_windows": self.next_windows,
                "plan_done": self.plan_done, "accounts": self.accounts,
                "skipped_by_reason": dict(self.skipped_by_reason)}


def stages_for(conn: ConnectionConfig, connector: Connector) -> list[list[str]]:
    """The CRM's stages narrowed to the connection's streams (empty stages dropped)."""
    selected = set(select_streams(conn, connector, None))
    stages = [[s for s in stage if s in selected] for stage in crm_for(conn).sync_stages]
    return [stage for stage in stages if stage]


def start_plan(engine: Engine, conn: ConnectionConfig, secrets: ConnectionSecrets, *, full: bool = False,
               connector: Connector | None = None) -> list[int]:
    """Begin a sync of ``conn`` or continue the one in progress; the ids of the units to run now.

    A plan in progress gets back its unfinished units of the current stage (a unit whose worker
    died is run again and resumes from its cursor; one still running is skipped by its lock).
    Otherwise reads the CRM's clock (one call) and creates the first stage's units.
    """
    handed_in = connector is not None
    connector = connector or connect_or_record(engine, conn, secrets, full=full)
    meter = sync_meter(connector, handed_in)
    connection_id = ensure_connection(engine, conn)
    try:
        return _start_plan(engine, conn, connection_id, connector, full)
    finally:
        record_outside_streams(engine, connection_id, meter, ())


def _start_plan(engine: Engine, conn: ConnectionConfig, connection_id: int, connector: Connector,
                full: bool) -> list[int]:
    stages = stages_for(conn, connector)
    with unit_of_work(engine) as session:
        latest = session.execute(select(func.max(SyncWindow.plan))
                                 .where(SyncWindow.connection_id == connection_id)).scalar_one_or_none()
        if latest is not None:
            rows = _lock_plan(session, connection_id, latest)
            stage = max(r.stage for r in rows)
            open_units = [r.id for r in rows if r.stage == stage and r.status != DONE]
            if open_units:
                return open_units
            if stage + 1 < len(stages):
                # The unit that finished the stage died before creating the next one.
                return _create_stage(session, conn, connection_id, rows[0], stages, stage + 1)
    started = datetime.now(UTC)
    try:
        server_time = connector.server_time()
    except (CRMError, OSError) as exc:
        # As `leadscore sync` does: the failure goes on every stream of the connection, so
        # `leadscore status` shows it (a worker's failed start recorded nothing before: status
        # kept showing the last success, or an older error).
        failed_start(engine, conn, connection_id, [s for stage in stages for s in stage], full, started, exc)
        raise
    until = server_time + DATE_HEADER_RESOLUTION
    with unit_of_work(engine) as session:
        first = SyncWindow(connection_id=connection_id, plan=(latest or 0) + 1, plan_until=until,
                           server_time=server_time, full=full, stage=-1, stream="", window_end=until)
        return _create_stage(session, conn, connection_id, first, stages, 0)


def _lock_plan(session: Session, connection_id: int, plan: int) -> list[SyncWindow]:
    # Every decision about a plan's stages is taken holding its rows (PostgreSQL row locks; SQLite
    # has one writer anyway), so two units finishing together see each other's status.
    return list(session.execute(
        select(SyncWindow).where(SyncWindow.connection_id == connection_id, SyncWindow.plan == plan)
        .order_by(SyncWindow.id).with_for_update()
    ).scalars())


def _create_stage(session: Session, conn: ConnectionConfig, connection_id: int, plan: SyncWindow,
                  stages: Sequence[Sequence[str]], stage: int) -> list[int]:
    windowed = crm_for(conn).windowed_streams
    bounds: list[datetime] | None = None
    created: list[SyncWindow] = []
    for stream in stages[stage]:
        first_load = plan.full or load_cursor(session, connection_id, stream) is None
        parts: list[tuple[datetime | None, datetime]] = [(None, plan.plan_until)]
        if first_load and stream in windowed and conn.first_load_windows > 1:
            if bounds is None:
                bounds = window_bounds(session, connection_id, conn.first_load_windows, plan.server_time)
            edges: list[datetime | None] = [None, *bounds]
            parts = [(start, end) for start, end in zip(edges, [*bounds, plan.plan_until], strict=True)]
        for part, (start, end) in enumerate(parts):
            row = SyncWindow(connection_id=connection_id, plan=plan.plan, plan_until=plan.plan_until,
                             server_time=plan.server_time,
                             full=plan.full, stage=stage, stream=stream, part=part, from_cursor=len(parts) == 1,
                             window_start=start, window_end=end, status=WindowStatus.pending, records=0, api_calls=0)
            session.add(row)
            created.append(row)
    session.flush()
    return [row.id for row in created]


def window_bounds(session: Session, connection_id: int, windows: int, before: datetime) -> list[datetime]:
    """Up to ``windows - 1`` increasing inner bounds: quantiles of the stored leads' creation times
    (activities follow their lead); none when no lead is stored yet (one window then)."""
    created = Lead.crm_created_at
    base = select(created).where(Lead.connection_id == connection_id, created < before)
    count = session.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    if count < windows:
        return []
    bounds: list[datetime] = []
    for k in range(1, windows):
        value = session.execute(base.order_by(created).offset(count * k // windows).limit(1)).scalar_one()
        if not bounds or value > bounds[-1]:
            bounds.append(value)
    return bounds


def run_window(engine: Engine, conn: ConnectionConfig, secrets: ConnectionSecrets, window_id: int, *,
               connector: Connector | None = None) -> WindowOutcome:
    """Read one unit into the store (resuming from its cursor), then, when it was the last of its
    stage, create the next stage's units (returned in ``next_windows``).

    A quota stop is returned (``stopped``); other :class:`CRMError` are recorded on the unit and
    re-raised (the task retries the retriable ones; the unit resumes from its cursor).
    """
    with unit_of_work(engine) as session:
        window = session.get(SyncWindow, window_id)
        if window is None:
            raise LookupError(f"sync window {window_id} does not exist")
        if window.status == DONE:
            return WindowOutcome(window_id, window.stream, "already done", window.records, window.api_calls)
        window.status = WindowStatus.running
        if window.sync_run_id is not None:
            # This unit's lock is free again while its last run is still "running": that worker died.
            session.execute(update(SyncRun)
                            .where(SyncRun.id == window.sync_run_id, SyncRun.status == SyncStatus.running)
                            .values(status=SyncStatus.failed, error=INTERRUPTED, finished_at=datetime.now(UTC)))
        span = _span(session, conn, window)
        plan, stream = window.plan, window.stream
        records_before, calls_before = window.records, window.api_calls
    handed_in = connector is not None
    if connector is None:
        # A window is an exact keyset range: no overlap (that is for incremental reads only).
        read_as = conn if span.advance is None else conn.model_copy(update={"overlap_seconds": 0})
        connector = make_connector(read_as, secrets)
    meter = sync_meter(connector, handed_in)
    report = StreamReport(stream=stream)
    outcome: WindowOutcome | None = None
    try:
        outcome = _read_window(engine, conn, connector, span, report, window_id, plan, records_before,
                               calls_before)
        return outcome
    finally:
        accounts = outcome.accounts if outcome is not None else None
        record_outside_streams(engine, span.connection_id, meter, (report,),
                               int((accounts or {}).get("api_calls", 0)))


def _read_window(engine: Engine, conn: ConnectionConfig, connector: Connector, span: StreamRange,
                 report: StreamReport, window_id: int, plan: int, records_before: int,
                 calls_before: int) -> WindowOutcome:
    stream = span.stream
    try:
        read_range(engine, connector, span, report)
    except CRMError as exc:
        status = WindowStatus.stopped if isinstance(exc, QuotaExhaustedError) else WindowStatus.failed
        _record(engine, window_id, status, records_before + report.records, calls_before + report.api_calls, str(exc))
        if isinstance(exc, QuotaExhaustedError):
            logger.error("ALERT sync %s stopped in %s (window %d): %s", conn.name, stream, window_id, exc)
            return WindowOutcome(window_id, stream, status, report.records, report.api_calls, str(exc))
        raise
    outcome = WindowOutcome(window_id, stream, DONE, report.records, report.api_calls,
                            skipped_by_reason=dict(report.skipped_by_reason))
    with unit_of_work(engine) as session:
        rows = _lock_plan(session, span.connection_id, plan)
        mine = next(r for r in rows if r.id == window_id)
        mine.status, mine.error = DONE, None
        mine.records, mine.api_calls = records_before + report.records, calls_before + report.api_calls
        _finish_stream(session, span.connection_id, [r for r in rows if r.stream == stream])
        stage = max(r.stage for r in rows)
        if mine.stage == stage and all(r.status == DONE for r in rows if r.stage == stage):
            stages = stages_for(conn, connector)
            if stage + 1 < len(stages):
                outcome.next_windows = _create_stage(session, conn, span.connection_id, mine, stages, stage + 1)
            else:
                outcome.plan_done = True
    if outcome.plan_done:
        # As the one-process sync does after its last stream (connectors.sync.sync_connection).
        outcome.accounts = link_accounts_after_sync(engine, conn, connector)
    return outcome


def _span(session: Session, conn: ConnectionConfig, window: SyncWindow) -> StreamRange:
    connection_id = window.connection_id
    window_id = window.id

    def run_started(run_session: Session, run_id: int) -> None:
        run_session.execute(update(SyncWindow).where(SyncWindow.id == window_id).values(sync_run_id=run_id))

    if window.from_cursor:
        start = None if window.full else load_cursor(session, connection_id, window.stream)
        return StreamRange(conn.name, connection_id, window.stream, start, window.window_end, window.server_time,
                           window.full, run_started=run_started)
    if window.cursor_ts is not None:
        start = Cursor(window.cursor_ts, window.cursor_id)  # resume strictly after the last committed page
    else:
        start = Cursor(window.window_start, None) if window.window_start is not None else None

    def advance(page_session: Session, cursor: Cursor) -> None:
        page_session.execute(update(SyncWindow).where(SyncWindow.id == window_id).values(
            cursor_ts=cursor.ts, cursor_id=cursor.crm_id, updated_at=datetime.now(UTC)))

    return StreamRange(conn.name, connection_id, window.stream, start, window.window_end, window.server_time,
                       window.full, advance, run_started)


def _finish_stream(session: Session, connection_id: int, windows: list[SyncWindow]) -> None:
    """Every window of a first load done: the stream's cursor moves to the latest window cursor."""
    if any(w.from_cursor for w in windows) or any(w.status != DONE for w in windows):
        return
    cursors = [Cursor(w.cursor_ts, w.cursor_id) for w in windows if w.cursor_ts is not None]
    if cursors:
        advance_cursor(session, connection_id, windows[0].stream, max(cursors, key=cursor_key))


def _record(engine: Engine, window_id: int, status: str, records: int, api_calls: int, error: str | None) -> None:
    with unit_of_work(engine) as session:
        session.execute(update(SyncWindow).where(SyncWindow.id == window_id).values(
            status=status, records=records, api_calls=api_calls, error=error, updated_at=datetime.now(UTC)))


def sync_in_threads(engine: Engine, conn: ConnectionConfig, secrets: ConnectionSecrets, *, full: bool = False,
                    threads: int = 2) -> list[WindowOutcome]:
    """Run a whole plan in this process, ``threads`` units at a time (what ``threads`` workers
    would do with the Celery tasks); the outcomes in completion order."""
    outcomes: list[WindowOutcome] = []
    started = datetime.now(UTC)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"sync-{conn.name}") as pool:
        while True:
            window_ids = start_plan(engine, conn, secrets, full=full)
            with unit_of_work(engine) as session:
                # A plan left unfinished by a dead process reads only up to its own clock: finish
                # it, then sync again up to now.
                first = session.get(SyncWindow, window_ids[0]) if window_ids else None
                resumed = first is not None and session.execute(
                    select(func.min(SyncWindow.updated_at)).where(
                        SyncWindow.connection_id == first.connection_id,
                        SyncWindow.plan == first.plan)).scalar_one() < started
            pending = {pool.submit(run_window, engine, conn, secrets, w) for w in window_ids}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    outcome = future.result()
                    outcomes.append(outcome)
                    pending |= {pool.submit(run_window, engine, conn, secrets, w) for w in outcome.next_windows}
            if not resumed or not outcomes or not outcomes[-1].plan_done:
                return outcomes
