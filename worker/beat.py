"""A beat scheduler that schedules only while it holds a Redis lock: two beats never double-send.

Celery requires exactly one beat. Operators make mistakes (a second deploy, a stuck pod), so the
scheduler enforces it: each tick it takes or refreshes ``leadscore:lock:beat`` (a token with a TTL
of a few ticks). A beat without the lock stays on standby and takes over when the holder dies.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery.beat import PersistentScheduler

from worker.locks import redis_client

logger = logging.getLogger(__name__)

LOCK_KEY = "leadscore:lock:beat"
LOCK_TTL_SECONDS = 30
_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end
"""


class LockedScheduler(PersistentScheduler):
    """PersistentScheduler that ticks only as the lock holder (no lock needed without Redis)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._token = uuid.uuid4().hex
        url = self.app.conf.broker_url or ""
        self._redis = redis_client(url) if url.startswith(("redis://", "rediss://")) else None
        self._holding = False

    def _hold_lock(self) -> bool:
        if self._redis is None:
            return True
        ttl_ms = LOCK_TTL_SECONDS * 1000
        if self._holding and self._redis.eval(_REFRESH, 1, LOCK_KEY, self._token, str(ttl_ms)):
            return True
        self._holding = bool(self._redis.set(LOCK_KEY, self._token, nx=True, px=ttl_ms))
        if self._holding:
            logger.info("beat: acquired the scheduler lock; scheduling")
        return self._holding

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._hold_lock():
            return 5.0  # standby: try again shortly
        # Never sleep longer than the lock lives, or another beat would take over.
        return min(float(super().tick(*args, **kwargs)), LOCK_TTL_SECONDS / 3)

    def close(self) -> None:
        if self._redis is not None and self._holding:
            self._redis.eval(
                "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
                "else return 0 end", 1, LOCK_KEY, self._token)
        super().close()
