"""Read-only questions about the store that the console (and scripts) ask: no writes, bounded results.

Each function takes the caller's session and returns plain dicts/lists (JSON-ready apart from
datetimes). Counts that measured nothing say so with zeros, never with a missing key.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from store.models import (
    ActionStatus,
    Connection,
    Lead,
    LeadLifecycle,
    LeadScore,
    ModelVersion,
    Outbox,
    OutboxStatus,
    QuarantinedRecord,
    RoutingAction,
    SyncCursor,
    SyncRun,
    SyncStatus,
    SyncWindow,
    WindowStatus,
)
from store.usage import calls_on, empty_counts, utc_day

SEARCH_LIMIT = 50
HISTORY_LIMIT = 500
QUARANTINE_LIMIT = 200


# The statuses the console and the API count.
OUTBOX_COUNTED = (OutboxStatus.pending, OutboxStatus.failed, OutboxStatus.sent, OutboxStatus.superseded)
ROUTING_COUNTED = (ActionStatus.pending, ActionStatus.failed, ActionStatus.done)

# A partitioned sync whose units have not moved for this long holds nothing back: it is stuck
# (a unit failing for good, a worker gone) and its leads are as complete as they will get.
MID_SYNC_QUIET = timedelta(minutes=30)


def connections_mid_sync(session: Session, *, now: datetime | None = None) -> dict[int, str]:
    """Connections (id -> name) a worker's partitioned sync is part-way through: their latest plan
    (:mod:`connectors.partition`) has a unit not done, and one of its units moved within
    :data:`MID_SYNC_QUIET`. Their leads may hold some streams' records and not yet the rest (a
    HubSpot contact updated, its new e-mails and meetings still to come). A plan's next stage is
    created in the transaction that finishes the last unit of the one before, so between stages
    a unit is always pending. The one-process sync (``leadscore sync``) makes no plan."""
    now = now or datetime.now(UTC)
    latest = (select(SyncWindow.connection_id, func.max(SyncWindow.plan).label("plan"))
              .group_by(SyncWindow.connection_id).subquery())
    rows = session.execute(
        select(Connection.id, Connection.name, func.max(SyncWindow.updated_at))
        .join(latest, latest.c.connection_id == Connection.id)
        .join(SyncWindow, (SyncWindow.connection_id == Connection.id) & (SyncWindow.plan == latest.c.plan))
        .group_by(Connection.id, Connection.name)
        .having(func.sum(case((SyncWindow.status != WindowStatus.done, 1), else_=0)) > 0)
    ).all()
    out: dict[int, str] = {}
    for conn_id, name, moved in rows:
        if moved is not None and now - (moved if moved.tzinfo else moved.replace(tzinfo=UTC)) <= MID_SYNC_QUIET:
            out[int(conn_id)] = str(name)
    return out


def lead_totals(session: Session) -> dict[int, dict[str, int]]:
    """Per connection id: its leads in the store (``leads``, the CRM's deleted ones left out), the
    open ones among them (``open``: scored anew, written and routed) and the open ones with a
    current score (``scored``). One grouped query; a connection without leads is absent."""
    is_open = Lead.lifecycle == LeadLifecycle.open
    rows = session.execute(
        select(Lead.connection_id, func.count(Lead.id),
               func.sum(case((is_open, 1), else_=0)),
               func.sum(case((is_open & LeadScore.id.is_not(None), 1), else_=0)))
        .outerjoin(LeadScore, (LeadScore.lead_id == Lead.id) & LeadScore.is_current.is_(True))
        .where(Lead.is_deleted.is_(False))
        .group_by(Lead.connection_id)
    ).all()
    return {int(cid): {"leads": int(n or 0), "open": int(o or 0), "scored": int(sc or 0)} for cid, n, o, sc in rows}


def connection_activity(session: Session, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per connection: its leads (all, open, open with a current score: :func:`lead_totals`), last
    sync (any stream), last score and last confirmed write-back, outbox
    rows by status, routing actions by status, and the CRM API calls leadscore made today (UTC),
    by purpose and in total (``store.usage``: sync, accounts, write-back, routing)."""
    now = now or datetime.now(UTC)
    calls = calls_on(session, utc_day(now))
    totals = lead_totals(session)
    out: list[dict[str, Any]] = []
    for conn in session.scalars(select(Connection).order_by(Connection.name)):
        last_run = session.scalars(
            select(SyncRun).where(SyncRun.connection_id == conn.id).order_by(SyncRun.started_at.desc()).limit(1)
        ).first()
        last_ok = session.scalar(
            select(func.max(SyncRun.finished_at)).where(SyncRun.connection_id == conn.id,
                                                         SyncRun.status == SyncStatus.succeeded)
        )
        last_score = session.scalar(
            select(func.max(LeadScore.scored_at)).join(Lead, Lead.id == LeadScore.lead_id)
            .where(Lead.connection_id == conn.id)
        )
        last_write = session.scalar(select(func.max(Outbox.sent_at)).where(Outbox.connection_id == conn.id))
        outbox: dict[str, int] = {s: n for s, n in session.execute(
            select(Outbox.status, func.count()).where(Outbox.connection_id == conn.id).group_by(Outbox.status)
        )}
        routing: dict[str, int] = {s: n for s, n in session.execute(
            select(RoutingAction.status, func.count()).where(RoutingAction.connection_id == conn.id)
            .group_by(RoutingAction.status)
        )}
        out.append({
            "name": conn.name,
            "kind": conn.kind,
            # Leads in the store, the open ones, and the open ones with a current score.
            "leads": totals.get(conn.id, {}).get("leads", 0),
            "open_leads": totals.get(conn.id, {}).get("open", 0),
            "scored_leads": totals.get(conn.id, {}).get("scored", 0),
            "last_sync": None if last_run is None else {
                "stream": last_run.stream, "status": last_run.status, "started_at": last_run.started_at,
                "records": last_run.records, "error": last_run.error,
            },
            "last_successful_sync": last_ok,
            "last_score": last_score,
            "last_writeback": last_write,
            "outbox": {s: int(outbox.get(s, 0)) for s in OUTBOX_COUNTED},
            "routing": {s: int(routing.get(s, 0)) for s in ROUTING_COUNTED},
            "api_calls_today": calls.get(conn.id, empty_counts()),
        })
    return out


def quarantine_counts(session: Session) -> dict[tuple[int, str], int]:
    """Quarantined records per (connection id, stream): what the console's Sync page and
    ``leadscore status`` show."""
    return {(int(cid), str(stream)): int(n) for cid, stream, n in session.execute(
        select(QuarantinedRecord.connection_id, QuarantinedRecord.stream, func.count(QuarantinedRecord.id))
        .group_by(QuarantinedRecord.connection_id, QuarantinedRecord.stream))}


def sync_streams(session: Session) -> list[dict[str, Any]]:
    """Every (connection, stream) with its cursor and its latest run."""
    rows: list[dict[str, Any]] = []
    cursors = {
        (c.connection_id, c.stream): c for c in session.scalars(select(SyncCursor))
    }
    names = {c.id: c.name for c in session.scalars(select(Connection))}
    latest = session.execute(
        select(SyncRun.connection_id, SyncRun.stream, func.max(SyncRun.id)).group_by(SyncRun.connection_id,
                                                                                     SyncRun.stream)
    ).all()
    runs = {(cid, stream): session.get(SyncRun, rid) for cid, stream, rid in latest}
    quarantined = quarantine_counts(session)
    for key in sorted(set(cursors) | set(runs), key=lambda k: (names.get(k[0], ""), k[1])):
        cursor, run = cursors.get(key), runs.get(key)
        rows.append({
            "connection": names.get(key[0], str(key[0])),
            "stream": key[1],
            "cursor_ts": cursor.cursor_ts if cursor else None,
            "cursor_id": cursor.cursor_id if cursor else None,
            "last_run": None if run is None else {
                "status": run.status, "started_at": run.started_at, "finished_at": run.finished_at,
                "records": run.records, "quarantined": run.quarantined, "api_calls": run.api_calls,
                "error": run.error,
            },
            "quarantined_total": quarantined.get(key, 0),
        })
    return rows


def quarantined_records(session: Session, *, limit: int = QUARANTINE_LIMIT) -> list[dict[str, Any]]:
    """The newest quarantined records with their reasons (the raw record is left out: it can be large)."""
    names = {c.id: c.name for c in session.scalars(select(Connection))}
    stmt = select(QuarantinedRecord).order_by(QuarantinedRecord.created_at.desc(), QuarantinedRecord.id.desc())
    return [
        {"connection": names.get(q.connection_id, str(q.connection_id)), "stream": q.stream, "crm_id": q.crm_id,
         "reason": q.reason, "created_at": q.created_at}
        for q in session.scalars(stmt.limit(limit))
    ]


def search_leads(session: Session, text: str, *, limit: int = SEARCH_LIMIT) -> list[dict[str, Any]]:
    """Leads whose CRM id equals ``text`` or whose email or name contains it (case-insensitive)."""
    needle = text.strip()
    if not needle:
        return []
    like = f"%{needle.lower()}%"
    full_name = func.lower(func.coalesce(Lead.first_name, "") + " " + func.coalesce(Lead.last_name, ""))
    stmt = (
        select(Lead, LeadScore)
        .outerjoin(LeadScore, (LeadScore.lead_id == Lead.id) & LeadScore.is_current.is_(True))
        .where(or_(Lead.crm_id == needle, func.lower(Lead.email).like(like), full_name.like(like),
                   func.lower(Lead.last_name).like(like)))
        # Exact CRM-id matches first, before the limit cuts (a HubSpot id such as "863" is also
        # inside many e-mail addresses and names).
        .order_by((Lead.crm_id == needle).desc(), Lead.id)
        .limit(limit)
    )
    out = []
    for lead, score in session.execute(stmt):
        out.append({
            "lead_id": lead.id, "crm_id": lead.crm_id, "email": lead.email,
            "name": " ".join(p for p in (lead.first_name, lead.last_name) if p) or None,
            "company": lead.company, "score": score.score if score else None, "tier": score.tier if score else None,
            "deleted": lead.is_deleted,
            # open | converted | closed | deleted | merged: a converted lead's tier is its last
            # score while open (scoring stops there), not a call to act.
            "lifecycle": lead.lifecycle,
        })
    return out


def score_history(session: Session, lead_id: int, *, limit: int = HISTORY_LIMIT) -> list[dict[str, Any]]:
    """A lead's scores, oldest first (at most ``limit``, the newest ones)."""
    versions: dict[int, str] = {i: v for i, v in session.execute(select(ModelVersion.id, ModelVersion.version))}
    stmt = (select(LeadScore).where(LeadScore.lead_id == lead_id)
            .order_by(LeadScore.scored_at.desc(), LeadScore.id.desc()).limit(limit))
    rows = [
        {"scored_at": s.scored_at, "as_of": s.as_of, "score": s.score, "tier": s.tier, "probability": s.probability,
         "model": versions.get(s.model_version_id) if s.model_version_id else None, "current": s.is_current}
        for s in session.scalars(stmt)
    ]
    return rows[::-1]


def routing_actions(session: Session, lead_id: int) -> list[dict[str, Any]]:
    """A lead's routing actions, the newest tier change's first, each change's in rule order, with
    the CRM reference of each one done."""
    # A tier change is a new score row: the higher its id, the newer the change.
    stmt = select(RoutingAction).where(RoutingAction.lead_id == lead_id).order_by(
        RoutingAction.lead_score_id.desc(), RoutingAction.id)
    return [
        {"action": a.action, "from_tier": a.from_tier, "to_tier": a.to_tier, "status": a.status,
         "crm_ref": a.crm_ref, "error": a.error, "created_at": a.created_at, "done_at": a.done_at,
         "params": dict(a.params or {})}
        for a in session.scalars(stmt.limit(HISTORY_LIMIT))
    ]


def outbox_totals(session: Session) -> dict[str, int]:
    """Outbox rows by status over all connections."""
    counts: dict[str, int] = {s: n for s, n in session.execute(select(Outbox.status, func.count())
                                                                .group_by(Outbox.status))}
    return {s: int(counts.get(s, 0)) for s in OUTBOX_COUNTED}

