"""``leadscore web``: serve the revops console (mounted at the top level by ``worker/cli/main.py``)."""

from __future__ import annotations

import ipaddress
import logging
import sys

import typer
from sqlalchemy.exc import SQLAlchemyError

from config.errors import ConfigError, LeadscoreError
from config.settings import get_settings
from worker.cli.ports import check_port

# Heavy imports stay inside the commands that use them (scoring: CatBoost, pandas, scikit-learn;
# connectors: the CRM clients; web: FastAPI and uvicorn; crmsim; the demo): seconds that
# `leadscore --help` and every other command would otherwise wait for.
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
log = logging.getLogger("leadscore.web")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("web")
def web_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless told otherwise)."),
    port: int = typer.Option(8088, "--port", min=1, max=65535, help="TCP port."),
    forwarded_allow_ips: str | None = typer.Option(
        None, "--forwarded-allow-ips", metavar="IPS",
        help="Trust X-Forwarded-For/-Proto from these proxy addresses (comma-separated) behind a reverse proxy.",
    ),
    hash_password: bool = typer.Option(
        False, "--hash-password", help="Read a password on stdin, print its hashed form for LEADSCORE_WEB_AUTH, exit.",
    ),
) -> None:
    """Serve the revops console (tiers with live preview, model, monitor, leads, sync) and its JSON API.

    Users come from LEADSCORE_WEB_AUTH ("alice:password:editor,bob:password:viewer"; a password may
    be given hashed, see --hash-password). The console refuses to start without users.
    """
    from web.auth import Authenticator
    from web.auth import hash_password as make_hash

    if hash_password:
        if sys.stdin.isatty():
            password = typer.prompt("password", hide_input=True, confirmation_prompt=True, err=True)
        else:  # piped: one line, no prompt, nothing echoed
            password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise typer.BadParameter("an empty password cannot be hashed", param_hint="stdin")
        typer.echo(make_hash(password))
        return
    auth = Authenticator.from_environment()  # no users: refused before anything else
    from worker.cli.stored import choose_database

    choose_database()  # after `leadscore demo`, the demo's data (as the inspection commands)
    import uvicorn

    from web.app import create_app

    _check_database()
    check_port(host, port)
    application = create_app(auth)
    if not _loopback(host):
        log.warning("the console listens on %s: put it behind a TLS reverse proxy (docs/operations.md)", host)
    typer.echo(f"leadscore console on http://{host}:{port}/ ({len(auth.users)} users; Ctrl-C stops it)")
    uvicorn.run(
        application, host=host, port=port, log_level="info", access_log=True, server_header=False,
        proxy_headers=forwarded_allow_ips is not None, forwarded_allow_ips=forwarded_allow_ips,
    )


def _check_database() -> None:
    """Fail at start (one line) rather than on the first page when the database is unusable."""
    from store.migrate import schema_problem
    from worker.cli.db import redact
    from worker.cli.stored import sqlite_file_missing

    url = get_settings().effective_database_url
    if sqlite_file_missing(url):
        # Connecting would create an empty file where `leadscore db upgrade` (or the demo's
        # LEADSCORE_DATABASE_URL, docs/console.md) belongs.
        raise ConfigError(f"the database {redact(url)} does not exist yet (run: leadscore db upgrade, or set "
                          "LEADSCORE_DATABASE_URL to the store to show)")
    try:
        problem = schema_problem(url)
    except SQLAlchemyError as exc:
        raise LeadscoreError(
            f"the database does not answer: {type(exc).__name__} (check LEADSCORE_DATABASE_URL)") from exc
    if problem is not None:
        raise ConfigError(f"{redact(url)}: {problem}")
