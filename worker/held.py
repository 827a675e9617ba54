"""Whether the work of a task a dead worker still holds has been done since it was taken.

A worker killed mid-task leaves the task unacknowledged in Redis for the visibility timeout (60
min, :mod:`worker.liveness`). leadscore's periodic tasks do the same work again meanwhile: beat
sends a sync every minute, and the one after the kill resumes the dead unit once its lock expires;
the next drain and routing pass take what the dead one had, and the next scoring the leads that
changed. When the store shows that work done,
the held task will find nothing to do when Redis hands it back: `status` lists it, not as a
problem. Measured per task, from its arguments and the time it was taken; any other task (a
training, a full rescore's chunk) stays a problem until it is back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.orm import Session

from store.db import among, unit_of_work
from store.models import (
    ActionStatus,
    Connection,
    Lead,
    Outbox,
    OutboxStatus,
    RoutingAction,
    SyncRun,
    SyncStatus,
    SyncWindow,
    WindowStatus,
)


class HeldTask(Protocol):
    """What is known of a held task (:class:`worker.liveness.HeldTask`, which imports this module)."""

    @property
    def name(self) -> str: ...
    @property
    def task_id(self) -> str: ...
    @property
    def taken_at(self) -> datetime: ...
    @property
    def args(self) -> tuple[Any, ...]: ...


def work_done_since(engine: Engine, held: Sequence[HeldTask]) -> dict[str, str]:
    """Task id -> what shows its work done since it was taken, for the held tasks whose work is."""
    out: dict[str, str] = {}
    with unit_of_work(engine) as session:
        for task in held:
            if (done := _done_since(session, task)) is not None:
                out[task.task_id] = done
    return out


def _done_since(session: Session, task: HeldTask) -> str | None:
    name, args, taken = task.name, task.args, task.taken_at
    if name == "leadscore.sync.window" and len(args) >= 2 and isinstance(args[1], int):
        window = session.get(SyncWindow, args[1])
        if window is not None and window.status == WindowStatus.done:
            return f"its sync unit {args[1]} finished"
        return None
    if name in ("leadscore.sync.connection", "leadscore.sync.all"):
        latest = select(func.max(SyncRun.finished_at)).where(SyncRun.status == SyncStatus.succeeded,
                                                             SyncRun.started_at > taken)
        if name == "leadscore.sync.connection":
            if not args or not isinstance(args[0], str):
                return None
            latest = latest.join(Connection, Connection.id == SyncRun.connection_id).where(Connection.name == args[0])
        finished = session.scalar(latest)
        which = f"a sync of {args[0]}" if name == "leadscore.sync.connection" else "a sync"
        return f"{which} succeeded since, at {finished:%H:%M} UTC" if finished is not None else None
    if name == "leadscore.writeback.drain":
        left = session.scalar(select(func.count()).select_from(Outbox).where(
            Outbox.status == OutboxStatus.pending, Outbox.created_at <= taken))
        return "no write queued before it is still pending" if not left else None
    if name == "leadscore.score.changed":
        return _scored_since(session, taken)
    if name == "leadscore.routing.execute":
        left = session.scalar(select(func.count()).select_from(RoutingAction).where(
            RoutingAction.status.in_((ActionStatus.pending, ActionStatus.sending)), RoutingAction.created_at <= taken))
        return "no routing action planned before it is still pending" if not left else None
    return None


def _scored_since(session: Session, taken: datetime) -> str | None:
    """A scoring of changed leads: done once no open lead whose inputs changed before it was taken
    (or that never had a score then) still waits for one. A lead that changed after it was taken
    is newer work: the sync that stored the change sent a scoring task of its own."""
    from scoring.champions import NoChampionError, load_champions
    from scoring.inputs import id_chunks, stale_lead_ids

    try:
        models = load_champions(session)
    except NoChampionError:
        return "no champion model to score with: it would score nothing"
    stale = stale_lead_ids(session, models.ids)
    older = 0
    for chunk in id_chunks(stale):
        before = or_(Lead.inputs_changed_at.is_(None), Lead.inputs_changed_at <= taken)
        counted = select(func.count()).select_from(Lead).where(among(session, Lead.id, chunk), before)
        older += session.scalar(counted) or 0
    if older:
        return None
    return ("no open lead waits for a score" if not stale
            else f"every lead that waits for a score changed after it was taken ({len(stale)}: newer tasks)")
