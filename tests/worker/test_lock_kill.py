"""A worker SIGKILLed while it holds the sync lock and the write-back lock blocks nothing for long.

Real processes: a Celery worker (prefork, 2 children) on a Redis database of its own, PostgreSQL,
crmsim as the CRM (slowed down so the kill lands while both locks are held). After the kill a new
worker, given the same work again (as beat would give it), completes both within 90 s, and the
sync run the dead worker left "running" is recorded as failed ("worker lost").
Run under ``flock /tmp/leadscore-redis-e2e.lock`` (fixed Redis database).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from celery import Celery
from sqlalchemy import Engine, select

from crmsim.app import CRMSim
from store.db import unit_of_work
from store.models import Connection, SyncRun, SyncWindow
from tests.conftest import REDIS_BASE_URL
from tests.connectors.test_writeback_support import (
    add_leads,
    hs_conn,
    hs_contact_ids,
    outbox_statuses,
    running_sim,
    score,
)
from tests.services import with_db
from worker.liveness import measure
from worker.locks import LOCK_TTL_SECONDS
from worker.processes import kill_tree, start_worker, stop

REDIS_URL = with_db(REDIS_BASE_URL, 14)  # a database of its own: locks and queues are private
SYNC_UNIT_LOCK = "leadscore:lock:sync:hs:w{}"  # a unit of the partitioned sync (worker.tasks.window_lock)
WRITEBACK_LOCK = "leadscore:lock:writeback"
pytestmark = pytest.mark.slow


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    yield from running_sim(1500, 21)


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


def _contacts_lock(engine: Engine, broker: redis.Redis) -> str | None:
    """The lock of the unit reading the contacts (the longest one while HubSpot is slow), once held."""
    with unit_of_work(engine) as session:
        ids = session.scalars(select(SyncWindow.id).where(SyncWindow.stream == "contacts")).all()
    return next((SYNC_UNIT_LOCK.format(i) for i in ids if broker.exists(SYNC_UNIT_LOCK.format(i))), None)


def _runs(engine: Engine) -> list[SyncRun]:
    with unit_of_work(engine) as session:
        return list(session.scalars(select(SyncRun).join(Connection).where(Connection.name == "hs")
                                    .order_by(SyncRun.id)))


def _wait(what: str, check: object, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return time.monotonic()
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_killed_lock_holder_blocks_sync_and_writeback_under_a_minute(
        sim: CRMSim, committing_pg_engine: Engine, broker: redis.Redis, tmp_path: Path) -> None:
    engine = committing_pg_engine
    contacts = hs_contact_ids(sim)
    assert len(contacts) >= 700
    leads = add_leads(engine, "hs", contacts)
    score(engine, leads.values(), score_value=61, tier="B")
    assert outbox_statuses(engine) == {"pending": len(contacts)}
    config = tmp_path / "leadscore.yaml"
    # Small pages: the contacts unit makes ~20 slow calls, so it outlives the checks below.
    conn = hs_conn(sim).model_copy(update={"page_size": 50})
    config.write_text(yaml.safe_dump({"connections": [conn.model_dump(exclude_none=True,
                                                                      exclude={"score_fields"})]}))
    env = dict(os.environ, LEADSCORE_DATABASE_URL=engine.url.render_as_string(hide_password=False),
               LEADSCORE_BROKER_URL=REDIS_URL, LEADSCORE_RESULT_BACKEND=REDIS_URL,
               LEADSCORE_CONFIG_FILE=str(config), LEADSCORE_VAR_DIR=str(tmp_path / "var"),
               LEADSCORE_TEST_HS_TOKEN=sim.info()["hubspot"]["access_token"])
    client = Celery(broker=REDIS_URL)
    # HubSpot calls are slowed a little until the contacts unit runs (the units before it, companies
    # first, took 45 s at 3 s a call), then to 3 s a call: the sync and the drain each hold their
    # lock for a while (the contacts unit has ~28 calls left, over a minute).
    sim.set_faults("hs.latency_ms=300")

    first = start_worker(env, tmp_path / "worker-1.log")
    second = None
    try:
        # The sync's units run one stage after the other: the drain starts with the contacts' unit.
        client.send_task("leadscore.sync.connection", args=["hs"], queue="minute")
        _wait("the contacts unit running", lambda: _contacts_lock(engine, broker), 90)
        sim.set_faults("hs.latency_ms=3000")
        client.send_task("leadscore.writeback.drain", queue="minute")
        _wait("both locks held by the first worker",
              lambda: _contacts_lock(engine, broker) and broker.exists(WRITEBACK_LOCK)
              and any(r.status == "running" for r in _runs(engine)), 90)
        sync_lock = _contacts_lock(engine, broker)
        assert sync_lock is not None
        time.sleep(LOCK_TTL_SECONDS * 0.4)  # longer than a heartbeat period (TTL / 3)
        # Unrenewed, both would have less than 60 % of their TTL left by now.
        for key in (sync_lock, WRITEBACK_LOCK):
            assert broker.pttl(key) > LOCK_TTL_SECONDS * 1000 * 0.6, f"{key} was not renewed"
        kill_tree(first)
        killed_at = time.monotonic()
        dead_runs = [r.id for r in _runs(engine) if r.status == "running"]
        assert dead_runs
        # The dead holder's locks expire by themselves, within the short TTL.
        assert 0 < broker.pttl(sync_lock) <= LOCK_TTL_SECONDS * 1000
        assert 0 < broker.pttl(WRITEBACK_LOCK) <= LOCK_TTL_SECONDS * 1000
        assert outbox_statuses(engine).get("pending", 0) > 0, "the kill landed before the drain finished"

        sim.set_faults(None)
        second = start_worker(env, tmp_path / "worker-2.log")
        # What the next beat tick sends: the dead unit finds its dead lock and retries, not drops.
        client.send_task("leadscore.sync.connection", args=["hs"], queue="minute")

        def synced() -> bool:
            with unit_of_work(engine) as session:
                statuses = set(session.scalars(select(SyncWindow.status)))
            return statuses == {"done"} and any(r.status == "succeeded" and r.id > max(dead_runs)
                                                for r in _runs(engine))

        # The drain after the sync: a write-back bumps the contacts' lastmodifieddate, and the
        # HubSpot contacts read refuses (FatalCRMError, retried at the next tick) when a tie group
        # it is paging through moves away under it.
        _wait("the new worker to finish the sync", synced, 120)
        client.send_task("leadscore.writeback.drain", queue="minute")

        def done() -> bool:
            # Nothing pending: sent, or cancelled by the sync (the lead is no longer open).
            statuses = outbox_statuses(engine)
            return set(statuses) <= {"sent", "cancelled"} and sum(statuses.values()) == len(contacts)

        finished = _wait("the new worker to sync and drain", done, 120)
        assert finished - killed_at < 90, f"took {finished - killed_at:.0f}s after the kill"
        by_id = {r.id: r for r in _runs(engine)}
        for run_id in dead_runs:
            assert by_id[run_id].status == "failed"
            assert (by_id[run_id].error or "").startswith("worker lost"), by_id[run_id].error
        log = (tmp_path / "worker-2.log").read_text()
        assert "held by" in log and "retrying in" in log, "the new work waited for the dead lock"
        # The dead worker's tasks stay in Redis for the visibility timeout (60 min), but their work
        # is done by now: status lists them, not as a problem (an admin saw it exit 1 for that hour).
        alive = measure(REDIS_URL, engine)
        assert alive.held and all(t.done_since for t in alive.held), alive.held
        assert not any("no longer answers" in p for p in alive.problems()), alive.problems()
        assert any(line.startswith("held, done since: ") for line in alive.lines()), alive.lines()
    finally:
        sim.set_faults(None)
        kill_tree(first)
        if second is not None:
            stop(second)
