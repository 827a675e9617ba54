"""Read leadscore's properties back from HubSpot: a few rescored contacts and the scored companies.

What a rep would see, read through the same client as the writes (the demo's read-back). Two CRM
search calls, never one per record.
"""

from __future__ import annotations

from config.app_config import HubSpotFields, SalesforceFields
from connectors.hubspot.client import HubSpotClient
from connectors.protocols import ReadBack


def read_back(client: HubSpotClient, names: SalesforceFields | HubSpotFields, *, sample: int = 3) -> ReadBack:
    """Up to ``sample`` contacts whose score moved, with leadscore's properties, and the companies holding a score."""
    wanted = [names.score, names.likelihood, names.fit, names.engagement, names.score_change, names.tier,
              names.reasons]
    body = {"filterGroups": [{"filters": [
        {"propertyName": names.score_change, "operator": "HAS_PROPERTY"},
        {"propertyName": names.score_change, "operator": "NEQ", "value": "0"}]}],
        "properties": wanted, "limit": sample}
    found = client.request(lambda c: c.api("objects.search").do_search("contacts", body, _preload_content=False))
    leads = [{"id": r.get("id"), **{k: (r.get("properties") or {}).get(k) for k in wanted}}
             for r in (found.get("results") or [])]
    companies_body = {
        "filterGroups": [{"filters": [{"propertyName": names.account_score, "operator": "HAS_PROPERTY"}]}],
        "properties": ["name", names.account_score, names.account_engaged_people], "limit": sample,
        "sorts": [{"propertyName": names.account_score, "direction": "DESCENDING"}]}
    companies = client.request(lambda c: c.api("objects.search").do_search(
        "companies", companies_body, _preload_content=False))
    return ReadBack(leads=leads, accounts_with_score=int(companies.get("total") or 0), account_sample=[
        {"id": r.get("id"), **(r.get("properties") or {})} for r in companies.get("results") or []])
