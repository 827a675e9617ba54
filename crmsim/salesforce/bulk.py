"""Bulk API 2.0 query jobs: ``/services/data/vXX.X/jobs/query``, as Salesforce serves them.

Endpoints (see docs/crmsim-salesforce.md, "Bulk API 2.0 query"):

* ``POST jobs/query`` ``{"operation": "query"|"queryAll", "query": SOQL, "contentType": "CSV",
  "columnDelimiter": ..., "lineEnding": "LF"|"CRLF"}`` creates a job in state ``UploadComplete``;
  the SOQL is checked now (``MALFORMED_QUERY`` / ``INVALID_FIELD`` / ``INVALID_TYPE``, 400) and so
  are the clauses Bulk 2.0 refuses (``COUNT()``, ``OFFSET``, ``GROUP BY``, ``TYPEOF``, nested
  parent-to-child queries: 400 ``API_ERROR``).
* ``GET jobs/query/{id}`` is the job info. Jobs take simulated time: the first poll moves the job to
  ``InProgress`` (the query runs then: its rows are those of that moment), the
  ``polls_to_complete``-th poll to ``JobComplete`` (``numberRecordsProcessed`` set) or, when the
  fault plan's ``bulk_job_fail`` share hits, to ``Failed`` with an ``errorMessage``.
* ``GET jobs/query/{id}/results?maxRecords=N&locator=L``: a CSV page (every value quoted, empty
  for null, ``true``/``false``, dateTimes ``2024-05-01T10:00:00.000Z``) with ``Sforce-Locator``
  (the next page's opaque locator, the string ``null`` on the last page) and
  ``Sforce-NumberOfRecords``. Asked before ``JobComplete``: 400 ``API_ERROR``.
* ``PATCH jobs/query/{id}`` ``{"state": "Aborted"}`` aborts an unfinished job; ``DELETE`` removes a
  finished one (204); ``GET jobs/query`` lists jobs. Unknown ids answer 404 ``NOT_FOUND``.
"""

from __future__ import annotations

import base64
import csv
import io
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from crmsim.faults import FaultInjector
from crmsim.model import SimClock
from crmsim.salesforce.selection import select_values
from crmsim.salesforce.soql import BoundField, CompiledQuery, SoqlError, compile_query
from crmsim.salesforce.store import SalesforceStore, encode_datetime, to18

DELIMITERS = {"BACKQUOTE": "`", "CARET": "^", "COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "TAB": "\t"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
DEFAULT_MAX_RECORDS = 100_000  # a results page when maxRecords is not given (Salesforce: size-bound)
_NESTED_RE = re.compile(r"\(\s*select\b", re.IGNORECASE)
_NOT_FOUND = "The requested resource does not exist"
_UNFINISHED = ("UploadComplete", "InProgress")


class BulkApiError(Exception):
    """A refused Bulk 2.0 call: HTTP status, ``errorCode`` and message (list body, as REST)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass
class BulkAnswer:
    """A Bulk 2.0 response: JSON ``payload`` or a ``raw`` body (CSV), with headers."""

    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


@dataclass
class QueryJob:
    id: str
    operation: str
    sobject: str
    query: str
    compiled: CompiledQuery
    delimiter: str
    line_ending: str
    api_version: str
    created: datetime
    modified: datetime
    state: str = "UploadComplete"
    polls: int = 0
    rows: list[dict[str, Any]] | None = None
    error_message: str | None = None


def _csv_value(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "datetime" and isinstance(value, datetime):
        return encode_datetime(value).replace("+0000", "Z")
    if kind == "date" and isinstance(value, date):
        return value.isoformat()
    if kind in ("double", "currency", "percent"):
        return repr(float(value))
    return str(value)


def _column(bound: BoundField) -> str:
    return f"{bound.relationship}.{bound.name}" if bound.relationship else bound.name


class BulkQueryJobs:
    """The org's Bulk 2.0 query jobs, served by :class:`crmsim.salesforce.server.SalesforceServer`."""

    def __init__(self, store: SalesforceStore, clock: SimClock, faults: FaultInjector,
                 lookup: Callable[[str], dict[str, Any] | None], *, polls_to_complete: int = 2) -> None:
        self.store = store
        self.clock = clock
        self.faults = faults
        self.lookup = lookup
        self.polls_to_complete = max(1, polls_to_complete)
        self.jobs: dict[str, QueryJob] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ routing
    def route(self, method: str, rest: list[str], params: dict[str, str], body: Any,
              version: str) -> BulkAnswer:
        """Answer ``jobs/...`` (``rest`` is the path after ``jobs``); raises :class:`BulkApiError`."""
        if not rest or rest[0] != "query":
            raise BulkApiError(404, "NOT_FOUND", _NOT_FOUND)
        if len(rest) == 1:
            if method == "POST":
                return self.create(body, version)
            if method == "GET":
                with self._lock:
                    records = [self._info(job) for job in self.jobs.values()]
                return BulkAnswer(200, {"done": True, "records": records, "nextRecordsUrl": None})
            raise BulkApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET, POST")
        job_id = rest[1]
        if len(rest) == 2:
            if method == "GET":
                return BulkAnswer(200, self._info(self._advance(job_id)))
            if method == "PATCH":
                return self.abort(job_id, body)
            if method == "DELETE":
                return self.delete(job_id)
            raise BulkApiError(405, "METHOD_NOT_ALLOWED",
                               f"HTTP Method '{method}' not allowed. Allowed are GET, PATCH, DELETE")
        if len(rest) == 3 and rest[2] == "results":
            if method != "GET":
                raise BulkApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET")
            return self.results(job_id, params)
        raise BulkApiError(404, "NOT_FOUND", _NOT_FOUND)

    # ------------------------------------------------------------------ jobs
    def create(self, body: Any, version: str) -> BulkAnswer:
        if not isinstance(body, dict):
            raise BulkApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        operation = body.get("operation")
        if operation not in ("query", "queryAll"):
            raise BulkApiError(400, "API_ERROR", f"Invalid operation: {operation!r}. Query jobs support query and "
                               "queryAll")
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise BulkApiError(400, "API_ERROR", "The query is required for query jobs")
        content = body.get("contentType", "CSV")
        if content != "CSV":
            raise BulkApiError(400, "API_ERROR", f"Invalid contentType: {content}. Only CSV is supported")
        delimiter = body.get("columnDelimiter", "COMMA")
        line_ending = body.get("lineEnding", "LF")
        if delimiter not in DELIMITERS:
            raise BulkApiError(400, "API_ERROR", f"Invalid columnDelimiter: {delimiter}")
        if line_ending not in LINE_ENDINGS:
            raise BulkApiError(400, "API_ERROR", f"Invalid lineEnding: {line_ending}")
        if _NESTED_RE.search(query):
            raise BulkApiError(400, "API_ERROR", "Aggregate Relationships not supported in Bulk Query")
        store = self.store
        with store.lock:
            try:
                compiled = compile_query(query, store.fields, self.lookup)
            except SoqlError as exc:
                raise BulkApiError(400, exc.code, exc.message) from None
        if compiled.count_only or compiled.count_field:
            raise BulkApiError(400, "API_ERROR", "Aggregate queries are not supported in Bulk Query (COUNT())")
        if compiled.offset is not None:
            raise BulkApiError(400, "API_ERROR", "OFFSET is not supported in Bulk Query")
        now = self.clock.now().replace(microsecond=0)
        with self._lock:
            job = QueryJob(id=store.new_id("750"), operation=operation, sobject=compiled.sobject,
                           query=query, compiled=compiled, delimiter=delimiter, line_ending=line_ending,
                           api_version=version, created=now, modified=now)
            self.jobs[job.id] = job
        return BulkAnswer(200, self._info(job))

    def _job(self, job_id: str) -> QueryJob:
        job = self.jobs.get(job_id) or (self.jobs.get(to18(job_id)) if len(job_id) == 15 else None)
        if job is None:
            raise BulkApiError(404, "NOT_FOUND", _NOT_FOUND)
        return job

    def _advance(self, job_id: str) -> QueryJob:
        """One status poll: the job moves on by one step of simulated work."""
        with self._lock:
            job = self._job(job_id)
            if job.state not in _UNFINISHED:
                return job
            job.polls += 1
            if job.state == "UploadComplete":
                job.state = "InProgress"
                self._run(job)
            if job.polls >= self.polls_to_complete:
                if self.faults.bulk_job_fails():
                    job.state = "Failed"
                    job.rows = None
                    job.error_message = ("InternalServerError : the query job failed after 15 internal "
                                         "retries; create a new job")
                else:
                    job.state = "JobComplete"
            job.modified = self.clock.now().replace(microsecond=0)
            return job

    def _run(self, job: QueryJob) -> None:
        store = self.store
        with store.lock:
            job.rows = select_values(job.compiled, store.records[job.sobject], store.stamp_index,
                                     include_deleted=job.operation == "queryAll")

    def abort(self, job_id: str, body: Any) -> BulkAnswer:
        if not isinstance(body, dict) or body.get("state") != "Aborted":
            raise BulkApiError(400, "API_ERROR", "A query job can only be set to state Aborted")
        with self._lock:
            job = self._job(job_id)
            if job.state not in _UNFINISHED:
                raise BulkApiError(400, "API_ERROR", f"Cannot abort a job in state {job.state}")
            job.state = "Aborted"
            job.rows = None
            job.modified = self.clock.now().replace(microsecond=0)
            return BulkAnswer(200, self._info(job))

    def delete(self, job_id: str) -> BulkAnswer:
        with self._lock:
            job = self._job(job_id)
            if job.state in _UNFINISHED:
                raise BulkApiError(400, "API_ERROR", f"Cannot delete a job in state {job.state}: abort it first")
            del self.jobs[job.id]
        return BulkAnswer(204)

    def _info(self, job: QueryJob) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": job.id, "operation": job.operation, "object": job.sobject,
            "createdById": self.store.default_user_id, "createdDate": encode_datetime(job.created),
            "systemModstamp": encode_datetime(job.modified), "state": job.state, "concurrencyMode": "Parallel",
            "contentType": "CSV", "apiVersion": float(job.api_version), "jobType": "V2Query",
            "lineEnding": job.line_ending, "columnDelimiter": job.delimiter,
            "numberRecordsProcessed": len(job.rows) if job.state == "JobComplete" and job.rows is not None else 0,
            "retries": 0, "totalProcessingTime": 0, "isPkChunkingSupported": True,
        }
        if job.error_message:
            info["errorMessage"] = job.error_message
        return info

    # ------------------------------------------------------------------ results
    def results(self, job_id: str, params: dict[str, str]) -> BulkAnswer:
        with self._lock:
            job = self._job(job_id)
            if job.state != "JobComplete" or job.rows is None:
                raise BulkApiError(400, "API_ERROR", f"Job {job.id} is not complete (state {job.state}): "
                                   "results are available once the state is JobComplete")
            rows = job.rows
        raw_max = params.get("maxRecords")
        if raw_max is not None and (not raw_max.isdigit() or int(raw_max) < 1):
            raise BulkApiError(400, "API_ERROR", f"Invalid maxRecords: {raw_max}; it must be a positive integer")
        size = int(raw_max) if raw_max is not None else DEFAULT_MAX_RECORDS
        start = _decode_locator(params.get("locator"), len(rows))
        chunk = rows[start:start + size]
        end = start + len(chunk)
        body = self._csv(job, chunk)
        headers = {"Content-Type": "text/csv", "Sforce-NumberOfRecords": str(len(chunk)),
                   "Sforce-Locator": _encode_locator(end) if end < len(rows) else "null"}
        return BulkAnswer(200, headers=headers, raw=body)

    def _csv(self, job: QueryJob, chunk: list[dict[str, Any]]) -> bytes:
        select = job.compiled.select
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=DELIMITERS[job.delimiter], lineterminator=LINE_ENDINGS[job.line_ending],
                            quoting=csv.QUOTE_ALL)
        writer.writerow([_column(bound) for bound in select])
        columns = [(bound.getter, bound.fdef.type) for bound in select]
        with self.store.lock:  # parent fields (Campaign.Name) are read from the store now
            for values in chunk:
                writer.writerow([_csv_value(kind, getter(values)) for getter, kind in columns])
        return buffer.getvalue().encode("utf-8")


def _encode_locator(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def _decode_locator(locator: str | None, total: int) -> int:
    if not locator:
        return 0
    try:
        text = base64.b64decode(locator + "=" * (-len(locator) % 4), validate=True).decode()
    except ValueError:
        text = ""
    if not text.isdigit() or int(text) > total:
        raise BulkApiError(400, "API_ERROR", f"Invalid locator: {locator}")
    return int(text)


def bulk_label(method: str, rest: list[str]) -> str:
    """The call-count label of a ``jobs/...`` request (ids folded)."""
    if rest[:1] != ["query"]:
        return f"{method} unknown"
    if len(rest) == 1:
        return f"{method} jobs/query"
    if len(rest) == 3 and rest[2] == "results":
        return f"{method} jobs/query/{{id}}/results"
    return f"{method} jobs/query/{{id}}"
