"""Routing actions that ride along a score write: one record of one call carries both.

When the write-back drain sends a lead's score and routing has a pending action for the same
lead whose effect is a field update of that record (the router's ``rides_with_score``; on
Salesforce: owner/queue assignment), the drain
sends both in the same record: one Lead record of the sObject Collections PATCH inside the
drain's Composite call carries ``OwnerId`` and the score fields. The action costs no call of its
own. Only the protocols are known here (:class:`connectors.protocols.Router`).

Exactly once per lead and tier change, as for routing's own batches (:mod:`connectors.routing`):

1. in the transaction that claims the outbox batch, each riding action is checked as routing
   checks it (lead still open in the store and in the CRM, read then: one query per 300 leads;
   tier not changed again: else ``cancelled``/``superseded``), then
   marked ``sending`` (attempts+1); that is committed before the call;
2. right after the CRM's answer, in the transaction that marks the outbox rows: the record
   written: ``done`` with the router's reference; a retriable refusal of the record: back to
   ``pending`` (it rides with the next write or runs in the next routing run); a refusal of the
   record itself (converted, deleted: ``RecordResult.about_record``): the action fails with the
   same code; any other permanent refusal (a value): the two are split, so each gets its own
   answer: the action goes back to ``pending`` marked ``SPLIT`` (it never rides again; the
   routing run sends it on its own) and the score row is sent again at once without it;
3. a refusal of the whole call: the actions go back to ``pending`` (a field update sent twice
   sets the same value); a kill between 1 and 2 leaves them ``sending``: the next drain sends
   them again with the lead's score row (field updates are idempotent), or routing's recovery
   does if no score row is pending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.errors import CRMError, FatalCRMError
from connectors.protocols import LeadRef, OutboxItem, RecordResult, Router
from connectors.routing import MAX_ATTEMPTS, RoutingReport, admit, note_assigned_owners
from store.models import ActionStatus, Lead, LeadLifecycle, LeadScore, RoutingAction

SPLIT = "SPLIT"  # error prefix of an action refused together with a score write: it runs on its own


@dataclass(frozen=True)
class Rider:
    """A routing action travelling in the record of one outbox row."""

    action_id: int
    outbox_id: int
    kind: str
    ref: str
    attempts: int


def claim_riders(session: Session, router: Router, items: Sequence[OutboxItem],
                 report: RoutingReport) -> tuple[list[OutboxItem], dict[int, list[Rider]]]:
    """Pending actions of the items' leads that can ride: marked ``sending``, their field values
    added to the item's ``extra``. Returns (items, {outbox id: riders})."""
    types = router.rides_with_score
    if not types or not items:
        return list(items), {}
    by_lead = {item.lead_id: item for item in items if item.lead_id is not None}  # lead rows only
    lead_ids = sorted(by_lead)
    # FOR UPDATE SKIP LOCKED (PostgreSQL): a routing run claiming the same action at the same time
    # skips it or sees it ``sending`` (routing's own claim locks the same way).
    # ``sending`` ones too: interrupted (a kill after the call), and a field update sent again sets
    # the same value, so they ride again instead of costing a call each in routing's recovery.
    actions = [a for a in session.scalars(
        select(RoutingAction).where(RoutingAction.lead_id.in_(lead_ids),
                                    RoutingAction.status.in_((ActionStatus.pending, ActionStatus.sending)))
        .order_by(RoutingAction.id).with_for_update(skip_locked=True))
        if str(a.params.get("type")) in types and not str(a.error or "").startswith(SPLIT)]
    if not actions:
        return list(items), {}
    leads = {lead.id: lead for lead in session.scalars(select(Lead).where(Lead.id.in_(lead_ids)))}
    # The CRM's state of the leads whose pending actions would ride, as routing reads it: an owner
    # change does not go to a lead a rep closed after the last sync.
    asking = sorted({leads[a.lead_id].crm_id for a in actions if a.status == ActionStatus.pending
                     and a.lead_id in leads and leads[a.lead_id].lifecycle == LeadLifecycle.open})
    try:
        live = router.live_states(asking) if asking else {}
    except CRMError:
        return list(items), {}  # nothing rides: routing runs the actions (and reads the states) itself
    tiers = {lead_id: tier for lead_id, tier in session.execute(
        select(LeadScore.lead_id, LeadScore.tier).where(LeadScore.lead_id.in_(lead_ids),
                                                        LeadScore.is_current.is_(True)))}
    riders: dict[int, list[Rider]] = {}
    extra: dict[int, dict[str, Any]] = {}
    for action in actions:
        lead = leads.get(action.lead_id)
        if action.status == ActionStatus.sending:
            if lead is None or lead.lifecycle != LeadLifecycle.open:
                continue  # routing's recovery decides (it may have been applied before the lead left)
        elif not admit(action, lead, tiers.get(action.lead_id), report,
                       live.get(lead.crm_id) if lead is not None else None, owner_is_user=router.owner_is_user):
            continue
        assert lead is not None
        try:
            values, ref = router.ride_values(
                action, LeadRef(crm_id=lead.crm_id, email=lead.email, owner_crm_id=lead.owner_crm_id))
        except FatalCRMError:
            continue  # left pending: the routing run fails it with the CRM's reason
        except CRMError:
            break  # a lookup the CRM refused: nothing more rides in this batch
        item = by_lead[action.lead_id]
        action.status = ActionStatus.sending
        action.attempts += 1
        riders.setdefault(item.outbox_id, []).append(
            Rider(action.id, item.outbox_id, str(action.params.get("type")), ref, action.attempts))
        extra.setdefault(item.outbox_id, {}).update(values)
    session.flush()
    return [replace(i, extra={**i.extra, **extra[i.outbox_id]}) if i.outbox_id in extra else i
            for i in items], riders


def settle_riders(session: Session, riders: Mapping[int, list[Rider]], results: Sequence[RecordResult],
                  report: RoutingReport) -> set[int]:
    """Mark riding actions from their record's answer. Returns the outbox ids whose record was
    refused for good: those rows are sent again at once, alone."""
    answers = {r.outbox_id: r for r in results}
    split: set[int] = set()
    now = datetime.now(UTC)
    actions = _actions(session, riders)
    done: list[RoutingAction] = []
    for outbox_id, group in riders.items():
        answer = answers.get(outbox_id)
        for rider in group:
            action = actions.get(rider.action_id)
            if action is None or action.status != ActionStatus.sending:
                continue
            if answer is not None and answer.outcome == "sent":
                action.status, action.error = ActionStatus.done, None
                action.crm_ref, action.done_at = rider.ref[:128], now
                report.done[rider.kind] = report.done.get(rider.kind, 0) + 1
                done.append(action)
                continue
            detail = _detail(answer)
            if answer is not None and answer.outcome == "failed" and answer.about_record:
                # The record itself was refused (converted, deleted): the action is refused the same.
                action.status, action.error = ActionStatus.failed, detail
                reason = answer.reason or "UNKNOWN"
                report.failed[reason] = report.failed.get(reason, 0) + 1
                continue
            if answer is not None and answer.outcome == "failed":
                # Score or action: either may be what the CRM refused. Each goes again on its own.
                action.status = ActionStatus.pending
                action.error = f"{SPLIT}: refused with the score write ({detail}); runs on its own next"
                split.add(outbox_id)
            elif rider.attempts >= MAX_ATTEMPTS:
                action.status, action.error = ActionStatus.failed, f"gave up after {rider.attempts} attempts: {detail}"
                reason = answer.reason if answer is not None and answer.reason else "NO_RESULT"
                report.failed[reason] = report.failed.get(reason, 0) + 1
                continue
            else:
                action.status, action.error = ActionStatus.pending, detail
            report.retry_later += 1
    note_assigned_owners(session, done)  # the new owners of the assignments done here, in the store
    return split


def release_riders(session: Session, riders: Mapping[int, list[Rider]], error: str, *, split: bool,
                   report: RoutingReport) -> None:
    """The whole call was refused: riding actions go back to ``pending`` (``split``: to run alone)."""
    for action in _actions(session, riders).values():
        if action.status != ActionStatus.sending:
            continue
        action.status = ActionStatus.pending
        action.error = f"{SPLIT}: {error}" if split else error
        report.retry_later += 1


def _actions(session: Session, riders: Mapping[int, list[Rider]]) -> dict[int, RoutingAction]:
    ids = sorted(r.action_id for group in riders.values() for r in group)
    if not ids:
        return {}
    return {a.id: a for a in session.scalars(select(RoutingAction).where(RoutingAction.id.in_(ids)))}


def _detail(answer: RecordResult | None) -> str:
    if answer is None:
        return "NO_RESULT: the CRM returned no result for this record"
    if answer.reason and answer.message:
        return f"{answer.reason}: {answer.message}"
    return answer.reason or answer.message or "UNKNOWN"
