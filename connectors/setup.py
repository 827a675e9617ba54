"""``leadscore crm setup``: make sure each CRM can hold what leadscore writes, and check routing.

The runner; what each CRM does is its package's :class:`connectors.protocols.Setup`
(``connectors/salesforce/setup.py``: check the Lead fields, which an admin creates;
``connectors/hubspot/setup.py``: create the missing contact properties), reached through
:mod:`connectors.registry`.

Both: the routing configuration is validated against the CRM
(:func:`connectors.routing_validation.validate_routing`): queues, campaigns, workflows, owners and fields
named in the config must exist; then the CRM's own run-time checks (Salesforce: routing queues
must take Leads; open leads owned by inactive users are a warning when routing creates Tasks).

With a store (``engine``), each connection's calls are recorded in ``api_usage`` as ``setup``, so
``leadscore status`` and the console count them against the day's budget like every other call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine

from config.app_config import AppConfig
from connectors.protocols import FieldSpec, SetupResult
from connectors.registry import make_client, make_router, make_setup
from connectors.routing_validation import static_problems
from connectors.sync import ensure_connection
from store.models import ApiPurpose
from store.usage import CallMeter, client_calls, record_api_calls

__all__ = ["FieldSpec", "SetupResult", "admin_instructions", "crm_setup"]


def crm_setup(
    config: AppConfig,
    secrets_by_connection: Mapping[str, Any],
    *,
    connection: str | None = None,
    clients: Mapping[str, Any] | None = None,
    engine: Engine | None = None,
    create: bool = True,
) -> list[SetupResult]:
    """Check (Salesforce) or create (HubSpot) the score fields and validate routing, per connection.

    Returns one :class:`SetupResult` per enabled connection (or only ``connection``); a result
    with ``ok`` False lists what an admin must do. CRM errors (auth, unreachable) propagate as
    :mod:`connectors.errors` types; the calls made before one are recorded too (``engine``).
    ``create`` False changes nothing in any CRM: a missing HubSpot property is a problem, not
    created (``leadscore config check --connect``).
    """
    targets = [config.connection(connection)] if connection else [c for c in config.connections if c.enabled]
    results: list[SetupResult] = []
    static = static_problems(config)
    for conn in targets:
        handed_in = (clients or {}).get(conn.name)
        client = handed_in or make_client(conn, secrets_by_connection[conn.name])
        meter = CallMeter(client_calls(client), None if handed_in else 0)  # a new client's login counts
        result = SetupResult(connection=conn.name, kind=conn.kind)
        try:
            setup = make_setup(conn, client)
            setup.check_fields(result, create=create)
            result.problems.extend(static + make_router(conn, client).problems(config, conn))
            setup.check_routing(config, result)
        finally:
            result.api_calls = meter.take()
            if engine is not None:
                record_api_calls(engine, ensure_connection(engine, conn), ApiPurpose.setup, result.api_calls)
        results.append(result)
    return results


def admin_instructions(result: SetupResult) -> list[str]:
    """Lines telling an admin exactly what to create (Salesforce) and what else is wrong."""
    lines: list[str] = []
    for sobject in sorted({spec.sobject for spec in result.missing}, key=lambda name: name != "Lead"):
        lines.append(f"Salesforce connection {result.connection}: create these custom fields on {sobject} "
                     f"(Setup → Object Manager → {sobject} → Fields & Relationships → New), make them editable "
                     "by the integration user (or deploy them all: leadscore crm setup --salesforce-metadata DIR):")
        for spec in result.missing:
            if spec.sobject == sobject:
                lines.append(f"  {spec.name:<28} {spec.admin_type:<45} label \"{spec.label}\"")
    for problem in result.problems:
        lines.append(f"{result.connection}: {problem}")
    for warning in result.warnings:
        lines.append(f"{result.connection}: warning: {warning}")
    return lines
