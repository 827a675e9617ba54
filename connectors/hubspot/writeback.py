"""Score write-back to HubSpot: 100 contact updates per ``batch/update`` call.

HubSpot answers 200 when every input was written and 207 with ``errors[]`` (each naming the
ids it concerns in ``context.ids``) for unknown ids; an invalid value fails the whole request
with a 400 (see :meth:`HubSpotScoreWriter.write`), and a merged-away id is left out of
``results`` with no error (resolved to its new record and failed as ``MERGED``). All property values are sent as
strings in the form HubSpot stores them (numbers without decimals, datetimes as ISO 8601 UTC
with milliseconds and ``Z``), so re-sending the same values changes nothing in the CRM.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from config.app_config import ConnectionConfig, HubSpotFields
from connectors.errors import FatalCRMError
from connectors.protocols import OutboxItem, RecordResult, fields_as
from connectors.timeparse import iso_utc, parse_crm_datetime

BATCH_SIZE = 100  # inputs per HubSpot batch endpoint call
REASONS_MAX = 255

# Error categories that may succeed next time; the rest are permanent for these values.
RETRIABLE_CATEGORIES = frozenset({"INTERNAL_ERROR", "RATE_LIMIT", "RATE_LIMITS", "SERVICE_UNAVAILABLE",
                                  "TIMEOUT"})


def hubspot_datetime(when: datetime) -> str:
    """``2024-05-01T10:00:00.000Z``: how HubSpot stores datetime property values."""
    return iso_utc(when)


def contact_properties(payload: dict[str, Any], fields: HubSpotFields) -> dict[str, str]:
    """The contact property values (strings) of an outbox payload."""
    scored_at = parse_crm_datetime(payload["scored_at"], "scored_at")
    values = {
        fields.score: str(int(payload["score"])),
        fields.tier: str(payload["tier"]),
        fields.reasons: str(payload.get("reasons") or "")[:REASONS_MAX],
        fields.model: str(payload.get("model") or ""),
        fields.scored_at: hubspot_datetime(scored_at),
    }
    # Same batch input as the score; only when the payload carries them (older outbox rows do not).
    if payload.get("likelihood") is not None:
        values[fields.likelihood] = f"{float(payload['likelihood']):g}"
    for key in ("fit", "engagement", "score_change"):
        if payload.get(key) is not None:
            values[getattr(fields, key)] = str(int(payload[key]))
    return values


def batch_inputs(items: Sequence[OutboxItem], fields: HubSpotFields) -> list[dict[str, Any]]:
    """The ``inputs`` of a batch/update request."""
    if len(items) > BATCH_SIZE:
        raise ValueError(f"at most {BATCH_SIZE} inputs per HubSpot batch call, got {len(items)}")
    return [{"id": item.crm_id, "properties": {**contact_properties(item.payload, fields),
                                                **{k: str(v) for k, v in item.extra.items()}}}
            for item in items]


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        result = to_dict()
        if isinstance(result, dict):
            return result
    return {}


def parse_batch_response(items: Sequence[OutboxItem], response: Any) -> list[RecordResult]:
    """Per-record results of a batch/update answer (200 or 207), matched to ``items`` by id."""
    body = _as_dict(response)
    written = {str(_as_dict(r).get("id")) for r in body.get("results") or []}
    problems: dict[str, tuple[str, str, bool]] = {}
    for error in body.get("errors") or []:
        err = _as_dict(error)
        category = str(err.get("category") or "UNKNOWN")
        sub_category = str(err.get("sub_category") or err.get("subCategory") or "")
        details = [_as_dict(d) for d in err.get("errors") or []]
        codes = [str(d.get("code")) for d in details if d.get("code")]
        reason = codes[0] if category == "VALIDATION_ERROR" and codes else category
        retriable = category in RETRIABLE_CATEGORIES or sub_category == "RETRIABLE"
        message = str(err.get("message") or "")
        context = err.get("context") or {}
        for raw_id in context.get("ids") or []:
            problems[str(raw_id)] = (reason, message, retriable)
    results: list[RecordResult] = []
    for item in items:
        problem = problems.get(item.crm_id)
        if problem is not None:
            reason, message, retriable = problem
            results.append(RecordResult(item.outbox_id, "retry" if retriable else "failed", reason, message))
        elif item.crm_id in written:
            results.append(RecordResult(item.outbox_id, "sent"))
        else:
            results.append(RecordResult(item.outbox_id, "retry", "NO_RESULT",
                                        "HubSpot returned no result for this contact"))
    return results


def _validation_body(exc: FatalCRMError) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The JSON body of a whole-request 400 VALIDATION_ERROR and its ``errors[]`` ({} and [] when
    the body is not JSON)."""
    raw = getattr(exc.__cause__, "body", None)
    try:
        parsed = json.loads(raw) if isinstance(raw, bytes | str) and raw else {}
    except ValueError:
        parsed = {}
    body = parsed if isinstance(parsed, dict) else {}
    return body, [_as_dict(d) for d in body.get("errors") or []]


def _validation_detail(exc: FatalCRMError) -> tuple[str, str]:
    """(first error code, message) of a whole-request 400 VALIDATION_ERROR."""
    body, details = _validation_body(exc)
    codes = [str(d.get("code")) for d in details if d.get("code")]
    return (codes[0] if codes else "VALIDATION_ERROR"), str(body.get("message") or exc)


# Errors about a property itself, not a record's value: every record that sets it fails alike.
PROPERTY_ERRORS = frozenset({"PROPERTY_DOESNT_EXIST", "READ_ONLY_VALUE"})


def _property_problems(exc: FatalCRMError) -> list[tuple[str, str, str]]:
    """(code, property, message) of each error of a whole-request 400 VALIDATION_ERROR that names a
    property problem (:data:`PROPERTY_ERRORS`); empty when any error is about a value."""
    found: list[tuple[str, str, str]] = []
    for detail in _validation_body(exc)[1]:
        names = _as_dict(detail.get("context")).get("propertyName") or []
        if detail.get("code") not in PROPERTY_ERRORS or not isinstance(names, list) or len(names) != 1:
            return []
        found.append((str(detail["code"]), str(names[0]), str(detail.get("message") or "")))
    return found


def write_splitting_invalid(items: Sequence[OutboxItem], send: Callable[[Sequence[OutboxItem]], list[RecordResult]],
                            properties: Callable[[OutboxItem], Collection[str]] | None = None) -> list[RecordResult]:
    """``send(items)`` (one batch call); a batch HubSpot refuses whole for an invalid value (ONE 400
    ``VALIDATION_ERROR``, no id named) is split in halves and re-sent until the bad records stand
    alone: they fail with HubSpot's code and message, the rest lands.

    A refusal that only names properties that do not exist or cannot be set (a score property
    deleted in HubSpot, say) is no record's fault: every record setting those properties
    (``properties(item)``: the ones it sets) fails at once with that code and message, without
    halving the batch down to single records (2n-1 calls for n records), and only the others are
    sent again. ``leadscore writeback --retry-failed --reason PROPERTY_DOESNT_EXIST`` sends them once
    ``leadscore crm setup`` created the properties."""
    try:
        return send(items)
    except FatalCRMError as exc:
        if exc.status != 400 or exc.code != "VALIDATION_ERROR":
            raise
        if properties is not None and (problems := _property_problems(exc)):
            named = {name for _code, name, _message in problems}
            code, _name, message = problems[0]
            hit = {item.outbox_id for item in items if named & set(properties(item))}
            if hit:
                rest = [item for item in items if item.outbox_id not in hit]
                sent = {r.outbox_id: r for r in (write_splitting_invalid(rest, send, properties) if rest else [])}
                return [RecordResult(item.outbox_id, "failed", code, message) if item.outbox_id in hit
                        else sent[item.outbox_id] for item in items]
        if len(items) == 1:
            code, message = _validation_detail(exc)
            return [RecordResult(items[0].outbox_id, "failed", code, message)]
        half = len(items) // 2
        return (write_splitting_invalid(items[:half], send, properties)
                + write_splitting_invalid(items[half:], send, properties))


class HubSpotScoreWriter:
    """Writes score properties on contacts through the connectors' HubSpot client (its retries)."""

    batch_size = BATCH_SIZE

    def __init__(self, client: Any, conn: ConnectionConfig) -> None:
        fields = fields_as(conn, HubSpotFields)
        assert isinstance(fields, HubSpotFields)
        self._client = client
        self._fields = fields
        self._attempts = 0

    @property
    def api_calls(self) -> int:
        """batch/update requests sent (each attempt counts, whether or not a response came back)."""
        return self._attempts

    def write(self, items: Sequence[OutboxItem]) -> list[RecordResult]:
        """One batch/update call for up to 100 contacts; per-record results in input order.

        HubSpot answers an invalid value anywhere in the batch with ONE 400 for the whole request
        (nothing written, no id named), so such a batch is split in halves and re-sent until the
        bad records stand alone; they fail with HubSpot's code and message, the rest lands.
        """
        return write_splitting_invalid(items, self._write, self._properties)

    def _properties(self, item: OutboxItem) -> Collection[str]:
        return batch_inputs([item], self._fields)[0]["properties"].keys()

    def _write(self, items: Sequence[OutboxItem]) -> list[RecordResult]:
        # A plain JSON body: the generated models build a Configuration per input (~0.5 ms each).
        request = {"inputs": batch_inputs(items, self._fields)}

        def send(c: Any) -> Any:
            self._attempts += 1  # every attempt, including the client's retries and dropped ones
            return c.api("objects.batch").update("contacts", request, _preload_content=False,
                                                 _request_timeout=c.timeout)

        response = self._client.request(send)
        results = parse_batch_response(items, response)
        unanswered = [item for item, result in zip(items, results, strict=True) if result.reason == "NO_RESULT"]
        if unanswered:
            merged = self._merged_into([item.crm_id for item in unanswered])
            by_outbox = {item.outbox_id: merged[item.crm_id] for item in unanswered if item.crm_id in merged}
            results = [RecordResult(r.outbox_id, "failed", "MERGED",
                                    f"HubSpot contact merged into {by_outbox[r.outbox_id]}; the next sync links "
                                    "the lead to it") if r.outbox_id in by_outbox else r for r in results]
        return results

    def _merged_into(self, crm_ids: list[str]) -> dict[str, str]:
        """Old id -> new id for contacts merged away (HubSpot's batch/update answers nothing for
        them, with no error). A read by an old id answers the merged record under its new id,
        whose ``hs_merged_object_ids`` lists the old ones."""
        request = {"inputs": [{"id": crm_id} for crm_id in crm_ids], "properties": ["hs_merged_object_ids"]}

        def read(c: Any) -> Any:
            return c.api("objects.batch").read("contacts", request, archived=False, _preload_content=False,
                                               _request_timeout=c.timeout)

        body = _as_dict(self._client.request(read))
        out: dict[str, str] = {}
        wanted = set(crm_ids)
        for raw in body.get("results") or []:
            record = _as_dict(raw)
            new_id = str(record.get("id"))
            merged = str((_as_dict(record.get("properties")).get("hs_merged_object_ids")) or "")
            for old in merged.split(";"):
                if old in wanted and old != new_id:
                    out[old] = new_id
        return out
