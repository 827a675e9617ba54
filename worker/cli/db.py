"""``leadscore db upgrade|current``: the database schema (Alembic)."""

from __future__ import annotations

import typer
from sqlalchemy.engine import make_url

from config.settings import get_settings
from worker.cli.console import cli_console

app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
# Plain text only: names and messages come from users and CRMs ("[/]" is a valid connection name).
console = cli_console()


@app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the configured database (SQLite under ./var/ by default) to the latest schema."""
    from store.migrate import current_revision, upgrade  # Alembic: only here, not on every command's start

    url = get_settings().effective_database_url
    upgrade(url, revision)
    console.print(f"database at revision {current_revision(url)} ({redact(url)})")


@app.command("current")
def db_current() -> None:
    """Print the database's schema revision."""
    from store.migrate import current_revision  # Alembic: only here, not on every command's start

    url = get_settings().effective_database_url
    console.print(current_revision(url) or "empty (run: leadscore db upgrade)")


def redact(url: str) -> str:
    """``url`` with its password shown as ``***``."""
    return make_url(url).render_as_string(hide_password=True)
