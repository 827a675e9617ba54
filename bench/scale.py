"""Benchmark a whole Salesforce org end to end at a given size, on PostgreSQL; prints JSON.

    .venv/bin/python bench/scale.py --leads 100000 [--seed 0] [--database-url URL] [--out FILE]
    .venv/bin/python bench/scale.py --plot docs/img/scaling.svg FILE.json [FILE.json ...]

Stages, each timed with its own peak RSS (this process; crmsim runs in a process of its own, as
a real CRM would) and the load average around it:

1. ``world``: crmsim builds an org of ``--leads`` Salesforce leads with their activities;
2. ``sync``: a first full sync through ``connectors.sync.sync_connection`` (what ``leadscore sync``
   and the Celery task call): records/s, API calls charged by the CRM vs the minimum
   (ceil(records / page) per stream);
3. ``training``: ``train_from_store`` as ``leadscore train`` runs it (features + three families);
4. ``scoring``: ``score_and_plan(all=True)`` as ``leadscore score --all`` runs it;
5. ``writeback``: ``drain_outbox`` of every score row and the Accounts' fields (1,000 records per
   call at most).

``goals`` says which of the issue's goals the run met (scoring < 60 s, training < 5 min, peak
RSS < 4 GiB, sync API calls <= 1.05 x the minimum); they are stated for 100,000 leads.
``--plot`` draws how each stage grows from several result files (docs/scaling.md).
Without ``--database-url`` a temporary PostgreSQL database is created on 127.0.0.1 and dropped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as ``python bench/scale.py``, this file's directory would come first on sys.path.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from bench.simprocess import SimProcess  # noqa: E402
from config.app_config import AppConfig  # noqa: E402
from connectors.base import ConnectionSecrets  # noqa: E402
from connectors.salesforce.settings import MAX_PAGE_SIZE  # noqa: E402
from connectors.salesforce.writeback import BATCH_SIZE as SF_BATCH  # noqa: E402
from connectors.setup import crm_setup  # noqa: E402
from connectors.sync import SyncReport, sync_connection  # noqa: E402
from connectors.writeback import drain_outbox  # noqa: E402
from scoring.pipeline import score_and_plan  # noqa: E402
from scoring.service import train_from_store  # noqa: E402
from store.db import make_engine, unit_of_work  # noqa: E402
from store.migrate import upgrade  # noqa: E402

GIB = 1024**3
GOALS = {"scoring_seconds": 60.0, "training_seconds": 300.0, "peak_rss_bytes": 4 * GIB, "sync_call_ratio": 1.05}
ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"


def _rss_bytes(field: str) -> int:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process, from /proc (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS: each stage gets its own peak.
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        pass


@contextmanager
def stage(out: dict[str, Any], name: str, checkpoint: Callable[[], None] | None = None) -> Iterator[dict[str, Any]]:
    """Time the block; record seconds, peak RSS and the load average into ``out[name]``, then
    ``checkpoint()`` (a long run keeps what it measured even if a later stage fails)."""
    entry: dict[str, Any] = {"load_average_before": [round(x, 2) for x in os.getloadavg()]}
    _reset_peak_rss()
    started = time.perf_counter()
    print(f"[{datetime.now(UTC):%H:%M:%S}] {name} ...", file=sys.stderr, flush=True)
    yield entry
    entry["seconds"] = round(time.perf_counter() - started, 2)
    entry["peak_rss_bytes"] = _rss_bytes("VmHWM")
    entry["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out[name] = entry
    print(f"[{datetime.now(UTC):%H:%M:%S}] {name}: {entry['seconds']} s", file=sys.stderr, flush=True)
    if checkpoint is not None:
        checkpoint()


def minimum_calls(report: SyncReport) -> int:
    """The fewest calls a keyset REST read of these records can take: ceil(records / page) per stream."""
    return sum(math.ceil(s.records / MAX_PAGE_SIZE) for s in report.streams.values() if s.records)


@contextmanager
def scratch_database(url: str | None) -> Iterator[str]:
    """``url`` as is, or a fresh PostgreSQL database dropped afterwards."""
    if url is not None:
        yield url
        return
    import psycopg  # only needed for the scratch database

    name = f"leadscore_scale_{os.getpid()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_config(info: dict[str, Any], min_per_class: int = 100) -> tuple[AppConfig, dict[str, ConnectionSecrets]]:
    """One Salesforce connection to the simulator (client credentials: re-logs in by itself)."""
    sf = info["salesforce"]
    config = AppConfig.model_validate({"training": {"min_per_class": min_per_class}, "connections": [{
        "name": "scale-sf", "kind": "salesforce", "instance_url": sf["instance_url"], "domain": "crmsim.my",
        "client_id": sf["client_id"], "client_secret_env": "UNUSED", "ca_bundle": sf["ca_bundle"],
        "login_via_instance": True}]})
    return config, {"scale-sf": ConnectionSecrets(client_secret=sf["client_secret"])}


def run(leads: int, seed: int, history_days: int, database_url: str | None,
        sync: Callable[..., SyncReport] = sync_connection, out_path: Path | None = None) -> dict[str, Any]:
    """Every stage at ``leads`` leads; the JSON-ready result (written to ``out_path`` after each stage)."""
    out: dict[str, Any] = {"leads": leads, "seed": seed, "history_days": history_days, "database": "postgresql",
                           "cpus": os.cpu_count(), "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    stages: dict[str, Any] = {}
    out["stages"] = stages

    def checkpoint() -> None:
        if out_path is not None:
            out_path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    with scratch_database(database_url) as url:
        upgrade(url)
        engine = make_engine(url)
        sim = SimProcess(leads=leads, seed=seed, history_days=history_days, crm_split=1.0)
        with stage(stages, "world", checkpoint) as entry:
            sim.start()
            entry["build_seconds"] = sim.info["build_seconds"]
            entry["people"] = sim.info["generation"].get("new_leads")
            entry["activities"] = sim.info["generation"].get("new_activities")
        with sim:
            config, secrets = bench_config(sim.info)
            conn = config.connections[0]
            sim.reset_counts()
            with stage(stages, "sync", checkpoint) as entry:
                report = sync(engine, conn, secrets[conn.name], full=True)
                entry["status"] = report.status
                entry["records"] = report.records
                entry["records_per_second"] = round(
                    report.records / max(report.duration_seconds - float((report.accounts or {}).get("seconds") or 0),
                                         1e-9), 1)
                entry["api_calls_client"] = report.api_calls
                entry["api_calls_charged"] = sim.call_counts()["total"]["salesforce"]
                # After the streams, the sync places open leads at their Accounts (issue #13): its
                # look-ups are counted apart, and the ratio is the streams' reads against theirs.
                accounts = report.accounts or {}
                entry["accounts"] = accounts
                entry["stream_calls_charged"] = entry["api_calls_charged"] - int(accounts.get("api_calls") or 0)
                entry["stream_seconds"] = round(report.duration_seconds - float(accounts.get("seconds") or 0), 2)
                entry["minimum_calls"] = minimum_calls(report)
                entry["call_ratio"] = round(entry["stream_calls_charged"] / entry["minimum_calls"], 3) \
                    if entry["minimum_calls"] else None
                entry["streams"] = {name: {"records": s.records, "api_calls": s.api_calls}
                                    for name, s in report.streams.items()}
            with stage(stages, "training", checkpoint) as entry, unit_of_work(engine) as session:
                trained = train_from_store(session, config=config.training)
                entry["examples"] = trained.examples
                entry["selected"] = trained.result.selected
                entry["test_auc"] = {f: round(m["test"]["auc"], 4) for f, m in trained.result.metrics.items()}
            with stage(stages, "scoring", checkpoint) as entry, unit_of_work(engine) as session:
                summary = score_and_plan(session, config, all=True)
                entry["leads"] = summary.scored
                entry["outbox_rows"] = summary.outbox_rows
            with stage(stages, "writeback", checkpoint) as entry:
                crm_setup(config, secrets)
                sim.reset_counts()
                drained = drain_outbox(engine, config, secrets)
                written = drained.connections[conn.name]
                entry["records_written"] = written.records_written
                entry["failed"] = written.failed
                entry["pending_left"] = written.pending_left
                accounts = drained.accounts.get(conn.name)
                entry["accounts_written"] = accounts.records_written if accounts is not None else 0
                entry["api_calls_charged"] = sim.call_counts()["total"]["salesforce"]
                # The same drain writes the Accounts' fields (issue #13), also 1,000 per call.
                entry["minimum_calls"] = (math.ceil(written.records_written / SF_BATCH)
                                          + math.ceil(entry["accounts_written"] / SF_BATCH))
        engine.dispose()
    for name in ("scoring", "writeback"):
        entry = stages[name]
        count = entry.get("leads", entry.get("records_written", 0))
        entry["records_per_second"] = round(count / entry["seconds"], 1) if entry["seconds"] else None
    out["peak_rss_bytes"] = max(s["peak_rss_bytes"] for s in stages.values())
    out["goals"] = goals(out)
    out["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return out


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """Each goal with the measured value and whether it was met (the goals are set at 100k leads)."""
    stages = result["stages"]
    measured = {"scoring_seconds": stages["scoring"]["seconds"], "training_seconds": stages["training"]["seconds"],
                "peak_rss_bytes": result["peak_rss_bytes"], "sync_call_ratio": stages["sync"]["call_ratio"]}
    return {name: {"goal": GOALS[name], "measured": value, "met": value is not None and value <= GOALS[name]}
            for name, value in measured.items()}


PLOTTED = ("sync", "training", "scoring", "writeback")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Seconds per stage against leads (log-log), one line per stage, written as SVG or PNG."""
    import matplotlib  # heavy and only needed for the plot
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = sorted(results, key=lambda r: r["leads"])
    figure, axis = plt.subplots(figsize=(7, 4.2))
    sizes = [r["leads"] for r in results]
    for name in PLOTTED:
        # A run that stopped early (a checkpointed --out file) contributes the stages it finished.
        points = [(r["leads"], r["stages"][name]["seconds"]) for r in results if name in r["stages"]]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    axis.axhline(GOALS["scoring_seconds"], color="grey", linestyle=":", linewidth=1)
    axis.axhline(GOALS["training_seconds"], color="grey", linestyle="--", linewidth=1)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xticks(sizes, [f"{s / 1000:g}k" for s in sizes])
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set_xlabel("Salesforce leads (crmsim, with their activities)")
    axis.set_ylabel("seconds (2 shared cores, PostgreSQL)")
    axis.set_title("bench/scale.py: seconds per stage (dotted: 60 s, dashed: 5 min)")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--history-days", type=int, default=365)
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database (default: a scratch one)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    parser.add_argument("--plot", type=Path, default=None, help="draw the result FILES into this SVG/PNG and exit")
    parser.add_argument("files", nargs="*", type=Path, help="result files for --plot")
    args = parser.parse_args()
    if args.plot is not None:
        if not args.files:
            parser.error("--plot needs result files (from --out)")
        plot([json.loads(f.read_text(encoding="utf-8")) for f in args.files], args.plot)
        print(f"wrote {args.plot}")
        return
    if args.leads < 1:
        parser.error("--leads must be at least 1")
    result = run(args.leads, args.seed, args.history_days, args.database_url, out_path=args.out)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
