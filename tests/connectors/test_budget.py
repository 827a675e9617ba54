from __future__ import annotations

import pytest

from connectors.budget import ApiBudget
from connectors.errors import QuotaExhaustedError


def test_no_limit_reported_allows_calls() -> None:
    budget = ApiBudget(0.5, crm="salesforce")
    budget.check(10_000)  # nothing known yet: no reason to refuse


@pytest.mark.parametrize(("used", "limit", "share", "calls", "allowed"), [
    (0, 1000, 0.5, 500, True),
    (0, 1000, 0.5, 501, False),
    (499, 1000, 0.5, 1, True),
    (500, 1000, 0.5, 1, False),
    (10, 100, 1.0, 90, True),
    (10, 100, 1.0, 91, False),
])
def test_check_against_share(used: int, limit: int, share: float, calls: int, allowed: bool) -> None:
    budget = ApiBudget(share, crm="hubspot")
    budget.observe(used, limit)
    if allowed:
        budget.check(calls)
    else:
        with pytest.raises(QuotaExhaustedError):
            budget.check(calls)


def test_salesforce_header_and_unreported_calls_count() -> None:
    budget = ApiBudget(0.1, crm="salesforce")
    budget.observe_salesforce("api-usage=95/1000; per-app-api-usage=17/250(appName=x)")
    assert (budget.used, budget.limit) == (95, 1000)
    budget.check(5)
    budget.count_call()  # a response without the header still spent a call
    with pytest.raises(QuotaExhaustedError):
        budget.check(5)


def test_hubspot_headers() -> None:
    budget = ApiBudget(0.5, crm="hubspot")
    budget.observe_hubspot({"X-HubSpot-RateLimit-Daily": "1000", "X-HubSpot-RateLimit-Daily-Remaining": "600"})
    assert budget.used == 400
    budget.check(100)
    with pytest.raises(QuotaExhaustedError):
        budget.check(101)


def test_malformed_headers_are_ignored() -> None:
    budget = ApiBudget(0.5, crm="salesforce")
    budget.observe_salesforce("garbage")
    budget.observe_hubspot({"X-HubSpot-RateLimit-Daily": "x", "X-HubSpot-RateLimit-Daily-Remaining": "1"})
    assert budget.limit is None


def test_share_must_be_a_fraction() -> None:
    with pytest.raises(ValueError):
        ApiBudget(0.0, crm="salesforce")
