"""Close the sync runs that dead workers left "running".

A sync holds ``leadscore:lock:sync:<name>`` (renewed every few seconds) for as long as it runs, each
unit of a partitioned sync ``leadscore:lock:sync:<name>:w<id>``, and ``sync_run`` rows are created
under those locks. So a row still "running" while none of the connection's sync locks is held
belongs to a worker that died (SIGKILL, OOM, lost machine): it is marked failed with
"worker lost". Without Redis the lock lives in one process and cannot be asked; the next sync of
the connection closes such rows instead (see ``connectors.sync``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis
from sqlalchemy import Engine, select, update

from store.db import unit_of_work
from store.models import Connection, SyncRun, SyncStatus
from worker.locks import any_held

logger = logging.getLogger(__name__)

WORKER_LOST = "worker lost: the sync's lock expired with no live holder (worker killed or machine lost)"


def close_lost_runs(engine: Engine, redis_url: str | None) -> dict[str, int]:
    """Mark failed the running sync runs whose connection's lock is free; returns count per connection."""
    with unit_of_work(engine) as session:
        names = session.execute(
            select(Connection.name, Connection.id).join(SyncRun, SyncRun.connection_id == Connection.id)
            .where(SyncRun.status == SyncStatus.running).distinct()
        ).all()
    closed: dict[str, int] = {}
    for name, connection_id in names:
        # Only rows that existed before the lock was seen free: a sync starting right after the
        # check takes the lock first and inserts its rows after this moment.
        checked_at = datetime.now(UTC)
        try:
            held = any_held(f"sync:{name}", redis_url=redis_url)
        except redis.ConnectionError as exc:
            logger.warning("cannot tell whether sync of %s is alive (Redis unreachable: %s)", name, exc)
            return closed
        if held is None:
            return closed
        if held:
            continue
        with unit_of_work(engine) as session:
            result = session.execute(
                update(SyncRun)
                .where(SyncRun.connection_id == connection_id, SyncRun.status == SyncStatus.running,
                       SyncRun.started_at < checked_at)
                .values(status=SyncStatus.failed, error=WORKER_LOST, finished_at=datetime.now(UTC))
            )
            count = int(getattr(result, "rowcount", 0) or 0)
        if count:
            closed[name] = count
    return closed
