"""``leadscore config check [--connect]``: the YAML configuration revops edit."""

from __future__ import annotations

import typer

from config.app_config import AppConfig, load_config
from config.checks import first_line
from config.errors import LeadscoreError
from config.settings import get_settings
from worker.cli.console import cli_console
from worker.cli.db import redact
from worker.cli.ops import connect_problems
from worker.cli.scoring import describe_tiers
from worker.cli.stored import sqlite_file_missing

app = typer.Typer(help="The YAML configuration revops edit.", no_args_is_help=True)
console = cli_console()


@app.command("check")
def config_check(
    connect: bool = typer.Option(
        False, "--connect", help="Also try the database, the broker and each CRM: its score fields and the names "
        "routing gives (queues, owners, campaigns, workflows), creating nothing."),
) -> None:
    """Validate the settings and the YAML config file (cron, URLs, files it names); print what is configured."""
    from connectors.base import SECRET_NAMES
    from connectors.registry import credentials_problem  # the CRM clients: only for this command
    from connectors.routing_validation import static_problems

    settings = get_settings()
    config = load_config(settings.config_file)
    # A connection that cannot log in fails every sync: say so now (in this process's environment,
    # which should be the workers').
    problems = [p for c in config.connections if c.enabled and (p := credentials_problem(c)) is not None]
    # An action no configured connection can run: wrong whatever the CRMs hold.
    problems += static_problems(config)
    checked: list[str] = []
    reached: list[str] = []  # the database and the broker, when both answered
    if connect:
        unreachable = connect_problems(settings.effective_database_url, settings.broker_url)
        if not unreachable:
            database = ("SQLite file not created yet (leadscore db upgrade creates it)"
                        if sqlite_file_missing(settings.effective_database_url) else "database answered")
            reached.append(f"connect: {database}; {'no broker configured' if settings.eager else 'broker answered'}")
        problems += unreachable
        if not problems:
            crm, checked = _crm_problems(config, settings.effective_database_url)
            problems += crm
    # What is configured, and what answered, first, failing or not (a failing check showed only the
    # CRMs' lines: not which file it read, nor that the database and the broker had answered); then
    # the one error line.
    source = settings.config_file or "built-in defaults (no LEADSCORE_CONFIG_FILE)"
    console.print(f"config: {source}")
    for conn in config.connections:
        secrets = [v for v in (getattr(conn, f"{name}_env", None) for name in SECRET_NAMES) if v]
        console.print(f"  connection {conn.name} ({conn.kind})"
                      + (f", credentials from {', '.join(secrets)} (set)" if conn.enabled and secrets else "")
                      + ("" if conn.enabled else " disabled"))
    # The YAML's tiers create the first policy only; revops change the active one (tiers set,
    # the console), which this file then no longer describes.
    console.print(f"  tiers: {describe_tiers(config.tiers.mode, dict(config.tiers.thresholds))} (the first "
                  "tier policy only; `leadscore tiers show` prints the active one)")
    console.print(f"  routing rules: {len(config.routing)}")
    console.print(f"database: {redact(settings.effective_database_url)}")
    console.print(f"tasks: {'in process' if settings.eager else redact(settings.broker_url or '')}")
    for line in reached + checked:
        console.print(line, highlight=False, soft_wrap=True)
    if problems:
        raise LeadscoreError("; ".join(problems))


def _crm_problems(config: AppConfig, database_url: str) -> tuple[list[str], list[str]]:
    """What ``crm setup`` checks, per enabled CRM, creating nothing: the score fields it writes, and
    the names routing gives (queues, owners, campaigns, workflows, fields) against what the CRM
    has. Every problem's line (a CRM that refuses the login or cannot be reached is one), and a
    line per connection that answered. The calls count against the day's budget (``setup`` in
    ``leadscore status``) when the store has its schema."""
    from connectors.base import EnvSecrets
    from connectors.errors import CRMError
    from connectors.setup import crm_setup

    engine = None
    if not sqlite_file_missing(database_url):  # connecting would create the file
        from worker.cli.writeback import usage_store

        engine, _ = usage_store()
    problems: list[str] = []
    checked: list[str] = []
    rules = len(config.routing)
    for conn in (c for c in config.connections if c.enabled):
        try:
            [result] = crm_setup(config, EnvSecrets([conn]), connection=conn.name, engine=engine, create=False)
        except CRMError as exc:
            problems.append(f"connection {conn.name}: {first_line(exc)}")
            continue
        if result.missing:
            problems.append(f"{conn.name}: {result.missing_fields()} (`leadscore crm setup` lists them)")
        problems += [f"{conn.name}: {p}" for p in result.problems]  # none static: checked before
        checked.append(f"crm {conn.name} ({conn.kind}): answered; {len(result.present)} score fields present, "
                       f"routing ({rules} rule{'s' if rules != 1 else ''}) checked against it; "
                       f"{result.api_calls} API calls")
        checked += [f"crm {conn.name}: warning: {w}" for w in result.warnings]
    return problems, checked
