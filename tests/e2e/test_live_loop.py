"""The whole loop on its own: real Celery worker and beat, Redis, PostgreSQL, crmsim as the CRM.

A lead changed in the CRM (new high-intent activity) has its new score back in the CRM within
two minutes, untouched by hand; with the worker SIGKILLed and restarted in the middle, it still
arrives, exactly once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from crmsim.app import CRMSim
from tests.conftest import PG_ADMIN_DSN, REDIS_BASE_URL, _pg_url
from tests.services import with_db
from worker.liveloop import LiveLoop

REDIS_URL = with_db(REDIS_BASE_URL, 12)  # a database of its own: beat lock and queues are private
ONE_CATBOOST = {"depth": 4, "learning_rate": 0.08}
pytestmark = pytest.mark.slow


@pytest.fixture
def live_loop(tmp_path: Path) -> Iterator[LiveLoop]:
    name = f"leadscore_e2e_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    redis.Redis.from_url(REDIS_URL).flushdb()
    sim = CRMSim(leads=2500, seed=5, admin=False).start()
    loop = LiveLoop(sim=sim, database_url=_pg_url(name), broker_url=REDIS_URL, workdir=tmp_path / "live")
    try:
        # One CatBoost configuration: the loop is under test here, not the choice between model families.
        loop.bootstrap(families=("catboost",), training_options={"catboost_grid": [ONE_CATBOOST]})
        yield loop
    finally:
        loop.close()
        sim.stop()
        redis.Redis.from_url(REDIS_URL).flushdb()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_crm_change_reaches_crm_score_through_real_workers_once(live_loop: LiveLoop) -> None:
    (person_key, crm_id), = live_loop.open_salesforce_leads(1)
    before = live_loop.seen(crm_id, live_loop.write_log_position())
    assert before.score is not None, "bootstrap wrote a score for every lead"

    live_loop.start()
    position = live_loop.write_log_position()
    live_loop.add_intent(person_key, pricing_visits=6, meetings=2)

    # Kill the worker while the loop is working on the change, then bring it back.
    time.sleep(8)
    live_loop.kill_worker()
    time.sleep(2)
    live_loop.restart_worker()

    waited = live_loop.wait_for_new_score(crm_id, before.scored_at, timeout=120)
    assert waited is not None, "the new score did not reach the CRM within 2 minutes"
    time.sleep(live_loop.sync_seconds * 2)  # let any duplicate delivery show itself
    after = live_loop.seen(crm_id, position)
    assert after.writes == 1, f"expected exactly one score write for the change, saw {after.writes}"
    assert after.score is not None and after.score >= before.score  # more intent never lowers a score
