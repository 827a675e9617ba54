"""``leadscore writeback`` (drain the outbox now) and ``leadscore crm setup`` (fields + routing check).

Mounted by ``worker/cli/main.py``: ``writeback`` and ``route`` at the top level, ``crm`` as a group.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from config.app_config import ConnectionConfig, load_config
from config.errors import LeadscoreError
from config.settings import get_settings
from store.db import get_engine, unit_of_work
from store.models import ActionStatus, Connection, RoutingAction
from worker.cli.console import cli_console
from worker.cli.jsonout import json_target, write_json_text
from worker.cli.stored import no_connection_error, require_database_file

# Refusals that mean a score field or property is missing in the CRM (Salesforce, HubSpot).
MISSING_FIELD_REASONS = frozenset({"INVALID_FIELD", "PROPERTY_DOESNT_EXIST"})

# Heavy imports stay inside the commands that use them (scoring: CatBoost, pandas, scikit-learn;
# connectors: the CRM clients; web: FastAPI and uvicorn; crmsim; the demo): seconds that
# `leadscore --help` and every other command would otherwise wait for.
app = typer.Typer(add_completion=False)
crm_app = typer.Typer(help="CRM-side set-up: score fields, properties, routing check.", no_args_is_help=True)
app.add_typer(crm_app, name="crm")
console = cli_console()
err = cli_console(stderr=True)  # progress goes to stderr: stdout keeps the summary


def _runtime() -> tuple[Any, Any]:
    settings = get_settings()
    config = load_config(settings.config_file)
    if not config.connections:
        raise no_connection_error()
    require_database_file()
    return settings, config


def _secrets(config: Any, only: str | None) -> Mapping[str, Any]:
    from connectors.base import EnvSecrets

    # Read per connection when used: one connection's unset variable stops that one only.
    return EnvSecrets([config.connection(only)] if only else [c for c in config.connections if c.enabled])


def _write_json(path: str, data: Any) -> None:
    write_json_text(path, json.dumps(data, indent=2))


def writeback_json(report: Any, names: list[str]) -> dict[str, Any]:
    """``{"connections": {NAME: {"written", "failed", "api_calls", ...}}}`` for every connection run."""
    out: dict[str, Any] = {}
    for name in names:
        entry = report.connections.get(name)
        out[name] = {
            "written": entry.records_written if entry else 0,
            "failed": entry.failed if entry else 0,
            "api_calls": entry.api_calls if entry else 0,
            "unchanged": entry.unchanged_skipped if entry else 0,
            "superseded": entry.superseded if entry else 0,
            "cancelled": entry.cancelled if entry else 0,
            "retry_later": entry.retried_records if entry else 0,
            # Routing actions (owner/field changes) that rode in the score writes' records.
            "routed": sum(entry.routing.done.values()) if entry else 0,
            "pending_left": entry.pending_left if entry else 0,
            "failed_by_reason": dict(entry.failed_by_reason) if entry else {},
            "error": entry.error if entry else None,
            "accounts_written": accounts.records_written if (accounts := report.accounts.get(name)) else 0,
            "accounts_failed": accounts.failed if accounts else 0,
            "account_api_calls": accounts.api_calls if accounts else 0,
        }
    return {"connections": out}


def _reason_needs_retry(reason: str | None, retry_failed: bool) -> None:
    if reason is not None and not retry_failed:
        raise typer.BadParameter("--reason goes with --retry-failed", param_hint="--reason")


def _requeue(engine: Any, what: str, reason: str | None, requeue: Callable[[Any], Mapping[str, int]]) -> None:
    """``--retry-failed``: what the CRM refused for good back in the queue (``requeue(session)``:
    counts by connection), said in one line."""
    with unit_of_work(engine) as session:
        requeued = requeue(session)
    which = f" refused for {reason}" if reason else ""
    if requeued:
        console.print(f"requeued {sum(requeued.values())} failed {what}{which}: "
                      + ", ".join(f"{name} {n}" for name, n in sorted(requeued.items())), highlight=False)
    else:
        console.print(f"no failed {what}{which} to requeue", highlight=False)


@app.command("writeback")
def writeback(
    connection: Annotated[str | None, typer.Option("--connection", "-c", help="only this connection")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="at most this many outbox rows")] = None,
    json_path: Annotated[str | None, typer.Option(
        "--json", callback=json_target,
        help='write {"connections": {NAME: {"written", "failed", "api_calls", ...}}} here')] = None,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="first put the writes the CRM refused for good back in the queue (after fixing "
        "the cause, e.g. `leadscore crm setup` for a missing field)")] = False,
    reason: Annotated[str | None, typer.Option(
        "--reason", help="with --retry-failed: only the writes refused for this reason (e.g. PROPERTY_DOESNT_EXIST)")
    ] = None,
) -> None:
    """Send pending score (and account) writes to the CRMs now (1,000 per Salesforce call, 100 per HubSpot call)."""
    from connectors.errors import unexpected_failures
    from connectors.writeback import drain_outbox, requeue_failed

    _reason_needs_retry(reason, retry_failed)
    _, config = _runtime()
    secrets = _secrets(config, connection)
    engine = get_engine()
    if retry_failed:
        _requeue(engine, "writes", reason,
                 lambda session: requeue_failed(session, connection=connection, reason=reason))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"write-back · {name}", total=total)
            progress.update(tasks[name], completed=min(done, total), total=max(total, done))

        report = drain_outbox(engine, config, secrets, connection=connection, limit=limit, progress=on_progress)
    table = Table(title="write-back")
    for column in ("connection", "written", "unchanged", "superseded", "cancelled", "retry later", "failed",
                   "API calls", "of which retries", "still pending"):
        table.add_column(column, justify="left" if column == "connection" else "right")
    rows = [(f"{e.connection} ({e.kind})", e) for e in report.connections.values()]
    rows += [(f"{e.connection} ({e.kind}) accounts", e) for e in report.accounts.values()]
    for label, entry in rows:
        table.add_row(label, str(entry.records_written), str(entry.unchanged_skipped),
                      str(entry.superseded), str(entry.cancelled), str(entry.retried_records), str(entry.failed),
                      _calls(entry.calls_recorded, entry.api_calls, "writes"), str(entry.retry_calls),
                      str(entry.pending_left))
    if rows:
        console.print(table)
    else:
        console.print("nothing to write: the outbox has no due rows")
    for reason, count in report.failed_by_reason().items():
        console.print(f"  failed: {count} × {reason}")
        if reason in MISSING_FIELD_REASONS:  # the CRM lacks leadscore's fields: a set-up step, not data
            console.print(f"    the CRM has no such field or property (or leadscore's user cannot see it): run "
                          f"`leadscore crm setup`, then "
                          f"`leadscore writeback --retry-failed --reason {reason}`", highlight=False)
    for entry in report.connections.values():
        routed = ", ".join(f"{n} {kind}" for kind, n in sorted(entry.routing.done.items()))
        if routed:
            console.print(f"  {entry.connection}: routing actions written with the scores: {routed}")
    if json_path:
        _write_json(json_path, writeback_json(report, list(secrets)))
    if report.errors:
        raise LeadscoreError("write-back stopped for " + "; ".join(report.errors) + " (rows stay pending)")
    if to_fix := unexpected_failures(report.failed_by_reason()):
        raise LeadscoreError(_refused_line("writes", to_fix, "leadscore writeback --retry-failed"))


def _refused_line(what: str, to_fix: Mapping[str, int], retry: str) -> str:
    """The exit-1 line of a run the CRM refused for a cause to fix (not the org's normal refusals)."""
    return (f"the CRM refused {sum(to_fix.values()):,} {what} for a cause to fix ("
            + ", ".join(f"{n:,} × {reason}" for reason, n in sorted(to_fix.items()))
            + f"): see the lines above, then `{retry}`")


def _pending_by_connection(engine: Any) -> dict[str, set[int]]:
    """Ids of the routing actions a run would take up (pending or interrupted), by connection."""
    out: dict[str, set[int]] = {}
    with unit_of_work(engine) as session:
        for action_id, name in session.execute(
            select(RoutingAction.id, Connection.name).join(Connection, Connection.id == RoutingAction.connection_id)
            .where(RoutingAction.status.in_((ActionStatus.pending, ActionStatus.sending)))
        ).all():
            out.setdefault(name, set()).add(int(action_id))
    return out


def _calls(recorded: int, work: int, what: str = "actions") -> str:
    """A connection's calls as `leadscore status` counts them (the login and the look-ups
    included), with the share of the work itself (the routing actions, the writes) when it differs."""
    return str(recorded) if recorded == work else f"{recorded} ({work} for the {what})"


def _statuses(engine: Any, ids: set[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    ordered = sorted(ids)
    with unit_of_work(engine) as session:
        for start in range(0, len(ordered), 1000):
            chunk = ordered[start:start + 1000]
            for status, n in session.execute(
                select(RoutingAction.status, func.count()).where(RoutingAction.id.in_(chunk))
                .group_by(RoutingAction.status)
            ).all():
                out[status] = out.get(status, 0) + int(n)
    return out


@app.command("route")
def route(
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="at most this many actions")] = None,
    json_path: Annotated[str | None, typer.Option(
        "--json", callback=json_target,
        help='write {"connections": {NAME: {"executed", "failed", "api_calls", ...}}} here')] = None,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="first put the actions the CRM refused for good back in the queue (after fixing "
        "the cause, e.g. reactivating the rep who left)")] = False,
    reason: Annotated[str | None, typer.Option(
        "--reason", help="with --retry-failed: only the actions refused for this reason (e.g. inactive_owner)")
    ] = None,
) -> None:
    """Run pending routing and nurture actions now (each once per lead and tier change)."""
    from connectors.errors import expected_refusal, fixable, unexpected_failures
    from connectors.routing import execute_routing, requeue_failed_actions

    _reason_needs_retry(reason, retry_failed)
    _, config = _runtime()
    secrets = _secrets(config, None)
    engine = get_engine()
    if retry_failed:
        _requeue(engine, "routing actions", reason, lambda session: requeue_failed_actions(session, reason=reason))
    before = _pending_by_connection(engine)
    if limit is not None:
        # execute_routing takes the lowest ids first: the run covers these.
        keep = set(sorted(i for ids in before.values() for i in ids)[:limit])
        before = {name: ids & keep for name, ids in before.items() if ids & keep}
    stop = threading.Event()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as progress:
        bars = {name: progress.add_task(f"routing · {name}", total=len(ids)) for name, ids in before.items()}

        def watch() -> None:
            # The actions commit one by one (or batch by batch): reading their statuses from the
            # database shows progress without reaching into the routing code.
            while not stop.wait(0.5):
                for name, ids in before.items():
                    counts = _statuses(engine, ids)
                    progress.update(bars[name], completed=len(ids) - counts.get(ActionStatus.pending, 0)
                                    - counts.get(ActionStatus.sending, 0))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            report = execute_routing(engine, config, secrets, limit=limit)
        finally:
            stop.set()
            watcher.join()
        after = {name: _statuses(engine, ids) for name, ids in before.items()}
        for name, ids in before.items():
            progress.update(bars[name], completed=len(ids) - after[name].get(ActionStatus.pending, 0)
                            - after[name].get(ActionStatus.sending, 0))
    result: dict[str, Any] = {}
    for name in sorted(set(secrets) | set(before)):
        counts = after.get(name, {})
        result[name] = {
            "executed": counts.get(ActionStatus.done, 0), "failed": counts.get(ActionStatus.failed, 0),
            "api_calls": int(report.api_calls.get(name, 0)),
            # Login and rule look-ups included: what `leadscore status` counts for routing today.
            "api_calls_recorded": int(report.api_calls_recorded.get(name, 0)),
            "superseded": counts.get(ActionStatus.superseded, 0),
            "cancelled": counts.get(ActionStatus.cancelled, 0),  # the lead left "open" before the action ran
            "still_pending": counts.get(ActionStatus.pending, 0) + counts.get(ActionStatus.sending, 0),
        }
    table = Table(title="routing")
    for column in ("connection", "executed", "failed", "superseded", "cancelled", "still pending", "API calls"):
        table.add_column(column, justify="left" if column == "connection" else "right")
    for name, row in result.items():
        table.add_row(name, str(row["executed"]), str(row["failed"]), str(row["superseded"]), str(row["cancelled"]),
                      str(row["still_pending"]), _calls(row["api_calls_recorded"], row["api_calls"]))
    if before:
        console.print(table)
        done = ", ".join(f"{n} {kind}" for kind, n in sorted(report.done.items()))
        if done:
            console.print(f"  done: {done}")
        for why, count in sorted(report.failed.items()):
            # With the word `status` groups it under (inactive_owner), when it is an expected refusal.
            meaning = expected_refusal(why)
            console.print(f"  failed: {count} × {why}" + (f" ({meaning})" if meaning else ""), highlight=False)
        # Refused for good: never retried on their own. Once the cause is fixed in the CRM (a rep
        # reactivated, a queue made to take Leads), the actions can go again; a converted, merged
        # or deleted lead's cannot.
        if retriable := sorted(expected_refusal(why) or why for why in report.failed if fixable(why)):
            console.print(f"    refused actions are not retried: once the cause is fixed in the CRM, "
                          f"`leadscore route --retry-failed --reason {retriable[0]}` sends them again",
                          highlight=False)
        if report.owner_kept:
            console.print(f"  {report.owner_kept} owner assignment{'s' if report.owner_kept != 1 else ''} cancelled: "
                          "a rep owns the lead and the rule says `overwrite: false`", highlight=False)
        if report.waiting:
            console.print(f"  {report.waiting} task(s) wait for their lead's owner assignment (still being "
                          "written): the next run creates them for the new owner")
        if report.awaiting_write:
            # Still pending, and not for an error (a trial read "still pending 65" with exit 0 as one).
            console.print(f"  {report.awaiting_write} workflow enrollment(s) wait for their tier write to reach the "
                          "CRM (the workflow enrolls on that property): `leadscore writeback` (or the workers) sends "
                          "it, and the next run marks them done", highlight=False)
        if report.riding:
            console.print(f"  {report.riding} action(s) held right now by the write-back drain (riding along its score "
                          "write) or another routing run: that run completes them",
                          highlight=False)
        if report.retry_later:
            console.print(f"  {report.retry_later} action(s) to retry on the next run: the CRM asked to wait or gave "
                          "no answer (rate limits, locked records)", highlight=False)
    else:
        console.print("nothing to route: no pending routing actions")
    if json_path:
        _write_json(json_path, {"connections": result})
    if report.errors:
        raise LeadscoreError("routing stopped for " + "; ".join(report.errors) + " (the actions stay pending)")
    if to_fix := unexpected_failures(report.failed):
        raise LeadscoreError(_refused_line("routing actions", to_fix, "leadscore route --retry-failed"))


@crm_app.command("setup")
def setup(
    connection: Annotated[str | None, typer.Option("--connection", "-c", help="only this connection")] = None,
    salesforce_metadata: Annotated[Path | None, typer.Option(
        "--salesforce-metadata", metavar="DIR",
        help="write the Salesforce custom fields and a permission set as DX source into DIR (for "
             "`sf project deploy start`) instead of checking the CRMs")] = None,
) -> None:
    """Check (Salesforce) or create (HubSpot) the score fields, and validate routing against the CRM."""
    from connectors.setup import admin_instructions, crm_setup

    if salesforce_metadata is not None:
        _write_metadata(load_config(get_settings().config_file), salesforce_metadata, connection)
        return
    _, config = _runtime()
    engine, unrecorded = usage_store()
    results = crm_setup(config, dict(_secrets(config, connection)), connection=connection,  # every one read first
                        engine=engine)
    for result in results:
        for line in admin_instructions(result):
            console.print(line, highlight=False, soft_wrap=True)
        for name in result.created:
            console.print(f"{result.connection}: created property {name}")
        console.print(result.summary(), highlight=False)
    if unrecorded:
        console.print(f"its {sum(r.api_calls for r in results)} API calls are not recorded: {unrecorded}",
                      highlight=False, soft_wrap=True)
    blocked = [r for r in results if not r.ok]
    if blocked:
        raise LeadscoreError("crm setup incomplete: " + "; ".join(r.summary() for r in blocked))


def usage_store() -> tuple[Any, str | None]:
    """The store's engine, where ``crm setup`` records its API calls, or why there is none (the
    line `leadscore status` would refuse with): setup itself needs no store (it may run before
    `leadscore db upgrade` on PostgreSQL)."""
    from worker.cli.ops import require_schema

    engine = get_engine()
    try:
        require_schema(engine)
    except LeadscoreError as exc:
        return None, str(exc)
    return engine, None


def _write_metadata(config: Any, out_dir: Path, connection: str | None) -> None:
    """Write the DX project (no CRM is contacted: an admin reviews and deploys it)."""
    from connectors.registry import crm_for  # inside: the connectors cost every other command seconds

    if connection is not None:
        conn = config.connection(connection)
        if crm_for(conn).admin_metadata is None:
            raise LeadscoreError(f"connection {connection!r} is a {conn.kind} connection; "
                                 "--salesforce-metadata needs a Salesforce one")
    else:
        sf = [c for c in config.connections if crm_for(c).admin_metadata is not None]
        if len(sf) > 1:
            names = ", ".join(c.name for c in sf)
            raise LeadscoreError(f"several Salesforce connections ({names}): choose one with --connection")
        # Without a configured org the default field names are written (what a new install uses).
        conn = sf[0] if sf else ConnectionConfig(name="salesforce", kind="salesforce",
                                                 instance_url="https://example.my.salesforce.com")
    write = crm_for(conn).admin_metadata
    assert write is not None
    try:
        files = write(conn, out_dir)
    except OSError as exc:
        raise LeadscoreError(f"cannot write the metadata to {out_dir}: {exc.strerror or exc}") from exc
    fields = sum(1 for f in files if f.name.endswith(".field-meta.xml"))
    console.print(f"wrote {fields} custom fields and the permission set Leadscore_Integration for "
                  f"{conn.name} to {out_dir}", highlight=False, soft_wrap=True)
    console.print(f"deploy with: sf project deploy start --source-dir {out_dir / 'force-app'} --target-org ORG",
                  highlight=False, markup=False, soft_wrap=True)
    console.print("then assign the permission set to the integration user: "
                  "sf org assign permset --name Leadscore_Integration --on-behalf-of USER", highlight=False,
                  soft_wrap=True, markup=False)
