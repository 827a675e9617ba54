"""Lead lifecycle: the state a lead is in at the CRM, and what leaving "open" cancels.

Each CRM's ``records.lead_record`` derives the state from the CRM record (Salesforce:
``IsDeleted``, ``MasterRecordId``, ``IsConverted``, ``Status``; HubSpot: archived, merges,
``lifecyclestage``, ``hs_lead_status``) with the connection's configured lists
(``connections[i].lifecycle`` in the YAML). Precedence: merged, deleted, converted, closed, open.

Only ``open`` leads are scored anew, written and routed. When a sync learns that a lead left
``open``, :func:`cancel_not_open` marks its pending and failed outbox rows and routing actions
``cancelled`` with the reason (a failure's error kept in it); the lead's scores stay as history.
The write-back drain and the routing executor check the state again right before they act
(:func:`not_open_reason`); routing also reads each lead's state from the CRM first
(``connectors.routing.crm_states``), since a rep may have closed it after the last sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from store.models import ActionStatus, Lead, LeadLifecycle, Outbox, OutboxStatus, RoutingAction


def lifecycle_of(*, deleted: bool, merged_into: str | None, converted: bool, closed: bool) -> LeadLifecycle:
    """The lifecycle state from what a CRM record says (merged > deleted > converted > closed > open)."""
    if deleted and merged_into:
        return LeadLifecycle.merged
    if deleted:
        return LeadLifecycle.deleted
    if converted:
        return LeadLifecycle.converted
    if closed:
        return LeadLifecycle.closed
    return LeadLifecycle.open


def not_open_reason(state: LeadLifecycle | str, what: str) -> str:
    """The recorded reason for not acting: ``LEAD_CONVERTED: the lead was converted ...``."""
    value = LeadLifecycle(state).value
    return f"LEAD_{value.upper()}: the lead was {value} in the CRM before the {what} ran"


def cancel_not_open(session: Session, connection_id: int, crm_ids: Iterable[str] | None = None) -> dict[str, int]:
    """Cancel pending and failed outbox rows and routing actions of the connection's leads that
    are not open (nothing is left to send or fix for them).

    ``crm_ids`` narrows it to the leads just synced (None = every lead of the connection).
    Runs in the caller's transaction (no commit). Returns ``{"outbox": n, "routing": n}``.
    """
    counts = {"outbox": 0, "routing": 0}
    ids: Sequence[str | None] = sorted(set(crm_ids)) if crm_ids is not None else [None]
    for start in range(0, max(len(ids), 1), 500):
        chunk = ids[start:start + 500]
        leads = select(Lead.id, Lead.lifecycle).where(Lead.connection_id == connection_id,
                                                       Lead.lifecycle != LeadLifecycle.open)
        if crm_ids is not None:
            leads = leads.where(Lead.crm_id.in_(chunk))
        by_state: dict[LeadLifecycle, list[int]] = {}
        for lead_id, state in session.execute(leads):
            by_state.setdefault(LeadLifecycle(state), []).append(lead_id)
        for state, lead_ids in by_state.items():
            # Failed ones too: a refusal waits for someone to fix its cause, and a lead that left
            # "open" needs nothing more (a user trial saw actions refused on merged leads listed as
            # failures to fix in `status` after the sync had recorded the merges). The refusal is
            # kept in the reason.
            outbox = session.execute(
                update(Outbox).where(Outbox.lead_id.in_(lead_ids),
                                     Outbox.status.in_([OutboxStatus.pending, OutboxStatus.failed]))
                .values(status=OutboxStatus.cancelled,
                        last_error=_reason(not_open_reason(state, "write"), Outbox.status == OutboxStatus.failed,
                                           Outbox.last_error)),
                execution_options={"synchronize_session": False})
            routing = session.execute(
                update(RoutingAction)
                .where(RoutingAction.lead_id.in_(lead_ids),
                       RoutingAction.status.in_([ActionStatus.pending, ActionStatus.failed]))
                .values(status=ActionStatus.cancelled,
                        error=_reason(not_open_reason(state, "action"),
                              RoutingAction.status == ActionStatus.failed, RoutingAction.error)),
                execution_options={"synchronize_session": False})
            counts["outbox"] += int(getattr(outbox, "rowcount", 0) or 0)
            counts["routing"] += int(getattr(routing, "rowcount", 0) or 0)
    return counts


def _reason(reason: str, was_failed: Any, error: Any) -> Any:
    """The cancelled row's reason: ``reason``, and a failed row's refusal kept after it."""
    return case((was_failed, reason + " (it had failed: " + func.coalesce(error, "") + ")"), else_=reason)
