"""What the outbox drain reports (per connection and per CRM) and its retry policy.

The drain itself is :mod:`connectors.writeback`, which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from connectors.routing import RoutingReport

__all__ = ["DEFAULT_POLICY", "ConnectionWriteback", "WritebackPolicy", "WritebackReport"]


@dataclass(frozen=True)
class WritebackPolicy:
    """Retry bounds for records the CRM answered with a retriable error."""

    max_attempts: int = 8
    base_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(hours=1)

    def next_attempt(self, now: datetime, attempts: int) -> datetime:
        """When a record that failed ``attempts`` times may be sent again (exponential)."""
        delay = self.base_delay * (2 ** max(attempts - 1, 0))
        return now + min(delay, self.max_delay)


DEFAULT_POLICY = WritebackPolicy()


@dataclass
class ConnectionWriteback:
    """What one drain did for one connection."""

    connection: str
    kind: str
    records_written: int = 0
    unchanged_skipped: int = 0
    superseded: int = 0
    cancelled: int = 0  # the lead was no longer open: not sent (reason on the row)
    retried_records: int = 0
    failed: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    write_calls: int = 0
    retry_calls: int = 0
    lookup_calls: int = 0  # queue/user/describe look-ups for routing actions riding along the writes
    # Every call the client made for this entry, its login included: what `leadscore status` adds up.
    calls_recorded: int = 0
    pending_left: int = 0
    error: str | None = None
    # Routing actions that rode along the score writes (connectors.riders).
    routing: RoutingReport = field(default_factory=RoutingReport)

    @property
    def api_calls(self) -> int:
        return self.write_calls + self.retry_calls + self.lookup_calls

    def to_dict(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "kind": self.kind,
            "records_written": self.records_written,
            "unchanged_skipped": self.unchanged_skipped,
            "superseded": self.superseded,
            "cancelled": self.cancelled,
            "retried_records": self.retried_records,
            "failed": self.failed,
            "failed_by_reason": dict(sorted(self.failed_by_reason.items())),
            "api_calls": self.api_calls,
            "write_calls": self.write_calls,
            "retry_calls": self.retry_calls,
            "lookup_calls": self.lookup_calls,
            "calls_recorded": self.calls_recorded,
            "pending_left": self.pending_left,
            "routed": dict(sorted(self.routing.done.items())),
            "error": self.error,
        }


@dataclass
class WritebackReport:
    """The drain's result: one entry per connection that had anything to do."""

    connections: dict[str, ConnectionWriteback] = field(default_factory=dict)
    accounts: dict[str, ConnectionWriteback] = field(default_factory=dict)  # account fields, per connection

    @property
    def records_written(self) -> int:
        return sum(c.records_written for c in self.connections.values())

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.connections.values())

    @property
    def accounts_written(self) -> int:
        return sum(c.records_written for c in self.accounts.values())

    @property
    def errors(self) -> list[str]:
        return [f"{c.connection}: {c.error}" for c in (*self.connections.values(), *self.accounts.values())
                if c.error]

    def by_crm(self) -> dict[str, dict[str, int]]:
        """``{"salesforce": {"records": n, "api_calls": n}, "hubspot": {...}}`` (the demo JSON shape)."""
        return _by_crm(self.connections.values())

    def accounts_by_crm(self) -> dict[str, dict[str, int]]:
        """The same shape for the account fields (records = accounts written)."""
        return _by_crm(self.accounts.values())

    def failed_by_reason(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for c in (*self.connections.values(), *self.accounts.values()):
            for reason, n in c.failed_by_reason.items():
                total[reason] = total.get(reason, 0) + n
        return dict(sorted(total.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_written": self.records_written,
            "failed": self.failed,
            "failed_by_reason": self.failed_by_reason(),
            "by_crm": self.by_crm(),
            "connections": {name: c.to_dict() for name, c in self.connections.items()},
            "accounts_written": self.accounts_written,
            "accounts_by_crm": self.accounts_by_crm(),
            "accounts": {name: c.to_dict() for name, c in self.accounts.items()},
            "errors": self.errors,
        }


def _by_crm(entries: Iterable[ConnectionWriteback]) -> dict[str, dict[str, int]]:
    out = {kind: {"records": 0, "api_calls": 0, "write_calls": 0, "retry_calls": 0, "failed": 0}
           for kind in ("salesforce", "hubspot")}
    for c in entries:
        entry = out.setdefault(c.kind, {"records": 0, "api_calls": 0, "write_calls": 0, "retry_calls": 0,
                                        "failed": 0})
        entry["records"] += c.records_written
        entry["api_calls"] += c.api_calls
        entry["write_calls"] += c.write_calls
        entry["retry_calls"] += c.retry_calls
        entry["failed"] += c.failed
    return out
