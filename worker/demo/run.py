"""``leadscore demo``: the whole loop, end to end, on the embedded default.

Starts crmsim (Salesforce over HTTPS and HubSpot over HTTP, in this process), writes a config
that points at it, migrates a fresh database, and then drives the same Celery tasks beat would:
sync every connection, train, score, write back and route. Without a broker the tasks run in
process; with ``LEADSCORE_BROKER_URL`` (and usually ``LEADSCORE_DATABASE_URL``) the demo starts a
real Celery worker process and the tasks travel through the broker.

Every number in the summary is measured in this run: API calls are the simulator's own counts;
``oracle_auc`` is the AUC of the simulator's hidden true conversion probability on the same test
leads the model was evaluated on — the ceiling no model can pass.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.text import Text
from sqlalchemy import func, select

from config.collector import lean_collector
from config.errors import LeadscoreError
from config.settings import get_settings
from connectors import routing, writeback
from connectors.base import ConnectionSecrets
from connectors.errors import error_code, expected_refusal
from connectors.setup import crm_setup
from crmsim.app import CRMSim
from scoring.monitoring.run import alerts_printed_by_caller
from scoring.report import render_report
from store.db import make_engine, unit_of_work
from store.migrate import upgrade
from store.models import ActionStatus, Base, Outbox, OutboxStatus, RoutingAction
from worker import tasks
from worker.cli.console import cli_console
from worker.demo.measures import (
    calls_between,
    crm_calls,
    evaluate,
    population,
    rep_view,
    routing_counts,
    synced,
    tally,
    writeback_counts,
)
from worker.demo.summary import print_summary
from worker.processes import start_worker, stop
from worker.runtime import get_runtime, reset_runtime

# Plain text (no markup): styles are given as Text styles, so no name is ever parsed as a tag.
console = cli_console()  # piped (`make demo > demo.log`): lines whole, not cut at 80 columns

# Secrets reach the tasks through the environment, as in production (never in the YAML file).
SF_SECRET_ENV = "LEADSCORE_DEMO_SALESFORCE_CLIENT_SECRET"  # noqa: S105 - a variable name
HS_TOKEN_ENV = "LEADSCORE_DEMO_HUBSPOT_ACCESS_TOKEN"  # noqa: S105 - a variable name
WAIT_SECONDS = 900
# `leadscore demo --quick`: the same steps on a quarter of the leads (the e2e test's size).
QUICK_LEADS = 3000
QUICK_MIN_PER_CLASS = 150


def demo_config(info: dict[str, Any], *, min_per_class: int = 500) -> dict[str, Any]:
    """The YAML config the demo writes: both simulated CRMs, tiers and routing rules."""
    sf, hs = info["salesforce"], info["hubspot"]
    return {
        "connections": [
            {"name": "salesforce", "kind": "salesforce", "instance_url": sf["instance_url"],
             "domain": "crmsim.my", "client_id": sf["client_id"], "client_secret_env": SF_SECRET_ENV,
             "ca_bundle": sf["ca_bundle"], "login_via_instance": True},
            {"name": "hubspot", "kind": "hubspot", "host": hs["host"], "access_token_env": HS_TOKEN_ENV},
        ],
        # Score tiers on the 1-99 rank: A outranks 95 % of the champion's reference leads.
        "tiers": {"mode": "score", "thresholds": {"A": 95, "B": 80, "C": 50}},
        "routing": [
            {"to": "A", "actions": [
                {"type": "assign_owner", "queue": "SDR Queue", "connections": ["salesforce"]},
                {"type": "create_task", "subject": "Hot lead: call within 4 hours", "due_hours": 4},
            ]},
            {"to": "B", "actions": [
                {"type": "add_to_campaign", "campaign": "Nurture Track: Evaluators", "connections": ["salesforce"]},
                {"type": "enroll_workflow", "workflow_id": "1002", "connections": ["hubspot"]},
            ]},
            # Pause outreach for leads that drop to D (not for every cold lead on day one).
            {"to": "D", "from": "C", "actions": [{"type": "pause_outreach"}]},
        ],
        "training": {"min_per_class": min_per_class},
    }


# Wall and CPU seconds of each step of the current run (CPU counts every thread of this process, the
# in-process crmsim and CatBoost's included): on a busy machine the CPU time is the comparable number.
_phases: list[dict[str, Any]] = []


@contextmanager
def _step(title: str) -> Iterator[None]:
    started, cpu = time.monotonic(), time.process_time()
    with console.status(Text(f"{title} ...", style="bold")):
        yield
    wall = time.monotonic() - started
    _phases.append({"step": title, "seconds": round(wall, 1), "cpu_seconds": round(time.process_time() - cpu, 1)})
    console.print(Text.assemble(("✓", "green"), f" {title} ", (f"({wall:.1f}s)", "dim")))


def _wait_until_drained(engine: Any, timeout: float = WAIT_SECONDS) -> None:
    """With real workers the write-back and routing run after scoring: wait for them to finish,
    nudging them every few seconds as beat would (a pass that finds the lock held skips)."""
    deadline = time.monotonic() + timeout
    nudge = time.monotonic() + 5
    while time.monotonic() < deadline:
        if time.monotonic() > nudge:
            tasks.writeback_drain.delay()
            tasks.routing_execute.delay()
            nudge = time.monotonic() + 5
        with unit_of_work(engine) as session:
            pending = session.scalar(
                select(func.count()).select_from(Outbox).where(Outbox.status == OutboxStatus.pending))
            routing = session.scalar(select(func.count()).select_from(RoutingAction).where(
                RoutingAction.status.in_((ActionStatus.pending, ActionStatus.sending))))
        if not pending and not routing:
            return
        time.sleep(1)
    raise LeadscoreError("the workers did not finish the write-back within 15 minutes")


# crmsim's realistic defaults plus an org validation rule on 2 % of Salesforce leads: the demo meets
# the refusals a real org gives, and counts them (summary "refused").
DEMO_STRICT = "validation_rule=0.02"


def _refused_by_source(runtime: Any) -> dict[str, dict[str, int]]:
    """Failed write-back rows and routing actions by the CRM refusal behind them (codes the demo
    does not expect under ``unexpected``), each split by where it was met: ``writeback`` (failed
    outbox rows, what `status`'s outbox line counts) and ``routing`` (failed actions, `status`'s
    routing line). A trial read "validation_rule 113" against `status`'s "111 CRM writes refused"."""
    counts: dict[str, dict[str, int]] = {}
    with unit_of_work(runtime.engine) as session:
        sources = {
            "writeback": list(session.scalars(select(Outbox.last_error).where(Outbox.status == OutboxStatus.failed))),
            "routing": list(session.scalars(select(RoutingAction.error)
                                            .where(RoutingAction.status == ActionStatus.failed))),
        }
    for source, errors in sources.items():
        for error in errors:
            # Not a CRM code (e.g. "the lead's tier changed again"): an action skipped, not refused.
            kind = (expected_refusal(error) or "unexpected") if error_code(error).isupper() else "skipped"
            counts.setdefault(kind, {})
            counts[kind][source] = counts[kind].get(source, 0) + 1
    return dict(sorted(counts.items()))


def run_demo(*, leads: int = 12000, seed: int = 0, json_path: Path | None = None,
             report_path: Path | None = None, min_per_class: int = 500) -> dict[str, Any]:
    """Run the whole loop against an in-process crmsim; print and return the summary."""
    # The simulator's history is ~1.5 million long-lived dicts and lists, and sync and scoring
    # allocate millions of short-lived objects: with CPython's default threshold the collector
    # re-walked the growing heap over and over (~26 s of one run, measured with gc.callbacks).
    with lean_collector():
        return _run_demo(leads=leads, seed=seed, json_path=json_path, report_path=report_path,
                         min_per_class=min_per_class)


def _run_demo(*, leads: int, seed: int, json_path: Path | None, report_path: Path | None,
              min_per_class: int) -> dict[str, Any]:

    started, cpu_started = time.monotonic(), time.process_time()
    _phases.clear()
    settings = get_settings()
    out_dir = settings.var_dir / "demo"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    db_url = settings.database_url or f"sqlite:///{(out_dir / 'leadscore.db').as_posix()}"
    if settings.database_url:
        _reset_database(db_url)

    with _step(f"starting crmsim: simulating {leads:,} leads of history (seed {seed})"):
        sim = CRMSim(leads=leads, seed=seed, strict=DEMO_STRICT).start()
    # The simulated history lives as long as the demo: the collector need not walk it again
    # (run_demo's lean_collector releases it at the end).
    gc.freeze()
    worker_proc: subprocess.Popen[bytes] | None = None
    saved_env = dict(os.environ)
    try:
        info = sim.info()
        # The CA certificate goes beside the YAML that names it: crmsim's own copy is gone with
        # the demo, and the commands run after it read this configuration (worker.cli.stored).
        ca_copy = out_dir / "crmsim-ca.pem"
        shutil.copyfile(info["salesforce"]["ca_bundle"], ca_copy)
        info = {**info, "salesforce": {**info["salesforce"], "ca_bundle": str(ca_copy.resolve())}}
        config_path = out_dir / "leadscore.yaml"
        config_path.write_text(yaml.safe_dump(demo_config(info, min_per_class=min_per_class), sort_keys=False))
        os.environ.update({
            "LEADSCORE_CONFIG_FILE": str(config_path),
            "LEADSCORE_DATABASE_URL": db_url,
            SF_SECRET_ENV: info["salesforce"]["client_secret"],
            HS_TOKEN_ENV: info["hubspot"]["access_token"],
        })
        reset_runtime()
        runtime = get_runtime()
        with _step("migrating the database"):
            upgrade(db_url)
        if not runtime.settings.eager:
            worker_proc = start_worker(dict(os.environ), out_dir / "worker.log")
        summary = _run_loop(sim, runtime, out_dir, report_path)
    finally:
        if worker_proc is not None:
            stop(worker_proc)
        sim.stop()
        os.environ.clear()
        os.environ.update(saved_env)
        reset_runtime()
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["cpu_seconds"] = round(time.process_time() - cpu_started, 1)
    summary["phases"] = list(_phases)
    print_summary(summary)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary, indent=2))
        console.print(f"summary JSON: {json_path}")
    return summary


def _reset_database(url: str) -> None:
    """The demo owns its database: drop leadscore's tables so each run starts clean."""

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            Base.metadata.drop_all(conn)
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    finally:
        engine.dispose()


def _call(task: Any, *args: Any, eager: bool) -> Any:
    result = task.delay(*args)
    return result.get(timeout=WAIT_SECONDS, propagate=True) if not eager else result.get()


def _run_loop(sim: Any, runtime: Any, out_dir: Path, report_path: Path | None) -> dict[str, Any]:
    eager = runtime.settings.eager
    with _step("checking the CRM fields (creating HubSpot properties)"):
        secrets = {c.name: ConnectionSecrets.from_env(c) for c in runtime.config.connections}
        crm_setup(runtime.config, secrets, engine=runtime.engine)

    sync: dict[str, Any] = {}
    for conn in runtime.config.connections:
        before, since = crm_calls(sim), datetime.now(UTC)
        with _step(f"syncing {conn.name}"):
            _call(tasks.sync_connection, conn.name, eager=eager)
        calls = calls_between(before, crm_calls(sim))
        sync[conn.name] = {**synced(runtime, conn.name, since), "api_calls": getattr(calls, conn.name)}

    with _step("training CatBoost against logistic regression and random forest"):
        trained = _call(tasks.train_model, eager=eager)


    # The connectors' own per-kind call tallies (in process: the demo's default eager mode).
    routing_before, writeback_before = dict(routing.CALLS_BY_KIND), dict(writeback.CALLS_BY_KIND)
    accounts_before, lookups_before = dict(writeback.ACCOUNT_CALLS_BY_KIND), dict(writeback.LOOKUP_CALLS_BY_KIND)
    before_writes = before = crm_calls(sim)
    with _step("scoring every lead, writing back and routing"):
        scored = _call(tasks.score_all, eager=eager)
        if not eager:
            _wait_until_drained(runtime.engine)

    with _step("a week passes in the CRMs: incremental sync, rescoring what changed, write-back, routing"):
        week = sim.advance(7)
        # During the week reps looked at the scores and flagged some (read back by the sync).
        feedback_left = sim.reps_leave_feedback()
        before = crm_calls(sim)
        for conn in runtime.config.connections:
            _call(tasks.sync_connection, conn.name, eager=eager)
        if not eager:
            # Each sync queued its scoring; wait for one scoring pass to finish before watching the
            # outbox drain (otherwise an empty outbox could be read before scoring filled it).
            _call(tasks.score_changed, eager=eager)
            _wait_until_drained(runtime.engine)
        after_week = crm_calls(sim)
        week_calls = calls_between(before, after_week)
        writes = calls_between(before_writes, after_week)  # both write phases: label filters keep write calls only

    with _step("running the daily monitor (drift, calibration, freshness, alerts)"), alerts_printed_by_caller():
        monitor = _call(tasks.monitor_daily, eager=eager)  # its alerts are in the summary

    evaluation = evaluate(runtime, sim, trained)
    refused = _refused_by_source(runtime)
    summary: dict[str, Any] = {
        "leads": 0,
        "activities": 0,
        "sync": sync,
        "model": {"version": trained["version"], "family": trained["family"],
                  "test_auc": evaluation["test_auc"], "oracle_auc": evaluation["oracle_auc"]},
        "writeback": writeback_counts(runtime, writes, tally(writeback.CALLS_BY_KIND, writeback_before)
                                      if eager else None,
                                      tally(writeback.ACCOUNT_CALLS_BY_KIND, accounts_before) if eager else None,
                                      tally(writeback.LOOKUP_CALLS_BY_KIND, lookups_before) if eager else None),
        "tiers": evaluation["tiers"],
        "held_out": {"conversion_rate": evaluation["overall_conversion_rate"],
                     "tier_a_lift": evaluation["tier_a_lift"]},
        "routing": {**routing_counts(runtime),
                    "api_calls": tally(routing.CALLS_BY_KIND, routing_before) if eager else None},
        "refused": {kind: sum(where.values()) for kind, where in refused.items()},
        "refused_by_source": refused,
        "scored": scored,
        "monitor": monitor,
        "incremental_week": {"new_leads": week.get("new_leads"), "new_activities": week.get("new_activities"),
                             "conversions": week.get("conversions"),
                             "api_calls": {"salesforce": week_calls.salesforce, "hubspot": week_calls.hubspot}},
        "models_compared": {f: round(m["test"]["auc"], 4) for f, m in trained["metrics"].items()},
    }
    summary.update(population(runtime))
    summary["rep_view"] = rep_view(runtime)
    summary["rep_view"]["feedback_left_in_crmsim"] = feedback_left
    if report_path is not None:

        with _step(f"writing the HTML report to {report_path}"), unit_of_work(runtime.engine) as session:
            report_path.parent.mkdir(parents=True, exist_ok=True)
            report_path.write_text(render_report(session), encoding="utf-8")
    return summary


