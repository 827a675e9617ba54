"""How the simulated org shows a funnel company: one Account per company.

Real orgs type an Account's ``Website`` in many shapes (``acme.com``, ``www.acme.com``,
``https://www.acme.com/``): the shape is picked per company from a stable hash, so a client
matching accounts by domain must normalise it as it would against a real org.
"""

from __future__ import annotations

import hashlib
from typing import Any

from crmsim.model import Company

WEBSITE_SHAPES = ("{domain}", "www.{domain}", "https://www.{domain}/", "http://{domain}")


def website(company: Company) -> str:
    """The company's domain in one of the shapes admins type it."""
    digest = hashlib.sha256(company.key.encode()).digest()
    return WEBSITE_SHAPES[digest[0] % len(WEBSITE_SHAPES)].format(domain=company.domain)


def account_values(company: Company) -> dict[str, Any]:
    """The standard Account fields of a funnel company (the custom score fields stay empty)."""
    return {
        "Name": company.name[:255],
        "Website": website(company)[:255],
        "Industry": company.industry,
        "NumberOfEmployees": company.employees,
        "AnnualRevenue": float(company.annual_revenue) if company.annual_revenue is not None else None,
        "BillingCountry": company.country,
        "Type": "Prospect",
    }
