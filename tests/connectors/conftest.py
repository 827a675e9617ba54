"""Fixtures for connector tests: crmsim (real HTTP(S) servers) and connection configs for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from config.app_config import ConnectionConfig
from connectors.base import ConnectionSecrets
from crmsim.app import CRMSim


def salesforce_config(sim: CRMSim, name: str, **overrides: Any) -> tuple[ConnectionConfig, ConnectionSecrets]:
    """A client-credentials connection to crmsim's Salesforce (re-logs in by itself on expiry)."""
    info = sim.info()["salesforce"]
    conn = ConnectionConfig(name=name, kind="salesforce", instance_url=info["instance_url"], domain="crmsim.my",
                            client_id=info["client_id"], ca_bundle=info["ca_bundle"], login_via_instance=True,
                            **overrides)
    return conn, ConnectionSecrets(client_secret=info["client_secret"])


def hubspot_config(sim: CRMSim, name: str, **overrides: Any) -> tuple[ConnectionConfig, ConnectionSecrets]:
    info = sim.info()["hubspot"]
    # OAuth app credentials so an expired token can be refreshed (crmsim's info() omits them).
    hub = sim.hubspot
    conn = ConnectionConfig(name=name, kind="hubspot", host=info["host"], client_id=hub.client_id, **overrides)
    return conn, ConnectionSecrets(access_token=info["access_token"], client_secret=hub.client_secret,
                                   refresh_token=hub.refresh_token)


@pytest.fixture
def small_sim() -> Iterator[CRMSim]:
    """A fresh simulator per test (tests advance its clock)."""
    sim = CRMSim(leads=600, seed=11, history_days=90, admin=False).start()
    try:
        yield sim
    finally:
        sim.stop()
