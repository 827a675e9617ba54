"""Bulk API 2.0 query jobs for first loads: create a ``queryAll`` job, poll it, read its CSV pages.

A first load (no cursor, or ``--full``) of a stream larger than ``bulk_threshold`` records costs
one REST call per 2,000 records; a Bulk 2.0 job returns the same rows in pages of up to
:data:`~connectors.salesforce.settings.BULK_PAGE_RECORDS` (plus a handful of calls to create and
poll the job). The calls are simple-salesforce's own job client (``sf.bulk2.<Object>._client``:
``create_job`` / ``get_job`` / ``get_query_results`` / ``abort_job``): its ``query()`` generator
hides the locator, so one failed page could not be retried alone. Each call goes through
:meth:`SalesforceClient.request` (retries, API budget, error mapping; the Bulk handler never
re-logs in by itself, ``request`` does).

CSV carries no types: every value is typed here from the sObject's describe (booleans, numbers,
dateTimes in the REST API's format, ``Campaign.Name`` as a nested object, empty as null), so a
record read through Bulk is the same dict the REST path reads and normalises to the same rows.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from connectors.errors import FatalCRMError, RetriableCRMError
from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.settings import BULK_MAX_WAIT_SECONDS, BULK_PAGE_RECORDS
from connectors.timeparse import parse_crm_datetime, salesforce_rest_datetime

logger = logging.getLogger(__name__)

FINISHED_BADLY = ("Failed", "Aborted")
_NUMBER = {"double": float, "currency": float, "percent": float, "int": int, "long": int}


@dataclass(frozen=True)
class FieldTypes:
    """What the CSV columns of one sObject's query need: field types and relationship names."""

    types: dict[str, str]  # field name -> describe type (boolean, int, double, datetime, ...)
    references: dict[str, tuple[str, list[str]]]  # relationship name -> (reference field, target sObjects)


def _field_types(described: Any) -> FieldTypes:
    fields = described.get("fields") if isinstance(described, dict) else None
    if not isinstance(fields, list):
        raise FatalCRMError("Salesforce describe returned no fields")
    types: dict[str, str] = {}
    references: dict[str, tuple[str, list[str]]] = {}
    for item in fields:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        types[item["name"]] = str(item.get("type") or "string")
        if item.get("relationshipName"):
            references[str(item["relationshipName"])] = (item["name"], list(item.get("referenceTo") or []))
    return FieldTypes(types, references)


def typed_value(kind: str, text: str) -> Any:
    """A CSV value as the REST API's JSON would carry it (``""`` is null: Salesforce stores no empty text)."""
    if text == "":
        return None
    if kind == "boolean":
        return text.lower() == "true"
    if kind in _NUMBER:
        try:
            return _NUMBER[kind](text)
        except ValueError:
            return text  # left as read: the normaliser judges (and may quarantine) it
    if kind == "datetime":
        return salesforce_rest_datetime(parse_crm_datetime(text, "dateTime"))
    return text


class BulkQueryReader:
    """Reads one SOQL query through a Bulk 2.0 ``queryAll`` job, page by page, typed as REST records."""

    def __init__(self, client: SalesforceClient, *, poll_seconds: float = 2.0, max_poll_seconds: float = 30.0,
                 page_records: int = BULK_PAGE_RECORDS, max_wait_seconds: float = BULK_MAX_WAIT_SECONDS,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.poll_seconds = poll_seconds
        self.max_poll_seconds = max(poll_seconds, max_poll_seconds)
        self.page_records = page_records
        self.max_wait_seconds = max_wait_seconds
        self._sleep = sleep
        self._described: dict[str, FieldTypes] = {}
        self.last_job_id: str | None = None

    def field_types(self, sobject: str) -> FieldTypes:
        """The describe of ``sobject`` (one call per sObject per reader)."""
        known = self._described.get(sobject)
        if known is None:
            described = self.client.request(lambda sf: getattr(sf, sobject).describe())
            known = self._described[sobject] = _field_types(described)
        return known

    def _jobs(self, sobject: str) -> Callable[[Any], Any]:
        # simple-salesforce's Bulk 2.0 job client for this sObject, built from the current session.
        return lambda sf: getattr(sf.bulk2, sobject)._client

    def start(self, sobject: str, soql: str) -> str:
        """Create the ``queryAll`` job; its id. A refused query raises :class:`FatalCRMError`
        (``MALFORMED_QUERY``, ``INVALID_FIELD``, ``API_ERROR`` for clauses Bulk 2.0 refuses)."""
        jobs = self._jobs(sobject)
        created = self.client.request(lambda sf: jobs(sf).create_job("queryAll", soql))
        job_id = created.get("id") if isinstance(created, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise FatalCRMError("Salesforce Bulk 2.0: the query job was created without an id")
        self.last_job_id = job_id
        return job_id

    def wait(self, sobject: str, job_id: str) -> int:
        """Poll until ``JobComplete``; its ``numberRecordsProcessed``. ``Failed`` raises
        :class:`RetriableCRMError` (a new job may succeed), ``Aborted`` :class:`FatalCRMError`;
        a job still running after ``max_wait_seconds`` is aborted and raises retriable."""
        jobs = self._jobs(sobject)
        delay = self.poll_seconds
        waited = 0.0
        while True:
            self._sleep(delay)
            waited += delay
            info = self.client.request(lambda sf: jobs(sf).get_job(job_id, True))
            state = info.get("state") if isinstance(info, dict) else None
            if state == "JobComplete":
                return int(info.get("numberRecordsProcessed") or 0)
            if state in FINISHED_BADLY:
                message = f"Salesforce Bulk 2.0 job {job_id} {state}: {info.get('errorMessage') or 'no message'}"
                if state == "Failed":
                    raise RetriableCRMError(message, code="BULK_JOB_FAILED")
                raise FatalCRMError(message, code="BULK_JOB_ABORTED")
            if waited >= self.max_wait_seconds:
                self.client.request(lambda sf: jobs(sf).abort_job(job_id, True))
                raise RetriableCRMError(f"Salesforce Bulk 2.0 job {job_id} still {state} after "
                                        f"{waited:.0f}s: aborted", code="BULK_JOB_TIMEOUT")
            delay = min(delay * 2, self.max_poll_seconds)

    def pages(self, sobject: str, job_id: str) -> Iterator[tuple[list[dict[str, Any]], bool]]:
        """``(records, last)`` per results page of a complete job, each record typed as REST JSON."""
        jobs = self._jobs(sobject)
        types = self.field_types(sobject)
        locator = ""
        while True:
            result = self.client.request(partial(self._results_page, jobs, job_id, locator))
            locator = str(result.get("locator") or "")
            records = self._records(sobject, types, str(result.get("records") or ""))
            yield records, not locator
            if not locator:
                return

    def _results_page(self, jobs: Callable[[Any], Any], job_id: str, locator: str, sf: Any) -> Any:
        return jobs(sf).get_query_results(job_id, locator, self.page_records)

    def _records(self, sobject: str, types: FieldTypes, text: str) -> list[dict[str, Any]]:
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None:
            return []
        columns: list[tuple[str, str | None, str]] = []  # (field or relationship, leaf, type)
        for name in header:
            if "." in name:
                relationship, child = name.split(".", 1)
                targets = types.references.get(relationship, ("", []))[1]
                parent = self.field_types(targets[0]) if len(targets) == 1 else None
                columns.append((relationship, child, parent.types.get(child, "string") if parent else "string"))
            else:
                columns.append((name, None, types.types.get(name, "string")))
        records: list[dict[str, Any]] = []
        for row in reader:
            if len(row) != len(columns):
                raise FatalCRMError(f"Salesforce Bulk 2.0: a {sobject} CSV row has {len(row)} values for "
                                    f"{len(columns)} columns")
            record: dict[str, Any] = {"attributes": {"type": sobject}}
            for (name, leaf, kind), text_value in zip(columns, row, strict=True):
                value = typed_value(kind, text_value)
                if leaf is None:
                    record[name] = value
                    continue
                nested = record.get(name)
                if not isinstance(nested, dict):
                    nested = record[name] = {}
                nested[leaf] = value
            for relationship, (reference, _) in types.references.items():
                # The REST API writes a null parent as null, not as an object of nulls.
                if relationship in record and reference in record and record[reference] is None:
                    record[relationship] = None
            records.append(record)
        return records
