"""Operations commands: ``demo``, ``worker``, ``beat``, ``flower``, ``status``."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import DBAPIError

from config.app_config import load_config
from config.checks import first_line, redact_url, weak_password
from config.errors import ConfigError, LeadscoreError
from config.settings import get_settings
from store.db import DatabaseUnreachable, engine_for, make_engine, unit_of_work
from store.models import (
    Connection,
    ModelStatus,
    ModelVersion,
    Outbox,
    OutboxStatus,
    SyncRun,
    SyncStatus,
)
from store.queries import lead_totals, quarantine_counts
from store.types import json_safe
from worker.cli.console import cli_console
from worker.cli.jsonout import json_target, write_json_text
from worker.cli.ports import check_port
from worker.cli.stored import sqlite_file_missing
from worker.lost import close_lost_runs
from worker.runtime import get_runtime
from worker.schedule import beat_entries

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

# Heavy imports stay inside the commands that use them (scoring: CatBoost, pandas, scikit-learn;
# connectors: the CRM clients; web: FastAPI and uvicorn; crmsim; the demo): seconds that
# `leadscore --help` and every other command would otherwise wait for.
app = typer.Typer()
console = cli_console()
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _celery(*args: str, env: dict[str, str] | None = None, needs_schema: bool = False) -> None:
    """Replace this process with ``celery -A worker.app ...`` (signals go straight to Celery).

    ``env`` adds variables to the new process's environment: secrets go there, never into argv
    (argv is world-readable in ``ps`` and /proc/PID/cmdline; the environment is not).
    ``needs_schema``: a worker or beat, whose tasks need the schema (:func:`refuse_older_schema`).
    """
    settings = get_settings()
    if settings.eager:
        raise ConfigError("environment: LEADSCORE_BROKER_URL is not set: workers, beat and Flower need "
                          "a broker (e.g. redis://127.0.0.1:6379/0)")
    validate_for_start()
    if needs_schema:
        refuse_older_schema()
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", *args]
    os.execve(sys.executable, argv, {**os.environ, **(env or {})})  # noqa: S606 - fixed argv, no shell


def validate_for_start() -> None:
    """What `config check` validates, before a worker, beat or Flower starts: a bad setting ends
    the start with the same one line instead of a traceback in Celery's start-up (or later)."""
    settings = get_settings()
    config = load_config(settings.config_file)
    beat_entries(config.schedules)


def connect_problems(database_url: str, broker_url: str | None) -> list[str]:
    """Try the database and the broker once each; one line per problem (empty: both answer).

    A SQLite file that does not exist yet is not created (nor counted as a problem)."""
    problems: list[str] = []
    if sqlite_file_missing(database_url):
        # Connecting would create an empty file (and hide the demo's data from inspection commands).
        pass
    else:
        problems.extend(_database_problems(database_url))
    if broker_url:
        from kombu import Connection
        from kombu.exceptions import OperationalError as KombuError

        try:
            with Connection(broker_url, connect_timeout=5) as broker:
                broker.ensure_connection(max_retries=1, timeout=5)
        except (KombuError, OSError) as exc:
            problems.append(f"broker unreachable: {redact_url(broker_url)}: {first_line(exc)}")
    return problems


def _database_problems(database_url: str) -> list[str]:
    problems: list[str] = []
    try:
        engine = make_engine(database_url)
        try:
            with engine.connect() as connection:
                connection.execute(text("select 1"))
        finally:
            engine.dispose()
    except LeadscoreError as exc:  # DatabaseUnreachable, or a SQLite folder that does not exist
        problems.append(str(exc))
    except DBAPIError as exc:
        problems.append(f"database unreachable: {redact_url(database_url)}: {first_line(exc.orig or exc)}")
    return problems


@app.command()
def worker(
    queues: str = typer.Option("minute,long", "--queues", "-Q",
                               help="Queues to consume (minute: sync/score/write-back; long: training/monitoring)."),
    concurrency: int = typer.Option(2, min=1, help="Worker processes."),
    name: str | None = typer.Option(None, "--name", "-n",
                                    help="Celery node name (default: the queues @ this host, e.g. minute@host)."),
    loglevel: str = typer.Option("info"),
) -> None:
    """Run a Celery worker (any number, on any number of machines)."""
    # Two workers on one host need two node names (Celery's default, celery@host, is the same for
    # both: Flower and `inspect` then see one worker).
    node = name or f"{queues.replace(',', '-').replace(' ', '')}@%h"
    _celery("worker", "-Q", queues, "--concurrency", str(concurrency), "-n", node, "-l", loglevel,
            needs_schema=True)


@app.command()
def beat(loglevel: str = typer.Option("info")) -> None:
    """Run the beat scheduler. Extra beats stay on standby: a Redis lock lets only one schedule."""
    schedule_file = get_settings().var_dir / "celerybeat-schedule"
    schedule_file.parent.mkdir(parents=True, exist_ok=True)
    _celery("beat", "-l", loglevel, "-s", str(schedule_file), needs_schema=True)


def flower_args(address: str, port: int, basic_auth: str | None, insecure_loopback: bool) -> list[str]:
    """Flower's arguments, refusing an unauthenticated dashboard except on loopback when asked.

    The credentials are checked here but never part of the arguments: see :func:`flower_env`.
    """
    if basic_auth is None:
        if not insecure_loopback:
            raise ConfigError("environment: LEADSCORE_FLOWER_BASIC_AUTH (or LEADSCORE_FLOWER_BASIC_AUTH_FILE) "
                              "is not set: Flower refuses to start without authentication (or pass "
                              "--insecure-loopback to bind 127.0.0.1 only)")
        if address not in LOOPBACK:
            raise ConfigError(f"--insecure-loopback binds loopback only, not {address!r}")
    elif ":" not in basic_auth or not basic_auth.split(":", 1)[1]:
        raise ConfigError("environment: LEADSCORE_FLOWER_BASIC_AUTH must be user:password")
    return ["flower", f"--address={address}", f"--port={port}"]


def flower_env(basic_auth: str | None) -> dict[str, str]:
    """The environment that gives Flower its credentials (Flower reads ``FLOWER_<OPTION>``)."""
    return {"FLOWER_BASIC_AUTH": basic_auth} if basic_auth is not None else {}


def flower_credentials() -> str | None:
    """``user:password`` from LEADSCORE_FLOWER_BASIC_AUTH or the file LEADSCORE_FLOWER_BASIC_AUTH_FILE names."""
    settings = get_settings()
    if settings.flower_basic_auth is not None:
        return settings.flower_basic_auth.get_secret_value()
    if settings.flower_basic_auth_file is None:
        return None
    path = settings.flower_basic_auth_file
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"environment: LEADSCORE_FLOWER_BASIC_AUTH_FILE: cannot read {path} ({reason})") from exc
    # The file is held to what the variable is (config.settings checks that one as it loads).
    problem = weak_password(secret) if settings.environment == "production" else None
    if problem is not None:
        raise ConfigError(f"environment: LEADSCORE_FLOWER_BASIC_AUTH_FILE: {path}: {problem} "
                          "(LEADSCORE_ENVIRONMENT=production)")
    return secret


@app.command()
def flower(
    address: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(5555),
    insecure_loopback: bool = typer.Option(False, "--insecure-loopback",
                                           help="Allow no authentication when bound to loopback."),
) -> None:
    """Run the Flower dashboard (basic auth from LEADSCORE_FLOWER_BASIC_AUTH or _FILE; never on argv)."""
    secret = flower_credentials()
    args = flower_args(address, port, secret, insecure_loopback)
    check_port(address, port)  # taken: one line (Flower itself prints a traceback)
    _celery(*args, env=flower_env(secret))


@app.command()
def status(
    json_path: Path | None = typer.Option(
        None, "--json", callback=json_target,
        help="Also write what it shows as JSON here (written before a failing exit: `problems`)."),
) -> None:
    """Last sync per connection, workers, beat and queues, outbox backlog, model in use, latest alerts
    (exit 1 when a sync failed or a worker, the beat or a queue's consumer is missing)."""
    from scoring.monitoring.clock import trained_at  # the scoring stack: only here, not on every command's start
    from scoring.monitoring.freshness import failed_words, failed_writes, routing_counts, routing_words
    from scoring.monitoring.run import latest_report
    from store.usage import calls_on
    from worker.liveness import measure as measure_liveness

    config_problem: str | None = None
    rules: int | None = None  # routing rules configured (None: the config did not load)
    try:
        runtime = get_runtime()
        engine, broker_url = runtime.engine, runtime.settings.broker_url
        rules = len(runtime.config.routing)
    except ConfigError as exc:
        # A broken YAML file stops the workers, so status matters most then: show what is stored,
        # then fail with the config's own line. (Bad settings still stop here: no database to read.)
        settings = get_settings()
        config_problem = str(exc)
        engine, broker_url = engine_for(settings.effective_database_url), settings.broker_url
    require_schema(engine)
    closed = close_lost_runs(engine, broker_url)
    alive = measure_liveness(broker_url, engine)  # up to a second of broadcast: before the session opens
    for name, count in closed.items():
        console.print(Text(f"{name}: {count} sync run(s) left running by a dead worker marked failed"))
    data: dict[str, Any] = {"lost_sync_runs_closed": dict(closed), "sync": [], "config_problem": config_problem}
    with unit_of_work(engine) as session:
        table = Table("connection", "stream", "last sync (UTC)", "status", "records", "error", title="Sync")
        # Records a sync could not store (absurd values, unparsable times), kept with their reason:
        # a lead among them has no score, which a rep sees and revops must be able to explain.
        names = dict(session.execute(select(Connection.id, Connection.name)).tuples().all())
        quarantined = {(names.get(cid, str(cid)), stream): n for (cid, stream), n in quarantine_counts(session).items()}
        runs = session.execute(
            select(Connection.name, SyncRun.stream, func.max(SyncRun.started_at))
            .join(SyncRun, SyncRun.connection_id == Connection.id)
            .group_by(Connection.name, SyncRun.stream).order_by(Connection.name, SyncRun.stream)
        ).all()
        failing: dict[str, tuple[str, str]] = {}  # connection -> (status, error) of a failed or stopped run
        for name, stream, started in runs:
            run = session.scalars(select(SyncRun).join(Connection).where(
                Connection.name == name, SyncRun.stream == stream, SyncRun.started_at == started)
                .order_by(SyncRun.id.desc())).first()
            if run is not None:
                shown = str(run.status)
                if run.status == SyncStatus.running:  # how long: a hung CRM shows as a run that stays
                    shown += f" ({_age(run.started_at)})"
                # Text cells: CRM error messages are shown as they are, never read as markup.
                table.add_row(Text(name), Text(stream), f"{started:%Y-%m-%d %H:%M:%S}", Text(shown),
                              str(run.records), Text((run.error or "")[:80]))
                data["sync"].append({"connection": name, "stream": stream, "started_at": started,
                                     "status": str(run.status), "records": run.records, "error": run.error})
                if run.status in (SyncStatus.failed, SyncStatus.stopped):
                    failing.setdefault(name, (str(run.status), run.error or "no error recorded"))
        if runs:
            console.print(table)
        else:
            console.print("sync: no sync has run yet (leadscore sync)")
        for name, (state, error) in failing.items():
            console.print(Text(f"sync {name}: last run {state}: {error}"), soft_wrap=True)
        if held := sum(quarantined.values()):
            # A line, not a table column: the table already fills an 80-column terminal.
            where = ", ".join(f"{name} {stream} {n}" for (name, stream), n in sorted(quarantined.items()))
            console.print(Text(f"quarantined: {held} record(s) the sync could not store ({where}), kept with their "
                               "reason (`leadscore explain <CRM id>` says why a lead has no score; the console's "
                               "Sync page lists them)"), soft_wrap=True)
        totals = lead_totals(session)
        console.print(Text(_leads_words(names, totals)), soft_wrap=True)
        problems = [f"sync {name}: last run {state}" for name, (state, _error) in failing.items()]
        today = calls_on(session)  # read once: the line and the JSON
        console.print(Text(api_calls_line(session, today)), soft_wrap=True)
        data["quarantined"] = [{"connection": c, "stream": st, "records": n}
                               for (c, st), n in sorted(quarantined.items())]
        data["leads"] = {names.get(cid, str(cid)): t for cid, t in sorted(totals.items())}
        data["api_calls_today"] = {str(names.get(cid, cid)): c for cid, c in sorted(today.items())}
        data["workers"] = alive.to_dict()
        for line in alive.lines():
            console.print(Text(line), soft_wrap=True)
        problems += alive.problems()
        backlog = session.execute(select(Outbox.status, func.count()).group_by(Outbox.status)).all()
        # Failed rows are mostly the CRM's own rules refusing a write (the monitor does not alert
        # on those): say which, as the monitor and the console do.
        failed = failed_words(*failed_writes(session)) if any(s == OutboxStatus.failed for s, _ in backlog) else ""
        console.print(Text("outbox: " + (", ".join(f"{s} {n}" + (f" ({failed})" if s == OutboxStatus.failed else "")
                                                   for s, n in backlog) or "empty")), soft_wrap=True)
        data["outbox"] = {str(st): int(n) for st, n in backlog}
        data["routing"] = routing_counts(session)
        if routed := routing_words(session, data["routing"]):
            console.print(Text(f"routing: {routed}"), soft_wrap=True)
        elif rules == 0:  # said, not left out: no line would read as "nothing wrong"
            console.print("routing: no action planned yet (no routing rules configured: see docs/configuration.md, "
                          "'routing')")
        elif rules is not None:
            console.print(f"routing: no action planned yet ({rules} routing rule(s) configured: actions are "
                          "planned when a tier changes)")
        else:
            console.print("routing: no action planned yet")
        champions = session.scalars(select(ModelVersion).where(ModelVersion.status == ModelStatus.champion)).all()
        for mv in champions:
            console.print(Text(f"model: {mv.version} ({mv.family}, segment {mv.segment or 'global'}, "
                               f"trained as of {trained_at(mv):%Y-%m-%d})"), soft_wrap=True)
        if not champions:
            console.print("model: none trained yet (leadscore train)")
        data["models"] = [{"version": mv.version, "family": mv.family, "segment": mv.segment,
                           "trained_as_of": trained_at(mv)} for mv in champions]
        report = latest_report(session)  # the one `report` and the console show
        if report is None:
            console.print("monitor: no report yet")
        else:
            console.print(f"monitor: {report.status} as of {report.as_of:%Y-%m-%d}")
            for alert in report.alerts:
                console.print(Text(f"  {alert.get('level', 'alert')}: {alert.get('message', alert)}"), soft_wrap=True)
        data["monitor"] = (None if report is None else
                           {"status": report.status, "as_of": report.as_of, "alerts": list(report.alerts)})
    data["problems"] = problems
    if json_path is not None:
        write_json_text(json_path, json.dumps(json_safe(data), indent=2))  # times in ISO 8601
    if config_problem is not None:
        raise LeadscoreError(f"{config_problem} (worker and beat refuse to start until it is fixed)")
    if problems:  # shown above; the exit status says it too, for whoever runs status from a script
        raise LeadscoreError(f"status: {len(problems)} problem(s): {'; '.join(problems)}")


def api_calls_line(session: Session, calls: dict[int, dict[str, int]] | None = None) -> str:
    """Today's CRM API calls per connection (``store.usage``; ``calls``: :func:`store.usage.calls_on`
    already read), as the console's overview shows them."""
    from store.usage import breakdown, calls_on

    names = dict(session.execute(select(Connection.id, Connection.name)).tuples().all())
    calls = calls_on(session) if calls is None else calls
    if not calls:
        return "API calls today (UTC): none recorded"
    parts = [f"{names.get(cid, cid)} {c['total']} ({breakdown(c)})" for cid, c in sorted(
                 calls.items(), key=lambda item: str(names.get(item[0], item[0])))]
    return "API calls today (UTC): " + "; ".join(parts)


def _age(started: datetime) -> str:
    """How long ago ``started`` was, in whole minutes (hours past two hours)."""
    started = started if started.tzinfo is not None else started.replace(tzinfo=UTC)
    minutes = max(0, int((datetime.now(UTC) - started).total_seconds() // 60))
    return f"for {minutes} min" if minutes < 120 else f"for {minutes // 60} h {minutes % 60} min"


def require_schema(engine: Engine) -> None:
    """Raise a one-line error telling "database unreachable" from "no schema yet"."""
    url = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as connection:
            has_schema = inspect(connection).has_table("sync_run")
    except DBAPIError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc).strip() else type(exc).__name__
        raise LeadscoreError(f"database unreachable: {url}: {reason}") from exc
    if not has_schema:
        raise LeadscoreError(f"the database {url} has no leadscore schema yet (run: leadscore db upgrade)")
    from store.migrate import schema_problem  # Alembic: only here, not on every command's start

    problem = schema_problem(engine.url.render_as_string(hide_password=False))
    if problem is not None:
        raise LeadscoreError(f"{url}: {problem}")


def _leads_words(names: dict[int, str], totals: dict[int, dict[str, int]]) -> str:
    """``leads: NAME N (O open, S of them scored); ...`` per connection (the console's overview
    shows the same :func:`store.queries.lead_totals`); open leads without a current score are
    counted, not left to be inferred."""
    if not any(t["leads"] for t in totals.values()):
        return "leads: none in the store yet (leadscore sync)"
    parts = []
    for cid, name in sorted(names.items(), key=lambda item: item[1]):
        t = totals.get(cid, {"leads": 0, "open": 0, "scored": 0})
        waiting = t["open"] - t["scored"]
        parts.append(f"{name} {t['leads']:,} ({t['open']:,} open, {t['scored']:,} of them scored"
                     + (f", {waiting:,} not yet: leadscore score" if waiting else "") + ")")
    return "leads: " + "; ".join(parts)


def refuse_older_schema() -> None:
    """Before a worker or beat starts: refuse a database whose schema is missing or older than
    this code (its tasks would fail on every run), in one line. A database that does not answer
    is no reason to refuse: workers start during an outage and retry (docs/operations.md)."""
    from store.migrate import schema_problem  # Alembic: only here, not on every command's start

    url = get_settings().effective_database_url
    if sqlite_file_missing(url):
        raise LeadscoreError("the database has no leadscore schema yet (run: leadscore db upgrade)")
    try:
        problem = schema_problem(url)
    except (DBAPIError, DatabaseUnreachable):
        return
    if problem is not None:
        raise LeadscoreError(problem)


@app.command()
def demo(
    leads: int | None = typer.Option(None, min=500, help="Leads in the simulated CRMs (default 12000; "
                                                          "3000 with --quick)."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same CRM and the same numbers."),
    json_path: Path | None = typer.Option(None, "--json", callback=json_target,
                                          help="Write the summary as JSON here."),
    report: Path | None = typer.Option(None, "--report", help="Write an HTML report with plots here."),
    min_per_class: int | None = typer.Option(None, min=10, help="Training refuses fewer labelled examples per "
                                                                "class (default 500; 150 with --quick)."),
    quick: bool = typer.Option(False, "--quick", help="A shorter run on 3,000 leads (the same steps)."),
) -> None:
    """The main job on the embedded default: crmsim, sync, train, score, write back, route."""
    # crmsim, scikit-learn and the whole scoring stack: loaded only when the demo runs, not on every command.
    from worker.demo import QUICK_LEADS, QUICK_MIN_PER_CLASS, run_demo

    if leads is None:
        leads = QUICK_LEADS if quick else 12000
    if min_per_class is None:
        # A quarter of the leads has about a quarter of the converted examples the default demands.
        min_per_class = QUICK_MIN_PER_CLASS if quick else 500
    run_demo(leads=leads, seed=seed, json_path=json_path, report_path=report, min_per_class=min_per_class)
