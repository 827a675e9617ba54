"""Salesforce accounts: find each lead's Account (batched SOQL) and write the account fields.

Finding (:class:`SalesforceAccountFinder`), for one batch of leads, in this order:

1. **name**: ``SELECT Id, Name, Website FROM Account WHERE Name IN (...)`` over the leads'
   company names (SOQL ``=``/``IN`` on text is case-insensitive in Salesforce; compared again
   here with ``casefold``), :data:`NAMES_PER_QUERY` names per query;
2. **domain**: for leads still unplaced with a corporate e-mail domain, ``Website LIKE
   '%acme.com%'`` ORed over :data:`DOMAINS_PER_QUERY` domains, kept only when the website's host
   (``https://www.acme.com/`` -> ``acme.com``) is exactly the domain;
3. **contact**: for leads still unplaced, the ``AccountId`` of a Contact with the same e-mail.

Every value goes through ``simple_salesforce.format_soql`` (quoting, and ``:like`` escaping of
``%``/``_``). Several accounts with one name: the lowest Id wins (stable across runs).

Writing (:class:`SalesforceAccountWriter`): like the Lead score fields, one ``POST /composite``
of up to five ``PATCH /composite/sobjects`` subrequests of 200 Account records each
(``allOrNone: false``), per-record SaveResults in request order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from simple_salesforce import format_soql

from config.app_config import ConnectionConfig, SalesforceFields
from connectors.accounts import AccountMatch, LeadForAccount, website_domain
from connectors.errors import FatalCRMError
from connectors.protocols import OutboxItem
from connectors.salesforce.writeback import BATCH_SIZE, COLLECTION_SIZE, CompositeWriter

NAMES_PER_QUERY = 100
DOMAINS_PER_QUERY = 25
EMAILS_PER_QUERY = 100


def _chunks(values: Sequence[str], size: int) -> list[list[str]]:
    return [list(values[i:i + size]) for i in range(0, len(values), size)]


class SalesforceAccountFinder:
    """Finds Accounts through the connectors' Salesforce client (its retries and budget)."""

    def __init__(self, client: Any, conn: ConnectionConfig) -> None:
        self._client = client

    @property
    def api_calls(self) -> int:
        return int(self._client.api_calls)

    def _records(self, soql: str) -> list[dict[str, Any]]:
        result = self._client.request(lambda sf: sf.query_all(soql))
        if not isinstance(result, dict):
            raise FatalCRMError("Salesforce query returned no JSON object", code="BAD_RESPONSE")
        return [r for r in result.get("records") or [] if isinstance(r, dict)]

    def find(self, leads: Sequence[LeadForAccount]) -> dict[int, AccountMatch]:
        found: dict[int, AccountMatch] = {}
        by_name: dict[str, list[LeadForAccount]] = {}
        for lead in leads:
            if lead.company_name:
                by_name.setdefault(lead.company_name.casefold(), []).append(lead)
        names = sorted({lead.company_name for group in by_name.values() for lead in group if lead.company_name})
        for chunk in _chunks(names, NAMES_PER_QUERY):
            soql = format_soql("SELECT Id, Name, Website FROM Account WHERE Name IN {names} ORDER BY Id", names=chunk)
            for account in self._records(soql):
                for lead in by_name.get(str(account.get("Name") or "").casefold(), []):
                    found.setdefault(lead.lead_id, _match(account, "name"))
        self._by_domain([lead for lead in leads if lead.lead_id not in found], found)
        self._by_contact([lead for lead in leads if lead.lead_id not in found], found)
        return found

    def _by_domain(self, leads: Sequence[LeadForAccount], found: dict[int, AccountMatch]) -> None:
        by_domain: dict[str, list[LeadForAccount]] = {}
        for lead in leads:
            if lead.corporate_domain:
                by_domain.setdefault(lead.corporate_domain, []).append(lead)
        for chunk in _chunks(sorted(by_domain), DOMAINS_PER_QUERY):
            # Each pattern is quoted and %/_-escaped by format_soql; the ORed patterns go in as a literal.
            likes = " OR ".join(format_soql("Website LIKE '%{:like}%'", domain) for domain in chunk)
            soql = format_soql("SELECT Id, Name, Website FROM Account WHERE {:literal} ORDER BY Id", likes)
            for account in self._records(soql):
                for lead in by_domain.get(website_domain(account.get("Website")) or "", []):
                    found.setdefault(lead.lead_id, _match(account, "domain"))

    def _by_contact(self, leads: Sequence[LeadForAccount], found: dict[int, AccountMatch]) -> None:
        by_email: dict[str, list[LeadForAccount]] = {}
        for lead in leads:
            if lead.email and "@" in lead.email:
                by_email.setdefault(lead.email.strip().lower(), []).append(lead)
        for chunk in _chunks(sorted(by_email), EMAILS_PER_QUERY):
            soql = format_soql("SELECT Email, AccountId, Account.Name, Account.Website FROM Contact "
                               "WHERE Email IN {emails} AND AccountId != null ORDER BY Id", emails=chunk)
            for contact in self._records(soql):
                account = contact.get("Account") or {}
                match = AccountMatch(str(contact["AccountId"]), account.get("Name"),
                                     website_domain(account.get("Website")), "contact")
                for lead in by_email.get(str(contact.get("Email") or "").lower(), []):
                    found.setdefault(lead.lead_id, match)


def _match(account: dict[str, Any], how: str) -> AccountMatch:
    return AccountMatch(str(account["Id"]), account.get("Name"), website_domain(account.get("Website")), how)


def account_values(payload: dict[str, Any], fields: SalesforceFields) -> dict[str, Any]:
    """The Account field values of an account outbox payload (Number fields: whole numbers; None
    clears the field of an account left with no open lead)."""
    score, engaged = payload.get("account_score"), payload.get("engaged_people")
    return {fields.account_score: None if score is None else int(score),
            fields.account_engaged_people: None if engaged is None else int(engaged)}


def account_composite_body(items: Sequence[OutboxItem], fields: SalesforceFields,
                           api_version: str) -> dict[str, Any]:
    """The Composite request for up to 1,000 Account updates (five 200-record collections)."""
    if len(items) > BATCH_SIZE:
        raise ValueError(f"at most {BATCH_SIZE} records per Composite call, got {len(items)}")
    subrequests = [{
        "method": "PATCH",
        "url": f"/services/data/v{api_version}/composite/sobjects",
        "referenceId": f"accounts{chunk_no}",
        "body": {"allOrNone": False, "records": [
            {"attributes": {"type": "Account"}, "id": item.crm_id, **account_values(item.payload, fields)}
            for item in items[start:start + COLLECTION_SIZE]]},
    } for chunk_no, start in enumerate(range(0, len(items), COLLECTION_SIZE))]
    return {"allOrNone": False, "compositeRequest": subrequests}


class SalesforceAccountWriter(CompositeWriter):
    """Writes the account fields on Accounts (a :class:`connectors.protocols.ScoreWriter`)."""

    def body(self, items: Sequence[OutboxItem]) -> dict[str, Any]:
        return account_composite_body(items, self._fields, self._version)
