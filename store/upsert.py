"""Idempotent upserts that take the same call on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session

# SQLite limits bound parameters per statement (32,766 on modern builds); PostgreSQL to 65,535.
_MAX_PARAMS = 30_000


def upsert_rows(
    session: Session,
    model: type[DeclarativeBase],
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict_columns: Sequence[str],
    update_columns: Iterable[str] | None = None,
) -> int:
    """Insert ``rows`` or, where a row with the same ``conflict_columns`` exists, update it.

    ``update_columns`` defaults to every column given in the rows except the conflict columns.
    All rows must carry the same keys. Returns the number of rows sent. Runs in the caller's
    transaction (no commit here): a page of records and its cursor commit together.
    """
    if not rows:
        return 0
    keys = list(rows[0].keys())
    for row in rows:
        if list(row.keys()) != keys:
            raise ValueError("upsert_rows: every row must have the same keys in the same order")
    candidates = update_columns if update_columns is not None else keys
    updates = [c for c in candidates if c not in conflict_columns]
    dialect = session.get_bind().dialect.name
    insert_fn: Any
    if dialect == "postgresql":
        insert_fn = postgresql.insert
    elif dialect == "sqlite":
        insert_fn = sqlite.insert
    else:
        raise ValueError(f"upsert_rows: unsupported database {dialect!r}")
    table = sa_inspect(model).local_table
    chunk = max(1, _MAX_PARAMS // max(1, len(keys)))
    for start in range(0, len(rows), chunk):
        part = [dict(r) for r in rows[start : start + chunk]]
        stmt = insert_fn(table).values(part)
        if updates:
            stmt = stmt.on_conflict_do_update(
                index_elements=list(conflict_columns),
                set_={c: stmt.excluded[c] for c in updates},
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(conflict_columns))
        session.execute(stmt)
    return len(rows)
