"""``leadscore report``, ``leadscore monitor`` and ``leadscore models list/promote/rollback``.

Mounted by ``worker/cli.py``. Each command opens one unit of work on the configured database and
calls one function of :mod:`scoring.monitor`, :mod:`scoring.report` or :mod:`scoring.registry`;
expected failures are :class:`config.errors.LeadscoreError` (one line, exit 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from config.errors import LeadscoreError

console = Console()
app = typer.Typer(help="Model health: monitor, report, model versions.", no_args_is_help=True)
models_app = typer.Typer(help="Model versions: list, promote, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _config():  # type: ignore[no-untyped-def]
    from config.app_config import load_config
    from config.settings import get_settings

    return load_config(get_settings().config_file)


@app.command("report")
def report_command(
    html_path: Path | None = typer.Option(None, "--html", help="Write the HTML report with plots here."),
) -> None:
    """Model health: the latest monitor status; with --html, the full report with plots."""
    from scoring.monitor import latest_report
    from scoring.registry import champion
    from scoring.report import render_report
    from store.db import unit_of_work

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
        console.print(f"monitor {latest.as_of:%Y-%m-%d %H:%M}: {latest.status.upper()}")
        for alert in latest.alerts:
            console.print(f"  {alert.get('level')}: {alert.get('message')}", markup=False)


@app.command("monitor")
def monitor_command(
    json_path: Path | None = typer.Option(None, "--json", help="Also write the report's metrics as JSON."),
) -> None:
    """Run the monitor now: drift, live performance, freshness; alerts to log, database, webhook."""
    from scoring.monitor import run_monitor
    from store.db import unit_of_work

    config = _config()
    with unit_of_work() as session:
        report = run_monitor(session, config=config.monitoring, horizon_days=config.training.horizon_days)
        status, alerts, metrics = report.status, list(report.alerts), dict(report.metrics)
    console.print(f"monitor: {status.upper()} ({len(alerts)} alert{'s' if len(alerts) != 1 else ''})")
    for alert in alerts:
        console.print(f"  {alert.get('level')}: {alert.get('message')}", markup=False)
    if json_path is not None:
        json_path.write_text(json.dumps({"status": status, "alerts": alerts, "metrics": metrics}, indent=2),
                             encoding="utf-8")


@models_app.command("list")
def models_list() -> None:
    """Every model version, newest first, with status and test AUC."""
    from scoring.monitor import trained_at
    from scoring.registry import list_versions, recorded_test_auc
    from store.db import unit_of_work

    with unit_of_work() as session:
        rows = [
            (mv.version, mv.status, mv.segment or "-", mv.family, f"{trained_at(mv):%Y-%m-%d}",
             f"{auc:.3f}" if (auc := recorded_test_auc(mv)) is not None else "-", (mv.notes or "")[:100])
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


@models_app.command("promote")
def models_promote(version: str = typer.Argument(..., help="The version to make champion.")) -> None:
    """Make VERSION the champion of its segment (the current one retires); rescoring uses it."""
    from scoring.registry import promote
    from store.db import unit_of_work

    with unit_of_work() as session:
        mv = promote(session, version)
        name = mv.version
    console.print(f"{name} is now the champion; run `leadscore score --all` to rescore with it")


@models_app.command("rollback")
def models_rollback() -> None:
    """Retire the current champion and restore the one promoted before it."""
    from scoring.registry import rollback
    from store.db import unit_of_work

    with unit_of_work() as session:
        mv = rollback(session)
        name = mv.version
    console.print(f"rolled back: {name} is the champion again; run `leadscore score --all` to rescore")
