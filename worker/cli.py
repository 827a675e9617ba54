"""The ``leadscore`` command line.

Exit codes: 0 success, 1 a failure the user must act on (one line, no traceback), 2 bad usage.
Each area keeps its commands beside its code (``connectors/cli.py``, ``scoring/cli.py``,
``crmsim/cli.py``, ...); this module assembles them and owns the error handling.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from config.errors import LeadscoreError

# Plain text only: names and messages come from users and CRMs ("[/]" is a valid connection name).
console = Console(markup=False)

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

db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the configured database (SQLite under ./var/ by default) to the latest schema."""
    from config.settings import get_settings
    from store.migrate import current_revision, upgrade

    url = get_settings().effective_database_url
    upgrade(url, revision)
    console.print(f"database at revision {current_revision(url)} ({_redact(url)})")


@db_app.command("current")
def db_current() -> None:
    """Print the database's schema revision."""
    from config.settings import get_settings
    from store.migrate import current_revision

    url = get_settings().effective_database_url
    console.print(current_revision(url) or "empty (run: leadscore db upgrade)")


config_app = typer.Typer(help="The YAML configuration revops edit.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("check")
def config_check(
    connect: bool = typer.Option(False, "--connect", help="Also try to connect to the database and the broker."),
) -> None:
    """Validate the settings and the YAML config file (cron, URLs, files it names); print what is configured."""
    from config.app_config import load_config
    from config.settings import get_settings
    from worker.ops_cli import connect_problems

    settings = get_settings()
    config = load_config(settings.config_file)
    if connect:
        problems = connect_problems(settings.effective_database_url, settings.broker_url)
        if problems:
            raise LeadscoreError("; ".join(problems))
    source = settings.config_file or "built-in defaults (no LEADSCORE_CONFIG_FILE)"
    console.print(f"config: {source}")
    for conn in config.connections:
        console.print(f"  connection {conn.name} ({conn.kind}){'' if conn.enabled else ' disabled'}")
    console.print(f"  tiers: {config.tiers.mode} {config.tiers.thresholds}")
    console.print(f"  routing rules: {len(config.routing)}")
    console.print(f"database: {_redact(settings.effective_database_url)}")
    console.print(f"tasks: {'in process' if settings.eager else _redact(settings.broker_url or '')}")
    if connect:
        from worker.ops_cli import sqlite_file_missing

        database = ("SQLite file not created yet (leadscore db upgrade creates it)"
                    if sqlite_file_missing(settings.effective_database_url) else "database answered")
        broker = "no broker configured" if settings.eager else "broker answered"
        console.print(f"connect: {database}; {broker}")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# Commands that live beside their code. A module that is not importable yet (work in progress)
# is reported as "not built yet" rather than breaking the whole CLI.
_SUBMODULES: list[tuple[str, str | None, str]] = [
    # (module, group name or None to merge at top level, help)
    ("crmsim.cli", "crmsim", "The CRM simulator (Salesforce + HubSpot APIs with a simulated funnel)."),
    ("connectors.cli", None, "sync"),
    ("connectors.writeback_cli", None, "writeback, crm setup"),
    ("scoring.cli", None, "train, score, explain, tiers, evaluate"),
    ("scoring.monitor_cli", None, "report, models, monitor"),
    ("worker.ops_cli", None, "demo, worker, beat, flower, status"),
    ("web.cli", None, "web"),
]
_PLANNED: dict[str, str] = {
    "demo": "run the whole loop on the embedded default",
    "sync": "incremental sync now",
    "train": "train and register a model version",
    "score": "score leads whose inputs changed (or all)",
    "writeback": "drain the outbox to the CRMs",
    "evaluate": "offline comparison of the model families on a CSV",
    "tiers": "read, change and preview tier thresholds",
    "explain": "a lead's score, tier and reasons",
    "report": "model health report",
    "crmsim": "the CRM simulator",
}


def _mount(module_name: str, group: str | None, help_text: str) -> list[str]:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return []
        raise
    sub: typer.Typer = module.app
    if group is not None:
        app.add_typer(sub, name=group, help=help_text)
        return [group]
    names: list[str] = []
    for command in sub.registered_commands:
        app.registered_commands.append(command)
        names.append(command.name or (command.callback.__name__ if command.callback else ""))
    for grp in sub.registered_groups:
        app.registered_groups.append(grp)
        names.append(grp.name or "")
    return names


def _not_built(name: str, what: str) -> None:
    def _command(ctx: typer.Context) -> None:
        raise LeadscoreError(f"'leadscore {name}' ({what}) is not built yet")

    app.command(name, help=f"[not built yet] {what}", context_settings={
        "allow_extra_args": True, "ignore_unknown_options": True})(_command)


def _assemble() -> None:
    mounted: set[str] = set()
    for module_name, group, help_text in _SUBMODULES:
        mounted.update(_mount(module_name, group, help_text))
    for name, what in _PLANNED.items():
        if name not in mounted:
            _not_built(name, what)





# ------------------------------------------------------------------------------ error handling


def _inspecting(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` preceded by :func:`_choose_database` (after its arguments were parsed, so
    bad usage is still reported as such)."""

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _choose_database()
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


def _choose_database() -> None:
    """Point a command on stored data at the data there is, or say in one line that there is none.

    Without ``LEADSCORE_DATABASE_URL`` the embedded database is ``var/leadscore.db``. When it does
    not exist but a demo ran here, the demo's database is read (and a note says so). When neither
    exists, nothing is created: such a command must not leave an empty database behind (it
    would then hide the demo's data from every later command).
    """
    if os.environ.get("LEADSCORE_DATABASE_URL"):
        return
    from config.settings import get_settings

    var_dir = get_settings().var_dir
    own = var_dir / "leadscore.db"
    if own.exists():
        return
    demo = var_dir / "demo" / "leadscore.db"
    if not demo.exists():
        raise LeadscoreError(f"no leadscore database at {own} and no demo data in {demo.parent}: run "
                             "`leadscore demo`, or `leadscore db upgrade` and the quick start's first load "
                             "(or set LEADSCORE_DATABASE_URL)")
    os.environ["LEADSCORE_DATABASE_URL"] = f"sqlite:///{demo.resolve().as_posix()}"
    _reset_settings()
    print(f"note: reading the demo's data in {demo} (there is no {own}; LEADSCORE_DATABASE_URL chooses "
          "another database)", file=sys.stderr)


def _reset_settings() -> None:
    from worker.runtime import reset_runtime

    reset_runtime()


def _schema_missing(exc: BaseException) -> bool:
    """A database without leadscore's tables (SQLite "no such table", PostgreSQL UndefinedTable)."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    if not isinstance(exc, OperationalError | ProgrammingError):
        return False
    text = str(exc.orig) if exc.orig is not None else str(exc)
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def _log_path() -> Path:
    """Where unexpected errors are logged: ``<var dir>/log/leadscore-cli.log``."""
    try:
        from config.settings import get_settings

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


_assemble()
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
        if _schema_missing(exc):
            _fail("the database has no leadscore schema yet (run: leadscore db upgrade)", 1)
        detail = _log_unexpected(args, exc)
        _fail(f"unexpected {type(exc).__name__}: {_one_line(str(exc))[:300]} ({detail})", 1)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
