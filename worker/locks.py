"""Locks that keep one sync (or drain, or scoring pass) per connection running at a time, and that
die with their holder.

With a Redis broker the lock is redis-py's :class:`redis.lock.Lock`: a key with a short TTL
(:data:`LOCK_TTL_SECONDS`) that a heartbeat thread renews (``reacquire``) every third of the TTL
while the work runs. A holder that is SIGKILLed stops renewing, so its lock expires within
:data:`LOCK_TTL_SECONDS` and the next worker takes over; no lock ever blocks a connection for
hours. Without a broker (embedded, single process) a process-local lock is enough.

The token stored in the key names its holder (``<owner>:<random>``, the owner being a Celery task
id or ``cli:<pid>``), so an operator reading the key with ``redis-cli get`` sees who holds it.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.exceptions import LockError, LockNotOwnedError

from config.errors import LeadscoreError
from config.settings import get_settings

logger = logging.getLogger(__name__)

LOCK_PREFIX = "leadscore:lock:"  # after the installation's namespace (redis_key)
# Short enough that a dead holder's lock is gone in under a minute; long enough that a heartbeat
# delayed by a busy machine (every TTL/3) never lets a live holder's lock lapse.
LOCK_TTL_SECONDS = 30.0

_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


class LockBusy(LeadscoreError):
    """Another process holds the lock: the work is already running."""

    def __init__(self, message: str, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def uses_redis(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("redis://", "rediss://", "unix://"))


def redis_key(key: str) -> str:
    """``key`` in this installation's Redis namespace (``LEADSCORE_REDIS_NAMESPACE``): the prefix
    Celery's transport puts on its queues (``global_keyprefix``, celeryconfig) is put on
    leadscore's own keys too, so installations sharing a Redis database share nothing."""
    return f"{get_settings().redis_prefix}{key}"


def lock_key(name: str) -> str:
    return redis_key(f"{LOCK_PREFIX}{name}")


def cli_owner() -> str:
    """The owner name a command-line process puts in its locks' tokens."""
    return f"cli:{os.getpid()}"


class _Heartbeat(threading.Thread):
    """Renews ``lock`` every ``interval`` seconds until stopped; logs (once) if the lock was lost."""

    def __init__(self, lock: redis.lock.Lock, interval: float) -> None:
        super().__init__(name=f"lock-heartbeat:{lock.name}", daemon=True)
        self._lock = lock
        self._interval = interval
        self._stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        unreachable = False
        while not self._stopped.wait(self._interval):
            try:
                self._lock.reacquire()
            except LockNotOwnedError:
                # The key expired (the process was frozen longer than the TTL) or was deleted by
                # hand: another holder may run now. Say so; the work's own idempotence keeps
                # the data right.
                self.lost = True
                logger.error("lock %s was lost while the work ran (expired or deleted)", self._lock.name)
                return
            except redis.ConnectionError as exc:
                if not unreachable:
                    logger.warning("lock %s: Redis unreachable, cannot renew (%s); retrying", self._lock.name, exc)
                unreachable = True
                continue
            if unreachable:
                logger.warning("lock %s: Redis reachable again, lock renewed", self._lock.name)
                unreachable = False

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=self._interval + 15)


@contextmanager
def exclusive(name: str, *, redis_url: str | None, ttl_seconds: float = LOCK_TTL_SECONDS,
              owner: str | None = None) -> Iterator[None]:
    """Hold lock ``name`` for the block, renewing it while the block runs, or raise
    :class:`LockBusy` at once when someone else holds it.

    ``ttl_seconds`` is how long a dead holder blocks others (the lock is renewed every third of
    it while the holder lives). ``owner`` (a task id) is written into the token for diagnostics.
    """
    if uses_redis(redis_url):
        assert redis_url is not None
        client = redis_client(redis_url)
        lock = client.lock(lock_key(name), timeout=ttl_seconds, thread_local=False)
        token = f"{owner or cli_owner()}:{uuid.uuid4().hex}"
        if not lock.acquire(blocking=False, token=token):
            raise LockBusy(f"{name} is already running elsewhere", holder=holder_of(client, name))
        heartbeat = _Heartbeat(lock, ttl_seconds / 3)
        heartbeat.start()
        try:
            yield
        finally:
            heartbeat.stop()
            try:
                lock.release()
            except LockNotOwnedError:
                logger.warning("lock %s had already expired when its work finished", name)
            except (LockError, redis.ConnectionError) as exc:
                # Unreleased, the key still expires within the TTL: nothing stays blocked.
                logger.warning("lock %s not released (%s); it expires within %.0fs", name, exc, ttl_seconds)
        return
    with _local_guard:
        local = _local_locks.setdefault(name, threading.Lock())
    if not local.acquire(blocking=False):
        raise LockBusy(f"{name} is already running")
    try:
        yield
    finally:
        local.release()


def holder_of(client: redis.Redis, name: str) -> str | None:
    """The owner part of the token holding lock ``name`` (None when free)."""
    raw = client.get(lock_key(name))
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return text.rsplit(":", 1)[0]


def is_held(name: str, *, redis_url: str | None) -> bool | None:
    """Whether lock ``name`` is held anywhere; None when that cannot be known (no Redis)."""
    if not uses_redis(redis_url):
        return None
    assert redis_url is not None
    return bool(redis_client(redis_url).exists(lock_key(name)))


def any_held(name: str, *, redis_url: str | None) -> bool | None:
    """Whether lock ``name`` or any lock named ``name:...`` is held (the units of a partitioned
    sync hold ``sync:<connection>:w<id>``); None when that cannot be known (no Redis)."""
    if not uses_redis(redis_url):
        return None
    assert redis_url is not None
    client = redis_client(redis_url)
    if client.exists(lock_key(name)):
        return True
    return next(iter(client.scan_iter(match=f"{lock_key(name)}:*", count=1000)), None) is not None


# -- retry instead of drop ---------------------------------------------------------------------------

FOLLOW_UP_PREFIX = "leadscore:again:"


def claim_follow_up(name: str, task_id: str, *, redis_url: str | None, countdown: float) -> bool:
    """Whether the task ``task_id`` that found lock ``name`` busy should retry after ``countdown``.

    At most one task waits behind each lock: the first one to ask claims the follow-up (and keeps
    it across its own retries); any other is a true duplicate (the follow-up will do the same
    work) and is dropped. The claim expires by itself, so a lost follow-up blocks nothing.
    """
    if not uses_redis(redis_url):
        return False
    assert redis_url is not None
    client = redis_client(redis_url)
    key = redis_key(f"{FOLLOW_UP_PREFIX}{name}")
    ttl_ms = int((countdown * 3 + LOCK_TTL_SECONDS) * 1000)
    if client.set(key, task_id, nx=True, px=ttl_ms):
        return True
    current: Any = client.get(key)
    if current is not None and bytes(current).decode() == task_id:
        client.pexpire(key, ttl_ms)
        return True
    return False


def release_follow_up(name: str, task_id: str, *, redis_url: str | None) -> None:
    """The follow-up for ``name`` got the lock: let the next busy finding claim a new one."""
    if not uses_redis(redis_url):
        return
    assert redis_url is not None
    client = redis_client(redis_url)
    client.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
                "else return 0 end", 1, redis_key(f"{FOLLOW_UP_PREFIX}{name}"), task_id)
