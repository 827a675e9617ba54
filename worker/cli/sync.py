"""``leadscore sync [--connection NAME] [--full]``: incremental sync now, with per-stream progress."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from config.app_config import load_config
from config.errors import ConfigError, LeadscoreError
from config.settings import get_settings
from store.db import get_engine
from store.models import SyncStatus
from worker.cli.console import cli_console
from worker.cli.jsonout import json_target, write_json_text
from worker.cli.stored import no_connection_error, require_database_file

if TYPE_CHECKING:
    from config.app_config import ConnectionConfig
    from connectors.sync import ProgressCallback, SyncReport

# Heavy imports stay inside the commands that use them (scoring: CatBoost, pandas, scikit-learn;
# connectors: the CRM clients; web: FastAPI and uvicorn; crmsim; the demo): seconds that
# `leadscore --help` and every other command would otherwise wait for.
app = typer.Typer(add_completion=False)
console = cli_console()
logger = logging.getLogger(__name__)


@app.command("sync")
def sync(
    connection: Annotated[str | None, typer.Option("--connection", "-c", help="only this connection")] = None,
    full: Annotated[bool, typer.Option("--full", help="ignore cursors and re-read everything")] = False,
    json_path: Annotated[Path | None, typer.Option(
        "--json", callback=json_target,
        help="also write {connections: {NAME: {records, api_calls, error}}} here")] = None,
) -> None:
    """Sync leads and activities from the configured CRMs into the database now.

    Every enabled connection is synced even when one fails; the exit code is 1 if any failed.
    """
    from connectors.sync import ProgressEvent

    settings = get_settings()
    config = load_config(settings.config_file)
    if connection is not None:
        targets = [config.connection(connection)]
    else:
        targets = [c for c in config.connections if c.enabled]
    if not targets:
        raise no_connection_error()
    require_database_file()
    outcomes: list[ConnectionOutcome] = []
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
            outcomes.append(sync_one(conn, full=full, progress=on_progress, redis_url=settings.broker_url))
    _summary([o.report for o in outcomes if o.report is not None])
    if json_path is not None:
        document = {"connections": {o.name: o.to_dict() for o in outcomes}}
        write_json_text(json_path, json.dumps(document, indent=2))
    for outcome in outcomes:
        line = f"{outcome.name}: {outcome.records} records, {outcome.api_calls} API calls, "
        console.print(line + (f"FAILED: {outcome.error}" if outcome.error else "ok"), markup=False, highlight=False)
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        names = "; ".join(f"{o.name} ({o.error})" for o in failed)
        raise LeadscoreError(f"sync failed for {len(failed)} of {len(outcomes)} connection(s): {names}")


@dataclass
class ConnectionOutcome:
    """What ``leadscore sync`` did for one connection: its report, or the error that stopped it."""

    name: str
    report: SyncReport | None = None
    error: str | None = None

    @property
    def records(self) -> int:
        return self.report.records if self.report is not None else 0

    @property
    def api_calls(self) -> int:
        return self.report.api_calls if self.report is not None else 0

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "api_calls": self.api_calls, "error": self.error}


def sync_one(conn: ConnectionConfig, *, full: bool, progress: ProgressCallback | None,
             redis_url: str | None) -> ConnectionOutcome:
    """Sync one connection under its lock (the one the Celery task takes); never raises for a
    failure of this connection: the failure is recorded on ``sync_run`` and returned."""
    from connectors.errors import CRMError
    from connectors.sync import secrets_or_record, sync_connection
    from worker.locks import LockBusy, exclusive

    try:
        with exclusive(f"sync:{conn.name}", redis_url=redis_url):
            # An unset secret is recorded on the streams (status shows it), as a refused login is.
            secrets = secrets_or_record(get_engine(), conn, full=full)
            report = sync_connection(get_engine(), conn, secrets, full=full, progress=progress)
    except LockBusy as exc:
        return ConnectionOutcome(conn.name, error=f"{exc} (held by {exc.holder})")
    except (CRMError, OSError) as exc:
        attached = getattr(exc, "report", None)
        message = str(exc) if isinstance(exc, CRMError) else f"{exc.__class__.__name__}: {exc}"
        return ConnectionOutcome(conn.name, report=attached, error=message)
    except ConfigError as exc:
        return ConnectionOutcome(conn.name, report=getattr(exc, "report", None), error=str(exc))
    failed = report.status != SyncStatus.succeeded
    return ConnectionOutcome(conn.name, report=report, error=f"{report.status}: {report.error}" if failed else None)


def skipped_lines(report: SyncReport) -> list[str]:
    """Per stream, the records read but not stored and why (a Task that is no engagement, an Event
    without Type): a stream that keeps none of what it reads says so, rather than showing only
    its record count. Streams whose skips are all routine (``ROUTINE_SKIPS``) print nothing."""
    from connectors.base import ROUTINE_SKIPS

    lines = []
    for name, stream in report.streams.items():
        skipped = sum(stream.skipped_by_reason.values())
        notable = [(reason, n) for reason, n in stream.skipped_by_reason.most_common() if reason not in ROUTINE_SKIPS]
        if not notable:
            continue  # only the CRM's normal course (members that never responded): in --json only
        why = "; ".join(f"{reason}: {n}" for reason, n in notable)
        if len(notable) < len(stream.skipped_by_reason):
            why += "; and routine skips (see --json)"
        if skipped == stream.records:
            lines.append(f"{report.connection} {name}: none of the {stream.records} records read was stored as "
                         f"an activity ({why}; docs/sync.md, Streams)")
        else:
            lines.append(f"{report.connection} {name}: {skipped} of {stream.records} records read were not "
                         f"stored as activities ({why})")
    return lines


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
        # The calls no stream made (logging in, reading the CRM's clock, the account look-ups the
        # line below counts): shown, so the rows add up to the total.
        other = report.api_calls - sum(stream.api_calls for stream in report.streams.values())
        if other > 0:
            table.add_row(report.connection, "other calls", "", "", "", "", str(other), "login, clock, accounts")
        table.add_row(report.connection, "total", str(report.records), "", "", "",
                      str(report.api_calls), f"{report.status} in {report.duration_seconds:.1f}s")
    console.print(table)
    for report in reports:
        assert isinstance(report, SyncReport)
        for line in skipped_lines(report):
            console.print(line, markup=False, highlight=False)
        accounts = report.accounts or {}
        if accounts.get("error"):
            console.print(f"{report.connection}: account look-up stopped: {accounts['error']}", markup=False,
                          highlight=False)
        elif accounts.get("checked"):
            methods = ", ".join(f"{n} by {how}" for how, n in sorted((accounts.get("by_method") or {}).items()))
            console.print(f"{report.connection}: accounts: {accounts['checked']} leads looked up, "
                          f"{accounts['linked']} placed at {accounts['accounts']} accounts ({methods}), "
                          f"{accounts['unmatched']} without one, {accounts['api_calls']} API calls in "
                          f"{float(accounts.get('seconds') or 0):.1f}s",
                          markup=False, highlight=False)
    if reasons:
        quarantine = Table(title="quarantined by reason")
        quarantine.add_column("reason")
        quarantine.add_column("records", justify="right")
        for reason, count in sorted(reasons.items()):
            quarantine.add_row(reason, str(count))
        console.print(quarantine)
