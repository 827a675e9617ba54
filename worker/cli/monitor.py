"""``leadscore report``, ``leadscore monitor`` and ``leadscore models list/promote/rollback``.

Mounted by ``worker/cli/main.py``. Each command opens one unit of work on the configured database and
calls one function of :mod:`scoring.monitor`, :mod:`scoring.report` or :mod:`scoring.registry`;
expected failures are :class:`config.errors.LeadscoreError` (one line, exit 1).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from config.app_config import load_config
from config.errors import LeadscoreError
from config.settings import get_settings
from store.db import unit_of_work
from store.models import ModelStatus, ModelVersion
from worker.cli.console import cli_console
from worker.cli.jsonout import json_target, write_json_text

# Heavy imports stay inside the commands that use them (scoring: CatBoost, pandas, scikit-learn;
# connectors: the CRM clients; web: FastAPI and uvicorn; crmsim; the demo): seconds that
# `leadscore --help` and every other command would otherwise wait for.
console = cli_console()
app = typer.Typer(help="Model health: monitor, report, model versions.", no_args_is_help=True)
models_app = typer.Typer(help="Model versions: list, show, shadow, promote, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _config():  # type: ignore[no-untyped-def]

    return load_config(get_settings().config_file)


@app.command("report")
def report_command(
    html_path: Path | None = typer.Option(None, "--html", help="Write the HTML report with plots here."),
) -> None:
    """Model health: the latest monitor status; with --html, the full report with plots."""
    from scoring.monitor import latest_report
    from scoring.monitoring.describe import count_alerts, describe_report
    from scoring.registry import champion
    from scoring.report import render_report

    config = _config()
    with unit_of_work() as session:
        if html_path is not None:
            page = render_report(session, psi_warn=config.monitoring.psi_warn, psi_alert=config.monitoring.psi_alert)
            try:
                html_path.parent.mkdir(parents=True, exist_ok=True)
                html_path.write_text(page, encoding="utf-8")
            except OSError as exc:
                raise LeadscoreError(f"cannot write {html_path}: {exc.strerror}") from exc
            console.print(f"report written to {html_path}")
        mv = champion(session)
        latest = latest_report(session)
        console.print(f"champion: {mv.version if mv else 'none (run `leadscore train`)'}")
        if latest is None:
            console.print("monitor: no report yet (run `leadscore monitor`)")
            return
        console.print(f"monitor as of {latest.as_of:%Y-%m-%d %H:%M} UTC: {latest.status.upper()} "
                      f"({count_alerts(list(latest.alerts or []))})", markup=False, soft_wrap=True)
        for line in describe_report(dict(latest.metrics or {}), list(latest.alerts or [])):
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


def _parse_as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO date or time (e.g. 2026-07-01 or 2026-07-01T12:00)",
                                 param_hint="--as-of") from exc
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@app.command("monitor")
def monitor_command(
    json_path: Path | None = typer.Option(None, "--json", callback=json_target,
                                          help="Also write the report's metrics as JSON."),
    as_of: str | None = typer.Option(None, "--as-of", help="Measure as of this CRM time (ISO; default: the "
                                     "newest synced modification time)."),
) -> None:
    """Run the monitor now: drift, tier conversion, accuracy, calibration, freshness, write-back; alerts
    to log, database, webhook. Windows are cut on the data's clock, never the machine's."""
    from scoring.monitor import run_monitor
    from scoring.monitoring.clock import data_clock
    from scoring.monitoring.describe import count_alerts, describe_report, remeasured_line
    from scoring.monitoring.run import alerts_printed_by_caller

    when = _parse_as_of(as_of)
    config = _config()
    with unit_of_work() as session:
        newest = data_clock(session)
        latest_known = max(newest or datetime.now(UTC), datetime.now(UTC))
        if when is not None and when > latest_known + timedelta(days=1):
            # A typo (2030 for 2026): its report would read as the latest everywhere for years.
            raise typer.BadParameter(
                f"{when:%Y-%m-%d} is after both the newest synced data "
                f"({f'{newest:%Y-%m-%d}' if newest else 'none yet'}) and this machine's clock "
                f"({datetime.now(UTC):%Y-%m-%d}): no CRM time is known there", param_hint="--as-of")
        if when is not None and newest is not None and when > newest + timedelta(days=1):
            # Allowed (freshness as of a later time is what a stalled sync looks like), but this
            # report becomes the latest one everywhere until a later --as-of.
            print(f"note: --as-of {when:%Y-%m-%d} is after the newest synced data ({newest:%Y-%m-%d}): this report "
                  "will read as the latest in `status`, `report` and the console until a run as of a later time",
                  file=sys.stderr)
        with alerts_printed_by_caller():  # printed below, with what to do
            report = run_monitor(session, as_of=when, config=config.monitoring,
                                 horizon_days=config.training.horizon_days,
                                 connections=[c.name for c in config.connections if c.enabled])
        status, alerts, metrics = report.status, list(report.alerts), dict(report.metrics)
        report_as_of = report.as_of
    clock = metrics.get("clock") or {}
    console.print(f"monitor as of {report_as_of:%Y-%m-%d %H:%M} UTC ({clock.get('source', '')}): "
                  f"{status.upper()} ({count_alerts(alerts)})", markup=False,
                  soft_wrap=True)
    if (again := remeasured_line(metrics, webhook=bool(config.monitoring.webhook_url))) is not None:
        console.print(f"  {again}", markup=False, highlight=False, soft_wrap=True)
    for line in describe_report(metrics, alerts):
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    if json_path is not None:
        body = {"status": status, "as_of": report_as_of.isoformat(), "clock": clock,
                "drift": metrics.get("drift") or {}, "tier_conversion": metrics.get("tier_conversion") or {},
                "performance": metrics.get("performance") or {}, "alerts": alerts, "metrics": metrics}
        write_json_text(json_path, json.dumps(body, indent=2))


@app.command("retrain")
def retrain_command(
    dry_run: bool = typer.Option(False, "--dry-run", help="Compare only: register and promote nothing."),
    json_path: Path | None = typer.Option(None, "--json", callback=json_target,
                                          help="Also write the outcome as JSON."),
    as_of: str | None = typer.Option(None, "--as-of", help="Retrain as of this CRM time (ISO; default: the "
                                     "newest synced modification time)."),
) -> None:
    """Train a challenger on the configured window, compare it with the champion on the same later
    leads (paired bootstrap) and promote it only if it is better (never with --dry-run)."""
    from scoring.retrain import retrain_if_due

    when = _parse_as_of(as_of)
    config = _config()
    with unit_of_work() as session:
        outcome = retrain_if_due(session, as_of=when, training=config.training, schedules=config.schedules,
                                 monitoring=config.monitoring, force=True, dry_run=dry_run,
                                 progress=lambda m: console.print(m, markup=False, highlight=False,
                                                                  soft_wrap=True))
        body = outcome.to_dict()
    c = outcome.comparison
    if c is not None and c.leads:
        console.print(f"champion {outcome.champion}: {c.metric} {c.champion:.4f}; challenger "
                      f"{outcome.challenger}: {c.metric} {c.challenger:.4f} — on the same {c.leads:,} held-out leads "
                      f"first seen {c.holdout_start:%Y-%m-%d}..{c.holdout_end:%Y-%m-%d} ({c.positives} converted "
                      f"snapshots)", markup=False, highlight=False, soft_wrap=True)
    console.print(f"decision: {outcome.decision or outcome.reason}", markup=False, highlight=False, soft_wrap=True)
    if json_path is not None:
        write_json_text(json_path, json.dumps(body, indent=2))
    if outcome.promoted:
        console.print("the next `leadscore score` (the workers' minute loop) rescores every open lead with the new "
                      "champion: their scores came from another model", markup=False)


@models_app.command("list")
def models_list() -> None:
    """Every model version, newest first, with status and test AUC."""
    from scoring.monitor import trained_at
    from scoring.monitoring.stats import MIN_PERFORMANCE_POSITIVES
    from scoring.registry import AUC_ACROSS_VERSIONS, list_versions, recorded_auc_caveat, recorded_test_auc

    with unit_of_work() as session:
        # "*": a test AUC on too few leads of one class to judge (the line below the table says so).
        rows = [
            (mv.version, mv.status, mv.segment or "-", mv.family, f"{trained_at(mv):%Y-%m-%d}",
             f"{auc:.3f}{'*' if recorded_auc_caveat(mv) else ''}" if (auc := recorded_test_auc(mv)) is not None
             else "-", _list_note(mv))
            for mv in list_versions(session)
        ]
    if not rows:
        console.print("no model versions yet (run `leadscore train`)")
        return
    header = ("version", "status", "segment", "family", "trained", "test AUC", "notes")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(6)]
    for row in [header, *rows]:
        line = "  ".join(str(v).ljust(w) for v, w in zip(row[:6], widths, strict=True))
        console.print(f"{line}  {row[6]}", markup=False, highlight=False, soft_wrap=True)
    if any(row[6].endswith(" …") for row in rows):
        console.print("… the note's first clause: `leadscore models show VERSION` has all of it", markup=False,
                      highlight=False)
    if any(str(row[5]).endswith("*") for row in rows):
        console.print(f"* too few test leads of one class to judge the AUC ({MIN_PERFORMANCE_POSITIVES} of each "
                      "class needed; `leadscore models show VERSION` has the counts)", markup=False, highlight=False)
    if sum(row[5] != "-" for row in rows) > 1:
        console.print(AUC_ACROSS_VERSIONS, markup=False, highlight=False, soft_wrap=True)


def _list_note(mv: ModelVersion) -> str:
    """A version's notes in the list; for one changed by hand, the latest change first (a champion
    promoted by hand read only its evaluation's "kept as candidate")."""
    from scoring.card import hand_changes
    from scoring.registry import short_note

    hand = hand_changes(mv)
    if not hand:
        return short_note(mv.notes)
    return f"by hand: {hand[-1]}; at evaluation: {short_note(mv.notes, 60) or '-'}"


@models_app.command("show")
def models_show(version: str | None = typer.Argument(
        None, help="The model version (see `leadscore models list`); the global champion when left out.")) -> None:
    """Print VERSION's model card (the champion's without VERSION): intended use, data, audit, metrics
    of every family, calibration, plus feature importance (top 15), precision/recall at the tier
    cut-offs and lift by decile."""
    from scoring.card import live_card_sections, status_section
    from scoring.monitor import active_tier_policy, data_clock, ensure_reference
    from scoring.registry import champion, get_version

    with unit_of_work() as session:
        if version is None:
            found = champion(session)
            if found is None:
                raise LeadscoreError("no champion model yet: run `leadscore train` (or give a VERSION from "
                                     "`leadscore models list`)")
            mv = found
        else:
            mv = get_version(session, version)
        ref = ensure_reference(session, mv, as_of=data_clock(session))
        text = (mv.card or f"# Lead scoring model {mv.version}\n\n(no card was stored)\n").rstrip("\n")
        text += "\n\n" + status_section(mv) + "\n" + live_card_sections(mv, ref, active_tier_policy(session))
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@models_app.command("promote")
def models_promote(version: str = typer.Argument(..., help="The version to make champion.")) -> None:
    """Make VERSION the champion of its segment (the current one retires) and rescore with it."""
    from scoring.monitor import data_clock, describe_shadow, horizon_of, shadow_comparison
    from scoring.pipeline import promote_and_rescore
    from scoring.registry import champion, get_version

    with unit_of_work() as session, console.status("rescoring with the new champion"):
        candidate = get_version(session, version)
        # The live evidence first: how it did in shadow beside the champion, on the same leads.
        evidence = None
        if candidate.status == ModelStatus.shadow:
            current = champion(session, candidate.segment)
            evidence = shadow_comparison(session, candidate, as_of=data_clock(session) or candidate.created_at,
                                         horizon_days=horizon_of(current or candidate))
        # The same path as `leadscore score`: rescoring, tiering and routing planning.
        mv, summary = promote_and_rescore(session, _config(), version, by="cli")
        name = mv.version
    if summary is None:
        console.print(f"{name} is already the champion{_of_segment(mv.segment)}: nothing changed", markup=False)
        return
    if evidence is not None:
        console.print(f"live comparison in shadow: {describe_shadow(evidence)}", markup=False, highlight=False,
                      soft_wrap=True)
    else:
        console.print(f"{name} never ran in shadow: no live comparison (`leadscore models shadow VERSION` "
                      "runs a challenger beside the champion first)", markup=False, soft_wrap=True)
    console.print(f"{name} is now the champion; {_rescored(summary)}")


def _of_segment(segment: str | None) -> str:
    return f" of segment {segment}" if segment else ""


@models_app.command("shadow")
def models_shadow(version: str = typer.Argument(..., help="The challenger to run in shadow.")) -> None:
    """Run VERSION in shadow: it scores the same leads as the champion, its scores are stored and
    never written to the CRM; `leadscore monitor` compares both as outcomes arrive."""
    from scoring.registry import get_version, shadow
    from store.models import ModelStatus

    with unit_of_work() as session:
        already = get_version(session, version).status == ModelStatus.shadow
        mv, replaced = shadow(session, version)
        name = mv.version
        stopped = [f"{old.version} no longer runs in shadow (back to {old.status})" for old in replaced]
    if already:
        console.print(f"{name} already runs in shadow: nothing changed", markup=False, soft_wrap=True)
        return
    console.print(f"{name} runs in shadow from the next scoring run; `leadscore monitor` compares it with the "
                  "champion on the same leads as their outcomes arrive", markup=False, soft_wrap=True)
    for line in stopped:
        console.print(line, markup=False, soft_wrap=True)


@models_app.command("rollback")
def models_rollback() -> None:
    """Retire the current champion, restore the one promoted before it and rescore with it."""
    from scoring.pipeline import rollback_and_rescore

    with unit_of_work() as session, console.status("rescoring with the restored champion"):
        mv, summary = rollback_and_rescore(session, _config(), by="cli")
        name = mv.version
    console.print(f"rolled back: {name} is the champion again; {_rescored(summary)}")


def _rescored(summary: Any) -> str:
    """One line on the rescoring a promotion or rollback ran (the same path as `leadscore score`)."""
    planned = sum(summary.routing_planned.values())
    held = ""
    if summary.routing_held:
        from connectors.routing import HELD_WORDS

        held = f" ({summary.routing_held} {HELD_WORDS})"
    return (f"rescored {summary.scored} leads, {summary.outbox_rows} CRM updates queued, "
            f"{summary.tier_changes} tier changes, {planned} routing actions planned{held}")
