"""Which records a compiled SOQL query selects, without scanning the whole sObject for keyset pages.

A sync reads each sObject in keyset pages (``WHERE SystemModstamp > :ts ... AND SystemModstamp <
:until ORDER BY SystemModstamp, Id LIMIT 2000``). Scanning every record per page makes a full read
quadratic (a million Tasks is 500 pages of a million predicate calls). :class:`StampIndex` keeps
each sObject's records sorted by ``(SystemModstamp, Id)``; :func:`select_values` bisects to the
query's ``SystemModstamp`` range (:attr:`CompiledQuery.stamp_range`, derived from the WHERE clause)
and, when the query is ordered by ``SystemModstamp ASC, Id ASC``, stops after ``OFFSET + LIMIT``
matches. The full predicate is still evaluated on every candidate, so results are exactly those
of a scan; only the candidates shrink.

The index is maintained lazily: the store reports every record it writes or removes
(:meth:`StampIndex.touched`); the next query of that sObject moves those records to their new
place (or rebuilds the list when many changed).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from crmsim.salesforce.schema import SOBJECTS
from crmsim.salesforce.soql import CompiledQuery, sort_rows

if TYPE_CHECKING:
    from crmsim.salesforce.store import Record

_ID_MAX = "\U0010ffff"  # sorts after every record id: the upper end of a stamp's keys


@dataclass
class _Sorted:
    keys: list[tuple[datetime, str]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    placed: dict[str, tuple[datetime, str]] = field(default_factory=dict)  # id -> its key in ``keys``
    pending: set[str] = field(default_factory=set)  # ids written since the last query
    built: bool = False


class StampIndex:
    """Per sObject, its records sorted by ``(SystemModstamp, Id)``; see the module docstring."""

    def __init__(self) -> None:
        self._by_sobject: dict[str, _Sorted] = {}

    def touched(self, sobject: str, record_id: str) -> None:
        """The record was created, changed, restored or removed: re-place it before the next query."""
        entry = self._by_sobject.get(sobject)
        if entry is not None and entry.built:
            entry.pending.add(record_id)

    def ordered(self, sobject: str, records: Mapping[str, Record]) -> tuple[list[tuple[datetime, str]], list[Record]]:
        """``(keys, records)`` of ``sobject`` in ``(SystemModstamp, Id)`` order, brought up to date."""
        entry = self._by_sobject.setdefault(sobject, _Sorted())
        if not entry.built or len(entry.pending) * 8 > max(len(entry.keys), 64):
            self._rebuild(entry, records)
        elif entry.pending:
            for record_id in entry.pending:
                old = entry.placed.pop(record_id, None)
                if old is not None:
                    at = bisect_left(entry.keys, old)
                    del entry.keys[at]
                    del entry.records[at]
                rec = records.get(record_id)
                if rec is not None:
                    key = (rec.values["SystemModstamp"], record_id)
                    at = bisect_left(entry.keys, key)
                    entry.keys.insert(at, key)
                    entry.records.insert(at, rec)
                    entry.placed[record_id] = key
            entry.pending.clear()
        return entry.keys, entry.records

    @staticmethod
    def _rebuild(entry: _Sorted, records: Mapping[str, Record]) -> None:
        pairs = sorted(((rec.values["SystemModstamp"], rec.id), rec) for rec in records.values())
        entry.keys = [key for key, _ in pairs]
        entry.records = [rec for _, rec in pairs]
        entry.placed = {key[1]: key for key in entry.keys}
        entry.pending = set()
        entry.built = True


def _identity(values: Any) -> Any:
    return values


def select_values(compiled: CompiledQuery, records: Mapping[str, Record], index: StampIndex, *,
                  include_deleted: bool) -> list[dict[str, Any]]:
    """The values dicts ``compiled`` selects from ``records`` (its sObject's), ordered, with its
    OFFSET and LIMIT applied; deleted rows only with ``include_deleted`` (``queryAll``)."""
    hide_deleted = SOBJECTS[compiled.sobject].has_is_deleted and not include_deleted
    predicate: Callable[[Any], bool] = compiled.predicate
    lower, upper = compiled.stamp_range
    rows: list[dict[str, Any]] = []
    keyset = compiled.keyset_order
    if lower is None and upper is None and not keyset:
        candidates: Any = records.values()
    else:
        keys, ordered = index.ordered(compiled.sobject, records)
        start = bisect_left(keys, (lower, "")) if lower is not None else 0
        stop = bisect_right(keys, (upper, _ID_MAX)) if upper is not None else len(keys)
        candidates = islice(ordered, start, stop)
    wanted = (compiled.offset or 0) + compiled.limit if keyset and compiled.limit is not None else None
    for rec in candidates:
        values = rec.values
        if hide_deleted and values["IsDeleted"]:
            continue
        if predicate(values):
            rows.append(values)
            if wanted is not None and len(rows) >= wanted:
                break
    if compiled.order and not keyset:
        sort_rows(rows, compiled.order, _identity)
    if compiled.offset:
        rows = rows[compiled.offset:]
    if compiled.limit is not None:
        rows = rows[:compiled.limit]
    return rows
