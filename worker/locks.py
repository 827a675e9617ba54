"""Locks that keep one sync (or drain) per connection and stream running at a time.

With a Redis broker the lock is a Redis key (``SET NX PX`` with a token, released only by its
owner via a compare-and-delete script), so it holds across workers on many machines. Without a
broker (embedded, single process) a process-local lock is enough.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from config.errors import LeadscoreError

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""
_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


class LockBusy(LeadscoreError):
    """Another process holds the lock: the work is already running."""


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


@contextmanager
def exclusive(name: str, *, ttl_seconds: int, redis_url: str | None) -> Iterator[None]:
    """Hold lock ``name`` for the block or raise :class:`LockBusy` at once.

    ``ttl_seconds`` bounds how long a crashed holder blocks others: keep it above the task's
    hard time limit.
    """
    key = f"leadscore:lock:{name}"
    if redis_url and redis_url.startswith(("redis://", "rediss://")):
        client = redis_client(redis_url)
        token = uuid.uuid4().hex
        if not client.set(key, token, nx=True, px=ttl_seconds * 1000):
            raise LockBusy(f"{name} is already running elsewhere")
        try:
            yield
        finally:
            client.eval(_RELEASE, 1, key, token)
        return
    with _local_guard:
        lock = _local_locks.setdefault(key, threading.Lock())
    if not lock.acquire(blocking=False):
        raise LockBusy(f"{name} is already running")
    try:
        yield
    finally:
        lock.release()
