"""Benchmark a full sync of crmsim (Salesforce and HubSpot) into a scratch database; prints JSON.

    .venv/bin/python bench/sync.py --leads 4000 [--database-url postgresql+psycopg://...]

For each CRM: records, seconds, records/s, API calls used (as counted by the client: logins and
the clock read included) and the theoretical minimum: ceil(records / largest page) per stream.
Without ``--database-url`` a temporary PostgreSQL database is created on 127.0.0.1 and dropped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config.app_config import ConnectionConfig  # noqa: E402
from connectors.base import ConnectionSecrets  # noqa: E402
from connectors.sync import SyncReport, sync_connection  # noqa: E402
from crmsim.app import CRMSim  # noqa: E402
from store.db import make_engine  # noqa: E402
from store.migrate import upgrade  # noqa: E402

PAGE = {"salesforce": {"leads": 2000, "tasks": 2000, "events": 2000, "campaign_members": 2000},
        "hubspot": {"companies": 200, "contacts": 200, "contacts_archived": 100, "emails": 100, "meetings": 100,
                    "calls": 100, "events": 1000}}


def _summary(report: SyncReport, seconds: float) -> dict[str, Any]:
    streams = {}
    minimum = 0
    for name, stream in report.streams.items():
        least = math.ceil(stream.records / PAGE[report.kind][name]) if stream.records else 0
        minimum += least
        streams[name] = {"records": stream.records, "api_calls": stream.api_calls, "minimum_calls": least}
    return {
        "records": report.records,
        "seconds": round(seconds, 2),
        "records_per_second": round(report.records / seconds, 1) if seconds else None,
        "api_calls": report.api_calls,
        "theoretical_minimum_calls": minimum,
        "ratio": round(report.api_calls / minimum, 3) if minimum else None,
        "streams": streams,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--history-days", type=int, default=365)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    dropper = None
    url = args.database_url
    if url is None:
        import psycopg

        name = f"leadscore_bench_{os.getpid()}"
        admin = "postgresql://root@127.0.0.1:5432/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://root@127.0.0.1:5432/{name}"

        def dropper() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    try:
        upgrade(url)
        engine = make_engine(url)
        out: dict[str, Any] = {"leads": args.leads, "seed": args.seed}
        with CRMSim(leads=args.leads, seed=args.seed, history_days=args.history_days, admin=False) as sim:
            sf = sim.info()["salesforce"]
            hs = sim.info()["hubspot"]
            targets = [
                (ConnectionConfig(name="bench-sf", kind="salesforce", instance_url=sf["instance_url"],
                                  domain="crmsim.my", client_id=sf["client_id"], ca_bundle=sf["ca_bundle"],
                                  login_via_instance=True), ConnectionSecrets(client_secret=sf["client_secret"])),
                (ConnectionConfig(name="bench-hs", kind="hubspot", host=hs["host"]),
                 ConnectionSecrets(access_token=hs["access_token"])),
            ]
            for conn, secrets in targets:
                sim.reset_counts()
                started = time.perf_counter()
                report = sync_connection(engine, conn, secrets)
                summary = _summary(report, time.perf_counter() - started)
                # What the org's daily allocation is charged (Salesforce does not charge OAuth logins).
                charged = sim.call_counts()["total"][conn.kind]
                summary["charged_calls"] = charged
                minimum = summary["theoretical_minimum_calls"]
                summary["charged_ratio"] = round(charged / minimum, 3) if minimum else None
                out[conn.kind] = summary
        engine.dispose()
        print(json.dumps(out, indent=2))
    finally:
        if dropper is not None:
            dropper()


if __name__ == "__main__":
    main()
