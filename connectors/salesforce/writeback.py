"""Score write-back to Salesforce: 1,000 Lead updates per API call.

One ``POST /composite`` call carries up to five ``PATCH /composite/sobjects`` subrequests of
200 records each (``allOrNone: false``); Salesforce counts the whole Composite call as ONE call
toward the org's API limits. The per-record SaveResults come back in request order.

A pending owner/queue or Lead field change of routing for the same lead travels in the same
record (``OutboxItem.extra``, claimed by :mod:`connectors.riders`): one SaveResult answers both.

``Sforce-Auto-Assign: FALSE`` is sent so that writing a score never re-runs the org's lead
assignment rules (routing is done explicitly, see :mod:`connectors.routing`). It goes in EACH
subrequest's ``httpHeaders``: a Composite subrequest inherits only ``Accept``, ``Authorization``
and ``Content-Type`` from the outer request, so an outer-only header would not reach the writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from config.app_config import ConnectionConfig, SalesforceFields
from connectors.errors import FatalCRMError
from connectors.protocols import OutboxItem, Outcome, RecordResult, fields_as
from connectors.timeparse import parse_crm_datetime

COLLECTION_SIZE = 200  # records per sObject Collections request (Salesforce's maximum)
COLLECTIONS_PER_COMPOSITE = 5  # sObject Collections subrequests allowed in one Composite call
BATCH_SIZE = COLLECTION_SIZE * COLLECTIONS_PER_COMPOSITE
REASONS_MAX = 255  # Lead_Score_Reasons__c: Text(255)
MODEL_MAX = 64  # Lead_Score_Model__c: Text(64)

# Per-record codes that may succeed next time; everything else is permanent for these values.
RETRIABLE_RECORD_CODES = frozenset({
    "UNABLE_TO_LOCK_ROW",
    "SERVER_UNAVAILABLE",
    "REQUEST_RUNNING_TOO_LONG",
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "PROCESSING_HALTED",
})
NO_AUTO_ASSIGN = {"Sforce-Auto-Assign": "FALSE"}
# Per-record codes about the record itself (with no field, or only Id, named): any value sent in
# that record is refused the same way.
RECORD_CODES = frozenset({"CANNOT_UPDATE_CONVERTED_LEAD", "ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY",
                          "MALFORMED_ID", "NOT_FOUND"})


def salesforce_datetime(when: datetime) -> str:
    """``2024-05-01T10:00:00.000+0000``: Salesforce's REST dateTime format (UTC, milliseconds)."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


def lead_values(payload: dict[str, Any], fields: SalesforceFields) -> dict[str, Any]:
    """The Lead field values of an outbox payload, in the types Salesforce stores them."""
    scored_at = parse_crm_datetime(payload["scored_at"], "scored_at")
    values: dict[str, Any] = {
        fields.score: int(payload["score"]),
        fields.tier: str(payload["tier"]),
        fields.reasons: str(payload.get("reasons") or "")[:REASONS_MAX] or None,
        fields.model: str(payload.get("model") or "")[:MODEL_MAX] or None,
        fields.scored_at: salesforce_datetime(scored_at),
    }
    # Written in the same record as the score, only when the payload carries them (outbox rows
    # queued before these fields existed do not).
    if payload.get("likelihood") is not None:
        values[fields.likelihood] = round(float(payload["likelihood"]), 1)
    for key in ("fit", "engagement", "score_change"):
        if payload.get(key) is not None:
            values[getattr(fields, key)] = int(payload[key])
    return values


def composite_body(items: Sequence[OutboxItem], fields: SalesforceFields, api_version: str) -> dict[str, Any]:
    """The Composite request for up to 1,000 Lead updates (five 200-record collections)."""
    if len(items) > BATCH_SIZE:
        raise ValueError(f"at most {BATCH_SIZE} records per Composite call, got {len(items)}")
    subrequests = []
    for chunk_no, start in enumerate(range(0, len(items), COLLECTION_SIZE)):
        records = [
            # The score fields, and the owner/field updates of routing actions riding along (extra).
            {"attributes": {"type": "Lead"}, "id": item.crm_id, **lead_values(item.payload, fields), **item.extra}
            for item in items[start:start + COLLECTION_SIZE]
        ]
        subrequests.append({
            "method": "PATCH",
            "url": f"/services/data/v{api_version}/composite/sobjects",
            "referenceId": f"chunk{chunk_no}",
            "httpHeaders": dict(NO_AUTO_ASSIGN),
            "body": {"allOrNone": False, "records": records},
        })
    return {"allOrNone": False, "compositeRequest": subrequests}


def parse_composite(items: Sequence[OutboxItem], response: Any) -> list[RecordResult]:
    """Per-record results of a Composite response, matched to ``items`` by position."""
    if not isinstance(response, dict) or not isinstance(response.get("compositeResponse"), list):
        raise FatalCRMError(f"unexpected Composite response: {str(response)[:200]}", code="BAD_RESPONSE")
    results: list[RecordResult] = []
    subresponses = response["compositeResponse"]
    for chunk_no, start in enumerate(range(0, len(items), COLLECTION_SIZE)):
        chunk = items[start:start + COLLECTION_SIZE]
        sub = subresponses[chunk_no] if chunk_no < len(subresponses) else None
        if not isinstance(sub, dict):
            results.extend(RecordResult(i.outbox_id, "retry", "NO_RESULT", "no subresponse") for i in chunk)
            continue
        status = int(sub.get("httpStatusCode") or 0)
        body = sub.get("body")
        if status >= 300 or not isinstance(body, list) or len(body) != len(chunk) \
                or not all(isinstance(b, dict) and "success" in b for b in body):
            code, message = _first_error(body)
            outcome: Outcome = "retry" if status >= 500 or code in RETRIABLE_RECORD_CODES else "failed"
            results.extend(RecordResult(i.outbox_id, outcome, code or f"HTTP_{status}", message) for i in chunk)
            continue
        for item, saved in zip(chunk, body, strict=True):
            if saved.get("success"):
                results.append(RecordResult(item.outbox_id, "sent"))
                continue
            errors = saved.get("errors") or [{}]
            code = str(errors[0].get("statusCode") or "UNKNOWN")
            message = str(errors[0].get("message") or "")
            record_outcome: Outcome = "retry" if code in RETRIABLE_RECORD_CODES else "failed"
            about_record = code in RECORD_CODES and set(errors[0].get("fields") or []) <= {"Id"}
            results.append(RecordResult(item.outbox_id, record_outcome, code, message, about_record))
    return results


def _first_error(body: Any) -> tuple[str | None, str]:
    if isinstance(body, list) and body and isinstance(body[0], dict):
        first = body[0]
        return (str(first.get("errorCode") or first.get("statusCode") or "") or None,
                str(first.get("message") or ""))
    return None, str(body)[:200]


class CompositeWriter:
    """Writes one Composite request per batch of up to 1,000 records through the connectors'
    Salesforce client (its retries); per-record results in input order. Subclasses say what the
    request's body is."""

    batch_size = BATCH_SIZE

    def __init__(self, client: Any, conn: ConnectionConfig) -> None:
        fields = fields_as(conn, SalesforceFields)
        assert isinstance(fields, SalesforceFields)
        self._client = client
        self._fields = fields
        self._version = conn.api_version
        self._attempts = 0

    @property
    def api_calls(self) -> int:
        """Composite requests sent (each attempt counts, whether or not a response came back)."""
        return self._attempts

    def body(self, items: Sequence[OutboxItem]) -> dict[str, Any]:
        raise NotImplementedError

    def write(self, items: Sequence[OutboxItem]) -> list[RecordResult]:
        """One Composite call for up to 1,000 records; per-record results in input order."""
        body = self.body(items)

        def send(sf: Any) -> Any:
            self._attempts += 1  # every attempt, including the client's retries and dropped ones
            return sf.restful("composite", method="POST", json=body)

        return parse_composite(items, self._client.request(send))


class SalesforceScoreWriter(CompositeWriter):
    """Writes score fields (and riding owner changes) on Leads."""

    def body(self, items: Sequence[OutboxItem]) -> dict[str, Any]:
        return composite_body(items, self._fields, self._version)
