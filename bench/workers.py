"""Benchmark one Celery worker process against two: a first sync and a full rescore; prints JSON.

    .venv/bin/python bench/workers.py --leads 30000 [--workers 1 2] [--redis-url redis://127.0.0.1:6387/9]

One crmsim org (Salesforce, ``--leads`` leads with their activities, in a process of its own) is
synced into a fresh PostgreSQL database per run by ``N`` real ``celery worker`` processes
(``--concurrency 1`` each, as N small machines would run them) on a private Redis database:

1. ``sync``: ``leadscore.sync.connection`` is sent once; its units (streams, and time windows of
   the first load) run on whichever worker is free; timed until every unit is done;
2. a CatBoost champion is trained in this process (not timed: the same for every run);
3. ``rescore``: ``leadscore.score.all`` plans the run and sends its chunks; timed until every
   chunk is written.

Each run's store contents (leads and activities, as CRM ids and their synced values) are digested;
the runs must agree. ``ratio`` = seconds with one worker / seconds with N.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import redis  # noqa: E402
import yaml  # noqa: E402
from celery import Celery  # noqa: E402
from sqlalchemy import Engine, func, select  # noqa: E402

from bench.scale import scratch_database  # noqa: E402
from bench.simprocess import SimProcess  # noqa: E402
from config.app_config import ConnectionConfig, TrainingConfig  # noqa: E402
from connectors.registry import crm_for  # noqa: E402
from scoring.service import train_from_store  # noqa: E402
from store.db import make_engine, unit_of_work  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from store.models import Activity, Connection, Lead, SyncWindow  # noqa: E402
from worker.locks import redis_key  # noqa: E402
from worker.processes import start_worker, stop  # noqa: E402
from worker.tasks import SCORE_CHUNKS_KEY  # noqa: E402

SECRET_ENV = "LEADSCORE_BENCH_SF_SECRET"


def connection_config(info: dict[str, Any], name: str = "bench-sf") -> ConnectionConfig:
    """The Salesforce connection to the simulator (client credentials; the secret from SECRET_ENV)."""
    sf = info["salesforce"]
    return ConnectionConfig(name=name, kind="salesforce", instance_url=sf["instance_url"], domain="crmsim.my",
                            client_id=sf["client_id"], client_secret_env=SECRET_ENV, ca_bundle=sf["ca_bundle"],
                            login_via_instance=True)


def store_digest(engine: Engine, connection: str) -> dict[str, Any]:
    """Counts and a sha256 of the connection's leads and activities as synced (CRM ids and values;
    database ids and sync times left out), comparable across databases."""
    digest = hashlib.sha256()
    with unit_of_work(engine) as session:
        conn_id = session.execute(select(Connection.id).where(Connection.name == connection)).scalar_one()
        leads = session.execute(
            select(Lead.crm_id, Lead.inputs_hash, Lead.lifecycle, Lead.is_deleted, Lead.merged_into_crm_id,
                   Lead.campaign, Lead.crm_modified_at).where(Lead.connection_id == conn_id).order_by(Lead.crm_id)
        ).all()
        lead_crm = dict(session.execute(select(Lead.id, Lead.crm_id).where(Lead.connection_id == conn_id)).all())
        activities = session.execute(
            select(Activity.crm_id, Activity.lead_crm_id, Activity.lead_id, Activity.type, Activity.occurred_at,
                   Activity.is_deleted, Activity.crm_modified_at)
            .where(Activity.connection_id == conn_id).order_by(Activity.crm_id)
        ).all()
    for row in leads:
        digest.update(repr(tuple(row)).encode())
    linked = 0
    for crm_id, lead_crm_id, lead_id, *rest in activities:
        linked += lead_id is not None
        digest.update(repr((crm_id, lead_crm_id, lead_crm.get(lead_id), *rest)).encode())
    return {"leads": len(leads), "activities": len(activities), "linked_activities": linked,
            "sha256": digest.hexdigest()}


def wait_for(what: str, check: Callable[[], bool], timeout: float, poll: float = 0.5) -> float:
    """Seconds until ``check()`` holds; AssertionError after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - started


def sync_finished(engine: Engine, conn: ConnectionConfig) -> bool:
    """Every unit of the latest plan done, its last stage included."""
    last_stage = len(crm_for(conn).sync_stages) - 1
    with unit_of_work(engine) as session:
        rows = session.execute(select(SyncWindow.stage, SyncWindow.status).join(Connection)
                               .where(Connection.name == conn.name)).all()
    return bool(rows) and max(r.stage for r in rows) == last_stage and all(r.status == "done" for r in rows)


@contextmanager
def celery_workers(count: int, env: dict[str, str], logs: Path) -> Iterator[list[Any]]:
    """``count`` real worker processes, one task at a time each; stopped (warm shutdown) after."""
    procs = [start_worker(env, logs / f"worker-{count}-{i}.log", concurrency=1, name=f"bench{count}-{i}")
             for i in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            stop(proc)


def run_once(count: int, info: dict[str, Any], redis_url: str, tmp: Path, timeout: float) -> dict[str, Any]:
    """One first sync and one full rescore with ``count`` workers, in a fresh database."""
    conn = connection_config(info)
    out: dict[str, Any] = {"workers": count}
    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()
    with scratch_database(None) as url:
        upgrade(url)
        engine = make_engine(url)
        config = tmp / f"leadscore-{count}.yaml"
        config.write_text(yaml.safe_dump({"connections": [conn.model_dump(mode="json", exclude_none=True,
                                                                          exclude={"score_fields"})],
                                          "training": {"min_per_class": 100}}))
        env = dict(os.environ, LEADSCORE_DATABASE_URL=url, LEADSCORE_BROKER_URL=redis_url,
                   LEADSCORE_RESULT_BACKEND=redis_url, LEADSCORE_CONFIG_FILE=str(config),
                   LEADSCORE_VAR_DIR=str(tmp / f"var-{count}"), **{SECRET_ENV: info["salesforce"]["client_secret"]})
        client = Celery(broker=redis_url, backend=redis_url)
        with celery_workers(count, env, tmp):
            out["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
            client.send_task("leadscore.sync.connection", args=[conn.name], queue="minute")
            out["sync_seconds"] = round(wait_for("the sync", lambda: sync_finished(engine, conn), timeout), 2)
            with unit_of_work(engine) as session:
                out["sync_units"] = session.execute(select(func.count()).select_from(SyncWindow)).scalar_one()
            out["store"] = store_digest(engine, conn.name)
            with unit_of_work(engine) as session:  # the same champion for every run (not timed)
                train_from_store(session, config=TrainingConfig(min_per_class=100), families=("catboost",),
                                 catboost_iterations=200)
            started = time.monotonic()
            planned = client.send_task("leadscore.score.all", queue="long").get(timeout=timeout)
            out["rescore_chunks"] = planned.get("chunks")
            wait_for("the rescore chunks", lambda: int(broker.get(redis_key(SCORE_CHUNKS_KEY)) or 0) == 0,
                     timeout - (time.monotonic() - started))
            out["rescore_seconds"] = round(time.monotonic() - started, 2)
            out["rescored"] = planned.get("leads")
            out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--history-days", type=int, default=365)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--redis-url", default=os.environ.get("LEADSCORE_TEST_REDIS", "redis://127.0.0.1:6379/0"),
                        help="a Redis database of its own (flushed)")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds per stage before giving up")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result: dict[str, Any] = {"leads": args.leads, "seed": args.seed, "cpus": os.cpu_count(),
                              "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "runs": []}
    with tempfile.TemporaryDirectory() as tmp, SimProcess(leads=args.leads, seed=args.seed,
                                                          history_days=args.history_days, crm_split=1.0) as sim:
        for count in args.workers:
            print(f"[{datetime.now(UTC):%H:%M:%S}] {count} worker(s) ...", file=sys.stderr, flush=True)
            result["runs"].append(run_once(count, sim.info, args.redis_url, Path(tmp), args.timeout))
            if args.out is not None:
                args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    runs = result["runs"]
    base = runs[0]
    result["identical_store"] = all(r["store"] == base["store"] for r in runs)
    for r in runs[1:]:
        r["sync_ratio"] = round(base["sync_seconds"] / r["sync_seconds"], 2)
        r["rescore_ratio"] = round(base["rescore_seconds"] / r["rescore_seconds"], 2)
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
