"""``leadscore sync [--connection NAME] [--full]``: incremental sync now, with per-stream progress."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from config.errors import LeadscoreError

app = typer.Typer(add_completion=False)
console = Console()
logger = logging.getLogger(__name__)


@app.command("sync")
def sync(
    connection: Annotated[str | None, typer.Option("--connection", "-c", help="only this connection")] = None,
    full: Annotated[bool, typer.Option("--full", help="ignore cursors and re-read everything")] = False,
) -> None:
    """Sync leads and activities from the configured CRMs into the database now."""
    from config.app_config import load_config
    from config.settings import get_settings
    from connectors.base import ConnectionSecrets
    from connectors.sync import ProgressEvent, SyncReport, sync_connection
    from store.db import get_engine

    settings = get_settings()
    config = load_config(settings.config_file)
    if connection is not None:
        targets = [config.connection(connection)]
    else:
        targets = [c for c in config.connections if c.enabled]
    if not targets:
        raise LeadscoreError("no CRM connection configured (add one under 'connections' in the config file)")
    engine = get_engine()
    reports: list[SyncReport] = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[records]} records"),
                  TextColumn("{task.fields[calls]} API calls"), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        tasks: dict[tuple[str, str], object] = {}

        def on_progress(event: ProgressEvent) -> None:
            key = (event.connection, event.stream)
            if key not in tasks:
                tasks[key] = progress.add_task(f"{event.connection} · {event.stream}", total=None,
                                               records=0, calls=0)
            task_id = tasks[key]
            progress.update(task_id, records=event.records, calls=event.api_calls)  # type: ignore[arg-type]
            if event.kind == "end":
                progress.update(task_id, total=1, completed=1)  # type: ignore[arg-type]

        for conn in targets:
            secrets = ConnectionSecrets.from_env(conn)
            reports.append(sync_connection(engine, conn, secrets, full=full, progress=on_progress))
    _summary(reports)
    stopped = [r for r in reports if r.status != "succeeded"]
    if stopped:
        first = stopped[0]
        raise LeadscoreError(f"sync of {first.connection} {first.status}: {first.error}")


def _summary(reports: Sequence[object]) -> None:
    from connectors.sync import SyncReport

    table = Table(title="sync summary")
    for column in ("connection", "stream", "records", "leads", "activities", "quarantined", "API calls", "status"):
        table.add_column(column, justify="right" if column not in ("connection", "stream", "status") else "left")
    reasons: dict[str, int] = {}
    for report in reports:
        assert isinstance(report, SyncReport)
        for name, stream in report.streams.items():
            table.add_row(report.connection, name, str(stream.records), str(stream.leads), str(stream.activities),
                          str(stream.quarantined), str(stream.api_calls), stream.status)
        for reason, count in report.quarantined_by_reason.items():
            reasons[reason] = reasons.get(reason, 0) + count
        table.add_row(report.connection, "[b]total[/b]", str(report.records), "", "", "",
                      str(report.api_calls), f"{report.status} in {report.duration_seconds:.1f}s")
    console.print(table)
    if reasons:
        quarantine = Table(title="quarantined by reason")
        quarantine.add_column("reason")
        quarantine.add_column("records", justify="right")
        for reason, count in sorted(reasons.items()):
            quarantine.add_row(reason, str(count))
        console.print(quarantine)
