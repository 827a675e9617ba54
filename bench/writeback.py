"""Benchmark the score write-back: records per API call and per second, against crmsim.

Usage: ``.venv/bin/python bench/writeback.py [--leads 6000] [--seed 0] [--faults SPEC]
[--database-url URL] [--retry-delay S]``. Starts crmsim, creates the HubSpot score properties (``crm setup``),
puts one lead row and one pending outbox row per CRM record into a fresh SQLite file (or the
given database), drains the outbox through the real clients and prints one JSON object: per
CRM the records written, write and retry calls as leadscore counted them, the calls crmsim
received, records per call, the theoretical minimum number of calls and records per second.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Run as ``python bench/writeback.py``, this file's directory would come first on sys.path.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from config.app_config import AppConfig  # noqa: E402
from connectors.base import ConnectionSecrets  # noqa: E402
from connectors.hubspot.writeback import BATCH_SIZE as HS_BATCH  # noqa: E402
from connectors.salesforce.writeback import BATCH_SIZE as SF_BATCH  # noqa: E402
from connectors.setup import crm_setup  # noqa: E402
from connectors.writeback import WritebackPolicy, drain_outbox  # noqa: E402
from crmsim.app import CRMSim  # noqa: E402
from scoring.service import outbox_payload, payload_hash  # noqa: E402
from store.db import make_engine, unit_of_work  # noqa: E402
from store.models import Base, Connection, Lead, Outbox  # noqa: E402


def _populate(engine: Any, sim: CRMSim) -> dict[str, int]:
    now = datetime.now(UTC)
    ids = {
        "sf": sorted(r.id for r in sim.salesforce.store.records["Lead"].values() if not r.deleted),
        "hs": sorted(str(r.id) for r in sim.hubspot.store.records["contacts"].values() if not r.archived),
    }
    with unit_of_work(engine) as session:
        for name, kind in (("sf", "salesforce"), ("hs", "hubspot")):
            conn = Connection(name=name, kind=kind)
            session.add(conn)
            session.flush()
            session.execute(Lead.__table__.insert(), [
                {"connection_id": conn.id, "crm_id": crm_id, "crm_created_at": now - timedelta(days=1),
                 "crm_modified_at": now, "attributes": {}, "raw": {}, "is_converted": False, "is_deleted": False}
                for crm_id in ids[name]])
            lead_ids = dict(session.execute(
                Lead.__table__.select().with_only_columns(Lead.crm_id, Lead.id).where(Lead.connection_id == conn.id)
            ).all())
            rows = []
            for n, crm_id in enumerate(ids[name]):
                payload = outbox_payload(n % 101, "ABCD"[n % 4], ["Visited pricing", "VP-level title"],
                                         "bench-model", now)
                rows.append({"connection_id": conn.id, "lead_id": lead_ids[crm_id], "crm_id": crm_id,
                             "kind": "score_fields", "payload": payload, "payload_hash": payload_hash(payload),
                             "status": "pending", "attempts": 0, "created_at": now, "next_attempt_at": now})
            session.execute(Outbox.__table__.insert(), rows)
    return {name: len(values) for name, values in ids.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=6000, help="people in crmsim (split between the CRMs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faults", default=None, help="crmsim fault spec, e.g. record_fail=0.05,rate_503=0.1")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--retry-delay", type=float, default=0.0,
                        help="seconds before a record that failed retriably is re-sent (production: 30)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        engine = make_engine(url)
        Base.metadata.create_all(engine)
        sim = CRMSim(leads=args.leads, seed=args.seed, admin=False, activity_scale=0.05, history_days=60).start()
        try:
            info = sim.info()
            config = AppConfig.model_validate({"connections": [
                {"name": "sf", "kind": "salesforce", "instance_url": info["salesforce"]["instance_url"],
                 "ca_bundle": info["salesforce"]["ca_bundle"], "login_via_instance": True,
                 "session_id_env": "UNUSED"},
                {"name": "hs", "kind": "hubspot", "host": info["hubspot"]["host"], "access_token_env": "UNUSED"},
            ]})
            secrets = {"sf": ConnectionSecrets(session_id=info["salesforce"]["session_id"]),
                       "hs": ConnectionSecrets(access_token=info["hubspot"]["access_token"])}
            crm_setup(config, secrets)
            records = _populate(engine, sim)
            sim.set_faults(args.faults)
            sim.reset_counts()
            started = time.perf_counter()
            report = drain_outbox(engine, config, secrets,
                                  policy=WritebackPolicy(base_delay=timedelta(seconds=args.retry_delay)))
            seconds = time.perf_counter() - started
            served = sim.call_counts()
            injected = {"salesforce": sim.salesforce.injected_counts(),
                        "hubspot": dict(sim.hubspot.faults.injected)}
        finally:
            sim.stop()
        engine.dispose()

    out: dict[str, Any] = {"leads": args.leads, "faults": args.faults, "seconds": round(seconds, 3), "crms": {}}
    for name, kind, batch, label in (("sf", "salesforce", SF_BATCH, "POST composite"),
                                     ("hs", "hubspot", HS_BATCH, "POST contacts/batch/update")):
        entry = report.connections[name]
        out["crms"][kind] = {
            "records": records[name],
            "records_written": entry.records_written,
            "failed": entry.failed,
            "failed_by_reason": entry.failed_by_reason,
            "pending_left": entry.pending_left,
            "api_calls": entry.api_calls,
            "write_calls": entry.write_calls,
            "retry_calls": entry.retry_calls,
            "calls_received_by_crm": served[kind].get(label, 0),
            "theoretical_min_calls": math.ceil(records[name] / batch),
            "records_per_call": round(entry.records_written / entry.api_calls, 1) if entry.api_calls else None,
            "injected_faults": injected[kind],
        }
    total = sum(c.records_written for c in report.connections.values())
    out["records_written"] = total
    out["records_per_second"] = round(total / seconds, 1) if seconds else None
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
