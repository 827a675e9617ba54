"""``leadscore config check [--connect]``: the YAML configuration revops edit."""

from __future__ import annotations

import typer

from config.app_config import load_config
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
    connect: bool = typer.Option(False, "--connect", help="Also try to connect to the database and the broker."),
) -> None:
    """Validate the settings and the YAML config file (cron, URLs, files it names); print what is configured."""
    from connectors.base import SECRET_NAMES
    from connectors.registry import credentials_problem  # the CRM clients: only for this command

    settings = get_settings()
    config = load_config(settings.config_file)
    # A connection that cannot log in fails every sync: say so now (in this process's environment,
    # which should be the workers').
    problems = [p for c in config.connections if c.enabled and (p := credentials_problem(c)) is not None]
    if connect:
        problems += connect_problems(settings.effective_database_url, settings.broker_url)
    if problems:
        raise LeadscoreError("; ".join(problems))
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
    if connect:
        database = ("SQLite file not created yet (leadscore db upgrade creates it)"
                    if sqlite_file_missing(settings.effective_database_url) else "database answered")
        broker = "no broker configured" if settings.eager else "broker answered"
        console.print(f"connect: {database}; {broker}")
