"""crmsim's HubSpot side: a record store fed by the funnel and an HTTP server for hubspot-api-client."""

from __future__ import annotations

from crmsim.hubspot.server import HubSpotServer
from crmsim.hubspot.store import HubSpotStore

__all__ = ["HubSpotServer", "HubSpotStore"]
