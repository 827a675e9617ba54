"""Benchmark a full sync of crmsim (Salesforce and HubSpot) into a scratch database; prints JSON.

    .venv/bin/python bench/sync.py --leads 4000 [--bulk-threshold 1000] [--only salesforce]
                                   [--database-url postgresql+psycopg://...]

For each CRM: records, seconds, records/s, API calls used (as counted by the client: logins and
the clock read included) and the theoretical minimum: ceil(records / largest page) per stream.
Salesforce is synced twice into two connections of the same org: ``salesforce`` through REST pages
only, ``salesforce_bulk`` with ``bulk_threshold`` = ``--bulk-threshold`` (streams above it read
through Bulk API 2.0 query jobs), each with its calls per endpoint; ``--bulk-threshold 0`` skips
the Bulk run. The Bulk run polls its jobs every 0.05 s (crmsim completes a job after two polls
whatever the time; a real org takes seconds to minutes). Without ``--database-url`` a temporary
PostgreSQL database is created on 127.0.0.1 and dropped.
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
from connectors.base import ConnectionSecrets, Connector  # noqa: E402
from connectors.salesforce.streams import SalesforceConnector  # noqa: E402
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
    parser.add_argument("--bulk-threshold", type=int, default=50_000,
                        help="records above which the second Salesforce run reads a stream through Bulk 2.0 "
                             "(0: no Bulk run)")
    parser.add_argument("--only", choices=["salesforce", "hubspot"], default=None)
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
            sf_secrets = ConnectionSecrets(client_secret=sf["client_secret"])

            def salesforce(name: str, threshold: int | None) -> ConnectionConfig:
                return ConnectionConfig(name=name, kind="salesforce", instance_url=sf["instance_url"],
                                        domain="crmsim.my", client_id=sf["client_id"], ca_bundle=sf["ca_bundle"],
                                        login_via_instance=True, bulk_threshold=threshold)

            targets: list[tuple[str, ConnectionConfig, ConnectionSecrets]] = []
            if args.only in (None, "salesforce"):
                targets.append(("salesforce", salesforce("bench-sf", None), sf_secrets))
                if args.bulk_threshold > 0:
                    targets.append(("salesforce_bulk", salesforce("bench-sf-bulk", args.bulk_threshold), sf_secrets))
            if args.only in (None, "hubspot"):
                targets.append(("hubspot", ConnectionConfig(name="bench-hs", kind="hubspot", host=hs["host"]),
                                ConnectionSecrets(access_token=hs["access_token"])))
            for label, conn, secrets in targets:
                sim.reset_counts()
                connector: Connector | None = None
                if label == "salesforce_bulk":
                    connector = SalesforceConnector(conn, secrets, bulk_poll_seconds=0.05)
                started = time.perf_counter()
                report = sync_connection(engine, conn, secrets, connector=connector)
                summary = _summary(report, time.perf_counter() - started)
                counts = sim.call_counts()
                # What the org's daily allocation is charged (Salesforce does not charge OAuth logins).
                charged = counts["total"][conn.kind]
                summary["charged_calls"] = charged
                minimum = summary["theoretical_minimum_calls"]
                summary["charged_ratio"] = round(charged / minimum, 3) if minimum else None
                if isinstance(connector, SalesforceConnector):
                    summary["bulk_streams"] = connector.bulk_streams
                    summary["bulk_threshold"] = conn.bulk_threshold
                if conn.kind == "salesforce":
                    summary["calls_by_endpoint"] = counts["salesforce"]
                out[label] = summary
        engine.dispose()
        print(json.dumps(out, indent=2))
    finally:
        if dropper is not None:
            dropper()


if __name__ == "__main__":
    main()
