"""Column types that behave the same on PostgreSQL and SQLite, and what a JSON column can hold."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

Progress = Callable[[str, int, int], None]
"""``progress(label, done so far, total)`` after each step of long work: the label names the
stage (scoring) or the connection (write-back); the CLI draws it as a bar."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite keeps no zone, so values are stored as naive UTC
    and given ``UTC`` back on load. Naive datetimes are refused: they are always a bug here.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: leadscore stores timezone-aware UTC only")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on PostgreSQL (indexable, compact), plain JSON elsewhere.
JSONType: Any = JSON().with_variant(JSONB(), "postgresql")

# ``json`` on PostgreSQL too: the text kept as written instead of parsed into jsonb's binary form
# on every insert. For rows written in bulk and never queried by their content (outbox payloads:
# the outbox COPYs of a 12,000-lead run took 219 ms instead of 288, docs/scaling.md). No equality,
# DISTINCT or jsonb operators on such a column.
WrittenJSON: Any = JSON()


def utc_minutes(value: Any) -> str:
    """A time as people read it: ``2026-12-05 09:29 UTC`` (a datetime, naive as UTC, or its ISO
    8601 text; ``-`` for None; other text as it is). The console's ``when`` and ``explain``'s text."""
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    return str(value)


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON (for JSON columns, ``--json`` files and API answers): dict keys as
    strings, tuples as lists, NaN/inf as None, datetimes in ISO 8601, numpy scalars as Python
    numbers, anything else as its string."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return json_safe(value.item())
    return str(value)
