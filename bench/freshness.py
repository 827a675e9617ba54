"""Freshness of the live loop: seconds from a change in the CRM to its new score in the CRM.

Runs crmsim, a real Celery worker and beat on Redis and PostgreSQL (a database it creates and
drops), changes leads in the CRM one after another (new high-intent activity) and watches the
CRM for the new scores. Prints JSON: p50/p95 seconds and API calls per changed lead.

    .venv/bin/python bench/freshness.py --changes 10 --leads 2500
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crmsim.app import CRMSim  # noqa: E402
from worker.liveloop import LiveLoop  # noqa: E402

PG_ADMIN = os.environ.get("LEADSCORE_TEST_PG_ADMIN", "postgresql://root@127.0.0.1:5432/postgres")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--leads", type=int, default=2500)
    parser.add_argument("--sync-seconds", type=int, default=10)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()

    name = f"leadscore_bench_{os.getpid()}"
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    redis.Redis.from_url(args.redis).flushdb()
    sim = CRMSim(leads=args.leads, seed=7, admin=False).start()
    latencies: list[float] = []
    missed = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            loop = LiveLoop(sim=sim, database_url=f"{base}/{name}", broker_url=args.redis, workdir=Path(tmp),
                            sync_seconds=args.sync_seconds)
            try:
                loop.bootstrap()
                loop.start()
                time.sleep(args.sync_seconds * 3)  # let the first scheduled cycles settle
                targets = loop.open_salesforce_leads(args.changes, max_age_days=60)
                calls_before = sim.call_counts()["total"]
                for person_key, crm_id in targets:
                    previous = loop.seen(crm_id, loop.write_log_position()).scored_at
                    loop.add_intent(person_key)
                    waited = loop.wait_for_new_score(crm_id, previous, timeout=args.timeout)
                    if waited is None:
                        missed += 1
                    else:
                        latencies.append(waited)
                calls_after = sim.call_counts()["total"]
            finally:
                loop.close()
    finally:
        sim.stop()
        redis.Redis.from_url(args.redis).flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    calls = {k: calls_after[k] - calls_before[k] for k in calls_before}
    changed = max(1, len(targets))
    ordered = sorted(latencies)
    print(json.dumps({
        "changes": len(targets),
        "arrived": len(latencies),
        "missed": missed,
        "sync_seconds": args.sync_seconds,
        "p50_seconds": round(statistics.median(ordered), 2) if ordered else None,
        "p95_seconds": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2) if ordered else None,
        "max_seconds": round(ordered[-1], 2) if ordered else None,
        "api_calls": calls,
        "api_calls_per_changed_lead": round(sum(calls.values()) / changed, 1),
        "note": "calls include every scheduled sync of both CRMs while the changes were made",
    }, indent=2))


if __name__ == "__main__":
    main()
