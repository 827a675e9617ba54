"""The one retry policy around CRM HTTP calls: tenacity, on :class:`RetriableCRMError` only.

Exponential backoff with jitter, bounded attempts, and the server's ``Retry-After`` honoured when
it sent one (capped, so a hostile value cannot park a worker). Everything else propagates at
once: retrying a 400 or a bug only burns API calls.

A call the CRM does not answer in time (:class:`CRMTimeoutError`) is tried
``timeout_attempts`` times, not ``attempts``: each try holds a worker for the whole read timeout.
When those tries all time out, the CRM counts as unresponsive in this process for
``unresponsive_seconds``: its calls then fail at once, without a request, naming the time the CRM
stopped answering and when calls resume. A hung CRM costs a worker process two read timeouts per
cool-down, not eight per call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from config.checks import first_line
from connectors.errors import CRMTimeoutError, RetriableCRMError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the retry loop. ``attempts`` counts the first try."""

    attempts: int = 8
    initial_wait: float = 0.1
    max_wait: float = 10.0
    max_retry_after: float = 60.0
    # Tries of a call the CRM does not answer in time, then how long the CRM counts as unresponsive.
    timeout_attempts: int = 2
    unresponsive_seconds: float = 300.0


DEFAULT_POLICY = RetryPolicy()


def retry_after_seconds(headers: Any) -> float | None:
    """The server's ``Retry-After`` in seconds (both CRMs send delta-seconds), None when absent or unreadable."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(multiplier=policy.initial_wait, max=policy.max_wait,
                                      jitter=policy.initial_wait)

    def wait(state: RetryCallState) -> float:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, RetriableCRMError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), policy.max_retry_after)
        return float(backoff(state))

    return wait


def _log_retry(what: str, policy: RetryPolicy) -> Callable[[RetryCallState], None]:
    def log(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        limit = policy.timeout_attempts if isinstance(error, CRMTimeoutError) else policy.attempts
        logger.info("%s: retrying in %ss after %s: %s (attempt %d of %d)", what, _seconds(wait),
                    error.__class__.__name__, first_line(error)[:200] if error is not None else "no error",
                    state.attempt_number, limit)

    return log


def _seconds(wait: float) -> str:
    """A wait as the log shows it: tenths from a second up, else two significant digits (a
    Retry-After of 0.01 s read "0.0s", as if the call were retried without waiting)."""
    return f"{wait:.1f}" if wait >= 1 else f"{wait:.2g}"


@dataclass(frozen=True)
class _Unresponsive:
    until: float  # time.monotonic()
    since: datetime
    resumes: datetime
    why: str


_unresponsive: dict[str, _Unresponsive] = {}
_unresponsive_lock = threading.Lock()


def forget_unresponsive() -> None:
    """Forget every CRM this process found unresponsive (tests start with none)."""
    with _unresponsive_lock:
        _unresponsive.clear()


def unresponsive(key: str) -> _Unresponsive | None:
    """Why and until when the CRM of ``key`` counts as unresponsive here (None: it does not)."""
    with _unresponsive_lock:
        found = _unresponsive.get(key)
        if found is not None and time.monotonic() >= found.until:
            del _unresponsive[key]
            found = None
    return found


def _mark_unresponsive(key: str, why: str, seconds: float) -> _Unresponsive:
    now = datetime.now(UTC)
    marked = _Unresponsive(until=time.monotonic() + seconds, since=now, resumes=now + timedelta(seconds=seconds),
                           why=why)
    with _unresponsive_lock:
        _unresponsive[key] = marked
    return marked


def _clock(at: datetime) -> str:
    return f"{at:%H:%M:%S} UTC"


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy = DEFAULT_POLICY, *, what: str = "CRM call",
                    unresponsive_key: str | None = None) -> T:
    """Call ``fn`` until it returns, retrying only :class:`RetriableCRMError`; each retry is
    logged naming ``what`` (the connection and CRM), the error and the wait.

    The last error is re-raised as itself (``reraise=True``) when the attempts run out. With
    ``unresponsive_key`` (one per connection), a call whose ``timeout_attempts`` tries all timed
    out marks that CRM unresponsive for ``unresponsive_seconds`` and raises a
    :class:`CRMTimeoutError` saying so; a call made meanwhile raises one at once, sending nothing.
    """
    if unresponsive_key is not None and (known := unresponsive(unresponsive_key)) is not None:
        raise CRMTimeoutError(f"{what}: not called: {known.why} at {_clock(known.since)}; calls resume at "
                              f"{_clock(known.resumes)}", code="UNRESPONSIVE")
    timeouts = 0

    def stop(state: RetryCallState) -> bool:
        nonlocal timeouts
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, CRMTimeoutError):
            timeouts += 1
            if timeouts >= policy.timeout_attempts:
                return True
        return bool(stop_after_attempt(policy.attempts)(state))

    retrying = Retrying(
        retry=retry_if_exception_type(RetriableCRMError),
        stop=stop,
        wait=_wait(policy),
        reraise=True,
        before_sleep=_log_retry(what, policy),
    )
    try:
        return retrying(fn)
    except CRMTimeoutError as exc:
        if unresponsive_key is None or timeouts < policy.timeout_attempts:
            raise
        marked = _mark_unresponsive(unresponsive_key, first_line(exc), policy.unresponsive_seconds)
        logger.warning("%s: %s (%d tries): no calls to it from this process until %s", what, first_line(exc),
                       timeouts, _clock(marked.resumes))
        raise CRMTimeoutError(f"{first_line(exc)} ({timeouts} tries); calls to it resume at {_clock(marked.resumes)}",
                              status=exc.status, code=exc.code) from exc
