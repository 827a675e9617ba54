"""Drain the outbox: send pending score writes to the CRMs in the largest batches they allow.

An ``Outbox`` row (created by scoring in the same transaction as the score) stays ``pending``
until the CRM confirmed it. One drain, per connection:

1. reads a bounded batch of due rows (``next_attempt_at <= now``, oldest first), marks rows
   that need no write (an older row of a lead that has a newer one in the batch, or a payload
   identical to the last one sent for that lead) ``superseded`` and commits;
2. sends the rest in ONE API call (Salesforce: a Composite call of five 200-record sObject
   Collections = 1,000 records; HubSpot: ``batch/update`` of 100 inputs);
3. marks each row from the CRM's per-record answer in a transaction right after the response:
   ``sent``; or retriable (row lock, 429/5xx of the whole call, dropped connection): attempts+1,
   exponential ``next_attempt_at``, ``failed`` after ``max_attempts``; or permanent (deleted or
   missing record, invalid field/property, validation): ``failed`` with the CRM's code and message.

Account rows (kind ``account_fields``, queued by :mod:`scoring.accounts`) are drained the same way
right after a connection's lead rows, with the CRM's account writer (Salesforce Accounts in the
same Composite shape, HubSpot companies by ``batch/update``); their counts are reported apart
(``WritebackReport.accounts``).

A worker killed anywhere loses nothing: rows it had not marked are still ``pending`` and are
sent again. Sending the same values again changes no value (HubSpot records nothing;
Salesforce bumps the Lead's LastModifiedDate/SystemModstamp, so the next sync re-reads it, and
its unchanged ``inputs_hash`` keeps it from being rescored).

API calls are counted per connection: ``write_calls`` are calls that carried at least one
record for the first time; ``retry_calls`` are every other request (transport retries of a
failed call, and calls that only re-sent records which failed before).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Select, bindparam, func, literal_column, select, update
from sqlalchemy.orm import Session

from config.app_config import AppConfig
from connectors.errors import AuthError, CRMError, QuotaExhaustedError, RetriableCRMError, failure_matches
from connectors.lifecycle import not_open_reason
from connectors.protocols import OutboxItem, Outcome, RecordResult, Router, ScoreWriter
from connectors.registry import (
    ConnectionUnavailable,
    client_from,
    make_account_writer,
    make_client,
    make_router,
    make_score_writer,
    score_field_names,
)
from connectors.riders import SPLIT, Rider, claim_riders, release_riders, settle_riders
from connectors.writeback_report import DEFAULT_POLICY, ConnectionWriteback, WritebackPolicy, WritebackReport
from scoring.score_writes import render_queued
from store.db import IDS_PER_STATEMENT, among, unit_of_work
from store.models import (
    ACCOUNT_OUTBOX_KIND,
    OUTBOX_KIND,
    ApiPurpose,
    Connection,
    Lead,
    LeadLifecycle,
    Outbox,
    OutboxStatus,
)
from store.types import Progress
from store.usage import CallMeter, add_api_calls, client_calls, record_api_calls

logger = logging.getLogger(__name__)

# The writers, factories and field names live with each CRM (connectors.registry); re-exported here
# for the callers that knew them from this module.
__all__ = ["DEFAULT_POLICY", "OUTBOX_KIND", "ConnectionWriteback", "OutboxItem", "Outcome", "RecordResult",
           "ScoreWriter", "WritebackPolicy", "WritebackReport", "drain_outbox", "make_client",
           "make_score_writer", "score_field_names"]

# Which store id an outbox row of each kind is about (one pending write per lead / per account).
_SUBJECT = {OUTBOX_KIND: Outbox.lead_id, ACCOUNT_OUTBOX_KIND: Outbox.account_id}
# API calls the drain made in this process, by CRM kind: a tally for in-process measurement (the
# demo reads it around its steps); every drain's own counts are in its WritebackReport.
CALLS_BY_KIND: Counter[str] = Counter()
ACCOUNT_CALLS_BY_KIND: Counter[str] = Counter()  # the same for account rows
LOOKUP_CALLS_BY_KIND: Counter[str] = Counter()  # of CALLS_BY_KIND: look-ups for routing riding along


# Progress (store.types): ``progress(connection name, rows handled so far, rows due at start)`` after each call.


# ------------------------------------------------------------------------------------ the drain


def drain_outbox(
    engine: Engine,
    config: AppConfig,
    secrets_by_connection: Mapping[str, Any],
    *,
    connection: str | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
    clients: Mapping[str, Any] | None = None,
    policy: WritebackPolicy = DEFAULT_POLICY,
    now: Callable[[], datetime] | None = None,
) -> WritebackReport:
    """Send every due pending outbox row of every enabled connection (or only ``connection``).

    ``secrets_by_connection`` maps connection names to :class:`connectors.base.ConnectionSecrets`;
    ``clients`` may give already-built CRM clients by name instead (reused, e.g. by the demo).
    ``limit`` bounds the rows handled in this run. Each call's results are committed right
    after its response, so the function may be interrupted at any point. A connection whose CRM
    refuses the whole call (auth, quota, still failing after retries), whose secrets are
    missing (``secrets_by_connection`` raises its ConfigError, :class:`connectors.base.EnvSecrets`)
    or whose login is refused as its client is built (:func:`connectors.registry.client_from`),
    is stopped with its error in the report; other connections proceed. Unknown ``connection``
    raises ConfigError.
    """
    clock = now or (lambda: datetime.now(UTC))
    report = WritebackReport()
    targets = [config.connection(connection)] if connection else [c for c in config.connections if c.enabled]
    remaining = limit
    for conn in targets:
        client = (clients or {}).get(conn.name)
        meter: CallMeter | None = None  # the client's calls not yet in api_usage
        # Lead score fields first, then the account fields of the same connection (same client).
        for outbox_kind, make_writer, entries in ((OUTBOX_KIND, make_score_writer, report.connections),
                                           (ACCOUNT_OUTBOX_KIND, make_account_writer, report.accounts)):
            if remaining is not None and remaining <= 0:
                break
            with unit_of_work(engine) as session:
                row = session.scalar(select(Connection).where(Connection.name == conn.name))
                if row is None:
                    break
                conn_id = row.id
                due = _count_due(session, conn_id, clock(), outbox_kind)
            if due == 0:
                continue
            entry = ConnectionWriteback(connection=conn.name, kind=conn.kind)
            entries[conn.name] = entry
            shown = progress if progress is None or outbox_kind == OUTBOX_KIND else _labelled(progress, "accounts")
            before = client_calls(client)() if client is not None else 0  # a client made here: its login counts
            try:
                if client is None:
                    client = client_from(conn, secrets_by_connection)
                    meter = CallMeter(client_calls(client), 0)
            except ConnectionUnavailable as exc:
                # Missing credentials, or a login refused or unanswered: its rows wait, the others go.
                entry.error, entry.pending_left = str(exc), due
                logger.warning("write-back to %s stopped: %s", conn.name, entry.error)
                break
            meter = meter or CallMeter(client_calls(client))
            try:
                writer = make_writer(conn, client)
                # Routing's owner/field changes ride only in lead records.
                router = make_router(conn, client) if config.routing and outbox_kind == OUTBOX_KIND else None
                handled = _drain_connection(engine, conn_id, writer, entry, policy, clock, outbox_kind=outbox_kind,
                                            limit=remaining, total=due, progress=shown, router=router,
                                            client=client, meter=meter)
            except (AuthError, QuotaExhaustedError, RetriableCRMError) as exc:
                # The CRM refused the whole call: rows stay pending (retried by the next run).
                entry.error = f"{type(exc).__name__}: {exc}"
                logger.warning("write-back to %s stopped: %s", conn.name, entry.error)
                handled = 0
            finally:
                # Calls no batch recorded (a refused call, a login): made all the same.
                record_api_calls(engine, conn_id, ApiPurpose.writeback, meter.take())
                entry.calls_recorded = client_calls(client)() - before
            (CALLS_BY_KIND if outbox_kind == OUTBOX_KIND else ACCOUNT_CALLS_BY_KIND)[conn.kind] += entry.api_calls
            LOOKUP_CALLS_BY_KIND[conn.kind] += entry.lookup_calls
            if remaining is not None:
                remaining -= handled
            with unit_of_work(engine) as session:
                entry.pending_left = int(session.scalar(
                    select(func.count()).select_from(Outbox)
                    .where(Outbox.connection_id == conn_id, Outbox.status == OutboxStatus.pending,
                           Outbox.kind == outbox_kind)
                ) or 0)
            if entry.error:
                break  # the CRM refused the connection: its account rows wait for the next run too
    return report


def _labelled(progress: Progress, suffix: str) -> Progress:
    """``progress`` reporting under ``"<connection> <suffix>"`` (a second bar per connection)."""
    return lambda name, done, total: progress(f"{name} {suffix}", done, total)


def _count_due(session: Session, conn_id: int, now: datetime, outbox_kind: str = OUTBOX_KIND) -> int:
    return int(session.scalar(
        select(func.count()).select_from(Outbox).where(
            Outbox.connection_id == conn_id, Outbox.status == OutboxStatus.pending, Outbox.kind == outbox_kind,
            Outbox.next_attempt_at <= now)
    ) or 0)


def _drain_connection(
    engine: Engine,
    conn_id: int,
    writer: ScoreWriter,
    entry: ConnectionWriteback,
    policy: WritebackPolicy,
    clock: Callable[[], datetime],
    *,
    outbox_kind: str = OUTBOX_KIND,
    limit: int | None,
    total: int,
    progress: Progress | None,
    router: Router | None = None,
    client: Any = None,
    meter: CallMeter | None = None,
) -> int:
    handled = 0
    while limit is None or handled < limit:
        size = writer.batch_size if limit is None else min(writer.batch_size, limit - handled)
        riders: dict[int, list[Rider]] = {}
        with unit_of_work(engine) as session:
            items, skipped = _claim_batch(session, conn_id, clock(), size, entry, outbox_kind)
            if items and router is not None:
                # Pending owner/field changes of the same leads travel in the same records.
                calls_before = int(getattr(client, "api_calls", 0))
                items, riders = claim_riders(session, router, items, entry.routing)
                # The look-ups they needed (queue, users, Lead describe: once per run) are the
                # drain's calls; routing's own look-ups (its config validation) are not counted
                # in routing's api_calls either, which count the calls that carry actions.
                entry.lookup_calls += int(getattr(client, "api_calls", 0)) - calls_before
        handled += skipped
        if not items:
            if skipped:
                continue
            break
        first_send = any(item.attempts == 0 for item in items)
        before = writer.api_calls
        try:
            results = writer.write(items)
        except RetriableCRMError as exc:
            _count_calls(entry, writer.api_calls - before, first_send)
            with unit_of_work(engine) as session:
                release_riders(session, riders, f"{_code(exc)}: {exc}", split=False, report=entry.routing)
                _mark(session, [RecordResult(i.outbox_id, "retry", _code(exc), str(exc)) for i in items],
                      {i.outbox_id: i for i in items}, entry, policy, clock())
            raise
        except (AuthError, QuotaExhaustedError) as exc:
            _count_calls(entry, writer.api_calls - before, first_send)
            with unit_of_work(engine) as session:
                release_riders(session, riders, f"{_code(exc)}: {exc}", split=False, report=entry.routing)
            raise
        except CRMError as exc:
            # The CRM refused the request as a whole and would refuse it again unchanged.
            _count_calls(entry, writer.api_calls - before, first_send)
            results = [RecordResult(i.outbox_id, "failed", _code(exc), str(exc)) for i in items]
        else:
            _count_calls(entry, writer.api_calls - before, first_send)
        with unit_of_work(engine) as session:
            split = settle_riders(session, riders, results, entry.routing) if riders else set()
            _mark(session, results, {i.outbox_id: i for i in items}, entry, policy, clock(), resend_now=split)
            if meter is not None:  # the batch's calls (look-ups and retries included) with its results
                add_api_calls(session, conn_id, ApiPurpose.writeback, meter.take())
        handled += len(items)
        if progress is not None:
            progress(entry.connection, handled, total)
    return handled


def _count_calls(entry: ConnectionWriteback, calls: int, first_send: bool) -> None:
    calls = max(calls, 1)
    if first_send:
        entry.write_calls += 1
        entry.retry_calls += calls - 1
    else:
        entry.retry_calls += calls


def _code(exc: CRMError) -> str:
    if exc.code:
        return exc.code
    if exc.status:
        return f"HTTP_{exc.status}"
    return type(exc).__name__


def _claim_batch(
    session: Session, conn_id: int, now: datetime, size: int, entry: ConnectionWriteback,
    outbox_kind: str = OUTBOX_KIND,
) -> tuple[list[OutboxItem], int]:
    """Due rows of ``outbox_kind`` to send, oldest first; rows needing no write are marked ``superseded``
    here, rows of leads no longer open ``cancelled``.

    Returns (items to send, rows marked superseded).
    """
    subject = _SUBJECT[outbox_kind]
    rows = list(session.scalars(
        select(Outbox)
        .where(Outbox.connection_id == conn_id, Outbox.status == OutboxStatus.pending, Outbox.kind == outbox_kind,
               Outbox.next_attempt_at <= now)
        # First sends before re-sends: a call's worth of new rows is never split by retries.
        .order_by(Outbox.attempts, Outbox.id)
        .limit(size)
    ))
    if not rows:
        return [], 0
    skipped = 0
    if outbox_kind == OUTBOX_KIND:
        states: dict[int | None, LeadLifecycle] = {
            lead_id: state for lead_id, state in session.execute(
                select(Lead.id, Lead.lifecycle).where(
                    among(session, Lead.id, sorted({r.lead_id for r in rows if r.lead_id}))))}
        live = []
        for row in rows:
            state = states.get(row.lead_id, LeadLifecycle.deleted)
            if state != LeadLifecycle.open:
                # The lead left "open" after the score (a sync cancels these too; this closes the race).
                row.status = OutboxStatus.cancelled
                row.last_error = not_open_reason(state, "write")
                entry.cancelled += 1
                skipped += 1
            else:
                live.append(row)
        rows = live
    newest: dict[int, Outbox] = {}
    for row in sorted(rows, key=lambda r: r.id):
        key = int(getattr(row, subject.key))
        older = newest.get(key)
        if older is not None:
            older.status = OutboxStatus.superseded
            older.last_error = f"superseded by outbox row {row.id}"
            entry.superseded += 1
            skipped += 1
        newest[key] = row
    # A scoring run queues a lead's row without its payload: rendered from its score row now, and
    # kept with the row (what is sent, and the hash the next write of the lead is compared with).
    render_queued(session, list(newest.values()))
    last_sent = _last_sent_hashes(session, conn_id, list(newest), outbox_kind)
    items: list[OutboxItem] = []
    for key, row in newest.items():
        sent = last_sent.get(key)
        if sent is not None and sent[1] == row.payload_hash and sent[0] < row.id:
            row.status = OutboxStatus.superseded
            row.last_error = f"unchanged: same values as outbox row {sent[0]}, already sent"
            entry.unchanged_skipped += 1
            skipped += 1
            continue
        items.append(OutboxItem(row.id, row.lead_id, row.crm_id, dict(row.payload or {}), row.attempts,
                                account_id=row.account_id))
    session.flush()
    return items, skipped


def last_sent_statement(session: Session, conn_id: int, keys: Sequence[int],
                        outbox_kind: str = OUTBOX_KIND) -> Select[tuple[int, int, str]]:
    """(subject, outbox id, payload hash) of the most recently sent row of each of ``keys`` (lead
    or account ids).

    The rows are found through each subject's index (``ix_outbox_lead``/``ix_outbox_account``),
    never through the status index: a drain turns thousands of pending rows into sent ones in
    minutes, long before the planner's statistics see them, and with statistics saying few rows
    are sent PostgreSQL scanned every sent row of the connection, filtered by the id list, for
    every claim (a 100,000-lead first write-back: 85 claims, 19.3 s of 33.5 s). ``status || ''``
    keeps the status test out of every index.
    """
    column = getattr(Outbox, _SUBJECT[outbox_kind].key)
    sent = Outbox.status.concat(literal_column("''")) == OutboxStatus.sent.value
    latest = (
        select(column.label("subject"), func.max(Outbox.id).label("max_id"))
        .where(among(session, column, keys), sent, Outbox.kind == outbox_kind, Outbox.connection_id == conn_id)
        .group_by(column)
        .subquery()
    )
    return select(latest.c.subject, Outbox.id, Outbox.payload_hash).join(latest, Outbox.id == latest.c.max_id)


def _last_sent_hashes(session: Session, conn_id: int, keys: Iterable[int],
                      outbox_kind: str = OUTBOX_KIND) -> dict[int, tuple[int, str]]:
    """{lead (or account) id: (outbox id, payload hash)} of each one's most recently sent row."""
    ids = list(keys)
    out: dict[int, tuple[int, str]] = {}
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        statement = last_sent_statement(session, conn_id, ids[start:start + IDS_PER_STATEMENT], outbox_kind)
        for subject, outbox_id, digest in session.execute(statement):
            out[int(subject)] = (outbox_id, digest)
    return out


def _mark(
    session: Session,
    results: Sequence[RecordResult],
    items: Mapping[int, OutboxItem],
    entry: ConnectionWriteback,
    policy: WritebackPolicy,
    now: datetime,
    resend_now: set[int] | frozenset[int] = frozenset(),
) -> None:
    """Record the CRM's answers; only rows still ``pending`` change (a row superseded meanwhile
    keeps its status). Rows in ``resend_now`` that the CRM refused for good carried routing
    actions: they are due again at once, to be sent alone (:mod:`connectors.riders`)."""
    table: Any = Outbox.__table__
    stmt = (
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.status == OutboxStatus.pending)
        .values(status=bindparam("b_status"), attempts=bindparam("b_attempts"),
                last_error=bindparam("b_error"), next_attempt_at=bindparam("b_next"),
                sent_at=bindparam("b_sent"))
    )
    params: list[dict[str, Any]] = []
    answered = set()
    for result in results:
        item = items.get(result.outbox_id)
        if item is None or result.outbox_id in answered:
            continue
        answered.add(result.outbox_id)
        attempts = item.attempts + 1
        detail = _error_text(result)
        if result.outcome == "sent":
            params.append({"b_id": item.outbox_id, "b_status": OutboxStatus.sent, "b_attempts": attempts,
                           "b_error": None, "b_next": now, "b_sent": now})
            entry.records_written += 1
        elif result.outbox_id in resend_now and result.outcome == "failed" and attempts < policy.max_attempts:
            params.append({"b_id": item.outbox_id, "b_status": OutboxStatus.pending, "b_attempts": attempts,
                           "b_error": f"{SPLIT}: {detail} (the record also carried routing actions; sent again alone)",
                           "b_next": now, "b_sent": None})
            entry.retried_records += 1
        elif result.outcome == "retry" and attempts < policy.max_attempts:
            params.append({"b_id": item.outbox_id, "b_status": OutboxStatus.pending, "b_attempts": attempts,
                           "b_error": detail, "b_next": policy.next_attempt(now, attempts), "b_sent": None})
            entry.retried_records += 1
        else:
            reason = result.reason or "UNKNOWN"
            if result.outcome == "retry":
                reason = f"{reason} (gave up after {attempts} attempts)"
                detail = f"gave up after {attempts} attempts: {detail}"
            params.append({"b_id": item.outbox_id, "b_status": OutboxStatus.failed, "b_attempts": attempts,
                           "b_error": detail, "b_next": now, "b_sent": None})
            entry.failed += 1
            entry.failed_by_reason[reason] = entry.failed_by_reason.get(reason, 0) + 1
    # A record the CRM did not answer for is treated as retriable: it was not confirmed.
    for outbox_id, item in items.items():
        if outbox_id in answered:
            continue
        attempts = item.attempts + 1
        status = OutboxStatus.pending if attempts < policy.max_attempts else OutboxStatus.failed
        params.append({"b_id": outbox_id, "b_status": status, "b_attempts": attempts,
                       "b_error": "NO_RESULT: the CRM returned no result for this record",
                       "b_next": policy.next_attempt(now, attempts), "b_sent": None})
        if status == OutboxStatus.failed:
            entry.failed += 1
            entry.failed_by_reason["NO_RESULT"] = entry.failed_by_reason.get("NO_RESULT", 0) + 1
        else:
            entry.retried_records += 1
    if params:
        session.execute(stmt, params)


def _error_text(result: RecordResult) -> str | None:
    if result.outcome == "sent":
        return None
    if result.reason and result.message:
        return f"{result.reason}: {result.message}"
    return result.reason or result.message


def requeue_failed(
    session: Session, *, connection: str | None = None, reason: str | None = None
) -> Counter[str]:
    """Put the writes the CRMs refused for good back in the queue, once their cause is fixed (a
    missing field created by ``leadscore crm setup``, a permission granted): ``failed`` outbox rows
    (scores and accounts) become ``pending`` with their attempts reset, due now. Scoring cannot do
    this: it queues a write only when a value the CRM shows changes, and a refused write's values
    are still the current ones.

    Only each record's newest write is requeued (an older failed row with a newer write after it
    stays as history); a lead that left "open" since is cancelled by the drain as usual.
    ``connection``: only that connection's rows; ``reason``: only rows whose error it names
    (:func:`connectors.errors.failure_matches`: ``PROPERTY_DOESNT_EXIST``, or ``validation_rule``
    as ``leadscore status`` words it). Returns the requeued rows by connection. No commit.
    """
    stmt = select(Outbox.id, Outbox.kind, Outbox.lead_id, Outbox.account_id, Connection.name,
                  Outbox.last_error).join(Connection, Connection.id == Outbox.connection_id).where(
        Outbox.status == OutboxStatus.failed)
    if connection is not None:
        stmt = stmt.where(Connection.name == connection)
    failed = [row for row in session.execute(stmt) if reason is None or failure_matches(row.last_error, reason)]
    if not failed:
        return Counter()
    # The newest write of each record that has a failed one (leads and accounts apart).
    latest: dict[tuple[str, int | None, int | None], int] = {}
    for column, ids in ((Outbox.lead_id, sorted({r.lead_id for r in failed if r.lead_id is not None})),
                        (Outbox.account_id, sorted({r.account_id for r in failed if r.account_id is not None}))):
        for start in range(0, len(ids), IDS_PER_STATEMENT):
            for kind, lead_id, account_id, newest in session.execute(
                select(Outbox.kind, Outbox.lead_id, Outbox.account_id, func.max(Outbox.id))
                .where(among(session, column, ids[start : start + IDS_PER_STATEMENT]))
                .group_by(Outbox.kind, Outbox.lead_id, Outbox.account_id)
            ):
                latest[(kind, lead_id, account_id)] = newest
    chosen = [(row_id, name) for row_id, kind, lead_id, account_id, name, _error in failed
              if latest.get((kind, lead_id, account_id)) == row_id]
    when = datetime.now(UTC)
    ids = [row_id for row_id, _ in chosen]
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        session.execute(
            update(Outbox).where(among(session, Outbox.id, ids[start : start + IDS_PER_STATEMENT]))
            .values(status=OutboxStatus.pending, attempts=0, next_attempt_at=when),
            execution_options={"synchronize_session": False},
        )
    return Counter(name for _, name in chosen)
