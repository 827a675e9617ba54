"""The CRM registry: a connection's ``kind`` -> that CRM package's implementations.

The only place that dispatches on ``kind``. Adding a CRM means adding its package (client,
records, streams, writeback, routing, setup, settings) and one entry in :data:`CRMS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from config.app_config import ConnectionConfig, HubSpotFields, SalesforceFields
from config.errors import ConfigError, LeadscoreError
from connectors.accounts import AccountFinder
from connectors.base import ConnectionSecrets, Connector
from connectors.errors import CRMError
from connectors.hubspot import settings as hubspot_settings
from connectors.hubspot.accounts import HubSpotAccountFinder, HubSpotAccountWriter
from connectors.hubspot.client import make_hubspot
from connectors.hubspot.client import missing_credentials as hubspot_missing_credentials
from connectors.hubspot.readback import read_back as hubspot_read_back
from connectors.hubspot.routing import HubSpotRouter
from connectors.hubspot.setup import HubSpotSetup
from connectors.hubspot.streams import HubSpotConnector
from connectors.hubspot.writeback import HubSpotScoreWriter
from connectors.protocols import ReadBack, Router, ScoreWriter, Setup, fields_as
from connectors.salesforce import settings as salesforce_settings
from connectors.salesforce.accounts import SalesforceAccountFinder, SalesforceAccountWriter
from connectors.salesforce.client import make_salesforce
from connectors.salesforce.client import missing_credentials as salesforce_missing_credentials
from connectors.salesforce.metadata import write_salesforce_metadata
from connectors.salesforce.readback import read_back as salesforce_read_back
from connectors.salesforce.routing import SalesforceRouter
from connectors.salesforce.setup import SalesforceSetup
from connectors.salesforce.streams import SalesforceConnector
from connectors.salesforce.writeback import SalesforceScoreWriter


@dataclass(frozen=True)
class CRMPackage:
    """One CRM's implementations of the protocols in :mod:`connectors.protocols`."""

    kind: str
    make_client: Callable[[ConnectionConfig, ConnectionSecrets], Any]
    make_connector: Callable[[ConnectionConfig, ConnectionSecrets, requests.Session | None], Connector]
    score_writer: Callable[[Any, ConnectionConfig], ScoreWriter]
    router: Callable[[Any, ConnectionConfig], Router]
    setup: Callable[[Any, ConnectionConfig], Setup]
    score_fields: type[SalesforceFields] | type[HubSpotFields]
    account_finder: Callable[[Any, ConnectionConfig], AccountFinder]
    account_writer: Callable[[Any, ConnectionConfig], ScoreWriter]
    routing_actions: frozenset[str]
    # Whether a lead's owner id names a user (a rep), not a queue or no one (``overwrite: false``).
    owner_is_user: Callable[[str | None], bool]
    pause_default: tuple[str, str]
    # Partitioned sync: stages run in order, a stage's streams side by side; windowed streams'
    # first loads may be cut into time windows (connectors/partition.py).
    sync_stages: tuple[tuple[str, ...], ...]
    windowed_streams: frozenset[str]
    # leadscore's fields read back through the client (a few leads, the scored accounts).
    read_back: Callable[[Any, SalesforceFields | HubSpotFields], ReadBack]
    # Why the client cannot log in with these secrets (None: it can); `config check` asks before a sync.
    missing_credentials: Callable[[ConnectionConfig, ConnectionSecrets], str | None]
    # Files an admin deploys to create the fields (Salesforce DX source); None: `crm setup` creates them.
    admin_metadata: Callable[[ConnectionConfig, Path], list[Path]] | None = None


CRMS: dict[str, CRMPackage] = {
    "salesforce": CRMPackage(
        kind="salesforce",
        make_client=make_salesforce,
        make_connector=lambda conn, secrets, session: SalesforceConnector(conn, secrets, session=session),
        score_writer=SalesforceScoreWriter,
        router=SalesforceRouter,
        setup=SalesforceSetup,
        score_fields=SalesforceFields,
        account_finder=SalesforceAccountFinder,
        account_writer=SalesforceAccountWriter,
        routing_actions=SalesforceRouter.actions,
        owner_is_user=SalesforceRouter.owner_is_user,
        pause_default=SalesforceRouter.pause_default,
        sync_stages=salesforce_settings.SYNC_STAGES,
        windowed_streams=salesforce_settings.WINDOWED_STREAMS,
        read_back=salesforce_read_back,
        missing_credentials=salesforce_missing_credentials,
        admin_metadata=write_salesforce_metadata,
    ),
    "hubspot": CRMPackage(
        kind="hubspot",
        make_client=make_hubspot,
        # The HubSpot client builds its own HTTP pool (urllib3): no requests.Session to inject.
        make_connector=lambda conn, secrets, session: HubSpotConnector(conn, secrets),
        score_writer=HubSpotScoreWriter,
        router=HubSpotRouter,
        setup=HubSpotSetup,
        score_fields=HubSpotFields,
        account_finder=HubSpotAccountFinder,
        account_writer=HubSpotAccountWriter,
        routing_actions=HubSpotRouter.actions,
        owner_is_user=HubSpotRouter.owner_is_user,
        pause_default=HubSpotRouter.pause_default,
        sync_stages=hubspot_settings.SYNC_STAGES,
        windowed_streams=hubspot_settings.WINDOWED_STREAMS,
        read_back=hubspot_read_back,
        missing_credentials=hubspot_missing_credentials,
    ),
}

# Which CRM can run which routing action (HubSpot has no campaigns API for contacts; Salesforce no workflows).
SUPPORTED: dict[str, frozenset[str]] = {kind: crm.routing_actions for kind, crm in CRMS.items()}
OWNER_IS_USER: dict[str, Callable[[str | None], bool]] = {kind: crm.owner_is_user for kind, crm in CRMS.items()}
PAUSE_DEFAULTS: dict[str, tuple[str, str]] = {kind: crm.pause_default for kind, crm in CRMS.items()}


def crm_for(conn: ConnectionConfig) -> CRMPackage:
    """The package for ``conn.kind``; ConfigError naming the connection when there is none."""
    crm = CRMS.get(conn.kind)
    if crm is None:
        raise ConfigError(f"connection {conn.name!r}: unknown kind {conn.kind!r}")
    return crm


def credentials_problem(conn: ConnectionConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """What stops ``conn`` from logging in with this environment's variables (None: nothing): a
    named variable that is unset or empty, or credentials its CRM's client cannot use."""
    try:
        secrets = ConnectionSecrets.from_env(conn, environ)
    except ConfigError as exc:
        return str(exc)
    return crm_for(conn).missing_credentials(conn, secrets)


def make_client(conn: ConnectionConfig, secrets: ConnectionSecrets) -> Any:
    """The connectors' own client for ``conn`` (one factory per CRM, shared by sync, write-back, routing)."""
    return crm_for(conn).make_client(conn, secrets)


def client_from(conn: ConnectionConfig, secrets_by_connection: Mapping[str, Any]) -> Any:
    """The client for ``conn`` from its entry in ``secrets_by_connection`` (write-back and routing).

    Raises :class:`ConnectionUnavailable` (naming the connection) when there is none to be had:
    its secrets are missing (not given, or :class:`connectors.base.EnvSecrets` raising the
    connection's unset variable), or its CRM refused or did not answer the login a client makes
    as it is built (Salesforce's OAuth client credentials). The caller stops that connection only.
    """
    try:
        secrets = secrets_by_connection.get(conn.name)
        if secrets is None:
            raise ConfigError(f"connection {conn.name!r}: no credentials given")
        return make_client(conn, secrets)
    except ConfigError as exc:
        raise ConnectionUnavailable(str(exc)) from exc
    except (CRMError, OSError) as exc:
        raise ConnectionUnavailable(f"{type(exc).__name__}: {exc}") from exc


class ConnectionUnavailable(LeadscoreError):
    """No client for one connection (:func:`client_from`): its work waits, the others' goes on."""


def make_connector(conn: ConnectionConfig, secrets: ConnectionSecrets, *,
                   session: requests.Session | None = None) -> Connector:
    """The sync connector for ``conn``. ``session`` (Salesforce only) replaces the HTTP session."""
    return crm_for(conn).make_connector(conn, secrets, session)


def make_score_writer(conn: ConnectionConfig, client: Any) -> ScoreWriter:
    """The batched score writer for ``conn`` around an already-built CRM client."""
    return crm_for(conn).score_writer(client, conn)


def make_account_finder(conn: ConnectionConfig, client: Any) -> AccountFinder:
    """How ``conn``'s CRM places leads at accounts, around the connectors' client."""
    return crm_for(conn).account_finder(client, conn)


def make_account_writer(conn: ConnectionConfig, client: Any) -> ScoreWriter:
    """The batched writer of account fields for ``conn`` around an already-built CRM client."""
    return crm_for(conn).account_writer(client, conn)


def make_router(conn: ConnectionConfig, client: Any) -> Router:
    """The router for ``conn`` around the connectors' client."""
    return crm_for(conn).router(client, conn)


def read_back(conn: ConnectionConfig, client: Any) -> ReadBack:
    """leadscore's fields as ``conn``'s CRM shows them (a few rescored leads, the scored accounts)."""
    return crm_for(conn).read_back(client, score_field_names(conn))


def make_setup(conn: ConnectionConfig, client: Any) -> Setup:
    """The ``crm setup`` steps for ``conn`` around the connectors' client."""
    return crm_for(conn).setup(client, conn)


def score_field_names(conn: ConnectionConfig) -> SalesforceFields | HubSpotFields:
    """The CRM field names to write for ``conn``: its kind's defaults, overridden by what the YAML set."""
    cls = crm_for(conn).score_fields
    if cls is SalesforceFields:
        return fields_as(conn, SalesforceFields)
    return fields_as(conn, HubSpotFields)
