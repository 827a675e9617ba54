"""The typed protocols a CRM package implements, and the data they exchange: one place.

A CRM is a package (``connectors/salesforce/``, ``connectors/hubspot/``) holding its client,
records, streams, score writer and router; :mod:`connectors.registry` maps a connection's
``kind`` to them. The generic engines know only these protocols: sync (:class:`Connector`, in
:mod:`connectors.base` with the records it yields), the write-back drain (:class:`ScoreWriter`)
routing (:class:`Router`) and ``crm setup`` (:class:`Setup`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from config.app_config import HubSpotFields, SalesforceFields
from connectors.base import Connector

if TYPE_CHECKING:
    from config.app_config import AppConfig, ConnectionConfig
    from store.models import LeadLifecycle, RoutingAction

__all__ = ["ActionOutcome", "ActionResult", "Connector", "FieldSpec", "LeadRef", "LiveLead", "OutboxItem", "Outcome",
           "ReadBack", "RecordResult", "Router", "ScoreWriter", "Setup", "SetupResult", "fields_as"]

Outcome = Literal["sent", "retry", "failed"]
F = TypeVar("F", SalesforceFields, HubSpotFields)


# ------------------------------------------------------------------------------------ write-back


@dataclass(frozen=True)
class OutboxItem:
    """One row to write: the CRM record id and the CRM-neutral payload (a lead's score fields, or
    with ``account_id`` set and ``lead_id`` None, an account's fields).

    ``extra`` holds CRM field values that routing actions of the same lead add to the record (an
    owner change riding along the score write, see :mod:`connectors.riders`); the writer sends
    them in the same record as the score fields.
    """

    outbox_id: int
    lead_id: int | None
    crm_id: str
    payload: dict[str, Any]
    attempts: int
    extra: Mapping[str, Any] = field(default_factory=dict)
    account_id: int | None = None


@dataclass(frozen=True)
class RecordResult:
    """The CRM's answer for one record. ``reason`` is the CRM's code (``UNABLE_TO_LOCK_ROW``...).

    ``about_record``: the refusal concerns the record itself (deleted, converted, unknown id), not
    a value sent: anything else sent in the same record is refused the same way.
    """

    outbox_id: int
    outcome: Outcome
    reason: str | None = None
    message: str | None = None
    about_record: bool = False


class ScoreWriter(Protocol):
    """What the drain needs from a CRM: one batched write call and an API-call counter."""

    batch_size: int

    @property
    def api_calls(self) -> int:
        """HTTP requests sent so far by the underlying client (retries included)."""
        ...

    def write(self, items: Sequence[OutboxItem]) -> list[RecordResult]:
        """Write ``items`` in ONE logical API call; one result per item.

        Whole-call failures raise :class:`CRMError` subclasses (the client already retried
        retriable ones).
        """
        ...


def fields_as(conn: ConnectionConfig, cls: type[F]) -> F:
    """``conn``'s written field names as ``cls``: its defaults, overridden by what the YAML set.

    The config's ``SalesforceFields | HubSpotFields`` union parses any YAML mapping as the first
    class (same keys), which would fill unset keys of a HubSpot connection with Salesforce
    defaults; only the keys the user actually set are taken from it.
    """
    given = conn.score_fields
    if given is None:
        return cls()
    return cls(**{key: getattr(given, key) for key in given.model_fields_set})


# ------------------------------------------------------------------------------------ routing


ActionOutcome = Literal["done", "failed", "retry", "unknown"]


@dataclass(frozen=True)
class ActionResult:
    """The CRM's answer for one routing action of a batch.

    ``done`` (``crm_ref`` set), ``failed`` (permanent: ``reason`` is the CRM's code), ``retry``
    (the CRM did not apply it and may next time), ``unknown`` (no answer: it may have happened,
    so the next run looks it up before sending again).
    """

    action_id: int
    outcome: ActionOutcome
    crm_ref: str | None = None
    reason: str | None = None
    message: str | None = None


@dataclass
class LeadRef:
    """What an action needs to know about its lead.

    ``owner_crm_id`` is the lead's owner as the action finds it: for a task, the owner an
    ``assign_owner`` of the same tier change gave it (the store learns it only at the next sync).
    ``score`` and ``reasons`` are those of the tier change's score (a task's body shows them).
    """

    crm_id: str
    email: str | None
    owner_crm_id: str | None
    score: int | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class LiveLead:
    """A lead as the CRM holds it right before routing calls it (the store's copy is as of its
    last sync): its lifecycle and its owner (a user, a queue, or None)."""

    state: LeadLifecycle
    owner_crm_id: str | None


class Router(Protocol):
    """One CRM's implementation of the routing actions."""

    actions: frozenset[str]  # the action types this CRM can run
    # Action types whose effect is a field update of the lead record that a score write can carry
    # in the same record (Salesforce: owner/queue and Lead field updates); empty: none ride.
    rides_with_score: frozenset[str]
    pause_default: tuple[str, str]  # (field, value) pause_outreach sets unless configured
    batch_size: int  # actions per perform_batch call

    def problems(self, config: AppConfig, conn: ConnectionConfig) -> list[str]:
        """Every routing setting naming something missing in this CRM (``routing.i.actions.j.key: ...``)."""
        ...

    def find_existing(self, action: RoutingAction, lead: LeadRef) -> str | None:
        """The CRM reference of the action's effect if it already happened, else None."""
        ...

    def perform(self, action: RoutingAction, lead: LeadRef) -> str:
        """Run the action; returns the CRM's reference (created id, owner id, ...)."""
        ...

    def ride_values(self, action: RoutingAction, lead: LeadRef) -> tuple[dict[str, Any], str]:
        """(record field values, reference once written) of an action riding along a score write.

        Only for ``rides_with_score`` types. Raises :class:`FatalCRMError` for what no call can fix
        (an unknown queue): the action is then left to the routing run, which fails it.
        """
        ...

    def live_states(self, crm_ids: Sequence[str]) -> dict[str, LiveLead]:
        """Each lead's lifecycle and owner in the CRM now, by CRM id, in the fewest calls: the
        store's are as of its last sync, and a lead closed or converted since must not get a task
        (nor one a rep took since be moved by an ``overwrite: false`` assignment)."""
        ...

    @staticmethod
    def owner_is_user(owner_crm_id: str | None) -> bool:
        """Whether an owner id names a user (a rep), not a queue or no one."""
        ...

    def perform_batch(self, items: Sequence[tuple[RoutingAction, LeadRef]]) -> list[ActionResult]:
        """Run up to ``batch_size`` actions in the fewest calls; one result per action.

        Whole-call failures raise :class:`CRMError` subclasses (the client already retried
        retriable ones). A call refused for its credentials or the quota (:class:`AuthError`,
        :class:`QuotaExhaustedError`) after earlier calls of the batch were answered carries those
        answers in ``answered`` (:func:`connectors.errors.refused_midway`): the engine records
        them and gives the rest back to ``pending``, since the CRM applied nothing of a refused call.
        """
        ...




# ------------------------------------------------------------------------------------ crm setup


@dataclass(frozen=True)
class FieldSpec:
    """A score field as leadscore needs it: CRM name, the role it plays, type in admin terms."""

    role: str  # score | tier | reasons | model | scored_at
    name: str
    label: str
    admin_type: str  # what an admin picks in Setup, e.g. "Number(3, 0)"
    describe_types: tuple[str, ...]  # describe ``type`` values accepted
    min_length: int = 0
    sobject: str = "Lead"  # the Salesforce object holding it (Lead, or Account for the account fields)


@dataclass
class SetupResult:
    """What ``crm setup`` found and did for one connection."""

    connection: str
    kind: str
    present: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    missing: list[FieldSpec] = field(default_factory=list)  # Salesforce: for an admin to add
    problems: list[str] = field(default_factory=list)  # wrong types, not writable, routing
    # Data the CRM will refuse per record at run time (not a set-up error: setup still passes).
    warnings: list[str] = field(default_factory=list)
    api_calls: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.problems

    def summary(self) -> str:
        """One line: what is ready or what blocks."""
        if self.ok:
            made = f", created {len(self.created)} properties" if self.created else ""
            return f"{self.connection} ({self.kind}): ready — {len(self.present) + len(self.created)} score " \
                   f"fields{made}"
        parts = []
        if self.missing:
            parts.append(f"{self.missing_fields()} (an admin must add them)")
        if self.problems:
            parts.append(f"{len(self.problems)} problem{'s' if len(self.problems) > 1 else ''}")
        return f"{self.connection} ({self.kind}): " + "; ".join(parts)

    def missing_fields(self) -> str:
        """``13 custom fields missing on Account and Lead`` (Salesforce: for an admin to add)."""
        objects = " and ".join(sorted({spec.sobject for spec in self.missing}))
        return f"{len(self.missing)} custom fields missing on {objects}"

    def to_dict(self) -> dict[str, Any]:
        return {"connection": self.connection, "kind": self.kind, "ok": self.ok, "present": self.present,
                "created": self.created,
                "missing": [{"object": s.sobject, "api_name": s.name, "label": s.label, "type": s.admin_type}
                            for s in self.missing],
                "problems": self.problems, "warnings": self.warnings, "api_calls": self.api_calls}


class Setup(Protocol):
    """One CRM's part of ``leadscore crm setup`` (the runner is :mod:`connectors.setup`)."""

    def check_fields(self, result: SetupResult, *, create: bool = True) -> None:
        """Check (or create, where the CRM allows it and ``create`` is True) the score fields;
        record what was found (``create`` False: what is missing is a problem, nothing changes)."""
        ...

    def check_routing(self, config: AppConfig, result: SetupResult) -> None:
        """What this CRM would refuse at run time beyond routing's own validation (problems and
        warnings); runs after the router's checks."""
        ...


# ------------------------------------------------------------------------------------ read-back


@dataclass(frozen=True)
class ReadBack:
    """leadscore's fields as a CRM shows them: a few leads whose score moved (CRM id and fields), and
    how many accounts hold an account score, with the top few (each CRM package's ``read_back``)."""

    leads: list[dict[str, Any]]
    accounts_with_score: int
    account_sample: list[dict[str, Any]]
