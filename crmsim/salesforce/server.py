"""The Salesforce REST simulator: HTTPS, OAuth, SOQL queries, sObject and Composite writes.

Serves the subset of the REST API that ``simple-salesforce`` 1.12.10 calls (see
docs/crmsim-salesforce.md) over real TLS on 127.0.0.1, with seeded fault injection. Every
response carries the *simulated* clock's time in ``Date`` and ``Sforce-Limit-Info:
api-usage=N/M``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
import re
import socket
import ssl
import string
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import unescape as xml_unescape

from crmsim.faults import FaultInjector, FaultPlan
from crmsim.model import SimClock
from crmsim.salesforce.bulk import BulkApiError, BulkQueryJobs, bulk_label
from crmsim.salesforce.schema import SOBJECTS, SOBJECTS_LOWER, SObjectDef
from crmsim.salesforce.selection import select_values
from crmsim.salesforce.soql import BoundField, SoqlError, compile_query
from crmsim.salesforce.store import (
    RecordError,
    SalesforceStore,
    encode_datetime,
    encode_value,
    parse_api_datetime,
    to18,
    well_formed_id,
)
from crmsim.tls import ca_bundle_path, server_ssl_context

log = logging.getLogger(__name__)

MAX_COLLECTION = 200
MAX_COMPOSITE = 25
MAX_COMPOSITE_HEAVY = 5
MAX_URI_AND_HEADERS = 16_384  # bytes of a REST request's URI and headers (help article 000386264)
_VERSION_RE = re.compile(r"^v(\d+\.\d)$")
_REF_RE = re.compile(r"@\{([A-Za-z0-9_]+)\.([^}]+)\}")
_NOT_FOUND = "The requested resource does not exist"


class ApiError(Exception):
    """An error answered as Salesforce's list body ``[{"message","errorCode"[,"fields"]}]``."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers or {}

    def body(self) -> list[dict[str, Any]]:
        item: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            item["fields"] = self.fields
        return [item]


@dataclass
class Response:
    status: int
    payload: Any = None  # JSON-able; None means empty body
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a pre-serialised body (OAuth)


@dataclass
class _Cursor:
    sobject: str
    select: list[BoundField]
    rows: list[dict[str, Any]]  # immutable values dicts: a snapshot of the matching record versions
    last_used: float


def _error_from_record(exc: RecordError) -> dict[str, Any]:
    return {"statusCode": exc.code, "message": exc.message, "fields": exc.fields}


class SalesforceServer:
    """A Salesforce org over HTTPS for ``simple-salesforce``; see docs/crmsim-salesforce.md.

    Construct, fill :attr:`store` (a :class:`~crmsim.model.FunnelSink`), :meth:`start`, then point
    clients at :attr:`instance_url` with :func:`connectors.salesforce.session.simulator_session`.
    """

    def __init__(self, clock: SimClock, *, seed: int = 0, host: str = "127.0.0.1", port: int = 0,
                 api_version: str = "59.0", page_size: int = 2000) -> None:
        self.clock = clock
        self.seed = seed
        self.host = host
        self.port = port
        self.api_version = api_version
        self.page_size = max(1, min(page_size, 2000))
        self.store = SalesforceStore(clock, seed=seed)
        self.faults = FaultInjector(seed=seed)
        rng = random.Random(f"crmsim-salesforce-credentials-{seed}")
        alphabet = string.ascii_letters + string.digits
        self.client_id = "3MVG9" + "".join(rng.choice(alphabet + "._") for _ in range(80))
        self.client_secret = "".join(rng.choice("0123456789ABCDEF") for _ in range(64))
        self.username = "admin@acme.example"
        self.password = "crmsim-" + "".join(rng.choice(alphabet) for _ in range(12))
        self.security_token = "".join(rng.choice(alphabet) for _ in range(24))
        self._rng = rng
        self._sessions_issued = 0
        self.session_id = self._new_session_id()
        self.ca_bundle = ca_bundle_path()
        self.instance_url = ""
        self.auto_assign_headers: list[str | None] = []
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._api_calls = 0
        self._auth_calls = 0
        self._expired_once = False
        self.sessions_expired = 0
        self._plan_seen: FaultPlan | None = None
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self.bulk = BulkQueryJobs(self.store, clock, self.faults, _values_lookup(self.store))
        self._cursor_counter = 0
        self._httpd: _TLSServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Bind, serve in a daemon thread and return once connections are accepted."""
        if self._httpd is not None:
            return
        httpd = _TLSServer((self.host, self.port), _Handler, server_ssl_context(), self)
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.instance_url = f"https://{self.host}:{self.port}"
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"crmsim-salesforce-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close open keep-alive connections and release the port."""
        httpd = self._httpd
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_all_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    # ------------------------------------------------------------------ counters
    def call_counts(self) -> dict[str, int]:
        """Requests received per endpoint label (faulted ones included), plus ``injected`` (total)."""
        with self._lock:
            counts = dict(self._counts)
        counts["injected"] = sum(self.faults.injected.values()) + self.sessions_expired
        return counts

    def injected_counts(self) -> dict[str, int]:
        """Injected faults by kind (``drop``, ``429``, ``500``, ``503``, ``record_fail``, ``expire``)."""
        counts = dict(self.faults.injected)
        if self.sessions_expired:
            counts["expire"] = self.sessions_expired
        return counts

    def reset_counts(self) -> None:
        """Zero the per-endpoint counts and the daily API usage (a new simulated day)."""
        with self._lock:
            self._counts.clear()
            self._api_calls = 0

    @property
    def api_calls(self) -> int:
        """Calls that count toward the org's daily limit (a Composite call counts once)."""
        with self._lock:
            return self._api_calls

    # ------------------------------------------------------------------ sessions
    def _new_session_id(self) -> str:
        self._sessions_issued += 1
        token = "".join(self._rng.choice(string.ascii_letters + string.digits + "._") for _ in range(94))
        return f"{self.store.org_id[:15]}!AQ{token}"

    def _authenticate(self, headers: Any) -> bool:
        auth = headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() not in ("bearer", "oauth"):
            return False
        with self._lock:
            plan = self.faults.plan
            if plan is not self._plan_seen:
                self._plan_seen = plan
                self._auth_calls = 0
                self._expired_once = False
            if token.strip() != self.session_id:
                return False
            self._auth_calls += 1
            if plan.expire_after > 0 and not self._expired_once and self._auth_calls >= plan.expire_after:
                # The token used by this call stays good for it; the next call with it gets a 401.
                self._expired_once = True
                self.sessions_expired += 1
                self.session_id = self._new_session_id()
            return True

    # ------------------------------------------------------------------ request entry point
    def handle(self, method: str, target: str, headers: Any, body: bytes) -> Response | None:
        """Answer one HTTP request; None means "drop the connection without a response"."""
        url = urlsplit(target)
        path = unquote(url.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        segments = [s for s in path.split("/") if s]
        label = _label(method, segments)
        with self._lock:
            self._counts[label] += 1
        if segments[:3] == ["services", "oauth2", "token"]:
            return self._oauth(method, headers, body)
        if segments[:3] == ["services", "Soap", "u"] and method == "POST":
            return self._soap_login(body)
        plan = self.faults.plan
        if plan.latency_ms > 0:
            time.sleep(plan.latency_ms / 1000.0)
        fault = self.faults.request_fault()
        if fault == "hang":  # held, then closed unanswered: the client's read timeout fires first
            time.sleep(plan.hang_s)
            return None
        if fault == "drop":
            return None
        if fault in ("429", "503"):
            extra = {"Retry-After": _retry_after(plan.retry_after)} if self.faults.send_retry_after() else {}
            return self._rest_error(ApiError(503, "SERVER_UNAVAILABLE",
                                             "Server is temporarily unavailable. Please try again later.",
                                             headers=extra))
        if fault == "500":
            return self._rest_error(ApiError(
                500, "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact support: "
                "1404186391-51847 (-1163938219)"))
        if segments[:2] != ["services", "data"]:
            return self._rest_error(ApiError(404, "NOT_FOUND", _NOT_FOUND))
        with self._lock:
            over = self._api_calls >= plan.daily_limit
        if over:
            return self._rest_error(ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
        if self.faults.concurrent_fault():
            # Same errorCode as the daily quota; only the message (and Sforce-Limit-Info, far from
            # its max) tells them apart. Not counted toward the daily usage.
            return self._rest_error(ApiError(403, "REQUEST_LIMIT_EXCEEDED",
                                             "ConcurrentPerOrgLongTxn Limit exceeded."))
        if not self._authenticate(headers):
            return self._rest_error(ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid"))
        with self._lock:
            self._api_calls += 1
        payload: Any = None
        if body.strip():
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                return self._rest_error(ApiError(400, "JSON_PARSER_ERROR",
                                                 f"Unexpected character in JSON request body: {exc}"))
        try:
            response = self.route(method, segments[2:], params, headers, payload)
        except ApiError as exc:
            response = Response(exc.status, exc.body(), exc.headers)
        except RecordError as exc:
            response = Response(exc.http_status, [{"message": exc.message, "errorCode": exc.code,
                                                   "fields": exc.fields}])
        self._limit_header(response)
        return response

    def _rest_error(self, exc: ApiError) -> Response:
        response = Response(exc.status, exc.body(), dict(exc.headers))
        self._limit_header(response)
        return response

    def _limit_header(self, response: Response) -> None:
        with self._lock:
            used = self._api_calls
        response.headers["Sforce-Limit-Info"] = f"api-usage={used}/{self.faults.plan.daily_limit}"

    # ------------------------------------------------------------------ OAuth
    def _oauth(self, method: str, headers: Any, body: bytes) -> Response:
        if method != "POST":
            return _oauth_error(400, "invalid_request", "must use HTTP POST")
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip()).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return _oauth_error(400, "invalid_client", "invalid client credentials")
            client_id, _, client_secret = decoded.partition(":")
        grant = form.get("grant_type")
        if grant not in ("client_credentials", "password"):
            return _oauth_error(400, "unsupported_grant_type", "grant type not supported")
        if not (client_id and client_secret and hmac.compare_digest(client_id, self.client_id)
                and hmac.compare_digest(client_secret, self.client_secret)):
            return _oauth_error(400, "invalid_client", "invalid client credentials")
        if grant == "password" and (form.get("username") != self.username
                                    or form.get("password") != self.password):
            return _oauth_error(400, "invalid_grant", "authentication failure")
        with self._lock:
            token = self.session_id
        issued = str(int(self.clock.now().timestamp() * 1000))
        user_id = self.store.default_user_id
        ident = f"{self.instance_url}/id/{self.store.org_id}/{user_id}"
        signature = base64.b64encode(hmac.new(self.client_secret.encode(), (ident + issued).encode(),
                                              hashlib.sha256).digest()).decode()
        data = {"access_token": token, "instance_url": self.instance_url, "id": ident, "token_type": "Bearer",
                "issued_at": issued, "signature": signature, "scope": "api"}
        return Response(200, data)

    def _soap_login(self, body: bytes) -> Response:
        """SOAP ``login`` (username + password + security token), as ``simple-salesforce`` sends it."""
        text = body.decode("utf-8", "replace")
        user = re.search(r"<(?:\w+:)?username>(.*?)</(?:\w+:)?username>", text, re.DOTALL)
        secret = re.search(r"<(?:\w+:)?password>(.*?)</(?:\w+:)?password>", text, re.DOTALL)
        envelope = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
                    'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" '
                    'xmlns:sf="urn:fault.partner.soap.sforce.com" '
                    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{}</soapenv:Body>'
                    '</soapenv:Envelope>')
        if not (user and secret and xml_unescape(user.group(1)) == self.username
                and xml_unescape(secret.group(1)) == self.password + self.security_token):
            message = "Invalid username, password, security token; or user locked out."
            fault = (f"<soapenv:Fault><faultcode>INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN: {message}"
                     f'</faultstring><detail><sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>INVALID_LOGIN'
                     f"</sf:exceptionCode><sf:exceptionMessage>{message}</sf:exceptionMessage></sf:LoginFault>"
                     "</detail></soapenv:Fault>")
            return Response(500, raw=envelope.format(fault).encode(),
                            headers={"Content-Type": "text/xml;charset=UTF-8"})
        with self._lock:
            token = self.session_id
        org = self.store.org_id
        result = (f"<loginResponse><result><metadataServerUrl>{self.instance_url}/services/Soap/m/"
                  f"{self.api_version}/{org}</metadataServerUrl><passwordExpired>false</passwordExpired>"
                  f"<sandbox>false</sandbox><serverUrl>{self.instance_url}/services/Soap/u/{self.api_version}/"
                  f"{org}</serverUrl><sessionId>{xml_escape(token)}</sessionId><userId>"
                  f"{self.store.default_user_id}</userId></result></loginResponse>")
        return Response(200, raw=envelope.format(result).encode(), headers={"Content-Type": "text/xml;charset=UTF-8"})

    # ------------------------------------------------------------------ routing
    def route(self, method: str, segments: list[str], params: dict[str, str], headers: Any,
              body: Any) -> Response:
        """Dispatch a REST call below ``/services/data`` (also used for Composite subrequests)."""
        if not segments:
            if method != "GET":
                raise _method_not_allowed(method, "GET")
            return Response(200, [{"label": "Winter '24", "url": f"/services/data/v{self.api_version}",
                                   "version": self.api_version}])
        match = _VERSION_RE.match(segments[0])
        if not match:
            raise ApiError(404, "NOT_FOUND", _NOT_FOUND)
        version = match.group(1)
        rest = segments[1:]
        head = rest[0] if rest else ""
        if not rest:
            if method != "GET":
                raise _method_not_allowed(method, "GET")
            base = f"/services/data/v{version}"
            return Response(200, {name: f"{base}/{name}" for name in
                                  ("sobjects", "query", "queryAll", "limits", "composite", "jobs")})
        if head in ("query", "queryAll"):
            if method != "GET":
                raise _method_not_allowed(method, "GET")
            if len(rest) == 1:
                return self._query(params.get("q"), head == "queryAll", headers, version)
            if len(rest) == 2:
                return self._query_more(rest[1], headers, version)
        elif head == "sobjects":
            return self._sobjects(method, rest[1:], params, headers, body, version)
        elif head == "composite":
            if len(rest) == 1:
                if method != "POST":
                    raise _method_not_allowed(method, "POST")
                return self._composite(body, headers, version)
            if len(rest) == 2 and rest[1] == "sobjects":
                return self._collections(method, params, headers, body)
        elif head == "jobs":
            try:
                answer = self.bulk.route(method, rest[1:], params, body, version)
            except BulkApiError as exc:
                raise ApiError(exc.status, exc.code, exc.message) from None
            return Response(answer.status, answer.payload, answer.headers, answer.raw)
        elif head == "limits" and len(rest) == 1:
            if method != "GET":
                raise _method_not_allowed(method, "GET")
            return Response(200, self._limits())
        raise ApiError(404, "NOT_FOUND", _NOT_FOUND)

    # ------------------------------------------------------------------ queries
    def _query(self, soql: str | None, include_deleted: bool, headers: Any, version: str) -> Response:
        if not soql:
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        store = self.store
        with store.lock:
            try:
                compiled = compile_query(soql, store.fields, _values_lookup(store))
            except SoqlError as exc:
                raise ApiError(400, exc.code, exc.message) from None
            rows = select_values(compiled, store.records[compiled.sobject], store.stamp_index,
                                 include_deleted=include_deleted)
        timeout_rows = self.faults.plan.query_timeout_rows
        if timeout_rows and len(rows) > timeout_rows:
            # A query too slow for the org: Salesforce gives up after its time limit.
            self.faults.injected["query_timeout"] = self.faults.injected.get("query_timeout", 0) + 1
            raise ApiError(400, "QUERY_TIMEOUT", "Your query request was running for too long.")
        if compiled.count_only:
            return Response(200, {"totalSize": len(rows), "done": True, "records": []})
        if compiled.count_field:
            return Response(200, {"totalSize": 1, "done": True, "records": [
                {"attributes": {"type": "AggregateResult"}, "expr0": len(rows)}]})
        cursor = _Cursor(compiled.sobject, compiled.select, rows, time.monotonic())
        with self._lock:
            self._cursor_counter += 1
            locator = to18(f"01g{self.store.pod}{self._cursor_counter:010d}")
            self._cursors[locator] = cursor
            while len(self._cursors) > 500:
                self._cursors.popitem(last=False)
        return Response(200, self._page(locator, cursor, 0, headers, version))

    def _query_more(self, token: str, headers: Any, version: str) -> Response:
        locator, _, offset_text = token.partition("-")
        with self._lock:
            cursor = self._cursors.get(locator)
            if cursor is not None:
                self._cursors.move_to_end(locator)
                cursor.last_used = time.monotonic()
        if cursor is None or not offset_text.isdigit() or int(offset_text) > len(cursor.rows):
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return Response(200, self._page(locator, cursor, int(offset_text), headers, version))

    def _batch_size(self, headers: Any) -> int:
        options = headers.get("Sforce-Query-Options") or ""
        match = re.search(r"batchSize\s*=\s*(\d+)", options, re.IGNORECASE)
        if match:
            return max(200, min(2000, int(match.group(1))))
        return self.page_size

    def _page(self, locator: str, cursor: _Cursor, offset: int, headers: Any, version: str) -> dict[str, Any]:
        size = self._batch_size(headers)
        chunk = cursor.rows[offset:offset + size]
        records = self._project(cursor, chunk, version)
        end = offset + len(chunk)
        page: dict[str, Any] = {"totalSize": len(cursor.rows), "done": end >= len(cursor.rows)}
        if end < len(cursor.rows):
            page["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{end}"
        page["records"] = records
        return page

    def _project(self, cursor: _Cursor, chunk: list[dict[str, Any]], version: str) -> list[dict[str, Any]]:
        sobject = cursor.sobject
        plain = [(b.name, b.fdef) for b in cursor.select if b.relationship is None]
        parents = [b for b in cursor.select if b.relationship is not None]
        prefix = f"/services/data/v{version}/sobjects/{sobject}/"
        records: list[dict[str, Any]] = []
        store = self.store
        for values in chunk:
            row: dict[str, Any] = {"attributes": {"type": sobject, "url": prefix + values["Id"]}}
            for name, fdef in plain:
                value = values.get(name)
                row[name] = None if value is None else encode_value(fdef, value)
            for bound in parents:
                self._project_parent(row, values, bound, store, version)
            records.append(row)
        return records

    def _project_parent(self, row: dict[str, Any], values: dict[str, Any], bound: BoundField,
                        store: SalesforceStore, version: str) -> None:
        rel = bound.relationship
        assert rel is not None
        if rel in row and row[rel] is None:
            return
        ref_field = next(f.name for f in SOBJECTS[row["attributes"]["type"]].fields
                         if f.relationship_name == rel)
        target_id = values.get(ref_field)
        parent = store.get(target_id) if target_id else None
        if parent is None:
            row[rel] = None
            return
        nested = row.get(rel)
        if nested is None:
            nested = {"attributes": {"type": parent.sobject.name,
                                     "url": f"/services/data/v{version}/sobjects/{parent.sobject.name}/{parent.id}"}}
            row[rel] = nested
        fdef = store.fields(parent.sobject.name).get(bound.name.lower())
        nested[bound.name] = None if fdef is None else encode_value(fdef, parent.values.get(bound.name))

    # ------------------------------------------------------------------ sobjects
    def _sobjects(self, method: str, rest: list[str], params: dict[str, str], headers: Any, body: Any,
                  version: str) -> Response:
        store = self.store
        if not rest:
            if method != "GET":
                raise _method_not_allowed(method, "GET")
            return Response(200, {"encoding": "UTF-8", "maxBatchSize": 200,
                                  "sobjects": [self._object_summary(d, version) for d in SOBJECTS.values()]})
        definition = SOBJECTS_LOWER.get(rest[0].lower())
        if definition is None:
            raise ApiError(404, "NOT_FOUND", _NOT_FOUND)
        name = definition.name
        if len(rest) == 1:
            if method == "GET":
                return Response(200, {"objectDescribe": self._object_summary(definition, version),
                                      "recentItems": []})
            if method == "POST":
                record = _expect_object(body)
                auto = self._auto_assign(headers)
                if self.faults.lock_fails():
                    lock = _lock_error("")
                    raise ApiError(400, lock.code, lock.message, lock.fields)
                try:
                    new_id = store.api_create(name, record, auto_assign=auto)
                except RecordError as exc:
                    raise ApiError(400 if exc.http_status < 500 else exc.http_status, exc.code, exc.message,
                                   exc.fields) from None
                return Response(201, {"id": new_id, "success": True, "errors": []})
            raise _method_not_allowed(method, "GET, HEAD, POST")
        sub = rest[1]
        if len(rest) == 2 and sub == "describe":
            if method != "GET":
                raise _method_not_allowed(method, "GET")
            return Response(200, self._describe(definition, version))
        if len(rest) == 2 and sub in ("deleted", "updated"):
            if method != "GET":
                raise _method_not_allowed(method, "GET")
            return Response(200, self._replication(definition, sub, params))
        if len(rest) != 2:
            raise ApiError(404, "NOT_FOUND", _NOT_FOUND)
        record_id = sub
        if method == "GET":
            with store.lock:
                rec = store.get(record_id) if well_formed_id(record_id) else None
                if rec is None or rec.sobject is not definition:
                    raise ApiError(404, "NOT_FOUND", _NOT_FOUND)
                if rec.deleted:
                    raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
                encoded = store.encoded(rec)
            wanted = params.get("fields")
            if wanted:
                visible = store.fields(name)
                out: dict[str, Any] = {"attributes": encoded["attributes"]}
                for item in wanted.split(","):
                    fdef = visible.get(item.strip().lower())
                    if fdef is None:
                        raise ApiError(400, "INVALID_FIELD", f"No such column '{item.strip()}' on sobject of "
                                       f"type {name}")
                    out[fdef.name] = encoded[fdef.name]
                encoded = out
            return Response(200, encoded)
        if method in ("PATCH", "DELETE"):
            if method == "PATCH" and self.faults.lock_fails():
                lock = _lock_error(record_id)
                raise ApiError(400, lock.code, lock.message, lock.fields)
            try:
                if method == "PATCH":
                    store.api_update(name, record_id, _expect_object(body), auto_assign=self._auto_assign(headers))
                else:
                    store.api_delete(name, record_id)
            except RecordError as exc:
                if exc.code in ("MALFORMED_ID", "INVALID_CROSS_REFERENCE_KEY") and exc.fields == ["Id"] \
                        or exc.message == "invalid cross reference id":
                    raise ApiError(404, "NOT_FOUND", _NOT_FOUND) from None
                status = 404 if exc.code == "ENTITY_IS_DELETED" else 400
                raise ApiError(status, exc.code, exc.message, exc.fields) from None
            return Response(204)
        raise _method_not_allowed(method, "GET, PATCH, HEAD, DELETE")

    def _auto_assign(self, headers: Any) -> bool:
        value = headers.get("Sforce-Auto-Assign")
        with self._lock:
            self.auto_assign_headers.append(value)
        return value is None or value.strip().upper() != "FALSE"

    def _object_summary(self, definition: SObjectDef, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{definition.name}"
        return {
            "name": definition.name, "label": definition.label, "labelPlural": definition.label_plural,
            "keyPrefix": definition.key_prefix, "custom": False, "queryable": True, "retrieveable": True,
            "searchable": True, "createable": definition.createable, "updateable": definition.updateable,
            "deletable": definition.deletable, "replicateable": True, "layoutable": True,
            "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"},
        }

    def _describe(self, definition: SObjectDef, version: str) -> dict[str, Any]:
        out = self._object_summary(definition, version)
        fields = []
        for fdef in self.store.fields(definition.name).values():
            fields.append({
                "name": fdef.name, "label": fdef.display_label, "type": fdef.type, "length": fdef.length,
                "byteLength": fdef.length * 3, "precision": fdef.precision, "scale": fdef.scale,
                "digits": fdef.precision if fdef.type == "int" else 0,
                "custom": fdef.custom, "createable": fdef.createable, "updateable": fdef.updateable,
                "nillable": fdef.nillable, "filterable": True, "sortable": fdef.type != "textarea",
                "calculated": False, "externalId": False, "unique": False, "idLookup": fdef.name == "Id",
                "restrictedPicklist": fdef.restricted,
                "picklistValues": [{"active": True, "defaultValue": False, "label": v, "validFor": None,
                                    "value": v} for v in fdef.picklist],
                "referenceTo": list(fdef.reference_to), "relationshipName": fdef.relationship_name,
                "soapType": _SOAP_TYPES.get(fdef.type, "xsd:string"),
            })
        out["fields"] = fields
        out["childRelationships"] = []
        out["recordTypeInfos"] = []
        return out

    def _replication(self, definition: SObjectDef, kind: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            start = parse_api_datetime(params["start"])
            end = parse_api_datetime(params["end"])
        except (KeyError, ValueError):
            raise ApiError(400, "MISSING_ARGUMENT", "start and end must be valid dateTime values") from None
        with self.store.lock:
            recs = list(self.store.records[definition.name].values())
        covered = encode_datetime(min(end, self.clock.now().replace(microsecond=0)))
        if kind == "deleted":
            deleted = [{"id": r.id, "deletedDate": encode_datetime(r.values["SystemModstamp"])} for r in recs
                       if r.deleted and start <= r.values["SystemModstamp"] < end]
            return {"deletedRecords": deleted, "earliestDateAvailable": encode_datetime(start),
                    "latestDateCovered": covered}
        ids = [r.id for r in recs if not r.deleted and start <= r.values["SystemModstamp"] < end]
        return {"ids": ids, "latestDateCovered": covered}

    def _limits(self) -> dict[str, Any]:
        limit = self.faults.plan.daily_limit
        with self._lock:
            used = self._api_calls
        return {
            "DailyApiRequests": {"Max": limit, "Remaining": max(0, limit - used)},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
            "DataStorageMB": {"Max": 5, "Remaining": 5},
            "ConcurrentPerOrgLongTxn": {"Max": 10, "Remaining": 10},
        }

    # ------------------------------------------------------------------ sObject Collections
    def _collections(self, method: str, params: dict[str, str], headers: Any, body: Any) -> Response:
        if method == "DELETE":
            ids = [i for i in (params.get("ids") or "").split(",") if i]
            all_or_none = (params.get("allOrNone") or "false").lower() == "true"
            if not ids:
                raise ApiError(400, "MISSING_ARGUMENT", "ids parameter is required")
            items: list[dict[str, Any]] = [{"id": i} for i in ids]
        elif method in ("PATCH", "POST"):
            if not isinstance(body, dict) or not isinstance(body.get("records"), list):
                raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object with a "
                               "'records' array")
            items = body["records"]
            all_or_none = body.get("allOrNone", False)
            if not isinstance(all_or_none, bool):
                raise ApiError(400, "JSON_PARSER_ERROR", "allOrNone must be a boolean")
        else:
            raise _method_not_allowed(method, "DELETE, PATCH, POST")
        if len(items) > MAX_COLLECTION:
            raise ApiError(400, "EXCEEDED_ID_LIMIT",
                           f"record limit reached. cannot submit more than {MAX_COLLECTION} records into this call")
        auto = self._auto_assign(headers) if method != "DELETE" else False
        store = self.store
        results: list[dict[str, Any]] = []
        failed = False
        with store.atomic() as rollback:
            for item in items:
                try:
                    results.append(self._collection_item(method, item, auto))
                except RecordError as exc:
                    failed = True
                    result: dict[str, Any] = {"success": False, "errors": [_error_from_record(exc)]}
                    if method == "DELETE":
                        result["id"] = item.get("id")
                    results.append(result)
            if all_or_none and failed:
                rollback()
                rolled = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                          "message": "Record rolled back because not all records were valid and the request "
                                     "was using AllOrNone header", "fields": []}
                results = [r if not r["success"] else {"id": r["id"], "success": False, "errors": [rolled]}
                           if method != "POST" else {"success": False, "errors": [rolled]} for r in results]
        return Response(200, results)

    def _collection_item(self, method: str, item: Any, auto: bool) -> dict[str, Any]:
        store = self.store
        if not isinstance(item, dict):
            raise RecordError("JSON_PARSER_ERROR", "each record must be a JSON object")
        if method == "DELETE":
            record_id = item["id"]
            if self.faults.record_fails():
                raise _lock_error(record_id)
            store.api_delete(None, record_id)
            deleted = store.get(record_id)
            return {"id": deleted.id if deleted else record_id, "success": True, "errors": []}
        attributes = item.get("attributes")
        type_name = attributes.get("type") if isinstance(attributes, dict) else None
        if not isinstance(type_name, str) or not type_name:
            raise RecordError("INVALID_TYPE", "sObject type not specified in attributes.type", [])
        definition = SOBJECTS_LOWER.get(type_name.lower())
        if definition is None:
            raise RecordError("INVALID_TYPE", f"sObject type '{type_name}' is not supported.", [])
        fields = {k: v for k, v in item.items() if k != "attributes"}
        if method == "PATCH":
            record_id = fields.pop("id", None) or fields.pop("Id", None)
            if not isinstance(record_id, str) or not record_id:
                raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
            if self.faults.record_fails():
                raise _lock_error(record_id)
            store.api_update(definition.name, record_id, fields, auto_assign=auto)
            rec = store.get(record_id)
            return {"id": rec.id if rec else record_id, "success": True, "errors": []}
        if self.faults.record_fails():
            raise _lock_error("")
        new_id = store.api_create(definition.name, fields, auto_assign=auto)
        return {"id": new_id, "success": True, "errors": []}

    # ------------------------------------------------------------------ Composite
    def _composite(self, body: Any, headers: Any, version: str) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("compositeRequest"), list):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must have a 'compositeRequest' array")
        subs = body["compositeRequest"]
        all_or_none = body.get("allOrNone", False)
        if not isinstance(all_or_none, bool):
            raise ApiError(400, "JSON_PARSER_ERROR", "allOrNone must be a boolean")
        if not subs or len(subs) > MAX_COMPOSITE:
            raise ApiError(400, "LIMIT_EXCEEDED",
                           f"A composite request must have between 1 and {MAX_COMPOSITE} subrequests")
        heavy = 0
        seen: set[str] = set()
        for sub in subs:
            if not isinstance(sub, dict) or not isinstance(sub.get("url"), str) \
                    or not isinstance(sub.get("method"), str) or not isinstance(sub.get("referenceId"), str):
                raise ApiError(400, "JSON_PARSER_ERROR",
                               "Each subrequest needs a method, a url and a referenceId")
            ref = sub["referenceId"]
            if not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", ref) or ref in seen:
                raise ApiError(400, "INVALID_INPUT", f"Invalid or duplicate referenceId: {ref}")
            seen.add(ref)
            sub_path = urlsplit(sub["url"]).path
            if re.search(r"/(composite/sobjects|query|queryAll)(/|$)", sub_path):
                heavy += 1
        if heavy > MAX_COMPOSITE_HEAVY:
            raise ApiError(400, "LIMIT_EXCEEDED",
                           f"A composite request may contain at most {MAX_COMPOSITE_HEAVY} sObject Collections "
                           "or query operations")
        outputs: dict[str, Any] = {}
        responses: list[dict[str, Any]] = []
        halted = {"errorCode": "PROCESSING_HALTED",
                  "message": "The transaction was rolled back since another operation in the same transaction "
                             "failed."}
        failed = False
        with self.store.atomic() as rollback:
            for sub in subs:
                ref = sub["referenceId"]
                if failed and all_or_none:
                    responses.append({"body": [halted], "httpHeaders": {}, "httpStatusCode": 400,
                                      "referenceId": ref})
                    continue
                status, sub_headers, payload = self._subrequest(sub, headers, outputs)
                outputs[ref] = payload
                responses.append({"body": payload, "httpHeaders": sub_headers, "httpStatusCode": status,
                                  "referenceId": ref})
                if status >= 400:
                    failed = True
            if all_or_none and failed:
                rollback()
                responses = [r if r["httpStatusCode"] >= 400 else
                             {"body": [halted], "httpHeaders": {}, "httpStatusCode": 400,
                              "referenceId": r["referenceId"]} for r in responses]
        return Response(200, {"compositeResponse": responses})

    def _subrequest(self, sub: dict[str, Any], headers: Any,
                    outputs: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        try:
            url = _resolve_refs(sub["url"], outputs)
            body = _resolve_refs(sub.get("body"), outputs)
        except KeyError as exc:
            return 400, {}, [{"errorCode": "PROCESSING_HALTED",
                              "message": f"Invalid reference specified. No value for {exc.args[0]} found."}]
        parts = urlsplit(url)
        segments = [s for s in unquote(parts.path).split("/") if s]
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        merged = _Headers(headers, sub.get("httpHeaders") or {})
        if segments[:2] != ["services", "data"] or (len(segments) > 3 and segments[3] == "composite"
                                                    and len(segments) == 4):
            return 400, {}, [{"errorCode": "INVALID_INPUT", "message": f"Invalid subrequest url: {url}"}]
        try:
            response = self.route(sub["method"].upper(), segments[2:], params, merged, body)
        except ApiError as exc:
            return exc.status, {}, exc.body()
        except RecordError as exc:
            return exc.http_status, {}, [{"message": exc.message, "errorCode": exc.code, "fields": exc.fields}]
        sub_headers: dict[str, str] = {}
        if response.status == 201 and isinstance(response.payload, dict) and "id" in response.payload:
            sub_headers["Location"] = "/" + "/".join([*segments, str(response.payload["id"])])
        return response.status, sub_headers, response.payload


# The only top-level headers a Composite subrequest inherits (Salesforce "Composite Subrequest":
# httpHeaders); anything else, e.g. Sforce-Auto-Assign, must be in the subrequest's httpHeaders.
INHERITED_HEADERS = frozenset({"accept", "authorization", "content-type"})


class _Headers:
    """Case-insensitive header view: a subrequest's own headers over the few it inherits."""

    def __init__(self, outer: Any, inner: dict[str, Any]) -> None:
        self._outer = outer
        self._inner = {str(k).lower(): str(v) for k, v in inner.items()}

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self._inner.get(name.lower())
        if value is not None:
            return value
        if name.lower() not in INHERITED_HEADERS:
            return default
        outer = self._outer.get(name)
        return default if outer is None else str(outer)


_SOAP_TYPES = {"id": "tns:ID", "reference": "tns:ID", "boolean": "xsd:boolean", "double": "xsd:double",
               "currency": "xsd:double", "percent": "xsd:double", "int": "xsd:int", "date": "xsd:date",
               "datetime": "xsd:dateTime"}


def _values_lookup(store: SalesforceStore) -> Callable[[str], dict[str, Any] | None]:
    def lookup(record_id: str) -> dict[str, Any] | None:
        rec = store.get(record_id)
        return None if rec is None else rec.values
    return lookup


def _expect_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
    return body


def _method_not_allowed(method: str, allowed: str) -> ApiError:
    return ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}")


def _lock_error(record_id: str) -> RecordError:
    return RecordError("UNABLE_TO_LOCK_ROW",
                       f"unable to obtain exclusive access to this record or 1 records: {record_id}", [])


def _oauth_error(status: int, error: str, description: str) -> Response:
    return Response(status, {"error": error, "error_description": description})


def _retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _resolve_refs(value: Any, outputs: dict[str, Any]) -> Any:
    """Replace ``@{ref.path}`` expressions with values from earlier subrequest responses."""
    if isinstance(value, str):
        def lookup(match: re.Match[str]) -> str:
            ref, path = match.group(1), match.group(2)
            if ref not in outputs:
                raise KeyError(f"{ref}.{path}")
            current: Any = outputs[ref]
            for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
                try:
                    current = current[int(part[1:-1])] if part.startswith("[") else current[part]
                except (KeyError, IndexError, TypeError):
                    raise KeyError(f"{ref}.{path}") from None
            return str(current)
        whole = _REF_RE.fullmatch(value)
        if whole:
            return lookup(whole)
        return _REF_RE.sub(lookup, value)
    if isinstance(value, list):
        return [_resolve_refs(v, outputs) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_refs(v, outputs) for k, v in value.items()}
    return value


def _label(method: str, segments: list[str]) -> str:
    """Endpoint label for :meth:`SalesforceServer.call_counts` (ids and locators folded)."""
    if segments[:3] == ["services", "oauth2", "token"]:
        return f"{method} oauth2/token"
    if segments[:3] == ["services", "Soap", "u"]:
        return f"{method} soap/login"
    if segments[:2] != ["services", "data"]:
        return f"{method} unknown"
    rest = segments[3:]
    if not rest:
        return f"{method} versions" if len(segments) == 2 else f"{method} resources"
    head = rest[0]
    if head in ("query", "queryAll"):
        return f"{method} {head}" if len(rest) == 1 else f"{method} query/next"
    if head == "sobjects":
        if len(rest) == 1:
            return f"{method} sobjects"
        kind = rest[1]
        if len(rest) == 2:
            return f"{method} sobjects/{kind}"
        tail = rest[2] if rest[2] in ("describe", "deleted", "updated") else "{id}"
        return f"{method} sobjects/{kind}/{tail}"
    if head == "composite":
        return f"{method} composite" if len(rest) == 1 else f"{method} composite/{'/'.join(rest[1:])}"
    if head == "limits":
        return f"{method} limits"
    if head == "jobs":
        return bulk_label(method, rest[1:])
    return f"{method} unknown"


class _TLSServer(ThreadingHTTPServer):
    """ThreadingHTTPServer doing the TLS handshake in the connection's own thread."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 context: ssl.SSLContext, app: SalesforceServer) -> None:
        self.ssl_context = context
        self.app = app
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(30)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client hung up or does not trust our CA: nothing to answer
        with self._conn_lock:
            self._connections.add(tls)
        try:
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]
        except (ssl.SSLError, OSError):
            pass  # connection-level failure mid-request; the client sees a broken connection
        finally:
            with self._conn_lock:
                self._connections.discard(tls)
            try:
                tls.close()
            except OSError:
                log.debug("closing a TLS connection failed", exc_info=True)

    def close_all_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                log.debug("shutting down a connection failed", exc_info=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "crmsim-salesforce"
    sys_version = ""
    timeout = 60
    server: _TLSServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def date_time_string(self, timestamp: float | None = None) -> str:
        return format_datetime(self.server.app.clock.now(), usegmt=True)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        body = json.dumps([{"message": message or explain or "Bad request", "errorCode": "BAD_REQUEST"}]).encode()
        self.close_connection = True
        try:
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            log.debug("could not send an error response", exc_info=True)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        # Salesforce's REST limit: URI and headers together at most 16,384 bytes (414 when the URI
        # alone passes it, else 431), so a long ``Id IN (...)`` query must be split.
        too_long = len(self.path) > MAX_URI_AND_HEADERS
        if too_long or len(self.path) + sum(len(k) + len(v) + 4 for k, v in self.headers.items()) > MAX_URI_AND_HEADERS:
            self.send_error(414 if too_long else 431, "URI Too Long" if too_long else "Request Header Fields Too Large")
            return
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(400, "Bad request body framing")
            return
        try:
            response = app.handle(method, self.path, self.headers, body)
        except Exception:  # noqa: BLE001 - the HTTP boundary must answer, never crash the connection
            log.exception("crmsim salesforce: internal error on %s %s", method, self.path)
            response = Response(500, [{"message": "An unexpected error occurred (crmsim internal error).",
                                       "errorCode": "UNKNOWN_EXCEPTION"}])
        if response is None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                log.debug("drop: shutdown failed", exc_info=True)
            return
        if response.raw is not None:
            data = response.raw
        elif response.payload is None:
            data = b""
        else:
            data = json.dumps(response.payload, separators=(",", ":")).encode("utf-8")
        self.send_response(response.status)
        if (data or response.status != 204) and "Content-Type" not in response.headers:
            self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if data:
            self.wfile.write(data)
