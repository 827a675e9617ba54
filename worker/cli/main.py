"""The ``leadscore`` command line: the root app, assembled from one module per command group in
``worker/cli/``, and the one place a failure becomes one line.

Exit codes: 0 success, 1 a failure the user must act on (one line, no traceback), 2 bad usage.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer
from sqlalchemy.exc import OperationalError, ProgrammingError

from config.errors import LeadscoreError
from config.settings import get_settings
from worker.cli import config, crmsim, db, monitor, ops, scoring, sync, web, writeback
from worker.cli.stored import choose_database

# The commands that look at what is stored, and those that change the model, scores or tiers
# from it. After `leadscore demo` they use the demo's database when this directory has no
# database of its own (the demo keeps to var/demo/); with neither, they say so in one line and
# create nothing (only `db upgrade` and `demo` create a database).
INSPECTION: frozenset[tuple[str, ...]] = frozenset({
    ("models", "list"), ("models", "show"), ("tiers", "show"), ("tiers", "preview"), ("explain",),
    ("report",), ("monitor",), ("status",),
})
ON_STORED_DATA: frozenset[tuple[str, ...]] = INSPECTION | frozenset({
    ("train",), ("score",), ("retrain",), ("tiers", "set"), ("models", "promote"), ("models", "rollback"),
    ("models", "shadow"),
})
LOG_NAME = "leadscore-cli.log"

app = typer.Typer(
    name="leadscore",
    help="Predictive lead scoring that lives inside the CRM. Add --debug to any command to see a "
    "failure's traceback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per command group; their commands are listed in `leadscore --help` in this order.
for _group in (sync, writeback, scoring, monitor, ops, web):
    for _command in _group.app.registered_commands:
        app.registered_commands.append(_command)
app.add_typer(db.app, name="db")
app.add_typer(config.app, name="config")
app.add_typer(crmsim.app, name="crmsim",
              help="The CRM simulator (Salesforce + HubSpot APIs with a simulated funnel).")
for _group in (writeback, scoring, monitor):
    for _sub in _group.app.registered_groups:
        app.registered_groups.append(_sub)


# ------------------------------------------------------------------------------ error handling


def _inspecting(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` preceded by :func:`choose_database` (after its arguments were parsed, so
    bad usage is still reported as such)."""

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        choose_database()
        return callback(*args, **kwargs)

    return wrapper


def _name(command: Any) -> str:
    if command.name:
        return str(command.name)
    return command.callback.__name__.replace("_", "-") if command.callback else ""


def _mark_inspection_commands() -> None:
    for command in app.registered_commands:
        if command.callback is not None and (_name(command),) in ON_STORED_DATA:
            command.callback = _inspecting(command.callback)
    for group in app.registered_groups:
        sub = group.typer_instance
        if sub is None:
            continue
        for command in sub.registered_commands:
            if command.callback is not None and (group.name or "", _name(command)) in ON_STORED_DATA:
                command.callback = _inspecting(command.callback)


def _schema_missing(exc: BaseException) -> bool:
    """A database without some of leadscore's tables or columns (SQLite "no such table/column",
    PostgreSQL UndefinedTable/UndefinedColumn): no schema yet, or an older one."""
    if not isinstance(exc, OperationalError | ProgrammingError):
        return False
    text = str(exc.orig) if exc.orig is not None else str(exc)
    return ("no such table" in text or "no such column" in text
            or (("relation" in text or "column" in text) and "does not exist" in text))


def _schema_message() -> str | None:
    """Why the configured database's schema does not fit (:func:`store.migrate.schema_problem`);
    None when it is at the newest revision (then a missing table is not the schema's fault)."""
    from store.migrate import schema_problem  # Alembic: only on this path, not on every command's start

    try:
        return schema_problem(get_settings().effective_database_url)
    except Exception:  # noqa: BLE001 - the database stopped answering meanwhile: say what is known
        return "the database's schema does not match this leadscore (run: leadscore db upgrade)"


def _log_path() -> Path:
    """Where unexpected errors are logged: ``<var dir>/log/leadscore-cli.log``."""
    try:
        var_dir = get_settings().var_dir
    except LeadscoreError:
        var_dir = Path(os.environ.get("LEADSCORE_VAR_DIR") or "var")
    return var_dir / "log" / LOG_NAME


def _log_unexpected(args: list[str], exc: BaseException) -> str:
    """Append the traceback to the CLI log; returns where it went (or why it could not be written)."""
    path = _log_path()
    text = "".join(traceback.format_exception(exc))
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"--- {stamp} leadscore {' '.join(args)}\n{text}\n")
    except OSError as os_exc:
        return f"the log {path} could not be written ({os_exc.strerror}); --debug shows the traceback"
    return f"details in {path}; --debug shows the traceback"


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _fail(message: str, code: int) -> NoReturn:
    # Plain write, not rich: a message naming "[/]" or "[red]" is printed as it is.
    sys.stdout.flush()
    print(f"error: {_one_line(message)}", file=sys.stderr)
    sys.exit(code)


def _take_debug(args: list[str]) -> tuple[bool, list[str]]:
    """``--debug`` anywhere before ``--`` (so ``leadscore tiers show --debug`` works too)."""
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end] or os.environ.get("LEADSCORE_DEBUG", "") not in ("", "0")
    return debug, [a for i, a in enumerate(args) if not (a == "--debug" and i < end)]


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of a failure (also LEADSCORE_DEBUG=1)."),
) -> None:
    """Predictive lead scoring that lives inside the CRM."""
    # --debug is taken out of the arguments by main() wherever it is given; this option documents it.


_mark_inspection_commands()


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the ``leadscore`` console script.

    Exit codes: 0 success; 1 a failure (one line ``error: ...``; an unexpected one also goes to the
    log file with its traceback); 2 bad usage. ``--debug`` prints the traceback as well.
    """
    debug, args = _take_debug(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    command = typer.main.get_command(app)
    try:
        # Not standalone: typer would print usage errors in a multi-line box and let every other
        # exception through as a traceback; each outcome is mapped to one line here instead.
        result = command.main(args=args, prog_name="leadscore", standalone_mode=False)
    except typer.Abort:
        _fail("aborted", 1)
    except LeadscoreError as exc:
        if debug:
            traceback.print_exc()
        _fail(str(exc), 1)
    except Exception as exc:  # noqa: BLE001 - the one place every failure becomes one line
        if debug:
            traceback.print_exc()
        kinds = {cls.__name__ for cls in type(exc).__mro__}
        ctx = getattr(exc, "ctx", None)
        if "NoArgsIsHelpError" in kinds:
            # A group given no command: its help (typer's rich help may print itself and return "").
            text = ctx.get_help() if ctx is not None else ""
            if text:
                print(text)
            sys.exit(2)
        if "UsageError" in kinds:
            where = ctx.command_path if ctx is not None else "leadscore"
            _fail(f"{exc.format_message()} (see: {where} --help)", 2)  # type: ignore[attr-defined]
        if "ClickException" in kinds:
            _fail(exc.format_message(), int(getattr(exc, "exit_code", 1)))  # type: ignore[attr-defined]
        if _schema_missing(exc) and (problem := _schema_message()):
            _fail(problem, 1)
        detail = _log_unexpected(args, exc)
        _fail(f"unexpected {type(exc).__name__}: {_one_line(str(exc))[:300]} ({detail})", 1)
    sys.exit(result if isinstance(result, int) else 0)

