"""Celery tasks: thin wrappers that take names/ids, open one unit of work, call one function.

Every task has a stable explicit name. Retries: only ``RetriableCRMError`` (the CRM may answer
next time), with backoff and a ceiling; never ``Exception`` (that would retry bugs). Every task is
safe to run twice: upserts keyed by CRM id, cursors after commit, outbox rows until confirmed,
routing actions keyed by (lead, score, action) — which is why ``acks_late`` is on.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from config.errors import ConfigError
from connectors.base import ConnectionSecrets, EnvSecrets
from connectors.errors import CRMError, RetriableCRMError
from connectors.partition import run_window, start_plan
from connectors.sync import secrets_or_record
from scoring.pipeline import finish_planned_run, routing_hook, score_and_plan
from scoring.score_run import ScoringPlan, plan_scoring
from scoring.score_run import score_chunk as score_lead_chunk
from scoring.service import NoChampionError
from store.db import unit_of_work
from worker.app import app
from worker.locks import (
    LOCK_TTL_SECONDS,
    LockBusy,
    claim_follow_up,
    exclusive,
    redis_client,
    redis_key,
    release_follow_up,
    uses_redis,
)
from worker.runtime import get_runtime

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A task that finds its lock busy retries after this long: by then a live holder has usually
# finished, and a dead holder's lock (TTL LOCK_TTL_SECONDS, no longer renewed) has expired.
LOCK_RETRY_COUNTDOWN = LOCK_TTL_SECONDS
# Waiting behind a long-running holder is not a failure: these retries have their own budget
# (at most one task waits behind each lock, see claim_follow_up).
LOCK_RETRY_MAX = 120


class Skipped(Exception):
    """The work was not run: ``summary`` says why (a duplicate, or nothing to do yet)."""

    def __init__(self, summary: dict[str, Any]) -> None:
        super().__init__(summary)
        self.summary = summary


def run_locked(task: Any, lock: str, work: Callable[[], T]) -> T:
    """Run ``work()`` holding ``lock`` (renewed by a heartbeat while it runs).

    When another holder has the lock, the task is retried after :data:`LOCK_RETRY_COUNTDOWN`
    unless another task is already waiting for that lock (a true duplicate: that one will do the
    same work), in which case :class:`Skipped` is raised. The task redelivered after its worker
    died finds its own dead lock and retries until the lock expires.
    """
    redis_url = get_runtime().settings.broker_url
    task_id = str(getattr(task.request, "id", None) or f"local:{os.getpid()}")
    try:
        with exclusive(lock, redis_url=redis_url, owner=task_id):
            release_follow_up(lock, task_id, redis_url=redis_url)
            return work()
    except LockBusy as busy:
        if getattr(task.request, "is_eager", False) or not claim_follow_up(
                lock, task_id, redis_url=redis_url, countdown=LOCK_RETRY_COUNTDOWN):
            logger.info("%s already running (held by %s) and a follow-up is queued; skipped", lock, busy.holder)
            raise Skipped({"skipped": f"{lock} already running"}) from busy
        logger.info("%s held by %s; retrying in %.0fs", lock, busy.holder, LOCK_RETRY_COUNTDOWN)
        raise task.retry(countdown=LOCK_RETRY_COUNTDOWN, max_retries=LOCK_RETRY_MAX) from busy


@app.task(name="leadscore.ping")
def ping(value: str = "pong") -> dict[str, Any]:
    """Round-trip check used by ``leadscore status`` and the tests: echoes and names the worker."""
    return {"value": value, "host": socket.gethostname(), "pid": os.getpid()}


@app.task(name="leadscore.sync.all")
def sync_all() -> list[str]:
    """Fan out one sync per enabled connection (beat runs this every minute); first close the runs
    that dead workers left "running" (their lock is gone)."""
    from worker.lost import close_lost_runs

    runtime = get_runtime()
    for name, count in close_lost_runs(runtime.engine, runtime.settings.broker_url).items():
        # The worker's log says it; `leadscore status` prints its own line (not this log's too).
        logger.warning("sync of %s: %d run(s) left running by a dead worker marked failed", name, count)
    names = [c.name for c in runtime.config.connections if c.enabled]
    for name in names:
        sync_connection.delay(name)
    return names


@app.task(name="leadscore.sync.connection", bind=True, max_retries=5, retry_backoff=True,
          retry_backoff_max=600, retry_jitter=True)
def sync_connection(self: Any, name: str, full: bool = False) -> dict[str, Any]:
    """Start (or continue) the partitioned sync of one connection: send one task per unit.

    The units (streams, and time windows of a first load) run side by side on every worker;
    the last one queues the scoring of what changed (docs/scaling.md).
    """
    runtime = get_runtime()
    conn = runtime.config.connection(name)
    try:
        # An unset secret is recorded on the streams (status shows it), as a refused login is.
        window_ids = run_locked(self, f"sync:{name}", lambda: start_plan(
            runtime.engine, conn, secrets_or_record(runtime.engine, conn, full=full), full=full))
    except Skipped as skipped:
        return {"connection": name, **skipped.summary}
    except RetriableCRMError as exc:
        raise self.retry(exc=exc) from exc
    except ConfigError as exc:
        _not_started(name, exc)
        raise
    except CRMError as exc:
        _failed(name, exc)
        raise
    return {"connection": name, "windows": _send_windows(name, window_ids)}


def _not_started(name: str, exc: ConfigError) -> None:
    """A sync this worker cannot run as configured (a secret not set in its environment): one
    log line, not a traceback every minute; the task ends FAILURE with it (Flower shows it, see
    :class:`worker.app.LeadscoreTask`) and beat's next run tries again."""
    logger.error("sync %s not started: %s", name, exc)


def _failed(name: str, exc: CRMError) -> None:
    """A sync the CRM refused for good (login, a CA bundle gone, a malformed request): recorded on
    its streams (`leadscore status` shows it), one log line, the task FAILURE."""
    logger.error("sync %s failed: %s", name, exc)


def _send_windows(name: str, window_ids: list[int]) -> list[int]:
    # A unit still running gets a duplicate that waits behind its lock (at most one per lock, see
    # run_locked) and then finds it done; a unit whose worker died is resumed once its lock expired.
    for window_id in window_ids:
        sync_window.delay(name, window_id)
    return window_ids


def window_lock(name: str, window_id: int) -> str:
    """The lock of one unit of a connection's sync (``worker.lost`` looks for ``sync:<name>*``)."""
    return f"sync:{name}:w{window_id}"


@app.task(name="leadscore.sync.window", bind=True, max_retries=5, retry_backoff=True,
          retry_backoff_max=600, retry_jitter=True)
def sync_window(self: Any, name: str, window_id: int) -> dict[str, Any]:
    """Read one unit of a connection's sync (a stream, or a time window of its first load)."""
    runtime = get_runtime()
    conn = runtime.config.connection(name)
    try:
        outcome = run_locked(self, window_lock(name, window_id), lambda: run_window(
            runtime.engine, conn, ConnectionSecrets.from_env(conn), window_id))
    except Skipped as skipped:
        return {"connection": name, "window": window_id, **skipped.summary}
    except RetriableCRMError as exc:
        raise self.retry(exc=exc) from exc
    except ConfigError as exc:
        _not_started(name, exc)  # the unit stays open: the next start resends it
        raise
    except CRMError as exc:
        _failed(name, exc)
        raise
    _send_windows(name, outcome.next_windows)
    if outcome.plan_done:
        score_changed.delay()
    return {"connection": name, **outcome.to_dict()}


@app.task(name="leadscore.score.changed", bind=True, max_retries=LOCK_RETRY_MAX)
def score_changed(self: Any) -> dict[str, Any]:
    """Score leads whose inputs changed; queue the write-back and routing that follow."""
    summary = _score(self)
    if "skipped" not in summary:
        writeback_drain.delay()
        routing_execute.delay()
    return summary


def _score(task: Any) -> dict[str, Any]:
    runtime = get_runtime()

    def work() -> Any:
        if chunks_left(runtime.settings.broker_url) > 0:
            # A full rescore's chunks are running: scoring the same leads beside them would race.
            raise LockBusy("a full rescore is running", holder="score chunks")
        with unit_of_work(runtime.engine) as session:
            # The same call as `leadscore score`: scoring, tiering and routing planning in one path.
            return score_and_plan(session, runtime.config, all=False)

    try:
        summary = run_locked(task, "score", work)
    except Skipped as skipped:
        return skipped.summary
    except NoChampionError:
        # Before the first model is trained a sync has nothing to score with: not an error.
        return {"skipped": "no model trained yet"}
    return summary.to_dict() if hasattr(summary, "to_dict") else {}


# A full rescore is planned once and scored in chunks of this many leads, one task each, which
# every worker takes (docs/scaling.md); Redis counts the chunks still to write.
SCORE_CHUNK_SIZE = 2000
SCORE_CHUNKS_KEY = "leadscore:score:chunks-left"  # in the installation's namespace (redis_key)


def chunks_left(redis_url: str | None) -> int:
    """Chunks of the running full rescore not written yet (0 without Redis: eager runs inline)."""
    if not uses_redis(redis_url):
        return 0
    assert redis_url is not None
    value: Any = redis_client(redis_url).get(redis_key(SCORE_CHUNKS_KEY))
    return int(value or 0)


@app.task(name="leadscore.score.all", bind=True, max_retries=LOCK_RETRY_MAX)
def score_all(self: Any) -> dict[str, Any]:
    """Rescore every lead (recency features decay with time even when nothing changes): plan the
    run once (tier cut-offs included), then send one ``leadscore.score.chunk`` per chunk."""
    runtime = get_runtime()
    redis_url = runtime.settings.broker_url

    def work() -> dict[str, Any]:
        if chunks_left(redis_url) > 0:
            raise LockBusy("a full rescore is running", holder="score chunks")
        with unit_of_work(runtime.engine) as session:
            plan = plan_scoring(session, all=True, tier_default=runtime.config.tiers)
        chunks = plan.chunks(SCORE_CHUNK_SIZE)
        if chunks and uses_redis(redis_url):
            assert redis_url is not None
            # Expires by itself: chunks lost for good never block scoring for longer than this.
            redis_client(redis_url).set(redis_key(SCORE_CHUNKS_KEY), len(chunks),
                                        ex=int(runtime.settings.visibility_timeout))
        head = plan.to_dict()
        for number, chunk in enumerate(chunks, start=1):
            # "last" tells an eager run (no Redis counter; chunks run inline, in order) which one ends it.
            score_chunk.delay({**head, "lead_ids": chunk, "last": number == len(chunks)})
        return {"leads": len(plan.lead_ids), "chunks": len(chunks), "as_of": head["as_of"]}

    try:
        summary = run_locked(self, "score", work)
    except Skipped as skipped:
        return skipped.summary
    except NoChampionError:
        return {"skipped": "no model trained yet"}
    if not summary["chunks"]:
        writeback_drain.delay()
        routing_execute.delay()
    return summary


@app.task(name="leadscore.score.chunk", bind=True, max_retries=5, retry_backoff=True, retry_backoff_max=600)
def score_chunk(self: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """Score one chunk of a planned full rescore (``plan["lead_ids"]``); the last chunk refreshes
    the capacity tiers of the leads outside the plan and the accounts
    (:func:`scoring.pipeline.finish_planned_run`) and queues the write-back and routing."""
    runtime = get_runtime()
    scoring_plan = ScoringPlan.from_dict(plan)
    with unit_of_work(runtime.engine) as session:
        summary = score_lead_chunk(session, scoring_plan, scoring_plan.lead_ids,
                                   tier_change_hook=routing_hook(runtime.config))
    redis_url = runtime.settings.broker_url
    if uses_redis(redis_url) and redis_url:
        left: Any = redis_client(redis_url).decr(redis_key(SCORE_CHUNKS_KEY))
        last = int(left) <= 0
    else:
        last = bool(plan.get("last", True))
    if last:
        # The last chunk: every chunk's scores are committed, so the accounts follow all of them
        # (a chunk alone would miss the scores of chunks running beside it).
        with unit_of_work(runtime.engine) as session:
            # Capacity cut-offs apply to the open leads outside the plan too (one score, one tier).
            finish_planned_run(session, runtime.config, scoring_plan)
        writeback_drain.delay()
        routing_execute.delay()
    return summary.to_dict() if hasattr(summary, "to_dict") else {"scored": summary.scored}


def _crm_pass(task: Any, lock: str, run: Any) -> dict[str, Any]:
    """Run ``run(engine, config, secrets)`` over all enabled connections under ``lock``."""
    runtime = get_runtime()
    # Read per connection when used: one connection's unset variable stops that one only.
    secrets = EnvSecrets([c for c in runtime.config.connections if c.enabled])
    try:
        report = run_locked(task, lock, lambda: run(runtime.engine, runtime.config, secrets))
    except Skipped as skipped:
        return skipped.summary
    except RetriableCRMError as exc:
        raise task.retry(exc=exc) from exc
    return report.to_dict() if hasattr(report, "to_dict") else {}


@app.task(name="leadscore.writeback.drain", bind=True, max_retries=5, retry_backoff=True,
          retry_backoff_max=600, retry_jitter=True)
def writeback_drain(self: Any) -> dict[str, Any]:
    """Send pending outbox rows to the CRMs (rows stay pending until the CRM confirms them)."""
    from connectors.writeback import drain_outbox

    return _crm_pass(self, "writeback", drain_outbox)


@app.task(name="leadscore.routing.execute", bind=True, max_retries=5, retry_backoff=True,
          retry_backoff_max=600, retry_jitter=True)
def routing_execute(self: Any) -> dict[str, Any]:
    """Run pending routing/nurture actions, each exactly once per lead and tier change."""
    from connectors.routing import execute_routing

    return _crm_pass(self, "routing", execute_routing)


@app.task(name="leadscore.train.model")
def train_model() -> dict[str, Any]:
    """Train and register a model version (the first one becomes champion)."""
    from scoring.service import train_from_store
    from store.db import unit_of_work

    runtime = get_runtime()
    with unit_of_work(runtime.engine) as session:
        outcome = train_from_store(session, config=runtime.config.training)
    return outcome.to_dict() if hasattr(outcome, "to_dict") else {}


@app.task(name="leadscore.train.retrain_if_due")
def retrain_if_due() -> dict[str, Any]:
    """Train a challenger when due (schedule or alert); promote it only if it beats the champion."""
    from scoring.retrain import retrain_if_due as run_retrain
    from store.db import unit_of_work

    runtime = get_runtime()
    with exclusive("retrain", redis_url=runtime.settings.broker_url), unit_of_work(runtime.engine) as session:
        outcome = run_retrain(session, training=runtime.config.training,
                              schedules=runtime.config.schedules, monitoring=runtime.config.monitoring)
    return outcome.to_dict() if hasattr(outcome, "to_dict") else {}


@app.task(name="leadscore.monitor.daily")
def monitor_daily() -> dict[str, Any]:
    """Write today's monitor report (drift, tier conversion, recent accuracy, freshness, alerts)."""
    from scoring.monitor import run_monitor
    from store.db import unit_of_work

    runtime = get_runtime()
    with unit_of_work(runtime.engine) as session:
        report = run_monitor(session, config=runtime.config.monitoring,
                             horizon_days=runtime.config.training.horizon_days,
                             connections=[c.name for c in runtime.config.connections if c.enabled])
        metrics = report.metrics or {}
        return {"status": report.status, "as_of": report.as_of.isoformat(), "alerts": report.alerts,
                "drift": metrics.get("drift") or {}, "tier_conversion": metrics.get("tier_conversion") or {},
                "performance": metrics.get("performance") or {}, "freshness": metrics.get("freshness") or {},
                "measures": metrics.get("measures") or {}, "notes": metrics.get("notes") or []}
