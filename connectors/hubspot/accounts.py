"""HubSpot accounts: a contact's account is its primary associated company; write company properties.

Finding (:class:`HubSpotAccountFinder`) costs no API call: the sync already stores each contact's
``associatedcompanyid`` and the company's payload in ``lead.raw`` (``company_id``, ``company``).

Writing (:class:`HubSpotAccountWriter`): ``POST /crm/v3/objects/companies/batch/update`` with up
to 100 inputs, property values as strings; 200 when all were written, 207 with per-id
``errors[]`` otherwise (an archived company: ``OBJECT_NOT_FOUND``); an invalid value fails the
whole request with 400, so such a batch is halved until the bad records stand alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from config.app_config import ConnectionConfig, HubSpotFields
from connectors.accounts import AccountMatch, LeadForAccount, website_domain
from connectors.hubspot.writeback import BATCH_SIZE, parse_batch_response, write_splitting_invalid
from connectors.protocols import OutboxItem, RecordResult, fields_as


class HubSpotAccountFinder:
    """Reads each lead's company from what the sync stored (no API call)."""

    def __init__(self, client: Any, conn: ConnectionConfig) -> None:
        self._client = client

    @property
    def api_calls(self) -> int:
        return int(getattr(self._client, "api_calls", 0))

    def find(self, leads: Sequence[LeadForAccount]) -> dict[int, AccountMatch]:
        found: dict[int, AccountMatch] = {}
        for lead in leads:
            company_id = lead.raw.get("company_id")
            if not company_id:
                continue
            company = lead.raw.get("company") or {}
            props = company.get("properties") or {} if isinstance(company, dict) else {}
            found[lead.lead_id] = AccountMatch(str(company_id), props.get("name"), website_domain(props.get("domain")),
                                               "association")
        return found


def company_properties(payload: dict[str, Any], fields: HubSpotFields) -> dict[str, str]:
    """The company property values (strings, as HubSpot stores numbers; "" clears a property) of
    an account payload."""
    score, engaged = payload.get("account_score"), payload.get("engaged_people")
    return {fields.account_score: "" if score is None else str(int(score)),
            fields.account_engaged_people: "" if engaged is None else str(int(engaged))}


class HubSpotAccountWriter:
    """Writes the account properties on companies (a :class:`connectors.protocols.ScoreWriter`)."""

    batch_size = BATCH_SIZE

    def __init__(self, client: Any, conn: ConnectionConfig) -> None:
        self._client = client
        self._fields = fields_as(conn, HubSpotFields)
        self._attempts = 0

    @property
    def api_calls(self) -> int:
        return self._attempts

    def write(self, items: Sequence[OutboxItem]) -> list[RecordResult]:
        """One batch/update call for up to 100 companies; per-record results in input order (a batch
        refused whole for an invalid value is split until the bad records stand alone; one refused
        for a property that does not exist fails its records at once)."""
        if len(items) > BATCH_SIZE:
            raise ValueError(f"at most {BATCH_SIZE} inputs per HubSpot batch call, got {len(items)}")
        return write_splitting_invalid(items, self._write,
                                       lambda item: company_properties(item.payload, self._fields).keys())

    def _write(self, items: Sequence[OutboxItem]) -> list[RecordResult]:
        request = {"inputs": [{"id": item.crm_id, "properties": company_properties(item.payload, self._fields)}
                              for item in items]}

        def send(c: Any) -> Any:
            self._attempts += 1
            return c.api("objects.batch").update("companies", request, _preload_content=False,
                                                 _request_timeout=c.timeout)

        return parse_batch_response(items, self._client.request(send))
