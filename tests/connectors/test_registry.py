"""The registry is the one place a connection's kind picks a CRM package."""

from __future__ import annotations

import typing

import pytest

from config.app_config import ConnectionConfig, HubSpotFields, SalesforceFields
from config.errors import ConfigError
from connectors import registry
from connectors.hubspot.routing import HubSpotRouter
from connectors.salesforce.routing import SalesforceRouter


def test_every_configurable_kind_has_a_package() -> None:
    kinds = set(typing.get_args(ConnectionConfig.model_fields["kind"].annotation))
    assert kinds == set(registry.CRMS)
    assert registry.CRMS["salesforce"].router is SalesforceRouter
    assert registry.CRMS["hubspot"].router is HubSpotRouter
    # Each CRM runs what it has an API for: campaigns on Salesforce, workflows on HubSpot.
    assert registry.SUPPORTED["salesforce"] - registry.SUPPORTED["hubspot"] == {"add_to_campaign"}
    assert registry.SUPPORTED["hubspot"] - registry.SUPPORTED["salesforce"] == {"enroll_workflow"}
    assert registry.PAUSE_DEFAULTS == {"salesforce": ("Status", "Nurturing"),
                                       "hubspot": ("hs_lead_status", "BAD_TIMING")}


def test_score_field_names_follow_the_connections_kind() -> None:
    hs = ConnectionConfig(name="hs", kind="hubspot", score_fields={"tier": "my_tier"})
    fields = registry.score_field_names(hs)
    assert isinstance(fields, HubSpotFields) and fields.tier == "my_tier" and fields.score == "leadscore_score"
    sf = ConnectionConfig(name="sf", kind="salesforce", instance_url="https://acme.example")
    assert isinstance(registry.score_field_names(sf), SalesforceFields)


def test_an_unknown_kind_is_a_config_error_naming_the_connection() -> None:
    conn = ConnectionConfig.model_construct(name="pd", kind="pipedrive")
    with pytest.raises(ConfigError, match="connection 'pd': unknown kind 'pipedrive'"):
        registry.make_router(conn, object())
