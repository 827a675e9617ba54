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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from config.errors import LeadscoreError
from connectors.errors import error_code, expected_refusal
from store.models import ACCOUNT_OUTBOX_KIND, OUTBOX_KIND, ActionStatus, OutboxStatus
from worker.processes import start_worker, stop

# Plain text (no markup): styles are given as Text styles, so no name is ever parsed as a tag.
console = Console(markup=False)

# Secrets reach the tasks through the environment, as in production (never in the YAML file).
SF_SECRET_ENV = "LEADSCORE_DEMO_SALESFORCE_CLIENT_SECRET"  # noqa: S105 - a variable name
HS_TOKEN_ENV = "LEADSCORE_DEMO_HUBSPOT_ACCESS_TOKEN"  # noqa: S105 - a variable name
WAIT_SECONDS = 900
# `leadscore demo --quick`: the same steps on a quarter of the leads (the e2e test's size).
QUICK_LEADS = 3000
QUICK_MIN_PER_CLASS = 150


@dataclass
class PhaseCalls:
    salesforce: int = 0
    hubspot: int = 0
    by_label: dict[str, dict[str, int]] = field(default_factory=dict)


def _calls(sim: Any) -> dict[str, Any]:
    counts = sim.call_counts()
    return {"salesforce": dict(counts["salesforce"]), "hubspot": dict(counts["hubspot"]),
            "total": dict(counts["total"])}


def _diff(before: dict[str, Any], after: dict[str, Any]) -> PhaseCalls:
    labels = {}
    for api in ("salesforce", "hubspot"):
        labels[api] = {k: after[api].get(k, 0) - before[api].get(k, 0)
                       for k in after[api] if k != "injected" and after[api].get(k, 0) != before[api].get(k, 0)}
    return PhaseCalls(
        salesforce=after["total"]["salesforce"] - before["total"]["salesforce"],
        hubspot=after["total"]["hubspot"] - before["total"]["hubspot"],
        by_label=labels,
    )


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
    from sqlalchemy import func, select

    from store.db import unit_of_work
    from store.models import Outbox, RoutingAction
    from worker import tasks

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


def _refused(runtime: Any) -> dict[str, int]:
    """Failed write-back rows and routing actions by the CRM refusal behind them; codes the demo
    does not expect are counted under ``unexpected``."""
    from sqlalchemy import select

    from store.db import unit_of_work
    from store.models import Outbox, RoutingAction

    counts: dict[str, int] = {}
    with unit_of_work(runtime.engine) as session:
        errors = list(session.scalars(select(Outbox.last_error).where(Outbox.status == OutboxStatus.failed)))
        errors += list(session.scalars(select(RoutingAction.error).where(RoutingAction.status == ActionStatus.failed)))
    for error in errors:
        # Not a CRM code (e.g. "the lead's tier changed again"): an action skipped, not refused.
        kind = (expected_refusal(error) or "unexpected") if error_code(error).isupper() else "skipped"
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def run_demo(*, leads: int = 12000, seed: int = 0, json_path: Path | None = None,
             report_path: Path | None = None, min_per_class: int = 500) -> dict[str, Any]:
    """Run the whole loop against an in-process crmsim; print and return the summary."""
    with _lean_gc():
        return _run_demo(leads=leads, seed=seed, json_path=json_path, report_path=report_path,
                         min_per_class=min_per_class)


def _run_demo(*, leads: int, seed: int, json_path: Path | None, report_path: Path | None,
              min_per_class: int) -> dict[str, Any]:
    from config.settings import get_settings
    from crmsim.app import CRMSim
    from store.migrate import upgrade
    from worker.runtime import get_runtime, reset_runtime

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
    # The simulated history lives as long as the demo: the collector need not walk it again.
    gc.freeze()
    worker_proc: subprocess.Popen[bytes] | None = None
    saved_env = dict(os.environ)
    try:
        info = sim.info()
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
    _print_summary(summary)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(summary, indent=2))
        console.print(f"summary JSON: {json_path}")
    return summary


@contextmanager
def _lean_gc() -> Iterator[None]:
    """Fewer cyclic-GC passes for the demo's run. The simulator's history is ~1.5 million long-lived
    dicts and lists, and sync and scoring allocate millions of short-lived objects: with CPython's
    default threshold (700) the collector re-walked the growing heap over and over (measured with
    gc.callbacks: ~26 s of collections in one run; ~25 % of the history generation's CPU time).
    A larger first threshold keeps the same collection, just 70x less often; frozen objects (the
    history, see _run_demo) are released to the collector again at the end."""
    old = gc.get_threshold()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def _reset_database(url: str) -> None:
    """The demo owns its database: drop leadscore's tables so each run starts clean."""
    from store.db import make_engine
    from store.models import Base

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
    from connectors.base import ConnectionSecrets
    from connectors.setup import crm_setup
    from worker import tasks

    eager = runtime.settings.eager
    with _step("checking the CRM fields (creating HubSpot properties)"):
        secrets = {c.name: ConnectionSecrets.from_env(c) for c in runtime.config.connections}
        crm_setup(runtime.config, secrets)

    sync: dict[str, Any] = {}
    for conn in runtime.config.connections:
        before = _calls(sim)
        with _step(f"syncing {conn.name}"):
            report = _call(tasks.sync_connection, conn.name, eager=eager)
        calls = _diff(before, _calls(sim))
        sync[conn.name] = {"records": int(report.get("records", 0)),
                           "api_calls": getattr(calls, conn.name),
                           "quarantined": int(report.get("quarantined", 0))}

    with _step("training CatBoost against logistic regression and random forest"):
        trained = _call(tasks.train_model, eager=eager)

    from connectors import routing, writeback

    # The connectors' own per-kind call tallies (in process: the demo's default eager mode).
    routing_before, writeback_before = dict(routing.CALLS_BY_KIND), dict(writeback.CALLS_BY_KIND)
    accounts_before = dict(writeback.ACCOUNT_CALLS_BY_KIND)
    before_writes = before = _calls(sim)
    with _step("scoring every lead, writing back and routing"):
        scored = _call(tasks.score_all, eager=eager)
        if not eager:
            _wait_until_drained(runtime.engine)

    with _step("a week passes in the CRMs: incremental sync, rescoring what changed, write-back, routing"):
        week = sim.advance(7)
        # During the week reps looked at the scores and flagged some (read back by the sync).
        feedback_left = sim.reps_leave_feedback()
        before = _calls(sim)
        for conn in runtime.config.connections:
            _call(tasks.sync_connection, conn.name, eager=eager)
        if not eager:
            # Each sync queued its scoring; wait for one scoring pass to finish before watching the
            # outbox drain (otherwise an empty outbox could be read before scoring filled it).
            _call(tasks.score_changed, eager=eager)
            _wait_until_drained(runtime.engine)
        after_week = _calls(sim)
        week_calls = _diff(before, after_week)
        writes = _diff(before_writes, after_week)  # both write phases: label filters keep write calls only

    with _step("running the daily monitor (drift, calibration, freshness, alerts)"):
        monitor = _call(tasks.monitor_daily, eager=eager)

    evaluation = _evaluate(runtime, sim, trained)
    summary: dict[str, Any] = {
        "leads": 0,
        "activities": 0,
        "sync": sync,
        "model": {"version": trained["version"], "family": trained["family"],
                  "test_auc": evaluation["test_auc"], "oracle_auc": evaluation["oracle_auc"]},
        "writeback": _writeback_counts(runtime, writes, _tally(writeback.CALLS_BY_KIND, writeback_before)
                                       if eager else None,
                                       _tally(writeback.ACCOUNT_CALLS_BY_KIND, accounts_before) if eager else None),
        "tiers": evaluation["tiers"],
        "held_out": {"conversion_rate": evaluation["overall_conversion_rate"],
                     "tier_a_lift": evaluation["tier_a_lift"]},
        "routing": {**_routing_counts(runtime),
                    "api_calls": _tally(routing.CALLS_BY_KIND, routing_before) if eager else None},
        "refused": _refused(runtime),
        "scored": scored,
        "monitor": monitor,
        "incremental_week": {"new_leads": week.get("new_leads"), "new_activities": week.get("new_activities"),
                             "conversions": week.get("conversions"),
                             "api_calls": {"salesforce": week_calls.salesforce, "hubspot": week_calls.hubspot}},
        "models_compared": {f: round(m["test"]["auc"], 4) for f, m in trained["metrics"].items()},
    }
    summary.update(_population(runtime))
    summary["rep_view"] = _rep_view(runtime)
    summary["rep_view"]["feedback_left_in_crmsim"] = feedback_left
    if report_path is not None:
        from scoring.report import render_report
        from store.db import unit_of_work

        with _step(f"writing the HTML report to {report_path}"), unit_of_work(runtime.engine) as session:
            report_path.parent.mkdir(parents=True, exist_ok=True)
            report_path.write_text(render_report(session), encoding="utf-8")
    return summary


def _rep_view(runtime: Any) -> dict[str, Any]:
    """What reps see, measured: score spread, reason repetition, rescoring, fields in the CRMs."""
    from datetime import timedelta

    from sqlalchemy import func, select

    from connectors.base import ConnectionSecrets
    from connectors.writeback import make_client, score_field_names
    from scoring.service import crm_now
    from store.db import unit_of_work
    from store.models import Lead, LeadScore

    out: dict[str, Any] = {}
    with unit_of_work(runtime.engine) as session:
        now = crm_now(session)
        recent = session.execute(
            select(LeadScore.score).join(Lead, Lead.id == LeadScore.lead_id).where(
                LeadScore.is_current.is_(True), Lead.is_deleted.is_(False), Lead.is_converted.is_(False),
                Lead.crm_created_at >= now - timedelta(days=60))).scalars().all()
        bins = [0] * 10
        for score in recent:
            bins[min(max(int(score) - 1, 0) // 10, 9)] += 1
        out["recent_open_leads"] = len(recent)
        out["score_deciles"] = [round(b / len(recent), 4) if recent else 0.0 for b in bins]
        current = session.execute(select(LeadScore.reasons).where(LeadScore.is_current.is_(True))).scalars().all()
        counts: dict[str, int] = {}
        for reasons in current:
            for text in set(reasons or []):
                counts[text] = counts.get(text, 0) + 1
        top = max(counts.items(), key=lambda kv: kv[1]) if counts else ("", 0)
        out["reasons"] = {"scored_leads": len(current), "distinct": len(counts), "most_common": top[0],
                          "max_share": round(top[1] / len(current), 4) if current else 0.0,
                          "leads_without_reasons": sum(1 for r in current if not r)}
        multi = session.execute(
            select(LeadScore.lead_id).group_by(LeadScore.lead_id)
            .having(func.count(func.distinct(LeadScore.as_of)) >= 2)).scalars().all()
        # The example shown is a lead whose score moved during the week, if any did.
        moved = session.execute(
            select(Lead.crm_id).join(LeadScore, LeadScore.lead_id == Lead.id)
            .where(LeadScore.is_current.is_(True), LeadScore.score_change != 0).order_by(Lead.id).limit(1)
        ).scalar()
        example = moved or (session.get(Lead, multi[0]).crm_id if multi else None)  # type: ignore[union-attr]
        out["rescored_in_week"] = {"leads": len(multi), "example_crm_id": example}
        from scoring.feedback import feedback_summary

        fb = feedback_summary(session, runtime.config)
        out["feedback"] = {k: fb[k] for k in ("leads_with_feedback", "by_tier", "outcomes")}
    fields_seen: dict[str, Any] = {}
    accounts_seen: dict[str, Any] = {}  # accounts holding an account score, read back from each CRM
    for conn in runtime.config.connections:
        names = score_field_names(conn)
        client = make_client(conn, ConnectionSecrets.from_env(conn))
        wanted = [names.score, names.likelihood, names.fit, names.engagement, names.score_change, names.tier,
                  names.reasons]
        if conn.kind == "salesforce":
            result = client.request(lambda sf, w=wanted, n=names: sf.query(
                # Only field names (the demo's own config) and no value: nothing for format_soql to quote.
                f"SELECT Id, {', '.join(w)} FROM Lead WHERE {n.score_change} != null "  # noqa: S608
                f"AND {n.score_change} != 0 LIMIT 3"))
            fields_seen[conn.name] = [{k: r.get(k) for k in ["Id", *wanted]} for r in result.get("records") or []]
            found = client.request(lambda sf, n=names: sf.query_all(
                f"SELECT Id, Name, {n.account_score}, {n.account_engaged_people} FROM Account "  # noqa: S608
                f"WHERE {n.account_score} != null ORDER BY {n.account_score} DESC, Id"))  # field names only
            accounts = found.get("records") or []
            accounts_seen[conn.name] = {"accounts_with_score": len(accounts), "sample": [
                {k: r.get(k) for k in ("Id", "Name", names.account_score, names.account_engaged_people)}
                for r in accounts[:3]]}
        else:
            body = {"filterGroups": [{"filters": [
                {"propertyName": names.score_change, "operator": "HAS_PROPERTY"},
                {"propertyName": names.score_change, "operator": "NEQ", "value": "0"}]}],
                "properties": wanted, "limit": 3}
            found = client.request(lambda c, b=body: c.api("objects.search").do_search(
                "contacts", b, _preload_content=False))
            fields_seen[conn.name] = [{"id": r.get("id"), **{k: (r.get("properties") or {}).get(k) for k in wanted}}
                                      for r in (found.get("results") or [])]
            body = {"filterGroups": [{"filters": [{"propertyName": names.account_score, "operator": "HAS_PROPERTY"}]}],
                    "properties": ["name", names.account_score, names.account_engaged_people], "limit": 3,
                    "sorts": [{"propertyName": names.account_score, "direction": "DESCENDING"}]}
            companies = client.request(lambda c, b=body: c.api("objects.search").do_search(
                "companies", b, _preload_content=False))
            accounts_seen[conn.name] = {"accounts_with_score": int(companies.get("total") or 0), "sample": [
                {"id": r.get("id"), **(r.get("properties") or {})} for r in companies.get("results") or []]}
    out["crm_fields_sample"] = fields_seen
    out["accounts_in_crm"] = accounts_seen
    return out


def _population(runtime: Any) -> dict[str, int]:
    from sqlalchemy import func, select

    from store.db import unit_of_work
    from store.models import Activity, Lead

    with unit_of_work(runtime.engine) as session:
        leads = session.scalar(select(func.count()).select_from(Lead).where(Lead.is_deleted.is_(False))) or 0
        activities = session.scalar(select(func.count()).select_from(Activity)) or 0
    return {"leads": int(leads), "activities": int(activities)}


def _tally(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """{"salesforce": n, "hubspot": n}: calls counted by the connectors between two tallies."""
    return {kind: int(after.get(kind, 0) - before.get(kind, 0)) for kind in ("salesforce", "hubspot")}


def _writeback_counts(runtime: Any, writes: PhaseCalls, calls: dict[str, int] | None = None,
                      account_calls: dict[str, int] | None = None) -> dict[str, dict[str, int | None]]:
    """Records confirmed per connection (outbox rows sent) and the write calls made: the drain's own
    count when it ran in this process (``calls``), else the write calls the CRMs counted (routing's
    Composite and batch calls then count too). ``accounts``: account rows sent (Salesforce
    Accounts, HubSpot companies), in ``account_api_calls`` calls (None: not measured in process)."""
    from sqlalchemy import func, select

    from store.db import unit_of_work
    from store.models import Connection, Outbox

    with unit_of_work(runtime.engine) as session:
        counted = session.execute(
            select(Connection.name, Outbox.kind, Outbox.status, func.count())
            .join(Outbox, Outbox.connection_id == Connection.id)
            .group_by(Connection.name, Outbox.kind, Outbox.status)).all()
    def sent(wanted: str, status_wanted: str) -> dict[str, int]:
        return {name: n for name, outbox_kind, status, n in counted if (outbox_kind, status) == (wanted, status_wanted)}

    rows, failed = sent(OUTBOX_KIND, OutboxStatus.sent), sent(OUTBOX_KIND, OutboxStatus.failed)
    accounts = sent(ACCOUNT_OUTBOX_KIND, OutboxStatus.sent)
    accounts_failed = sent(ACCOUNT_OUTBOX_KIND, OutboxStatus.failed)
    sf_labels = writes.by_label.get("salesforce", {})
    hs_labels = writes.by_label.get("hubspot", {})
    sf_calls = int(sum(v for k, v in sf_labels.items() if k.startswith("POST composite") and "sobjects" not in k))
    hs_calls = int(sum(v for k, v in hs_labels.items() if "batch/update" in k))
    if calls is not None:
        sf_calls, hs_calls = calls["salesforce"], calls["hubspot"]
    return {
        name: {"records": int(rows.get(name, 0)), "failed": int(failed.get(name, 0)), "api_calls": api,
               "accounts": int(accounts.get(name, 0)), "accounts_failed": int(accounts_failed.get(name, 0)),
               "account_api_calls": account_calls.get(name) if account_calls is not None else None}
        for name, api in (("salesforce", sf_calls), ("hubspot", hs_calls))
    }


def _routing_counts(runtime: Any) -> dict[str, int]:
    from sqlalchemy import func, select

    from store.db import unit_of_work
    from store.models import RoutingAction

    with unit_of_work(runtime.engine) as session:
        rows: dict[str, int] = {action: n for action, n in session.execute(
            select(RoutingAction.action, func.count()).where(RoutingAction.status == ActionStatus.done)
            .group_by(RoutingAction.action)).all()}
    return {
        "assigned": int(rows.get("assign_owner", 0)),
        "tasks": int(rows.get("create_task", 0)),
        "nurtured": int(rows.get("add_to_campaign", 0) + rows.get("enroll_workflow", 0)
                        + rows.get("set_property", 0)),
        "paused": int(rows.get("pause_outreach", 0)),
    }


def _evaluate(runtime: Any, sim: Any, trained: dict[str, Any]) -> dict[str, Any]:
    """Test AUC, oracle AUC and conversion by tier on the model's own held-out (latest) leads."""
    import numpy as np
    from sklearn.metrics import roc_auc_score
    from sqlalchemy import select

    from scoring import registry
    from scoring.dataset import LEAD_ID_COLUMN, SPLIT_COLUMN, TARGET, build_training_set
    from scoring.tier_changes import champion_scores
    from scoring.tiers import active_policy, tiers_for
    from scoring.training import split_frame
    from store.db import unit_of_work
    from store.models import Lead

    truth = {(row["crm"], row["crm_id"]): row for row in sim.truth() if row.get("crm_id")}
    with unit_of_work(runtime.engine) as session:
        mv = registry.champion(session)
        if mv is None:
            raise LeadscoreError("training registered no champion model")
        model = registry.load_model(mv)
        as_of = _parse_time(trained["as_of"])
        tset = build_training_set(session, as_of=as_of, horizon_days=runtime.config.training.horizon_days)
        frame = tset.frame.reset_index(drop=True)
        y = frame[TARGET].astype(int).to_numpy()
        _train, _val, test, _ = split_frame(frame, y, time_col=SPLIT_COLUMN, seed=0)
        test_frame = frame.iloc[test]
        proba = model.predict_proba(test_frame)
        lead_ids = [int(i) for i in test_frame[LEAD_ID_COLUMN]]
        crm_of = {lid: (kind, crm_id) for lid, kind, crm_id in session.execute(
            select(Lead.id, _connection_kind(), Lead.crm_id).where(Lead.id.in_(set(lead_ids)))).all()}
        policy = active_policy(session, runtime.config.tiers)
        # Score tiers rank the test leads against the champion's reference (capacity shares would
        # be cut on these test leads themselves).
        tiers = tiers_for(policy, proba, scores=champion_scores(session, proba))
    y_test = y[test]
    oracle = np.array([truth.get(crm_of.get(lid, ("", "")), {}).get("true_probability", np.nan) for lid in lead_ids],
                      dtype=float)
    known = ~np.isnan(oracle)
    by_tier: dict[str, dict[str, float | int]] = {}
    for tier in ("A", "B", "C", "D"):
        mask = np.array([t == tier for t in tiers])
        by_tier[tier] = {"leads": int(mask.sum()),
                         "conversion_rate": round(float(y_test[mask].mean()), 4) if mask.any() else 0.0}
    overall = float(y_test.mean()) if len(y_test) else 0.0
    a_rate = float(by_tier["A"]["conversion_rate"])
    return {
        "overall_conversion_rate": round(overall, 4),
        "tier_a_lift": round(a_rate / overall, 2) if overall else None,
        "test_auc": round(float(roc_auc_score(y_test, proba)), 4),
        "oracle_auc": round(float(roc_auc_score(y_test[known], oracle[known])), 4) if known.any() else None,
        "tiers": by_tier,
    }


def _connection_kind() -> Any:
    from sqlalchemy import select

    from store.models import Connection, Lead

    return select(Connection.kind).where(Connection.id == Lead.connection_id).scalar_subquery()


def _parse_time(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text)


def _print_summary(summary: dict[str, Any]) -> None:
    console.print()
    console.print(Text.assemble(("leadscore demo", "bold"), f": {summary['leads']:,} leads, "
                                f"{summary['activities']:,} activities, {summary['seconds']}s "
                                f"({summary['cpu_seconds']}s CPU)"))
    table = Table("CRM", "synced records", "sync API calls", "scores written", "write API calls")
    for name in ("salesforce", "hubspot"):
        s, w = summary["sync"].get(name, {}), summary["writeback"].get(name, {})
        table.add_row(name, f"{s.get('records', 0):,}", str(s.get("api_calls", 0)), f"{w.get('records', 0):,}",
                      str(w.get("api_calls", 0)))
    console.print(table)
    model = summary["model"]
    console.print(f"model {model['version']} ({model['family']}): test AUC {model['test_auc']} "
                  f"(oracle ceiling {model['oracle_auc']}); compared on the same later leads: "
                  + ", ".join(f"{k} {v}" for k, v in summary["models_compared"].items()))
    tiers = Table("tier", "test leads", "conversion rate", title="Held-out (latest) leads by tier")
    for tier, row in summary["tiers"].items():
        tiers.add_row(tier, f"{row['leads']:,}", f"{row['conversion_rate']:.1%}")
    console.print(tiers)
    routing = summary["routing"]
    calls = routing.get("api_calls") or {}
    console.print("routing: " + ", ".join(f"{k} {v}" for k, v in routing.items() if k != "api_calls")
                  + (f" in {calls['salesforce']} Salesforce and {calls['hubspot']} HubSpot API calls" if calls else ""))
    written = summary["writeback"]
    console.print("account fields written: " + ", ".join(
        f"{name} {written[name].get('accounts', 0):,} accounts" for name in ("salesforce", "hubspot")
        if name in written), highlight=False)
    rep = summary.get("rep_view") or {}
    if rep:
        deciles = " ".join(f"{share:.0%}" for share in rep["score_deciles"])
        console.print(f"score deciles 1-10 … 91-99 of {rep['recent_open_leads']:,} open leads created in the last "
                      f"60 days: {deciles}", highlight=False)
        reasons = rep["reasons"]
        console.print(f"most common reason on {reasons['max_share']:.0%} of scored leads: "
                      f"{reasons['most_common'] or '(none)'}", markup=False, highlight=False)
        fb = rep.get("feedback") or {}
        console.print(f"rep feedback read back from the CRMs: {fb.get('leads_with_feedback', 0):,} leads "
                      f"(left in crmsim: {rep.get('feedback_left_in_crmsim')})", markup=False, highlight=False)
        console.print(f"rescored during the simulated week: {rep['rescored_in_week']['leads']:,} leads "
                      f"(e.g. leadscore explain {rep['rescored_in_week']['example_crm_id']} --history)",
                      markup=False, highlight=False)
    refused = summary.get("refused") or {}
    console.print("CRM refusals met: " + (", ".join(f"{k} {v}" for k, v in refused.items()) or "none"),
                  markup=False)
    _print_monitor(summary.get("monitor") or {})


def _print_monitor(monitor: dict[str, Any]) -> None:
    """The monitor's verdict and what it measured, on the CRM's clock (not the machine's)."""
    from worker.cli.monitor import describe_measures

    console.print(f"monitor as of {str(monitor.get('as_of', '?'))[:16]} (the CRM's clock): "
                  f"{str(monitor.get('status', '?')).upper()}", markup=False)
    for line in describe_measures(monitor):
        console.print(f"  {line}", markup=False, highlight=False)
    for alert in monitor.get("alerts") or []:
        console.print(f"  {alert.get('level')}: {alert.get('message')}", markup=False, highlight=False)

