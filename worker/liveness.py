"""Whether the processes that do the work are there: workers answering, the beat scheduling, tasks
waiting per queue. What ``leadscore status`` shows an admin (docs/operations.md, "Health").

Measured, never assumed: workers are the ones that answer a broadcast within the timeout (with
the queues each consumes), the beat is the holder of its Redis scheduler lock (``worker.beat``;
renewed every few seconds, gone 30 s after the beat dies), and a queue's depth is its Redis
list's length. Without a broker there is nothing to measure: tasks run in the command that sends
them, and :func:`measure` says so instead of reporting workers as fine.

A task a worker took and never acknowledged (``acks_late``) sits in the broker's ``unacked`` hash,
in no queue, until Redis hands it back after the visibility timeout (60 min by default). One that
no answering worker holds (active, reserved or waiting for its countdown) was taken by a worker
that died: :attr:`Liveness.held` lists those, with when they come back, and whether their work
has been done since by the tasks after them (:mod:`worker.held`): a sync unit finished, a sync
of the connection succeeded, nothing left that the drain or the routing pass could take. Only a
held task whose work is still undone is a problem.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import redis
from kombu.exceptions import OperationalError

from config.settings import get_settings
from worker.beat import LOCK_NAME, holder_words
from worker.locks import lock_key, redis_client, redis_key, uses_redis
from worker.queues import Queue, transport_options

if TYPE_CHECKING:
    from sqlalchemy import Engine

logger = logging.getLogger(__name__)

PING_SECONDS = 1.0
# kombu's Redis transport keeps a queue's messages of priority p > 0 under "<queue>\x06\x16<p>".
_PRIORITY_STEPS = (0, 3, 6, 9)
_PRIORITY_SEP = "\x06\x16"
# kombu's Redis transport: delivered, unacknowledged messages by delivery tag, and when each was
# delivered (a sorted set of the same tags).
_UNACKED, _UNACKED_INDEX = "unacked", "unacked_index"
UNACKED_READ = 500  # entries read at most (a busy installation has as many as its workers hold)
# A task delivered this recently may not be in its worker's registry yet: not called held.
HELD_AFTER_SECONDS = 5.0


@dataclass(frozen=True)
class HeldTask:
    """A task a worker took and never acknowledged, held by no worker that answers: Redis hands it
    back to a queue at ``returns_at`` (its delivery plus the visibility timeout)."""

    name: str
    task_id: str
    taken_at: datetime
    returns_at: datetime
    args: tuple[Any, ...] = ()
    # What shows its work was done since it was taken (None: not done, or cannot tell).
    done_since: str | None = None
    tag: str = ""  # the broker's delivery tag (its key in the unacknowledged hash)

    def to_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "id": self.task_id, "taken_at": self.taken_at.isoformat(timespec="seconds"),
                "returns_at": self.returns_at.isoformat(timespec="seconds"), "done_since": self.done_since}


@dataclass
class Liveness:
    """What answered. ``broker``: False without a broker (tasks run in process: nothing else is
    measured). ``error``: the broker did not answer (nothing else could be measured)."""

    broker: bool
    error: str | None = None
    redis: bool = True  # the beat's lock and the queues' lists are read from Redis only
    workers: dict[str, list[str]] = field(default_factory=dict)  # hostname -> queues it consumes
    beat: str | None = None  # the scheduler lock's holder ("beat:<host>:<pid>:<id>"), None when none holds it
    waiting: dict[str, int] = field(default_factory=dict)  # queue -> tasks waiting
    namespace: str = ""  # LEADSCORE_REDIS_NAMESPACE: only workers and a beat started with it are heard
    # Tasks taken by workers that no longer answer, back in a queue only after the visibility timeout.
    held: list[HeldTask] = field(default_factory=list)

    def problems(self) -> list[str]:
        """What stops the loop: an unreachable broker, no worker, no beat, a queue nobody consumes."""
        if not self.broker:
            return []
        if self.error is not None:
            return [f"broker unreachable: {self.error}"]
        found: list[str] = []
        if not self.workers:
            found.append(f"no worker answered within {PING_SECONDS:.0f} s (leadscore worker)")
        else:
            consumed = {q for queues in self.workers.values() for q in queues}
            found += [f"no worker consumes the {q} queue"
                      + (f" ({self.waiting.get(q, 0)} task(s) waiting)" if self.redis else "")
                      for q in (q.value for q in Queue) if q not in consumed]
        if self.redis and self.beat is None:
            found.append("no beat holds the scheduler lock: nothing is scheduled (leadscore beat)")
        if undone := self.undone():
            found.append(f"{_held_words(undone)} taken by a worker that no longer answers")
        return found

    def undone(self) -> list[HeldTask]:
        """The held tasks whose work nobody has done since."""
        return [t for t in self.held if t.done_since is None]

    def lines(self) -> list[str]:
        """One line each for workers, beat and queues, as ``leadscore status`` prints them."""
        if not self.broker:
            return ["workers: none needed (no broker configured: tasks run in the command that starts them)"]
        if self.error is not None:
            return [f"workers: cannot tell (broker unreachable: {self.error})"]
        if self.workers:
            listed = "; ".join(f"{host}: {', '.join(queues) or 'no queue'}"
                               for host, queues in sorted(self.workers.items()))
            workers = f"workers: {len(self.workers)} answering ({listed})"
        else:
            workers = f"workers: none answered within {PING_SECONDS:.0f} s"
        if self.namespace:
            workers += f" in Redis namespace {self.namespace!r}"
        if not self.redis:
            unknown = "cannot tell (measured on a Redis broker only)"
            return [workers, f"beat: {unknown}", f"queues: {unknown}"]
        beat = (f"beat: scheduling ({holder_words(self.beat)} holds the scheduler lock)" if self.beat is not None
                else "beat: not running (no beat holds the scheduler lock)")
        queues = "queues: " + ", ".join(f"{q} {n} waiting" for q, n in self.waiting.items())
        lines = [workers, beat, queues]
        if undone := self.undone():
            first = min(t.returns_at for t in undone)
            lines.append(f"held: {_held_words(undone)} ({_names(undone)}) taken by a worker that no longer answers: "
                         f"in no queue until Redis hands {'it' if len(undone) == 1 else 'them'} back "
                         f"(visibility timeout), the first at {first:%Y-%m-%d %H:%M} UTC; to run one now, "
                         "send it again (docs/operations.md, 'A worker killed mid-task')")
        if done := [t for t in self.held if t.done_since is not None]:
            last = max(t.returns_at for t in done)
            why = "; ".join(sorted({t.done_since for t in done if t.done_since}))
            lines.append(f"held, done since: {_held_words(done)} ({_names(done)}) taken by a worker that no longer "
                         f"answers, whose work later tasks did ({why}): nothing to do; Redis hands "
                         f"{'it' if len(done) == 1 else 'them'} back by {last:%Y-%m-%d %H:%M} UTC and "
                         f"{'it finds' if len(done) == 1 else 'they find'} the work done")
        return lines

    def to_dict(self) -> dict[str, object]:
        """What the console's ``/api/workers`` returns: the measurement, its lines and its problems."""
        return {"broker": self.broker, "error": self.error, "workers": self.workers, "beat": self.beat,
                "waiting": self.waiting if self.redis else None, "held": [t.to_dict() for t in self.held],
                "lines": self.lines(), "problems": self.problems()}


def _held_words(held: list[HeldTask]) -> str:
    return f"{len(held)} task" + ("" if len(held) == 1 else "s")


def _names(held: list[HeldTask]) -> str:
    return ", ".join(sorted({t.name for t in held}))


def _task_args(message: Any) -> tuple[Any, ...]:
    """A Celery (protocol 2) message's positional arguments, () when they cannot be read."""
    try:
        body: Any = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return ()
    return tuple(args) if isinstance(args, list) else ()


def _waiting(client: redis.Redis, queue: str) -> int:
    keys = [redis_key(queue if p == 0 else f"{queue}{_PRIORITY_SEP}{p}") for p in _PRIORITY_STEPS]
    return sum(int(cast(int, client.llen(key))) for key in keys)


def _unacked(client: redis.Redis, visibility_timeout: float) -> list[HeldTask]:
    """The broker's delivered, unacknowledged tasks (at most :data:`UNACKED_READ`, the oldest
    first), delivered over :data:`HELD_AFTER_SECONDS` ago: the candidates for :attr:`Liveness.held`."""
    delivered = cast(list[tuple[bytes, float]], client.zrangebyscore(
        redis_key(_UNACKED_INDEX), "-inf", time.time() - HELD_AFTER_SECONDS, start=0, num=UNACKED_READ,
        withscores=True))
    if not delivered:
        return []
    raw = cast(list[bytes | None], client.hmget(redis_key(_UNACKED), [tag for tag, _at in delivered]))
    found: list[HeldTask] = []
    for (tag, at), value in zip(delivered, raw, strict=True):
        if value is None:  # acknowledged since the index was read
            continue
        try:
            message: Any = json.loads(value)[0]
            headers = message.get("headers") or {}
            name, task_id = str(headers["task"]), str(headers["id"])
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            continue  # not a Celery task message (another app on this Redis database)
        taken = datetime.fromtimestamp(at, UTC)
        found.append(HeldTask(name=name, task_id=task_id, taken_at=taken,
                              returns_at=datetime.fromtimestamp(at + visibility_timeout, UTC),
                              args=_task_args(message), tag=tag.decode() if isinstance(tag, bytes) else str(tag)))
    return found


def still_unacked(client: redis.Redis, held: list[HeldTask]) -> list[HeldTask]:
    """``held`` without the tasks acknowledged since they were read: a worker that finished one
    between that read and its answer to the broadcast no longer holds it, and it is not held either
    (a trial's status called a just-finished task "taken by a worker that no longer answers")."""
    if not held:
        return held
    raw = cast(list[bytes | None], client.hmget(redis_key(_UNACKED), [t.tag for t in held]))
    return [t for t, value in zip(held, raw, strict=True) if value is not None]


def _text(value: object) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else None if value is None else str(value)


def measure(broker_url: str | None, engine: Engine | None = None) -> Liveness:
    """Ask the broker who is there (about :data:`PING_SECONDS` when no worker answers). With the
    store's ``engine``, each held task is also checked for work done since (:mod:`worker.held`)."""
    if not broker_url:
        return Liveness(broker=False)
    beat: str | None = None
    waiting: dict[str, int] = {}
    unacked: list[HeldTask] = []
    on_redis = uses_redis(broker_url)
    settings = get_settings()
    namespace = settings.redis_namespace
    if on_redis:  # first, and briefly: Celery's own connection retries a down broker for long
        client = redis_client(broker_url)
        try:
            beat = _text(client.get(lock_key(LOCK_NAME)))
            waiting = {q.value: _waiting(client, q.value) for q in Queue}
            unacked = _unacked(client, settings.visibility_timeout)
        except redis.RedisError as exc:
            return Liveness(broker=True, error=str(exc) or type(exc).__name__, namespace=namespace)
        finally:
            client.close()
    from celery import Celery

    # A Celery app of its own on ``broker_url``: a broadcast is published through the app's
    # producer pool, so leadscore's app would send it to the broker this process was configured
    # with (in-process tasks: none), whatever connection it is handed. The transport options are
    # leadscore's, from the settings (not leadscore's app: it refuses to load with a broken YAML
    # file, when status matters most), so the workers hear it.
    asking = Celery("leadscore-liveness", broker=broker_url, set_as_current=False)
    asking.conf.update(broker_transport_options=transport_options(settings),
                       # a broker that does not answer is one problem, not a wait
                       broker_connection_timeout=2 * PING_SECONDS, broker_connection_max_retries=1)
    try:
        answers = asking.control.inspect(timeout=PING_SECONDS).active_queues() or {}
        known: set[str] = set()
        if unacked and answers:  # which of them the answering workers hold (running, prefetched, counting down)
            inspect = asking.control.inspect(timeout=PING_SECONDS, limit=len(answers))
            holding = inspect.query_task([t.task_id for t in unacked]) or {}
            known = {str(task_id) for tasks in holding.values() for task_id in (tasks or {})}
            if any(t.task_id not in known for t in unacked):
                known |= _listed(inspect)
    except (OperationalError, OSError) as exc:  # a broker other than Redis, down
        return Liveness(broker=True, redis=on_redis, error=str(exc) or type(exc).__name__, namespace=namespace)
    finally:
        asking.close()
    workers = {host: sorted(str(q.get("name")) for q in queues or []) for host, queues in answers.items()}
    held = [t for t in unacked if t.task_id not in known]
    if held and on_redis:
        client = redis_client(broker_url)
        try:
            held = still_unacked(client, held)
        except redis.RedisError:
            pass  # read a moment ago: the first read stands
        finally:
            client.close()
    if held and engine is not None:
        held = _settled(engine, held)
    return Liveness(broker=True, redis=on_redis, workers=workers, beat=beat, waiting=waiting, namespace=namespace,
                    held=held)


def _listed(inspect: Any) -> set[str]:
    """The ids of the tasks the answering workers list as counting down, prefetched or running.

    ``query_task`` finds a request by id in a registry that loses a task's entry when another
    request of the same id finishes: a task retried with a countdown is a new message of the same
    id, which the worker can take (and register) before the attempt that sent it has finished; that
    attempt's end then drops the waiting retry from the registry, while the worker's timer still
    holds it. A trial's `status` called such a retry, counting down in a live worker, "taken by a
    worker that no longer answers". The three lists come from the timer and the pool's own sets."""
    ids: set[str] = set()
    for listing in (inspect.scheduled(), inspect.reserved(), inspect.active()):
        for entries in (listing or {}).values():
            for entry in entries or []:
                request = entry.get("request", entry) if isinstance(entry, dict) else None
                if isinstance(request, dict) and request.get("id"):
                    ids.add(str(request["id"]))
    return ids


def _settled(engine: Engine, held: list[HeldTask]) -> list[HeldTask]:
    """``held`` with what shows each one's work done since; unchanged when the store cannot say."""
    from sqlalchemy.exc import SQLAlchemyError

    from worker.held import work_done_since

    try:
        done = work_done_since(engine, held)
    except SQLAlchemyError as exc:  # status shows the store's own error; here the tasks stay undone
        logger.warning("cannot tell whether held tasks' work was done since: %s", exc)
        return held
    return [replace(t, done_since=done.get(t.task_id)) for t in held]
