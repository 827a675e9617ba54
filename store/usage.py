"""CRM API calls leadscore made, per connection, UTC day and purpose (the ``api_usage`` table).

Every step that calls a CRM records the calls its client counted (every response received,
logins and retries included, as ``sync_run.api_calls`` and the CLI's reports count them): a
sync page in the page's own transaction (the ``sync_run`` counters and the ledger move together),
a write-back batch with its results, the account look-up per batch, a sync's logins and clock
reads, a routing run and a ``crm setup`` when they end. ``leadscore status`` and the console read the day's totals
from here, so they show what ``leadscore sync`` / ``writeback`` / ``route`` printed, whichever
entry point (CLI, Celery task, console) made the calls.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.db import unit_of_work
from store.models import ApiPurpose, ApiUsage

PURPOSES = tuple(ApiPurpose)


def utc_day(at: datetime | None = None) -> date:
    at = at or datetime.now(UTC)
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).astimezone(UTC).date()


def add_api_calls(session: Session, connection_id: int, purpose: ApiPurpose, calls: int,
                  *, at: datetime | None = None) -> None:
    """Add ``calls`` to the connection's count for ``purpose`` on ``at``'s UTC day (default now),
    in the caller's transaction (nothing for ``calls <= 0``). Concurrent adds do not lose counts:
    one ``INSERT ... ON CONFLICT DO UPDATE SET calls = calls + excluded.calls``."""
    if calls <= 0:
        return
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(ApiUsage).values(connection_id=connection_id, day=utc_day(at), purpose=str(purpose), calls=calls)
    stmt = stmt.on_conflict_do_update(index_elements=["connection_id", "day", "purpose"],
                                      set_={"calls": ApiUsage.calls + stmt.excluded.calls})
    session.execute(stmt)


def record_api_calls(engine: Engine, connection_id: int, purpose: ApiPurpose, calls: int) -> None:
    """:func:`add_api_calls` in a transaction of its own."""
    if calls <= 0:
        return
    with unit_of_work(engine) as session:
        add_api_calls(session, connection_id, purpose, calls)


def calls_on(session: Session, day: date | None = None) -> dict[int, dict[str, int]]:
    """Per connection id, the day's calls by purpose (every purpose present, zeros included) and
    ``total``; connections without a call that day are left out."""
    day = day or utc_day()
    out: dict[int, dict[str, int]] = {}
    for connection_id, purpose, calls in session.execute(
        select(ApiUsage.connection_id, ApiUsage.purpose, ApiUsage.calls).where(ApiUsage.day == day)
    ):
        counts = out.setdefault(connection_id, empty_counts())
        counts[purpose] = counts.get(purpose, 0) + int(calls)
        counts["total"] += int(calls)
    return out


def empty_counts() -> dict[str, int]:
    return {**{str(p): 0 for p in PURPOSES}, "total": 0}


class CallMeter:
    """The calls a client counted that are not recorded yet: :meth:`take` returns them and
    marks them recorded. ``start`` is the count already accounted for (0 for a client made for
    this step, so its login counts; the current count for a client that was handed in)."""

    def __init__(self, counter: Callable[[], int], start: int | None = None) -> None:
        self._counter = counter
        self._taken = counter() if start is None else start

    def take(self) -> int:
        now = self._counter()
        calls, self._taken = now - self._taken, now
        return calls


def breakdown(counts: dict[str, int]) -> str:
    """A day's counts by purpose, as ``leadscore status`` and the console's overview print them:
    the daily loop's four purposes always, ``setup`` (an admin's occasional ``crm setup``) when
    there were any."""
    parts = [f"sync {counts.get('sync', 0)}", f"accounts {counts.get('accounts', 0)}",
             f"write-back {counts.get('writeback', 0)}", f"routing {counts.get('routing', 0)}"]
    if counts.get("setup"):
        parts.append(f"setup {counts['setup']}")
    return ", ".join(parts)


def client_calls(client: Any) -> Callable[[], int]:
    """The call counter of a connectors client (``api_calls``; 0 for an object without one)."""
    return lambda: int(getattr(client, "api_calls", 0))
