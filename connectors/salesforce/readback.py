"""Read leadscore's fields back from Salesforce: a few rescored Leads and the scored Accounts.

What a rep would see, read through the same client as the writes (the demo's read-back; a check an
admin can run after a deploy). Two or three API calls, never one per record.
"""

from __future__ import annotations

from typing import Any

from config.app_config import HubSpotFields, SalesforceFields
from connectors.protocols import ReadBack
from connectors.salesforce.client import SalesforceClient


def read_back(client: SalesforceClient, names: SalesforceFields | HubSpotFields, *, sample: int = 3) -> ReadBack:
    """Up to ``sample`` Leads whose score moved, with leadscore's fields, and the Accounts holding a score."""
    wanted = [names.score, names.likelihood, names.fit, names.engagement, names.score_change, names.tier,
              names.reasons]
    # Only configured field names (validated as API names in the config) and no value: nothing for
    # format_soql to quote.
    result = client.request(lambda sf: sf.query(
        f"SELECT Id, {', '.join(wanted)} FROM Lead WHERE {names.score_change} != null "  # noqa: S608
        f"AND {names.score_change} != 0 LIMIT {int(sample)}"))
    leads = [{k: r.get(k) for k in ["Id", *wanted]} for r in result.get("records") or []]
    found = client.request(lambda sf: sf.query_all(
        f"SELECT Id, Name, {names.account_score}, {names.account_engaged_people} FROM Account "  # noqa: S608
        f"WHERE {names.account_score} != null ORDER BY {names.account_score} DESC, Id"))
    accounts: list[dict[str, Any]] = found.get("records") or []
    return ReadBack(leads=leads, accounts_with_score=len(accounts), account_sample=[
        {k: r.get(k) for k in ("Id", "Name", names.account_score, names.account_engaged_people)}
        for r in accounts[:sample]])
