"""The one retry policy around CRM HTTP calls: tenacity, on :class:`RetriableCRMError` only.

Exponential backoff with jitter, bounded attempts, and the server's ``Retry-After`` honoured when
it sent one (capped, so a hostile value cannot park a worker). Everything else propagates at
once: retrying a 400 or a bug only burns API calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from config.checks import first_line
from connectors.errors import RetriableCRMError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the retry loop. ``attempts`` counts the first try."""

    attempts: int = 8
    initial_wait: float = 0.1
    max_wait: float = 10.0
    max_retry_after: float = 60.0


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
        logger.info("%s: retrying in %ss after %s: %s (attempt %d of %d)", what, _seconds(wait),
                    error.__class__.__name__, first_line(error)[:200] if error is not None else "no error",
                    state.attempt_number, policy.attempts)

    return log


def _seconds(wait: float) -> str:
    """A wait as the log shows it: tenths from a second up, else two significant digits (a
    Retry-After of 0.01 s read "0.0s", as if the call were retried without waiting)."""
    return f"{wait:.1f}" if wait >= 1 else f"{wait:.2g}"


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy = DEFAULT_POLICY, *, what: str = "CRM call") -> T:
    """Call ``fn`` until it returns, retrying only :class:`RetriableCRMError`; each retry is
    logged naming ``what`` (the connection and CRM), the error and the wait.

    The last error is re-raised as itself (``reraise=True``) when the attempts run out.
    """
    retrying = Retrying(
        retry=retry_if_exception_type(RetriableCRMError),
        stop=stop_after_attempt(policy.attempts),
        wait=_wait(policy),
        reraise=True,
        before_sleep=_log_retry(what, policy),
    )
    return retrying(fn)
