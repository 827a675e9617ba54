"""``leadscore writeback`` (drain the outbox now) and ``leadscore crm setup`` (fields + routing check).

Mounted by ``worker/cli.py``: ``writeback`` at the top level, ``crm`` as a group.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from config.errors import LeadscoreError

app = typer.Typer(add_completion=False)
crm_app = typer.Typer(help="CRM-side set-up: score fields, properties, routing check.", no_args_is_help=True)
app.add_typer(crm_app, name="crm")
console = Console()


def _runtime() -> tuple[Any, Any]:
    from config.app_config import load_config
    from config.settings import get_settings

    settings = get_settings()
    config = load_config(settings.config_file)
    if not config.connections:
        raise LeadscoreError("no CRM connection configured (add one under 'connections' in the config file)")
    return settings, config


def _secrets(config: Any, only: str | None) -> dict[str, Any]:
    from connectors.base import ConnectionSecrets

    targets = [config.connection(only)] if only else [c for c in config.connections if c.enabled]
    return {c.name: ConnectionSecrets.from_env(c) for c in targets}


@app.command("writeback")
def writeback(
    connection: Annotated[str | None, typer.Option("--connection", "-c", help="only this connection")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="at most this many outbox rows")] = None,
    json_path: Annotated[str | None, typer.Option("--json", help="also write the report as JSON here")] = None,
) -> None:
    """Send pending score writes to the CRMs now (1,000 per Salesforce call, 100 per HubSpot call)."""
    from connectors.writeback import drain_outbox
    from store.db import get_engine

    _, config = _runtime()
    secrets = _secrets(config, connection)
    engine = get_engine()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"write-back · {name}", total=total)
            progress.update(tasks[name], completed=min(done, total), total=max(total, done))

        report = drain_outbox(engine, config, secrets, connection=connection, limit=limit, progress=on_progress)
    table = Table(title="write-back")
    for column in ("connection", "written", "unchanged", "superseded", "retry later", "failed", "API calls",
                   "of which retries", "still pending"):
        table.add_column(column, justify="left" if column == "connection" else "right")
    for entry in report.connections.values():
        table.add_row(f"{entry.connection} ({entry.kind})", str(entry.records_written), str(entry.unchanged_skipped),
                      str(entry.superseded), str(entry.retried_records), str(entry.failed), str(entry.api_calls),
                      str(entry.retry_calls), str(entry.pending_left))
    if report.connections:
        console.print(table)
    else:
        console.print("nothing to write: the outbox has no due rows")
    for reason, count in report.failed_by_reason().items():
        console.print(f"  failed: {count} × {reason}")
    if json_path:
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump(report.to_dict(), handle, indent=2)
    if report.errors:
        raise LeadscoreError("write-back stopped for " + "; ".join(report.errors) + " (rows stay pending)")


@crm_app.command("setup")
def setup(
    connection: Annotated[str | None, typer.Option("--connection", "-c", help="only this connection")] = None,
) -> None:
    """Check (Salesforce) or create (HubSpot) the score fields, and validate routing against the CRM."""
    from connectors.setup import admin_instructions, crm_setup

    _, config = _runtime()
    results = crm_setup(config, _secrets(config, connection), connection=connection)
    for result in results:
        for line in admin_instructions(result):
            console.print(line, highlight=False, soft_wrap=True)
        for name in result.created:
            console.print(f"{result.connection}: created contact property {name}")
        console.print(result.summary(), highlight=False)
    blocked = [r for r in results if not r.ok]
    if blocked:
        raise LeadscoreError("crm setup incomplete: " + "; ".join(r.summary() for r in blocked))
