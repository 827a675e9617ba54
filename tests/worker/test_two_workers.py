"""Two Celery worker processes sync a first load into the same store contents as one.

Real processes: ``celery worker`` (``--concurrency 1`` each) on a Redis database of its own,
crmsim's Salesforce as the CRM, PostgreSQL. The connection synced by one worker and the one
synced by two (same org) hold the same leads and activities; with two, both workers ran units.
Run under ``flock /tmp/leadscore-redis-e2e.lock`` with the other fixed-database tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from celery import Celery
from sqlalchemy import Engine

from bench.workers import SECRET_ENV, celery_workers, connection_config, store_digest, sync_finished, wait_for
from crmsim.app import CRMSim
from tests.conftest import REDIS_BASE_URL
from tests.services import with_db

REDIS_URL = with_db(REDIS_BASE_URL, 11)  # a database of its own: queues and locks are private


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


def test_two_workers_sync_what_one_worker_syncs(committing_pg_engine: Engine, broker: redis.Redis,
                                                tmp_path: Path) -> None:
    engine = committing_pg_engine
    with CRMSim(leads=500, seed=5, history_days=60, admin=False, crm_split=1.0) as sim:
        info = sim.info()
        conns = {n: connection_config(info, name=f"workers-{n}").model_copy(update={"page_size": 300})
                 for n in (1, 2)}
        config = tmp_path / "leadscore.yaml"
        config.write_text(yaml.safe_dump({"connections": [
            c.model_dump(mode="json", exclude_none=True, exclude={"score_fields"}) for c in conns.values()]}))
        env = dict(os.environ, LEADSCORE_DATABASE_URL=engine.url.render_as_string(hide_password=False),
                   LEADSCORE_BROKER_URL=REDIS_URL, LEADSCORE_RESULT_BACKEND=REDIS_URL,
                   LEADSCORE_CONFIG_FILE=str(config), LEADSCORE_VAR_DIR=str(tmp_path / "var"),
                   **{SECRET_ENV: info["salesforce"]["client_secret"]})
        client = Celery(broker=REDIS_URL)
        digests = {}
        for count, conn in conns.items():
            with celery_workers(count, env, tmp_path):
                client.send_task("leadscore.sync.connection", args=[conn.name], queue="minute")
                wait_for(f"the sync with {count} worker(s)", lambda c=conn: sync_finished(engine, c), 180)  # type: ignore[misc]
            digests[count] = store_digest(engine, conn.name)
    assert digests[1]["leads"] > 400 and digests[1]["activities"] > 1000
    assert digests[2] == digests[1]
    # Both workers took units of the second sync (4 time windows per activity stream).
    for i in range(2):
        log = (tmp_path / f"worker-2-{i}.log").read_text()
        assert "leadscore.sync.window" in log and "succeeded" in log, log[-2000:]
