"""Seeded fault injection shared by the Salesforce and HubSpot servers.

A fault spec is a comma-separated list of ``key=value`` pairs, optionally scoped to one API with
a prefix: ``"rate_429=0.1,sf.rate_503=0.05,hs.drop=0.02,latency_ms=5"``. Unscoped keys apply to
both APIs. Keys:

===================  =====================================================================
``rate_429``         share of requests answered 429 (HubSpot) / 403 REQUEST_LIMIT_EXCEEDED is
                     *not* used for this: Salesforce answers 429-like pressure with 503
                     ``SERVER_UNAVAILABLE``; see each server's docs for its mapping
``no_retry_after``   share of injected 429s sent without a ``Retry-After`` header
``retry_after``      seconds put in ``Retry-After`` (float, default 0.01: keeps tests fast)
``rate_500``         share answered 500
``rate_503``         share answered 503
``drop``             share of requests whose connection is closed without a response
``latency_ms``       added latency per request
``hang``             share of requests held without an answer for ``hang_s`` seconds, then
                     closed without a response: a CRM that hangs (the client's read timeout fires)
``hang_s``           seconds a hung request is held (float, default 30)
``expire_after``     the session/token expires after this many calls (once; 0 = never)
``record_fail``      share of records in batch writes that fail on their own (partial success)
``concurrent_limit`` Salesforce only: share of requests answered 403 ``REQUEST_LIMIT_EXCEEDED``
                     "ConcurrentPerOrgLongTxn Limit exceeded." (the same code as the daily quota;
                     real orgs send it when too many long requests run at once)
``lock_single``      Salesforce only: share of single-record creates/updates answered 400
                     ``UNABLE_TO_LOCK_ROW`` (``record_fail`` does this inside Collections)
``query_timeout_rows`` Salesforce only: a SOQL query returning more rows than this (after its
                     LIMIT) answers 400 ``QUERY_TIMEOUT`` (0 = never): big pages of a slow query
``bulk_job_fail``    Salesforce only: share of Bulk API 2.0 query jobs that end in state ``Failed``
                     (with an ``errorMessage``) instead of ``JobComplete``
``daily_limit``      the org's daily API allocation (Salesforce ``Sforce-Limit-Info`` max,
                     HubSpot daily limit); exceeding it answers 403 REQUEST_LIMIT_EXCEEDED /
                     429 policyName DAILY
===================  =====================================================================
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, fields

# The keys of a server's ``call_counts()`` that sum its requests instead of naming an endpoint:
# ``injected`` (faults of the plan), ``limited`` (HubSpot: 429s of the portal's own rate limits).
COUNT_SUMMARIES = frozenset({"injected", "limited"})


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed; the message names the offending key."""


@dataclass
class FaultPlan:
    rate_429: float = 0.0
    no_retry_after: float = 0.0
    retry_after: float = 0.01
    rate_500: float = 0.0
    rate_503: float = 0.0
    drop: float = 0.0
    latency_ms: float = 0.0
    hang: float = 0.0
    hang_s: float = 30.0
    expire_after: int = 0
    record_fail: float = 0.0
    concurrent_limit: float = 0.0
    query_timeout_rows: int = 0
    lock_single: float = 0.0
    bulk_job_fail: float = 0.0
    daily_limit: int = 1_000_000

    @property
    def any_request_fault(self) -> bool:
        return (self.rate_429 + self.rate_500 + self.rate_503 + self.drop + self.hang) > 0


_FLOAT_KEYS = {f.name for f in fields(FaultPlan) if f.type in ("float", float)}
_INT_KEYS = {f.name for f in fields(FaultPlan) if f.type in ("int", int)}
_SCOPES = {"sf": "salesforce", "hs": "hubspot", "salesforce": "salesforce", "hubspot": "hubspot"}


def parse_fault_spec(spec: str | None) -> dict[str, FaultPlan]:
    """Parse a spec into one plan per API (``{"salesforce": ..., "hubspot": ...}``)."""
    plans = {"salesforce": FaultPlan(), "hubspot": FaultPlan()}
    if not spec:
        return plans
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        if "=" not in item:
            raise FaultSpecError(f"fault spec item {item!r} is not key=value")
        key, value = (part.strip() for part in item.split("=", 1))
        targets = list(plans)
        if "." in key:
            scope, key = key.split(".", 1)
            if scope not in _SCOPES:
                raise FaultSpecError(f"fault spec scope {scope!r} is not one of sf, hs")
            targets = [_SCOPES[scope]]
        if key in _FLOAT_KEYS:
            try:
                parsed: float | int = float(value)
            except ValueError as exc:
                raise FaultSpecError(f"fault spec key {key!r}: {value!r} is not a number") from exc
            if key.startswith("rate_") or key in ("drop", "record_fail", "no_retry_after", "concurrent_limit",
                                                                 "lock_single", "bulk_job_fail"):
                if not 0.0 <= parsed <= 1.0:
                    raise FaultSpecError(f"fault spec key {key!r}: {value} is not a share in [0, 1]")
        elif key in _INT_KEYS:
            try:
                parsed = int(value)
            except ValueError as exc:
                raise FaultSpecError(f"fault spec key {key!r}: {value!r} is not a whole number") from exc
        else:
            known = ", ".join(sorted(_FLOAT_KEYS | _INT_KEYS))
            raise FaultSpecError(f"fault spec key {key!r} is unknown (known: {known})")
        for target in targets:
            setattr(plans[target], key, parsed)
    return plans


class FaultInjector:
    """Decides, per request, which fault (if any) to inject. Seeded, thread-safe."""

    def __init__(self, plan: FaultPlan | None = None, seed: int = 0) -> None:
        self.plan = plan or FaultPlan()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: dict[str, int] = {}

    def set_plan(self, plan: FaultPlan, seed: int | None = None) -> None:
        with self._lock:
            self.plan = plan
            if seed is not None:
                self._rng = random.Random(seed)

    def _count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1

    def request_fault(self) -> str | None:
        """One of ``"hang"``, ``"drop"``, ``"429"``, ``"500"``, ``"503"`` or None."""
        with self._lock:
            plan = self.plan
            if not plan.any_request_fault:
                return None
            roll = self._rng.random()
            edge = 0.0
            for kind, rate in (("hang", plan.hang), ("drop", plan.drop), ("429", plan.rate_429),
                               ("500", plan.rate_500), ("503", plan.rate_503)):
                edge += rate
                if roll < edge:
                    self._count(kind)
                    return kind
            return None

    def send_retry_after(self) -> bool:
        with self._lock:
            return self._rng.random() >= self.plan.no_retry_after

    def concurrent_fault(self) -> bool:
        """True when this request hits the (simulated) concurrent long-transaction limit."""
        with self._lock:
            if self.plan.concurrent_limit <= 0:
                return False
            hit = self._rng.random() < self.plan.concurrent_limit
            if hit:
                self._count("concurrent")
            return hit

    def lock_fails(self) -> bool:
        """True when a single-record write hits a (simulated) row lock."""
        with self._lock:
            if self.plan.lock_single <= 0:
                return False
            hit = self._rng.random() < self.plan.lock_single
            if hit:
                self._count("lock_single")
            return hit

    def bulk_job_fails(self) -> bool:
        """True when a Bulk 2.0 query job ends ``Failed`` (decided when it would complete)."""
        with self._lock:
            if self.plan.bulk_job_fail <= 0:
                return False
            failed = self._rng.random() < self.plan.bulk_job_fail
            if failed:
                self._count("bulk_job_fail")
            return failed

    def record_fails(self) -> bool:
        with self._lock:
            if self.plan.record_fail <= 0:
                return False
            failed = self._rng.random() < self.plan.record_fail
            if failed:
                self._count("record_fail")
            return failed
