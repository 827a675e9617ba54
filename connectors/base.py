"""One connector interface, implemented by Salesforce and HubSpot.

A connector reads *streams* (``leads``, ``tasks``, ``contacts``, ``emails``, ...) in pages of
normalised records. Each :class:`Page` carries the :class:`Cursor` to store once the page is
committed; :mod:`connectors.sync` does the committing. Connectors never touch the database.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import SecretStr

from config.errors import ConfigError
from store.models import LeadLifecycle

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from config.app_config import ConnectionConfig


SECRET_NAMES = ("session_id", "client_secret", "access_token", "refresh_token")


@dataclass
class ConnectionSecrets:
    """The secret parts of a connection, read from the environment variables the config names.

    Each is a ``SecretStr`` (a plain ``str`` given is wrapped) until the CRM client's constructor
    unwraps it: printed, logged or repr'd on the way, it shows ``**********``.
    """

    session_id: SecretStr | None = None
    client_secret: SecretStr | None = None
    access_token: SecretStr | None = None
    # HubSpot OAuth apps: refreshes an expired access token (with client_id + client_secret).
    refresh_token: SecretStr | None = None

    def __post_init__(self) -> None:
        for attr in SECRET_NAMES:
            value = getattr(self, attr)
            if isinstance(value, str):
                setattr(self, attr, SecretStr(value))

    @classmethod
    def from_env(cls, conn: ConnectionConfig, environ: Mapping[str, str] | None = None) -> ConnectionSecrets:
        """Read each ``*_env`` variable the config names (from ``environ``, by default this process's
        environment); a named but unset variable is a ConfigError."""
        environ = os.environ if environ is None else environ
        values: dict[str, SecretStr | None] = {}
        for attr in SECRET_NAMES:
            var = getattr(conn, f"{attr}_env", None)
            if var is None:
                values[attr] = None
                continue
            value = environ.get(var)
            if not value:
                raise ConfigError(
                    f"connection {conn.name!r}: environment variable {var} ({attr}_env) is not set"
                )
            values[attr] = SecretStr(value)
        return cls(**values)

    def __repr__(self) -> str:  # never print secrets
        present = [k for k in SECRET_NAMES if getattr(self, k)]
        return f"ConnectionSecrets(set={present})"


class EnvSecrets(Mapping[str, ConnectionSecrets]):
    """The secrets of some connections, each read from the environment when first asked for.

    A connection whose variable is unset raises its own :class:`ConfigError` when its secrets are
    asked for, not when the mapping is made: a write-back or routing pass over every connection
    records that one connection's error and carries on with the others (as a sync does).
    """

    def __init__(self, connections: Iterable[ConnectionConfig], environ: Mapping[str, str] | None = None) -> None:
        self._connections = {c.name: c for c in connections}
        self._environ = environ
        self._read: dict[str, ConnectionSecrets] = {}

    def __getitem__(self, name: str) -> ConnectionSecrets:
        if name not in self._read:
            self._read[name] = ConnectionSecrets.from_env(self._connections[name], self._environ)
        return self._read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._connections)

    def __len__(self) -> int:
        return len(self._connections)


@dataclass(frozen=True, order=True)
class Cursor:
    """Where a stream resumes: the (modification stamp, CRM id) of the last committed record.

    ``crm_id`` None means "every record at ``ts`` is still to be read" (an inclusive bound).
    """

    ts: datetime
    crm_id: str | None = None


@dataclass
class LeadRecord:
    """A lead/contact normalised to the ``lead`` table's columns."""

    crm_id: str
    crm_created_at: datetime
    crm_modified_at: datetime
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    title: str | None = None
    company: str | None = None
    company_key: str | None = None
    industry: str | None = None
    employees: int | None = None
    annual_revenue: float | None = None
    country: str | None = None
    lead_source: str | None = None
    campaign: str | None = None
    status: str | None = None
    owner_crm_id: str | None = None
    is_converted: bool = False
    converted_at: datetime | None = None
    is_deleted: bool = False
    deleted_at: datetime | None = None
    merged_into_crm_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    lifecycle: LeadLifecycle = LeadLifecycle.open


@dataclass
class ActivityRecord:
    """One engagement normalised to the ``activity`` table (type in ``store.models.ACTIVITY_TYPES``)."""

    crm_id: str
    lead_crm_id: str | None
    type: str
    occurred_at: datetime
    crm_modified_at: datetime
    detail: str | None = None
    campaign: str | None = None
    is_deleted: bool = False
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class QuarantinedItem:
    """A record that could not be normalised: reason code, detail and the payload as received."""

    crm_id: str | None
    reason: str
    detail: str
    raw: dict[str, Any]


@dataclass
class Merge:
    """``loser_crm_id`` was merged into ``winner_crm_id`` (the loser is marked, never removed)."""

    loser_crm_id: str
    winner_crm_id: str
    at: datetime


# Skip reasons that are the normal course of a CRM (a campaign member sent but never responding),
# not engagement a model might miss: counted in the report, not printed by `leadscore sync`.
NEVER_RESPONDED = "CampaignMember that never responded"
# A Task leadscore's own routing created ("Call hot lead [leadscore #12]"): a to-do, not engagement.
ROUTING_TASK = "a task leadscore's routing created"
ROUTINE_SKIPS = frozenset({NEVER_RESPONDED, ROUTING_TASK})


@dataclass
class Page:
    """One page of a stream, committed in one transaction together with ``cursor``.

    ``cursor`` None means "do not move the cursor" (e.g. a page of an unsorted scan).
    ``lead_refreshes`` are leads whose stored rows must be re-normalised because a related
    record changed (a HubSpot company's firmographics): ``{company id: company payload}``.
    """

    stream: str
    cursor: Cursor | None
    leads: list[LeadRecord] = field(default_factory=list)
    activities: list[ActivityRecord] = field(default_factory=list)
    quarantined: list[QuarantinedItem] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)
    company_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (lead CRM id, campaign name, membership created at): a lead's original campaign is the one
    # whose membership was created together with the lead (Salesforce CampaignMember).
    lead_campaigns: list[tuple[str, str, datetime]] = field(default_factory=list)
    records_read: int = 0
    # Records read but not stored, by why (a Task that is no engagement, an Event without Type):
    # counted so a sync that reads a stream and keeps none of it says so.
    skipped: Counter[str] = field(default_factory=Counter)


class Connector(Protocol):
    """What :func:`connectors.sync.sync_connection` needs from a CRM."""

    name: str
    kind: str
    client: Any  # the connectors' CRM client (the account look-up after the streams uses it too)

    @property
    def api_calls(self) -> int:
        """HTTP requests sent so far (retries and logins included)."""
        ...

    def streams(self) -> list[str]:
        """Stream names in the order they must be read (parents before children)."""
        ...

    def read_stream(self, stream: str, cursor: Cursor | None, *, until: datetime) -> Iterator[Page]:
        """Pages of normalised records modified after ``cursor`` (minus the configured overlap)
        and before ``until`` (the CRM's clock at sync start), oldest first."""
        ...

    def server_time(self) -> datetime:
        """The CRM's clock (the HTTP ``Date`` header of a cheap call)."""
        ...

    def relink_company(self, lead_raw: dict[str, Any], company: dict[str, Any]) -> LeadRecord | None:
        """Re-normalise a stored lead after its company changed (None: not applicable)."""
        ...

    def use_store(self, engine: Engine, connection_id: int) -> None:
        """Before a stream is read: the store this connection syncs into, for what the connector may
        look up there instead of asking the CRM (Salesforce: converted leads' Contact ids)."""
        ...
