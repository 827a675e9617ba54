"""The HubSpot API subset served over real HTTP/1.1 to the unmodified ``hubspot-api-client``.

``HubSpotServer(clock).start()`` serves in daemon threads on loopback; point the client at
``base_url`` (see docs/crmsim-hubspot.md). Every response is JSON (or an empty 204) with
HubSpot's headers: correlation ids, rate-limit headers, and a ``Date`` taken from the simulated
clock. Errors use HubSpot's envelope; nothing answers with a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import re
import socket
import threading
import time
import uuid
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from datetime import datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from crmsim.faults import FaultInjector
from crmsim.hubspot import schema
from crmsim.hubspot.errors import HubSpotAPIError, bad_request, not_found, validation_error
from crmsim.hubspot.search import SearchEngine, record_json, returned_names
from crmsim.hubspot.store import HubSpotStore, Record
from crmsim.model import SimClock
from crmsim.strictness import Strictness

logger = logging.getLogger("crmsim.hubspot")

LIST_MAX_LIMIT = 100
LIST_MAX_HISTORY_LIMIT = 50
BATCH_MAX_INPUTS = 100
BURST_MAX = 190  # Professional/Enterprise private-app burst per 10 s (enforced: Strictness.burst)
BURST_INTERVAL_MS = 10_000
_AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
    "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)

Handler = Callable[["_Request"], tuple[int, Any]]


class _Request:
    """What a route handler sees: method, path parameters, query, parsed JSON body."""

    def __init__(
        self,
        method: str,
        params: dict[str, str],
        query: dict[str, list[str]],
        raw_body: bytes,
        content_type: str,
    ) -> None:
        self.method = method
        self.params = params
        self.query = query
        self.raw_body = raw_body
        self.content_type = content_type

    def json(self) -> Any:
        if not self.raw_body.strip():
            return None
        try:
            return json.loads(self.raw_body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HubSpotAPIError(
                400,
                "VALIDATION_ERROR",
                f"Invalid input JSON on line {exc.lineno if isinstance(exc, json.JSONDecodeError) else 1}: {exc}",  # noqa: E501
                sub_category="INVALID_JSON",
            ) from exc

    def json_object(self) -> dict[str, Any]:
        body = self.json()
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object")
        return body

    def one(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def many(self, name: str) -> list[str]:
        """A repeated or comma-separated query parameter as a list."""
        out: list[str] = []
        for value in self.query.get(name, []):
            out.extend(v for v in value.split(",") if v)
        return out

    def flag(self, name: str) -> bool:
        value = self.one(name)
        return value is not None and value.lower() == "true"

    def int_param(self, name: str, default: int, maximum: int) -> int:
        value = self.one(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError as exc:
            raise bad_request(f"{name} must be a whole number, got {value!r}") from exc
        if number < 1 or number > maximum:
            raise bad_request(f"{name} must be between 1 and {maximum}; got {number}")
        return number


def _object_type(name: str) -> str:
    canonical = schema.canonical_type(name)
    if canonical is None:
        raise HubSpotAPIError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {name}")
    return canonical


def _encode_after(next_id: int) -> str:
    return base64.b64encode(f"{next_id}\n".encode()).decode()


def _decode_after(token: str | None) -> int:
    if not token:
        return 0
    if token.isdigit():
        return int(token)
    try:
        return int(base64.b64decode(unquote(token), validate=False).decode().strip())
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise bad_request(f"Invalid paging token {token!r}") from exc


class HubSpotServer:
    """HubSpot CRM API simulator over HTTP. Construct, ``start()``, use ``base_url`` and ``access_token``."""

    def __init__(self, clock: SimClock, *, seed: int = 0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.clock = clock
        self.seed = seed
        self.store = HubSpotStore(clock, seed=seed)
        self.search_engine = SearchEngine(self.store)
        self.faults = FaultInjector(seed=seed)
        self._rng = random.Random(f"hubspot-token:{seed}")
        self.access_token = self._new_token()
        self.refresh_token = str(uuid.UUID(int=self._rng.getrandbits(128)))
        self.client_id = "crmsim-client"
        self.client_secret = "crmsim-secret"  # noqa: S105 - a fixed simulator credential, not a secret
        self._host = host
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._limited: dict[str, int] = {}  # 429s of the portal's own rate limits, by kind
        self._api_calls = 0
        self._daily_calls = 0
        self._daily_date = clock.now().date()
        self._authenticated_calls = 0
        self._expired_once = False
        self._recent: deque[float] = deque()
        self._routes = self._build_routes()
        self.strictness = Strictness.lenient()
        self._search_times: deque[float] = deque()

    def apply_strictness(self, org: Strictness, *, seed: int = 0) -> None:
        """Apply the HubSpot knobs of an org profile (see :mod:`crmsim.strictness`)."""
        self.strictness = org
        self.search_engine.tie_seed = seed if org.tie_order == "shuffle" else None
        self.store.search_lag = org.search_lag
        self.store.merge_mode = org.merge

    # ------------------------------------------------------------------ lifecycle

    def _new_token(self) -> str:
        return "pat-na1-" + str(uuid.UUID(int=self._rng.getrandbits(128)))

    def start(self) -> None:
        """Serve in a daemon thread; returns once the socket accepts connections."""
        server = self

        class _Handler(_HubSpotHandler):
            hub = server

        httpd = _QuietHTTPServer((self._host, self._port), _Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        host, port = str(httpd.server_address[0]), int(httpd.server_address[1])
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="crmsim-hubspot", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ------------------------------------------------------------------ accounting

    def call_counts(self) -> dict[str, int]:
        """Requests received per endpoint label (e.g. ``"POST contacts/search"``), faults included,
        plus ``injected`` (the faults injected so far, as the Salesforce server counts them) and
        ``limited`` (429s of the portal's own rate limits, :class:`Strictness` ``burst`` and
        ``search_rate``: what real HubSpot refuses, not faults)."""
        with self._lock:
            counts = dict(self._counts)
            counts["limited"] = sum(self._limited.values())
        counts["injected"] = sum(self.faults.injected.values())
        return counts

    def reset_counts(self) -> None:
        """Zero the per-endpoint counts and the API-call total (not the daily usage)."""
        with self._lock:
            self._counts.clear()
            self._limited.clear()
            self._api_calls = 0

    @property
    def api_calls(self) -> int:
        """Calls that counted toward the daily limit: authenticated, not rejected by a fault or limit."""
        with self._lock:
            return self._api_calls

    def _rate_headers(self) -> dict[str, str]:
        with self._lock:
            now = time.monotonic()
            while self._recent and now - self._recent[0] > BURST_INTERVAL_MS / 1000:
                self._recent.popleft()
            limit = self.faults.plan.daily_limit
            return {
                "X-HubSpot-RateLimit-Daily": str(limit),
                "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, limit - self._daily_calls)),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(BURST_INTERVAL_MS),
                "X-HubSpot-RateLimit-Max": str(BURST_MAX),
                "X-HubSpot-RateLimit-Remaining": str(max(0, BURST_MAX - len(self._recent))),
            }

    def _count(self, label: str) -> None:
        with self._lock:
            self._counts[label] = self._counts.get(label, 0) + 1

    def _admit(self, authorization: str | None, label: str = "") -> None:
        """Auth, token expiry, the burst and search rates and the daily limit; counts the call
        when admitted (a refused call does not use up the window)."""
        with self._lock:
            token = None
            if authorization and authorization.startswith("Bearer "):
                token = authorization[len("Bearer ") :].strip()
            if token != self.access_token:
                raise HubSpotAPIError(401, "INVALID_AUTHENTICATION", _AUTH_MESSAGE)
            plan = self.faults.plan
            if plan.expire_after > 0 and not self._expired_once and self._authenticated_calls >= plan.expire_after:
                # Models an OAuth access token expiring; private-app tokens do not expire.
                self._expired_once = True
                self.access_token = self._new_token()
                raise HubSpotAPIError(
                    401,
                    "EXPIRED_AUTHENTICATION",
                    "The OAuth token used to make this call expired 0 second(s) ago.",
                )
            self._authenticated_calls += 1
            today = self.clock.now().date()
            if today != self._daily_date:
                self._daily_date = today
                self._daily_calls = 0
            self._rate_limit(label)
            if self._daily_calls >= plan.daily_limit:
                raise HubSpotAPIError(
                    429,
                    "",
                    "You have reached your daily limit.",
                    extra={"errorType": "RATE_LIMIT", "policyName": "DAILY", "requestId": str(uuid.uuid4())},
                )
            self._daily_calls += 1
            self._api_calls += 1
            self._recent.append(time.monotonic())

    def _rate_limit(self, label: str) -> None:
        """429 when the rolling 10 s burst or the per-second search limit is used up (caller holds
        the lock). No ``Retry-After``: HubSpot does not always send one."""
        org = self.strictness
        now = time.monotonic()
        while self._recent and now - self._recent[0] > BURST_INTERVAL_MS / 1000:
            self._recent.popleft()
        if org.burst and len(self._recent) >= org.burst:
            self._limited["burst_429"] = self._limited.get("burst_429", 0) + 1
            raise HubSpotAPIError(429, "", "You have reached your ten_secondly_rolling limit.",
                                  extra={"errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING",
                                         "requestId": str(uuid.uuid4())})
        if label.endswith("/search") and org.search_rate > 0:
            while self._search_times and now - self._search_times[0] >= 1.0:
                self._search_times.popleft()
            if len(self._search_times) >= org.search_rate:
                self._limited["search_429"] = self._limited.get("search_429", 0) + 1
                raise HubSpotAPIError(429, "", "You have reached your secondly limit.",
                                      extra={"errorType": "RATE_LIMIT", "policyName": "SECONDLY",
                                             "requestId": str(uuid.uuid4())})
            self._search_times.append(now)

    # ------------------------------------------------------------------ routing

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], str, Handler]]:
        seg = r"([^/]+)"
        table: list[tuple[str, str, str, Handler]] = [
            ("GET", r"/crm/v3/objects/{t}", "GET {t}", self._list),
            ("POST", r"/crm/v3/objects/{t}", "POST {t}", self._create),
            ("POST", r"/crm/v3/objects/{t}/search", "POST {t}/search", self._search),
            ("POST", r"/crm/v3/objects/{t}/batch/read", "POST {t}/batch/read", self._batch_read),
            ("POST", r"/crm/v3/objects/{t}/batch/update", "POST {t}/batch/update", self._batch_update),
            ("POST", r"/crm/v3/objects/{t}/batch/create", "POST {t}/batch/create", self._batch_create),
            ("POST", r"/crm/v3/objects/{t}/batch/archive", "POST {t}/batch/archive", self._batch_archive),
            ("GET", r"/crm/v3/objects/{t}/{id}", "GET {t}/{id}", self._get),
            ("PATCH", r"/crm/v3/objects/{t}/{id}", "PATCH {t}/{id}", self._update),
            ("DELETE", r"/crm/v3/objects/{t}/{id}", "DELETE {t}/{id}", self._archive),
            ("GET", r"/crm/v3/properties/{t}", "GET properties/{t}", self._properties),
            ("POST", r"/crm/v3/properties/{t}", "POST properties/{t}", self._create_property),
            ("GET", r"/crm/v3/properties/{t}/{name}", "GET properties/{t}/{name}", self._property),
            ("GET", r"/crm/v3/owners/?", "GET owners", self._owners),
            ("GET", r"/crm/v3/owners/{id}", "GET owners/{id}", self._owner),
            ("GET", r"/crm/v4/objects/{t}/{id}/associations/{to}", "GET v4 associations", self._assoc_page),
            (
                "PUT",
                r"/crm/v4/objects/{t}/{id}/associations/default/{to}/{toid}",
                "PUT v4 associations default",
                self._assoc_default,
            ),
            (
                "PUT",
                r"/crm/v4/objects/{t}/{id}/associations/{to}/{toid}",
                "PUT v4 associations",
                self._assoc_create,
            ),
            (
                "POST",
                r"/crm/v4/associations/{t}/{to}/batch/read",
                "POST v4 associations/batch/read",
                self._assoc_batch_read,
            ),
            ("GET", r"/events/v3/events/?", "GET events", self._events),
            ("GET", r"/events/v3/events/event-types", "GET events/event-types", self._event_types),
            ("GET", r"/automation/v2/workflows/?", "GET workflows", self._workflows),
            (
                "POST",
                r"/automation/v2/workflows/{id}/enrollments/contacts/{email}",
                "POST workflow enrollment",
                self._enroll,
            ),
            ("POST", r"/oauth/v1/token", "POST oauth/token", self._oauth_token),
        ]
        routes = []
        for method, template, label, handler in table:
            pattern = template
            for name in ("t", "id", "to", "toid", "name", "email"):
                pattern = pattern.replace("{" + name + "}", f"(?P<{name}>{seg[1:-1]})")
            routes.append((method, re.compile("^" + pattern + "$"), label, handler))
        return routes

    def resolve(self, method: str, path: str) -> tuple[str, Handler | None, dict[str, str]]:
        """(endpoint label, handler or None, path params) for a request line."""
        path_known = False
        for route_method, pattern, label, handler in self._routes:
            match = pattern.match(path)
            if match is None:
                continue
            path_known = True
            if route_method != method:
                continue
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            if "{t}" in label:
                object_type = schema.canonical_type(params.get("t", ""))
                label = label.replace("{t}", object_type or params.get("t", "?"))
            return label, handler, params
        return (
            f"{method} {'(method not allowed)' if path_known else '(unknown)'}",
            None,
            {"known": "1" if path_known else ""},
        )

    # ------------------------------------------------------------------ object endpoints

    def _associations_json(self, object_type: str, object_id: int, wanted: list[str]) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        for raw in wanted:
            to_type = schema.canonical_type(raw)
            if to_type is None:
                continue
            targets = self.store.associated(object_type, object_id, to_type)
            if not targets:
                continue
            label_for = dict(schema.ASSOCIATION_TYPES.get((object_type, to_type), []))
            base = f"{schema.SINGULAR[object_type]}_to_{schema.SINGULAR[to_type]}"
            results = []
            for to_id, type_ids in targets.items():
                for tid in type_ids:
                    kind = (
                        base
                        if label_for.get(tid) == schema.PRIMARY_LABEL or len(label_for) == 1
                        else f"{base}_unlabeled"
                    )
                    results.append({"id": str(to_id), "type": kind})
            out[to_type] = {"results": results}
        return out or None

    def _list(self, req: _Request) -> tuple[int, Any]:
        object_type = _object_type(req.params["t"])
        history_names = self._history_names(object_type, req.many("propertiesWithHistory"))
        # HubSpot allows at most 50 per page when property history is requested.
        limit = req.int_param("limit", 10, LIST_MAX_HISTORY_LIMIT if history_names else LIST_MAX_LIMIT)
        start = _decode_after(req.one("after"))
        archived = req.flag("archived")
        names = returned_names(self.store, object_type, req.many("properties") or None)
        wanted_assoc = req.many("associations")
        store = self.store
        with store.lock:
            order = store.order[object_type]
            records = store.records[object_type]
            idx = bisect_left(order, start)
            page: list[Record] = []
            next_id: int | None = None
            while idx < len(order):
                rec = records[order[idx]]
                idx += 1
                if rec.archived != archived:
                    continue
                if len(page) == limit:
                    next_id = rec.id
                    break
                page.append(rec)
            results = [
                record_json(
                    r,
                    names,
                    self._associations_json(object_type, r.id, wanted_assoc) if wanted_assoc else None,
                    store.history(r, history_names) if history_names else None,
                )
                for r in page
            ]
        body: dict[str, Any] = {"results": results}
        if next_id is not None:
            token = _encode_after(next_id)
            body["paging"] = {
                "next": {
                    "after": token,
                    "link": f"{self.base_url}/crm/v3/objects/{object_type}?after={token}",
                }
            }
        return 200, body

    def _lookup(self, object_type: str, object_id: str, id_property: str | None, archived: bool = False) -> Record:
        if id_property and id_property != "hs_object_id":
            if self.store.property_def(object_type, id_property) is None:
                raise bad_request(f"Property {id_property} does not exist")
            found = self.store.find_by_property(object_type, id_property, object_id)
            if found is None:
                raise not_found(f"Object not found. {id_property}={object_id}")
            return found
        return self.store.get(object_type, object_id, archived=archived)

    def _get(self, req: _Request) -> tuple[int, Any]:
        object_type = _object_type(req.params["t"])
        rec = self._lookup(object_type, req.params["id"], req.one("idProperty"), req.flag("archived"))
        names = returned_names(self.store, object_type, req.many("properties") or None)
        wanted = req.many("associations")
        history_names = self._history_names(object_type, req.many("propertiesWithHistory"))
        with self.store.lock:
            return 200, record_json(
                rec,
                names,
                self._associations_json(object_type, rec.id, wanted) if wanted else None,
                self.store.history(rec, history_names) if history_names else None,
            )

    def _history_names(self, object_type: str, requested: list[str]) -> list[str]:
        known = self.store.properties[object_type]
        return [n for n in dict.fromkeys(requested) if n in known]

    def _create(self, req: _Request) -> tuple[int, Any]:
        object_type = _object_type(req.params["t"])
        body = req.json_object()
        props = body.get("properties")
        if not isinstance(props, dict):
            raise bad_request("'properties' is required and must be an object")
        associations = body.get("associations") or []
        if not isinstance(associations, list):
            raise bad_request("'associations' must be a list")
        with self.store.lock:
            rec = self.store.api_create(object_type, props, associations)
            names = returned_names(self.store, object_type, list(rec.props))
            return 201, record_json(rec, names)

    def _update(self, req: _Request) -> tuple[int, Any]:
        object_type = _object_type(req.params["t"])
        body = req.json_object()
        props = body.get("properties")
        if not isinstance(props, dict):
            raise bad_request("'properties' is required and must be an object")
        with self.store.lock:
            rec = self._lookup(object_type, req.params["id"], req.one("idProperty"))
            self.store.api_update(object_type, rec.id, props)
            names = returned_names(self.store, object_type, list(rec.props))
            return 200, record_json(rec, names)

    def _archive(self, req: _Request) -> tuple[int, Any]:
        object_type = _object_type(req.params["t"])
        self.store.api_archive(object_type, req.params["id"])
        return 204, None

    def _search(self, req: _Request) -> tuple[int, Any]:
        object_type = _object_type(req.params["t"])
        return 200, self.search_engine.search(object_type, req.json_object())

    def _batch_inputs(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            raise bad_request("'inputs' is required and must be a list")
        if len(inputs) > BATCH_MAX_INPUTS:
            raise HubSpotAPIError(
                400,
                "VALIDATION_ERROR",
                f"Batch input size {len(inputs)} exceeds the limit of {BATCH_MAX_INPUTS}.",
                sub_category="BATCH_SIZE_LIMIT_EXCEEDED",
            )
        if not all(isinstance(i, dict) for i in inputs):
            raise bad_request("Each input must be an object")
        return inputs

    def _batch_envelope(
        self, results: list[dict[str, Any]], errors: list[dict[str, Any]], ok_status: int
    ) -> tuple[int, Any]:
        now = schema.format_ts(self.clock.now())
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "requestedAt": now,
            "startedAt": now,
            "completedAt": now,
            "links": {},
        }
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
            return 207, body
        return ok_status, body

    @staticmethod
    def _not_found_error(object_type: str, ids: list[str]) -> dict[str, Any]:
        kind = schema.SINGULAR[object_type].upper()
        return {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": f"Could not get some {kind} objects, they may be deleted or not exist. Check that ids "
            "are valid.",
            "context": {"ids": ids},
            "errors": [],
            "links": {},
        }

    def _batch_read(self, req: _Request) -> tuple[int, Any]:
        object_type = _object_type(req.params["t"])
        body = req.json_object()
        inputs = self._batch_inputs(body)
        archived = req.flag("archived")
        id_property = body.get("idProperty")
        requested = body.get("properties") or None
        names = returned_names(self.store, object_type, [str(p) for p in requested] if requested else None)
        raw_history = body.get("propertiesWithHistory") or []
        history_names = self._history_names(object_type, [str(p) for p in raw_history])
        if history_names and len(inputs) > LIST_MAX_HISTORY_LIMIT:
            raise bad_request(f"At most {LIST_MAX_HISTORY_LIMIT} inputs when propertiesWithHistory is requested")
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        with self.store.lock:
            for item in inputs:
                raw_id = str(item.get("id", ""))
                try:
                    rec = self._lookup(object_type, raw_id, id_property, archived)
                except HubSpotAPIError:
                    missing.append(raw_id)
                    continue
                history = self.store.history(rec, history_names) if history_names else None
                results.append(record_json(rec, names, None, history))
        errors = [self._not_found_error(object_type, missing)] if missing else []
        return self._batch_envelope(results, errors, 200)

    def _batch_update(self, req: _Request) -> tuple[int, Any]:
        object_type = _object_type(req.params["t"])
        inputs = self._batch_inputs(req.json_object())
        ids = [str(i.get("id", "")) for i in inputs]
        if len(set(ids)) != len(ids):
            raise bad_request(
                "Duplicate IDs found in batch input: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1}))
            )
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        missing: list[str] = []
        to_apply: list[tuple[Record, dict[str, str | None], list[str]]] = []
        store = self.store
        with store.lock:
            for item, raw_id in zip(inputs, ids, strict=True):
                if not item.get("idProperty") and store.resolve_merged(object_type, raw_id) is not None:
                    # A merged-away id: HubSpot leaves it out of results with no error (and writes nothing).
                    continue
                try:
                    rec = self._lookup(object_type, raw_id, item.get("idProperty"))
                except HubSpotAPIError:
                    missing.append(raw_id)
                    continue
                props = item.get("properties")
                if not isinstance(props, dict) or not props:
                    errors.append(
                        {
                            "status": "error",
                            "category": "VALIDATION_ERROR",
                            "message": "'properties' is required for each input",
                            "context": {"ids": [raw_id]},
                            "errors": [],
                            "links": {},
                        }
                    )
                    continue
                values, details = store.validate(object_type, props)
                if details and self.strictness.batch_invalid == "request":
                    # HubSpot documents 207 only for batch creates: an invalid value in a batch
                    # update fails the whole request with one 400 and writes nothing.
                    raise validation_error(details)
                if details:
                    error = validation_error(details)
                    errors.append(
                        {
                            "status": "error",
                            "category": "VALIDATION_ERROR",
                            "message": error.message,
                            "context": {"ids": [raw_id]},
                            "errors": details,
                            "links": {},
                        }
                    )
                    continue
                if self.faults.record_fails():
                    errors.append(
                        {
                            "status": "error",
                            "category": "INTERNAL_ERROR",
                            "subCategory": "RETRIABLE",
                            "message": f"Temporary failure writing record {raw_id}; retry it.",
                            "context": {"ids": [raw_id]},
                            "errors": [],
                            "links": {},
                        }
                    )
                    continue
                to_apply.append((rec, values, list(props)))
            for rec, values, names in to_apply:
                store._apply(rec, values, "api")  # noqa: SLF001 - the server is the store's other half
                results.append(record_json(rec, returned_names(store, object_type, names)))
        if missing:
            errors.insert(0, self._not_found_error(object_type, missing))
        return self._batch_envelope(results, errors, 200)

    def _batch_create(self, req: _Request) -> tuple[int, Any]:
        object_type = _object_type(req.params["t"])
        inputs = self._batch_inputs(req.json_object())
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        with self.store.lock:
            for n, item in enumerate(inputs):
                props = item.get("properties")
                try:
                    if not isinstance(props, dict):
                        raise bad_request("'properties' is required for each input")
                    rec = self.store.api_create(object_type, props, item.get("associations") or [])
                except HubSpotAPIError as exc:
                    errors.append(
                        {
                            "status": "error",
                            "category": exc.category,
                            "message": exc.message,
                            "context": {"index": [str(n)]},
                            "errors": exc.errors or [],
                            "links": {},
                        }
                    )
                    continue
                results.append(record_json(rec, returned_names(self.store, object_type, list(rec.props))))
        return self._batch_envelope(results, errors, 201)

    def _batch_archive(self, req: _Request) -> tuple[int, Any]:
        object_type = _object_type(req.params["t"])
        inputs = self._batch_inputs(req.json_object())
        for item in inputs:
            self.store.api_archive(object_type, str(item.get("id", "")))
        return 204, None

    # ------------------------------------------------------------------ properties, owners

    def _properties(self, req: _Request) -> tuple[int, Any]:
        object_type = _object_type(req.params["t"])
        if req.flag("archived"):
            return 200, {"results": []}
        with self.store.lock:
            names = list(self.store.properties[object_type])
            return 200, {"results": [self.store.property_json(object_type, n) for n in names]}

    def _property(self, req: _Request) -> tuple[int, Any]:
        object_type = _object_type(req.params["t"])
        name = req.params["name"]
        if self.store.property_def(object_type, name) is None:
            raise HubSpotAPIError(404, "OBJECT_NOT_FOUND", f"Unable to find property {name} on {object_type}")
        return 200, self.store.property_json(object_type, name)

    def _create_property(self, req: _Request) -> tuple[int, Any]:
        object_type = _object_type(req.params["t"])
        return 201, self.store.create_property(object_type, req.json_object())

    def _owners(self, req: _Request) -> tuple[int, Any]:
        limit = req.int_param("limit", 100, 500)
        start = _decode_after(req.one("after"))
        email = req.one("email")
        archived = req.flag("archived")
        with self.store.lock:
            owners = [
                o
                for oid, o in sorted(self.store.owners.items())
                if oid >= start
                and o.get("archived", False) == archived
                and (email is None or o.get("email", "").lower() == email.lower())
            ]
            page = [dict(o) for o in owners[:limit]]
        body: dict[str, Any] = {"results": page}
        if len(owners) > limit:
            body["paging"] = {"next": {"after": _encode_after(int(owners[limit]["id"]))}}
        return 200, body

    def _owner(self, req: _Request) -> tuple[int, Any]:
        raw = req.params["id"]
        with self.store.lock:
            owner = self.store.owners.get(int(raw)) if raw.isdigit() else None
            if owner is None:
                raise not_found(f"Owner {raw} not found")
            return 200, dict(owner)

    # ------------------------------------------------------------------ associations v4

    def _assoc_types_json(self, from_type: str, to_type: str, type_ids: list[int]) -> list[dict[str, Any]]:
        labels = dict(schema.ASSOCIATION_TYPES.get((from_type, to_type), []))
        return [{"category": "HUBSPOT_DEFINED", "typeId": tid, "label": labels.get(tid)} for tid in type_ids]

    def _assoc_page(self, req: _Request) -> tuple[int, Any]:
        from_type = _object_type(req.params["t"])
        to_type = _object_type(req.params["to"])
        rec = self.store.get(from_type, req.params["id"])
        limit = req.int_param("limit", 500, 500)
        offset = _decode_after(req.one("after"))
        targets = list(self.store.associated(from_type, rec.id, to_type).items())
        page = targets[offset : offset + limit]
        body: dict[str, Any] = {
            "results": [
                {"toObjectId": tid, "associationTypes": self._assoc_types_json(from_type, to_type, types)}
                for tid, types in page
            ]
        }
        if offset + limit < len(targets):
            body["paging"] = {"next": {"after": str(offset + limit)}}
        return 200, body

    def _assoc_target(self, req: _Request) -> tuple[str, Record, str, Record]:
        from_type = _object_type(req.params["t"])
        to_type = _object_type(req.params["to"])
        source = self.store.get(from_type, req.params["id"])
        target = self.store.get(to_type, req.params["toid"])
        return from_type, source, to_type, target

    def _assoc_create(self, req: _Request) -> tuple[int, Any]:
        from_type, source, to_type, target = self._assoc_target(req)
        specs = req.json()
        if not isinstance(specs, list) or not specs:
            raise bad_request("The body must be a non-empty list of association specs")
        allowed = dict(schema.ASSOCIATION_TYPES.get((from_type, to_type), []))
        type_ids: list[int] = []
        for spec in specs:
            tid = spec.get("associationTypeId") if isinstance(spec, dict) else None
            if not isinstance(tid, int) or tid not in allowed:
                raise bad_request(
                    f"associationTypeId {tid!r} is not valid from {from_type} to {to_type}; valid: {sorted(allowed)}"
                )
            type_ids.append(tid)
        self.store.associate(from_type, source.id, to_type, target.id, type_ids)
        labels = [allowed[t] for t in type_ids if allowed.get(t)]
        return 201, {
            "fromObjectTypeId": schema.OBJECT_TYPE_IDS[from_type],
            "fromObjectId": source.id,
            "toObjectTypeId": schema.OBJECT_TYPE_IDS[to_type],
            "toObjectId": target.id,
            "labels": labels,
        }

    def _assoc_default(self, req: _Request) -> tuple[int, Any]:
        from_type, source, to_type, target = self._assoc_target(req)
        types = schema.ASSOCIATION_TYPES.get((from_type, to_type))
        if not types:
            raise bad_request(f"No default association from {from_type} to {to_type}")
        default_id = types[-1][0]  # the unlabeled type
        self.store.associate(from_type, source.id, to_type, target.id, [default_id])
        return self._batch_envelope(
            [
                {
                    "from": {"id": str(source.id)},
                    "to": {"id": str(target.id)},
                    "associationSpec": {
                        "associationCategory": "HUBSPOT_DEFINED",
                        "associationTypeId": default_id,
                    },
                }
            ],
            [],
            200,
        )

    def _assoc_batch_read(self, req: _Request) -> tuple[int, Any]:
        from_type = _object_type(req.params["t"])
        to_type = _object_type(req.params["to"])
        inputs = self._batch_inputs(req.json_object())
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        for item in inputs:
            raw_id = str(item.get("id", ""))
            try:
                rec = self.store.get(from_type, raw_id)
            except HubSpotAPIError:
                missing.append(raw_id)
                continue
            targets = self.store.associated(from_type, rec.id, to_type)
            results.append(
                {
                    "from": {"id": str(rec.id)},
                    "to": [
                        {
                            "toObjectId": tid,
                            "associationTypes": self._assoc_types_json(from_type, to_type, types),
                        }
                        for tid, types in targets.items()
                    ],
                }
            )
        errors = [self._not_found_error(from_type, missing)] if missing else []
        return self._batch_envelope(results, errors, 200)

    # ------------------------------------------------------------------ events, workflows, oauth

    def _events(self, req: _Request) -> tuple[int, Any]:
        if self.strictness.hub_tier != "enterprise":
            # The Events API is an Enterprise feature (x-hubspot-product-tier-requirements); the exact
            # body for a hub below that tier is unverified: a 403 like a missing-scope answer.
            raise HubSpotAPIError(403, "MISSING_SCOPES",
                                  "This hub does not have access to the event analytics API (Enterprise only).")
        object_type = req.one("objectType")
        if object_type is not None:
            canonical = schema.canonical_type(object_type)
            if canonical is None:
                raise bad_request(f"Unknown objectType {object_type!r}")
            object_type = schema.SINGULAR[canonical]
        object_id = req.one("objectId")
        if object_id is not None and object_type is None:
            raise bad_request("objectId needs objectType")

        def when(name: str) -> datetime | None:
            value = req.one(name)
            if not value:
                return None
            try:
                return schema.parse_ts(value.replace(" ", "+"))
            except (ValueError, OverflowError, OSError) as exc:
                raise bad_request(f"{name} must be ISO 8601 or epoch ms, got {value!r}") from exc

        sort = (req.one("sort") or "ASCENDING").upper()
        if sort not in ("ASCENDING", "DESCENDING"):
            raise bad_request("sort must be ASCENDING or DESCENDING")
        limit = req.int_param("limit", 100, 1000)
        page, nxt = self.store.events_page(
            object_type=object_type,
            object_id=object_id,
            event_type=req.one("eventType"),
            occurred_after=when("occurredAfter"),
            occurred_before=when("occurredBefore"),
            descending=sort == "DESCENDING",
            offset=_decode_after(req.one("after")),
            limit=limit,
        )
        body: dict[str, Any] = {"results": [e.to_json() for e in page]}
        if nxt is not None:
            body["paging"] = {"next": {"after": str(nxt)}}
        return 200, body

    def _event_types(self, req: _Request) -> tuple[int, Any]:
        return 200, {"eventTypes": sorted(set(schema.EVENT_TYPE_FOR_ACTIVITY.values()))}

    def _workflows(self, req: _Request) -> tuple[int, Any]:
        with self.store.lock:
            return 200, {"workflows": [dict(w) for w in self.store.workflows.values()]}

    def _enroll(self, req: _Request) -> tuple[int, Any]:
        raw = req.params["id"]
        if not raw.isdigit():
            raise not_found(f"Workflow {raw} not found")
        self.store.enroll(int(raw), req.params["email"])
        return 204, None

    def _oauth_token(self, req: _Request) -> tuple[int, Any]:
        form = parse_qs(req.raw_body.decode("utf-8", "replace"))
        if "json" in req.content_type:
            form = {k: [str(v)] for k, v in req.json_object().items()}
        grant = (form.get("grant_type") or [""])[0]
        if (
            grant != "refresh_token"
            or (form.get("refresh_token") or [""])[0] != self.refresh_token
            or (form.get("client_id") or [""])[0] != self.client_id
            or (form.get("client_secret") or [""])[0] != self.client_secret
        ):
            raise HubSpotAPIError(
                400,
                "BAD_REFRESH_TOKEN",
                "missing or unknown refresh token",
                extra={"error": "BAD_REFRESH_TOKEN"},
            )
        with self._lock:
            token = self.access_token
        return 200, {
            "access_token": token,
            "refresh_token": self.refresh_token,
            "expires_in": 1800,
            "token_type": "bearer",
        }


class _QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-response is normal under faults: log at debug, no stderr trace."""
        logger.debug("crmsim.hubspot: connection error from %s", client_address, exc_info=True)


class _HubSpotHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a connection may idle or stall mid-request before it is closed: no hangs
    server_version = "crmsim-hubspot"
    sys_version = ""
    hub: HubSpotServer  # set on the per-server subclass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: no per-request log lines."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header carries the simulated clock's time (connectors use it as "now")."""
        return format_datetime(self.hub.clock.now(), usegmt=True)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def _send(self, status: int, body: Any, correlation_id: str, extra_headers: dict[str, str] | None = None) -> None:
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        headers = self.hub._rate_headers()  # noqa: SLF001
        headers.update({"X-HubSpot-Correlation-Id": correlation_id, "X-Request-Id": correlation_id})
        headers.update(extra_headers or {})
        for name, value in headers.items():
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        # Headers and body in one write: two small writes meet Nagle + delayed ACK (40 ms a call).
        self._headers_buffer.append(b"\r\n" + payload)  # type: ignore[attr-defined]
        self.flush_headers()

    def _handle(self, method: str) -> None:
        hub = self.hub
        if hub._httpd is None:  # noqa: SLF001 - stopped: a pooled keep-alive connection gets no answer
            self.close_connection = True
            return
        correlation_id = str(uuid.uuid4())
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        raw_body = self.rfile.read(length) if length > 0 else b""
        split = urlsplit(self.path)
        label, handler, params = hub.resolve(method, split.path)
        hub._count(label)  # noqa: SLF001
        plan = hub.faults.plan
        if plan.latency_ms > 0:
            time.sleep(plan.latency_ms / 1000)
        fault = hub.faults.request_fault()
        if fault == "hang":  # held, then closed unanswered: the client's read timeout fires first
            time.sleep(plan.hang_s)
            self.close_connection = True
            return
        if fault == "drop":
            # Close without a response: the client sees a dropped connection.
            self.close_connection = True
            return
        try:
            if fault == "429":
                headers = {}
                if hub.faults.send_retry_after():
                    # Whole seconds: HTTP allows no fractions and urllib3 raises InvalidHeader on them.
                    headers["Retry-After"] = str(max(0, int(plan.retry_after)))
                raise HubSpotAPIError(
                    429,
                    "",
                    "You have reached your ten_secondly_rolling limit.",
                    headers=headers,
                    extra={
                        "errorType": "RATE_LIMIT",
                        "policyName": "TEN_SECONDLY_ROLLING",
                        "requestId": correlation_id,
                    },
                )
            if fault in ("500", "503"):
                raise HubSpotAPIError(
                    int(fault),
                    "INTERNAL_ERROR" if fault == "500" else "SERVICE_UNAVAILABLE",
                    "Internal error" if fault == "500" else "Service temporarily unavailable",
                )
            if handler is None:
                if params.get("known"):
                    raise HubSpotAPIError(405, "VALIDATION_ERROR", f"Method {method} is not allowed on {split.path}")
                raise HubSpotAPIError(404, "", "resource not found")
            if handler != hub._oauth_token:  # noqa: SLF001 - the token endpoint authenticates by form
                hub._admit(self.headers.get("Authorization"), label)  # noqa: SLF001
            hub.store.apply_due()
            request = _Request(
                method,
                params,
                parse_qs(split.query, keep_blank_values=True),
                raw_body,
                self.headers.get("Content-Type") or "",
            )
            status, body = handler(request)
            self._send(status, body, correlation_id)
        except HubSpotAPIError as exc:
            self._send(exc.status, exc.body(correlation_id), correlation_id, exc.headers)
        except Exception:  # the boundary: never a stack trace or a hang for the client
            logger.exception("crmsim.hubspot: unexpected error on %s %s", method, self.path)
            self._send(
                500,
                HubSpotAPIError(500, "INTERNAL_ERROR", "Internal error").body(correlation_id),
                correlation_id,
            )
