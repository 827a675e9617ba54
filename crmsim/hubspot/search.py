"""CRM search (``POST /crm/v3/objects/{type}/search``) and the object JSON shape.

Search semantics follow HubSpot: filter groups are ORed, filters inside a group ANDed; only the
first sort is honoured (ties in a seeded order that is not id order, as HubSpot documents no
tie order, unless ``tie_seed`` is None: then by id ascending); the order is stable per query,
so offset paging works;
``after`` is an offset; at most 200 per page; paging at or past 10,000 results is a 400;
archived records are never returned. A query's matching, sorted id list is cached per store
version, so paging through one query costs one evaluation.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from crmsim.hubspot import schema
from crmsim.hubspot.errors import HubSpotAPIError, bad_request
from crmsim.hubspot.store import HubSpotStore, Record

SEARCH_MAX_LIMIT = 200
SEARCH_DEFAULT_LIMIT = 10
SEARCH_MAX_RESULTS = 10_000
MAX_FILTER_GROUPS = 5
MAX_FILTERS_PER_GROUP = 10
MAX_FILTERS_TOTAL = 25
_QUERY_PROPERTIES: dict[str, tuple[str, ...]] = {
    "contacts": ("email", "firstname", "lastname", "phone", "company"),
    "companies": ("name", "domain", "phone"),
}
_NUMERIC_TYPES = ("number", "datetime", "date")


def returned_names(store: HubSpotStore, object_type: str, requested: list[str] | None) -> list[str]:
    """Property names a read returns: the requested ones (unknown names are skipped, like HubSpot)
    or the defaults, plus the id and stamps HubSpot always includes."""
    base = list(schema.DEFAULT_RETURNED.get(object_type, schema.ENGAGEMENT_DEFAULT_RETURNED))
    if not requested:
        return base
    always = ["hs_object_id"] + (
        ["createdate", "lastmodifieddate"] if object_type == "contacts" else ["hs_createdate", "hs_lastmodifieddate"]
    )
    known = store.properties[object_type]
    names = [n for n in requested if n in known]
    return list(dict.fromkeys(names + always))


def record_json(
    rec: Record,
    names: list[str],
    associations: dict[str, Any] | None = None,
    history: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """A record in HubSpot's ``SimplePublicObject`` shape (unset requested properties are null)."""
    props = rec.props
    out: dict[str, Any] = {
        "id": str(rec.id),
        "properties": {n: props.get(n) for n in names},
        "createdAt": rec.created_s,
        "updatedAt": rec.updated_s,
        "archived": rec.archived,
    }
    if rec.archived_at is not None:
        out["archivedAt"] = schema.format_ts(rec.archived_at)
    if associations:
        out["associations"] = associations
    if history is not None:
        out["propertiesWithHistory"] = history
    return out


def _typed(store: HubSpotStore, object_type: str, rec: Record, name: str) -> Any:
    """The comparable value of a property: float for numbers/datetimes, lower-case str otherwise."""
    cache = rec.typed
    if name in cache:
        return cache[name]
    raw = rec.props.get(name)
    value: Any
    if raw is None:
        value = None
    else:
        kind = store.properties[object_type][name]["type"]
        try:
            if kind == "number":
                value = float(raw)
            elif kind in ("datetime", "date"):
                value = float(schema.epoch_ms(schema.parse_ts(raw)))
            else:
                value = raw.lower()
        except ValueError:
            value = raw.lower()
    cache[name] = value
    return value


def _filter_value(kind: str, raw: Any, name: str) -> Any:
    if raw is None:
        raise bad_request(f"Filter on {name} needs a value")
    text = str(raw)
    if kind == "number":
        try:
            return float(text)
        except ValueError as exc:
            raise bad_request(f"{text!r} is not a valid number for {name}") from exc
    if kind in ("datetime", "date"):
        try:
            return float(schema.epoch_ms(schema.parse_ts(text)))
        except (ValueError, OverflowError, OSError) as exc:
            raise bad_request(f"{text!r} is not a valid datetime for {name} (epoch ms or ISO 8601)") from exc
    if kind == "bool":
        return text.lower()
    return text.lower()


Predicate = Callable[[Any], bool]


def _compile_filter(store: HubSpotStore, object_type: str, flt: Any) -> tuple[str, Predicate]:
    if not isinstance(flt, dict):
        raise bad_request("Each filter must be an object")
    name = flt.get("propertyName")
    operator = str(flt.get("operator") or "EQ").upper()
    if not isinstance(name, str) or name not in store.properties[object_type]:
        raise HubSpotAPIError(
            400,
            "VALIDATION_ERROR",
            f"There was a problem with the request: property {name!r} does not exist on {object_type}",
            sub_category="INVALID_PROPERTY",
        )
    kind = str(store.properties[object_type][name]["type"])
    if operator in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        want = operator == "HAS_PROPERTY"
        return name, lambda v: (v is not None) == want
    if operator in ("IN", "NOT_IN"):
        values = flt.get("values")
        if not isinstance(values, list) or not values:
            raise bad_request(f"Operator {operator} needs a non-empty 'values' list")
        wanted = {_filter_value(kind, v, name) for v in values}
        if operator == "IN":
            return name, lambda v: v is not None and v in wanted
        return name, lambda v: v is None or v not in wanted
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        token = str(flt.get("value") or "").lower().strip("*")
        present = operator == "CONTAINS_TOKEN"
        return name, lambda v: (v is not None and token in str(v)) == present
    value = _filter_value(kind, flt.get("value"), name)
    if operator == "EQ":
        return name, lambda v: v == value
    if operator == "NEQ":
        return name, lambda v: v != value
    if operator == "BETWEEN":
        high = _filter_value(kind, flt.get("highValue"), name)
        return name, lambda v: v is not None and value <= v <= high
    comparisons: dict[str, Predicate] = {
        "LT": lambda v: v is not None and v < value,
        "LTE": lambda v: v is not None and v <= value,
        "GT": lambda v: v is not None and v > value,
        "GTE": lambda v: v is not None and v >= value,
    }
    if operator not in comparisons:
        raise bad_request(f"Unknown filter operator {operator!r}")
    return name, comparisons[operator]


def _parse_sort(sorts: Any) -> tuple[str | None, bool]:
    """(property name or None, descending) from the first sort; dicts or ``"-name"`` strings."""
    if not sorts:
        return None, False
    if not isinstance(sorts, list):
        raise bad_request("'sorts' must be a list")
    first = sorts[0]
    if isinstance(first, str):
        return (first[1:], True) if first.startswith("-") else (first, False)
    if isinstance(first, dict) and isinstance(first.get("propertyName"), str):
        direction = str(first.get("direction") or "ASCENDING").upper()
        return first["propertyName"], direction.startswith("DESC")
    raise bad_request("Each sort needs a propertyName")


def _tie_rank(seed: int, object_id: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{object_id}".encode(), digest_size=8).digest()


class SearchEngine:
    """Evaluates searches against a store, caching each query's sorted ids per store version."""

    def __init__(self, store: HubSpotStore, cache_size: int = 32) -> None:
        self.store = store
        self._cache: OrderedDict[str, tuple[int, list[int]]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.evaluations = 0  # how many times a query was evaluated (not served from cache)
        self.tie_seed: int | None = None  # None: ties by id ascending; else a seeded, id-independent order

    def _matching_ids(self, object_type: str, body: dict[str, Any]) -> list[int]:
        store = self.store
        groups = body.get("filterGroups") or []
        sorts = body.get("sorts") or []
        query = body.get("query")
        key = json.dumps(
            [object_type, groups, sorts[:1] if isinstance(sorts, list) else sorts, query],
            sort_keys=True,
            default=str,
        )
        with store.lock:
            version = store.versions[object_type]
            if store.search_lag > 0:
                # The index catches up with time, not with writes: no cached answer stays valid.
                self.evaluations += 1
                return self._evaluate(object_type, groups, sorts, query)
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None and hit[0] == version:
                    self._cache.move_to_end(key)
                    return hit[1]
            ids = self._evaluate(object_type, groups, sorts, query)
            self.evaluations += 1
        with self._lock:
            self._cache[key] = (version, ids)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return ids

    def _evaluate(self, object_type: str, groups: Any, sorts: Any, query: Any) -> list[int]:
        store = self.store
        if not isinstance(groups, list):
            raise bad_request("'filterGroups' must be a list")
        if len(groups) > MAX_FILTER_GROUPS:
            raise bad_request(f"Too many filter groups ({len(groups)}); the maximum is {MAX_FILTER_GROUPS}")
        compiled: list[list[tuple[str, Predicate]]] = []
        total = 0
        for group in groups:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list):
                raise bad_request("Each filter group needs a 'filters' list")
            if len(filters) > MAX_FILTERS_PER_GROUP:
                raise bad_request(
                    f"Too many filters in a group ({len(filters)}); the maximum is {MAX_FILTERS_PER_GROUP}"
                )
            total += len(filters)
            compiled.append([_compile_filter(store, object_type, f) for f in filters])
        if total > MAX_FILTERS_TOTAL:
            raise bad_request(f"Too many filters ({total}); the maximum is {MAX_FILTERS_TOTAL}")
        sort_name, descending = _parse_sort(sorts)
        if sort_name is not None and sort_name not in store.properties[object_type]:
            raise bad_request(f"Cannot sort on unknown property {sort_name!r}")
        needle = str(query).lower().strip() if query else ""
        query_props = _QUERY_PROPERTIES.get(object_type, ())
        matched: list[Record] = []
        records = store.records[object_type]
        lagging = store.search_lag > 0
        now = time.monotonic()
        for object_id in store.order[object_type]:
            rec = records[object_id]
            if rec.archived or (lagging and rec.indexed_after > now):
                continue  # (not yet indexed: search is eventually consistent)
            if compiled and not any(
                all(pred(_typed(store, object_type, rec, name)) for name, pred in group) for group in compiled
            ):
                continue
            if needle and not any(needle in (rec.props.get(p) or "").lower() for p in query_props):
                continue
            matched.append(rec)
        if sort_name is None or sort_name == "hs_object_id":
            ids = [r.id for r in matched]  # already in id order
            return ids[::-1] if descending else ids
        present = [(v, r.id) for r in matched if (v := _typed(store, object_type, r, sort_name)) is not None]
        missing = [r.id for r in matched if _typed(store, object_type, r, sort_name) is None]
        tie_seed = self.tie_seed
        if tie_seed is not None:
            # HubSpot documents no order for equal sort values: order ties by a seeded hash of the
            # id (stable per query, so offset paging still works, but not id order).
            present.sort(key=lambda pair: _tie_rank(tie_seed, pair[1]))
        # Stable sort on the value only: ties keep the order above in both directions.
        present.sort(key=lambda pair: pair[0], reverse=descending)
        return [object_id for _, object_id in present] + missing

    def search(self, object_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """Answer one search request body with HubSpot's ``CollectionResponseWithTotal`` shape."""
        limit_raw = body.get("limit", SEARCH_DEFAULT_LIMIT)
        try:
            limit = int(limit_raw) if limit_raw is not None else SEARCH_DEFAULT_LIMIT
        except (TypeError, ValueError) as exc:
            raise bad_request(f"'limit' must be a whole number, got {limit_raw!r}") from exc
        if limit < 1 or limit > SEARCH_MAX_LIMIT:
            raise bad_request(f"limit must be between 1 and {SEARCH_MAX_LIMIT}; got {limit}")
        after_raw = body.get("after")
        try:
            offset = int(after_raw) if after_raw not in (None, "") else 0
        except (TypeError, ValueError) as exc:
            raise bad_request(f"'after' must be an offset, got {after_raw!r}") from exc
        if offset < 0:
            raise bad_request("'after' must not be negative")
        if offset >= SEARCH_MAX_RESULTS:
            # HubSpot's search refuses to page at or beyond 10,000 results of one query.
            raise HubSpotAPIError(
                400,
                "VALIDATION_ERROR",
                f"There was a problem with the request. Search results are limited to {SEARCH_MAX_RESULTS} "
                f"per query; after={offset} is past that limit.",
            )
        requested = body.get("properties")
        if requested is not None and not isinstance(requested, list):
            raise bad_request("'properties' must be a list of names")
        ids = self._matching_ids(object_type, body)
        names = returned_names(self.store, object_type, [str(p) for p in requested] if requested else None)
        end = min(offset + limit, len(ids), SEARCH_MAX_RESULTS)
        with self.store.lock:
            records = self.store.records[object_type]
            results = [record_json(records[i], names) for i in ids[offset:end]]
        out: dict[str, Any] = {"total": len(ids), "results": results}
        if offset + limit < len(ids):
            out["paging"] = {"next": {"after": str(offset + limit)}}
        return out
