"""A beat scheduler that schedules only while it holds a Redis lock: two beats never double-send.

Celery requires exactly one beat. Operators make mistakes (a second deploy, a stuck pod), so the
scheduler enforces it: each tick it takes or renews ``leadscore:lock:beat`` (redis-py's ``Lock``
with a TTL of a few ticks, renewed with ``reacquire``). A beat without the lock stays on standby
(saying once which beat holds it: host and pid) and takes over when the holder dies.

Only the holder opens the schedule file (``celerybeat-schedule``, a shelve): two beats on one host
share it (``leadscore beat`` keeps it in ``LEADSCORE_VAR_DIR``), and a standby that opened it at
start read the holder's later writes through a stale handle and crashed on takeover. A beat opens
the file when it takes the lock and closes it (without writing) when it loses the lock.

A broker outage never ends the beat: while Redis does not answer, the tick logs one line
("broker unreachable"), schedules nothing and tries again every few seconds; the first tick that
reaches Redis again logs one line ("broker reachable again") and scheduling resumes.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

import kombu.exceptions
import redis
from celery.beat import PersistentScheduler
from redis.exceptions import LockError, LockNotOwnedError

from worker.locks import lock_key, redis_client, uses_redis

logger = logging.getLogger(__name__)

LOCK_NAME = "beat"
LOCK_TTL_SECONDS = 30
OUTAGE_RETRY_SECONDS = 5.0
# What a broker outage looks like from the lock (redis-py) and from sending a task (kombu).
BROKER_DOWN = (redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError, ConnectionError)


def holder_words(token: str | None) -> str:
    """The beat a scheduler lock token (``beat:HOST:PID:ID``) names, as an admin finds it: "the
    beat on HOST (pid PID)"; a beat of an earlier leadscore (``beat:PID:ID``, still holding the lock
    during an upgrade) "the beat with pid PID"; "another beat" for anything else."""
    parts = str(token or "").split(":")
    if len(parts) == 4 and parts[0] == "beat":
        return f"the beat on {parts[1]} (pid {parts[2]})"
    if len(parts) == 3 and parts[0] == "beat" and parts[1].isdigit():
        return f"the beat with pid {parts[1]}"
    return "another beat"


class LockedScheduler(PersistentScheduler):
    """PersistentScheduler that ticks only as the lock holder (no lock needed without Redis)."""

    _store: Any = None  # the open schedule file (a shelve), the lock holder's only

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._outage = False
        # Lazy: the schedule file is opened by the lock holder only (_open_schedule_file).
        kwargs["lazy"] = True
        super().__init__(*args, **kwargs)
        url = self.app.conf.broker_url or ""
        self._redis = redis_client(url) if uses_redis(url) else None
        self._lock = (self._redis.lock(lock_key(LOCK_NAME), timeout=LOCK_TTL_SECONDS, thread_local=False)
                      if self._redis is not None else None)
        self._token = f"beat:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._holding = False
        self._standby_said = False  # "on standby" is logged once per stretch without the lock

    def _open_schedule_file(self) -> None:
        """Open the schedule file and merge the configured entries into it (Celery's set-up)."""
        if self._store is None:
            self.setup_schedule()

    def _drop_schedule_file(self) -> None:
        """Close the schedule file without writing to it: another beat holds the lock now and may
        have opened it (a shelve with writeback writes its cached entries back on close)."""
        store: Any = self._store
        self._store = None
        if store is not None:
            store.writeback = False
            store.close()

    def _hold_lock(self) -> bool:
        if self._lock is None:
            self._open_schedule_file()
            return True
        if self._holding:
            try:
                self._lock.reacquire()
                return True
            except LockNotOwnedError:
                logger.warning("beat: lost the scheduler lock (expired); trying to take it again")
                self._holding = False
                self._drop_schedule_file()
        self._holding = bool(self._lock.acquire(blocking=False, token=self._token))
        if self._holding:
            logger.info("beat: acquired the scheduler lock; scheduling")
            self._standby_said = False
            self._open_schedule_file()
        elif not self._standby_said:
            # Said once, not every 5 s: an admin who started a second beat sees why it sends nothing.
            logger.info("beat: on standby: %s holds the scheduler lock; this beat takes over within %ds of "
                        "it stopping", self._holder(), LOCK_TTL_SECONDS)
            self._standby_said = True
        return self._holding

    def _holder(self) -> str:
        raw: Any = self._redis.get(lock_key(LOCK_NAME)) if self._redis is not None else None
        return holder_words(raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or ""))

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            if not self._hold_lock():
                interval = 5.0  # standby: try again shortly
            else:
                # Never sleep longer than the lock lives, or another beat would take over.
                interval = min(float(super().tick(*args, **kwargs)), LOCK_TTL_SECONDS / 3)
        except BROKER_DOWN as exc:
            if not self._outage:
                logger.error("beat: broker unreachable (%s); nothing is scheduled until it answers, "
                             "retrying every %.0fs", exc, OUTAGE_RETRY_SECONDS)
            self._outage = True
            return OUTAGE_RETRY_SECONDS
        if self._outage:
            logger.warning("beat: broker reachable again; scheduling resumed")
            self._outage = False
        return interval

    def close(self) -> None:
        # Celery closes the scheduler twice at SIGTERM (its signal handler, then the service's
        # own shutdown): the lock is released once, and the second close has nothing to release.
        # The schedule file is written and closed first, so a standby opens it only after that.
        holding, self._holding = self._holding, False
        try:
            super().close()
            self._store = None
        finally:
            if self._lock is not None and holding:
                try:
                    self._lock.release()
                except (LockError, *BROKER_DOWN) as exc:
                    # The lock expires by itself within its TTL: a standby beat takes over then.
                    logger.warning("beat: scheduler lock not released (%s)", exc)
