"""Routing and nurture actions on tier changes: planned in the scoring transaction, run once.

This is the engine; what each CRM does per action is its package's router
(``connectors/salesforce/routing.py``, ``connectors/hubspot/routing.py``), reached through
:mod:`connectors.registry` and typed by :class:`connectors.protocols.Router`.

Planning (:func:`plan_routing`) is the ``tier_change_hook`` of ``scoring.service.score_leads``:
for a lead whose tier changed, it inserts one ``RoutingAction`` (status ``pending``) per
configured action of every matching rule (``routing[i].to`` is the new tier, ``from`` narrows
it). The unique key (lead, score that caused it, action) makes a re-run harmless.

Execution (:func:`execute_routing`) runs each action exactly once per lead and tier change,
however often it is called and wherever it is interrupted:

1. the action is marked ``sending`` (attempts+1) and committed BEFORE the CRM call;
2. the CRM call is made; its reference (Task id, CampaignMember id, owner id) is stored with
   status ``done`` right after the response;
3. an action found ``sending`` (a crash or a timeout between 1 and 2) is first looked up in the
   CRM: a Task whose subject carries ``[leadscore #<action id>]``, an existing CampaignMember,
   the owner or property already set. Only when no effect is found is it sent again.

Actions of a tier change that was overtaken (the lead's current tier is no longer the action's
``to`` tier) are marked ``superseded`` instead of being run; actions of a lead that is no longer
open (converted, closed, deleted, merged: :mod:`connectors.lifecycle`) are marked ``cancelled``:
open in the store as of the last sync, and open in the CRM, read right before the calls
(:func:`crm_states`, one read per run for its pending actions' leads).

``pause_outreach`` (the lowest tier): Salesforce ``Status = 'Nurturing'``; HubSpot
``hs_lead_status = 'BAD_TIMING'`` ("not now": reps stop working the lead, marketing nurtures it).
Both can be overridden with the action's ``property``/``value``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from config.app_config import AppConfig, ConnectionConfig, RoutingActionConfig
from connectors.actions import OWNER_KEPT, action_marker, applies, round_robin_pick
from connectors.errors import AuthError, CRMError, QuotaExhaustedError, RetriableCRMError, failure_matches
from connectors.lifecycle import not_open_reason
from connectors.protocols import ActionResult, LeadRef, LiveLead, Router
from connectors.registry import (
    OWNER_IS_USER,
    PAUSE_DEFAULTS,
    SUPPORTED,
    ConnectionUnavailable,
    client_from,
    make_router,
)
from connectors.routing_validation import refuse_problems, routing_problems, static_problems, validate_routing
from scoring.hooks import TierChangeHook
from store.db import IDS_PER_STATEMENT, among, unit_of_work
from store.models import (
    ActionStatus,
    ApiPurpose,
    Connection,
    Lead,
    LeadLifecycle,
    LeadScore,
    Outbox,
    OutboxStatus,
    RoutingAction,
)
from store.upsert import upsert_rows
from store.usage import CallMeter, client_calls, record_api_calls

logger = logging.getLogger(__name__)

__all__ = ["PAUSE_DEFAULTS", "SUPPORTED", "LeadRef", "Router", "RoutingReport", "TierChangeHook", "action_marker",
           "execute_routing", "make_router", "plan_routing", "requeue_failed_actions", "round_robin_pick",
           "routing_problems", "static_problems", "validate_routing"]

MAX_ATTEMPTS = 8
# Why an action was cancelled for what the CRM said right before it, not the store.
SINCE_SYNC = "read from the CRM right before the call; the next sync records it"
# API calls routing made in this process, by CRM kind: a tally for in-process measurement (the demo
# reads it around its steps); every run's own counts are in RoutingReport.api_calls.
CALLS_BY_KIND: Counter[str] = Counter()


def _applies(action: RoutingActionConfig, conn: ConnectionConfig) -> bool:
    return applies(action, conn, SUPPORTED.get(conn.kind, frozenset()))


# ------------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class PlannedAction:
    """One action a tier change plans: its stored name (the type, ``#2`` for a rule set's second
    of that type), its rule and position, and its configuration."""

    name: str
    rule: int
    index: int
    config: RoutingActionConfig
    # An ``overwrite: false`` assignment of a lead a user owns: the owner's id. Planning records it
    # as cancelled (the lead's trail says why it kept its rep); it never runs.
    kept_by: str | None = None


def planned_actions(
    config: AppConfig, conn: ConnectionConfig, from_tier: str | None, to_tier: str, *, owner: str | None = None
) -> list[PlannedAction]:
    """The actions a tier change ``from_tier -> to_tier`` of a lead of ``conn`` owned by ``owner``
    (its CRM id, as last synced) plans, in rule order, before the repeat guard (:func:`repeated`).
    An ``assign_owner`` with ``overwrite: false`` for a lead a user owns comes with ``kept_by``."""
    if from_tier == to_tier or not conn.enabled:
        return []
    out: list[PlannedAction] = []
    seen: dict[str, int] = {}
    for r_index, rule in enumerate(config.routing):
        if rule.to != to_tier or (rule.from_ is not None and rule.from_ != from_tier):
            continue
        for a_index, action in enumerate(rule.actions):
            if not _applies(action, conn):
                continue
            # Numbered before the owner guard, so an action keeps its stored name whoever owns the lead.
            n = seen.get(action.type, 0)
            seen[action.type] = n + 1
            kept = owner if action.keeps_owner() and owned_by_user(conn, owner) else None
            out.append(PlannedAction(action.type if n == 0 else f"{action.type}#{n + 1}", r_index, a_index, action,
                                     kept_by=kept))
    return out


def owned_by_user(conn: ConnectionConfig, owner: str | None) -> bool:
    """Whether ``owner`` (a CRM owner id of a lead of ``conn``) is a user: a rep, not a queue or no one."""
    is_user = OWNER_IS_USER.get(conn.kind)
    return is_user is not None and is_user(owner)


# An earlier action in one of these states counts for the repeat guard: it will run, is running or ran.
_LIVE = (ActionStatus.pending, ActionStatus.sending, ActionStatus.done)
Earlier = dict[int, list[tuple[str, str, datetime]]]  # lead id -> (action name, to tier, the data's clock)


def data_clock(as_of: datetime | None, scored_at: datetime) -> datetime:
    """A score's time on the data's clock (its ``as_of``, else when it was scored), in UTC."""
    at = as_of or scored_at
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def earlier_actions(session: Session, lead_ids: Sequence[int]) -> Earlier:
    """Per lead, its routing actions that are pending, running or done: name, tier and the data's
    clock of the score that planned them (``as_of``, else when it was scored)."""
    out: Earlier = {}
    ids = sorted({int(i) for i in lead_ids})
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        chunk = ids[start : start + IDS_PER_STATEMENT]
        for lead_id, name, tier, as_of, scored_at in session.execute(
            select(RoutingAction.lead_id, RoutingAction.action, RoutingAction.to_tier, LeadScore.as_of,
                   LeadScore.scored_at)
            .join(LeadScore, LeadScore.id == RoutingAction.lead_score_id)
            .where(among(session, RoutingAction.lead_id, chunk), RoutingAction.status.in_(_LIVE))
        ):
            out.setdefault(int(lead_id), []).append((str(name), str(tier), data_clock(as_of, scored_at)))
    return out


def repeated(action: PlannedAction, to_tier: str, at: datetime, earlier: Sequence[tuple[str, str, datetime]]) -> bool:
    """Whether the lead already has this action for this tier from a tier change less than the
    action's ``repeat_after_days`` before ``at`` (still to run, running or done): a lead that
    flips A -> B -> A (a threshold tried and taken back, a score near a cut-off) gets one hot-lead
    task and keeps its owner, not one per flip."""
    days = action.config.repeat_after_days
    if days <= 0:
        return False
    return any(name == action.name and tier == to_tier and timedelta(0) <= at - when < timedelta(days=days)
               for name, tier, when in earlier)


def without_repeats(candidates: Sequence[PlannedAction], to_tier: str, at: datetime | None,
                    earlier: Sequence[tuple[str, str, datetime]]) -> tuple[list[PlannedAction], int]:
    """A tier change's ``candidates`` (:func:`planned_actions`) less those the repeat guard holds
    back (:func:`repeated`, against the lead's ``earlier`` actions at ``at``, the data's clock of
    the change; none without ``at``), and how many it held back: what :class:`RoutingPlanner`
    plans and counts, and what ``tiers preview`` counts."""
    if at is None:
        return list(candidates), 0
    kept = [a for a in candidates if not repeated(a, to_tier, at, earlier)]
    return kept, len(candidates) - len(kept)


# Why a tier change planned fewer actions than its rules name, as the commands that plan say it.
HELD_WORDS = ("held back: the lead already has the same action for that tier (pending, running or done) "
              "within the action's repeat_after_days")


class RoutingPlanner:
    """The ``tier_change_hook`` for scoring: insert the configured actions of a tier change.

    Runs inside the scoring transaction (no commit here). An action already planned for the same
    (lead, score, action) is not inserted twice, nor one the lead got for the same tier within the
    action's ``repeat_after_days`` (:func:`repeated`): ``held`` counts those, so a run that planned
    nothing for its tier changes can say why.
    """

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.conns_by_name = {c.name: c for c in config.connections}
        self.names_by_id: dict[int, str | None] = {}
        self.held = 0

    def __call__(self, session: Session, lead: Lead, previous: LeadScore | None, current: LeadScore) -> None:
        from_tier = previous.tier if previous is not None else None
        to_tier = current.tier
        if from_tier == to_tier or lead.lifecycle != LeadLifecycle.open:
            return
        if lead.connection_id not in self.names_by_id:
            self.names_by_id[lead.connection_id] = session.scalar(
                select(Connection.name).where(Connection.id == lead.connection_id))
        name = self.names_by_id[lead.connection_id]
        conn = self.conns_by_name.get(name) if name else None
        if conn is None or not conn.enabled:
            return
        candidates = planned_actions(self.config, conn, from_tier, to_tier, owner=lead.owner_crm_id)
        if not candidates:
            return
        at = data_clock(current.as_of, current.scored_at)
        # Asked only when an action can be skipped: a rule set without the guard costs no query.
        guarded = any(c.config.repeat_after_days > 0 for c in candidates)
        earlier = earlier_actions(session, [lead.id]).get(lead.id, []) if guarded else []
        candidates, held = without_repeats(candidates, to_tier, at, earlier)
        self.held += held
        rows: list[dict[str, Any]] = []
        for planned in candidates:
            params = planned.config.model_dump(exclude_none=True)
            params.update({"rule": planned.rule, "index": planned.index,
                           "config_key": f"routing.{planned.rule}.actions.{planned.index}"})
            kept = planned.kept_by is not None
            rows.append({
                "lead_id": lead.id, "lead_score_id": current.id, "connection_id": lead.connection_id,
                "from_tier": from_tier, "to_tier": to_tier, "action": planned.name,
                "params": params, "status": ActionStatus.cancelled if kept else ActionStatus.pending, "attempts": 0,
                "error": f"{OWNER_KEPT} ({planned.kept_by})" if kept else None,
            })
        if not rows:
            return
        # INSERT ... ON CONFLICT DO NOTHING on (lead, score, action): a re-run plans nothing twice.
        upsert_rows(session, RoutingAction, rows, conflict_columns=("lead_id", "lead_score_id", "action"),
                    update_columns=())


def plan_routing(config: AppConfig) -> RoutingPlanner:
    """The ``tier_change_hook`` that plans ``config``'s routing rules (:class:`RoutingPlanner`)."""
    return RoutingPlanner(config)


# ------------------------------------------------------------------------------------ execution


@dataclass
class RoutingReport:
    """What one execute_routing run did."""

    done: dict[str, int] = field(default_factory=dict)  # by action type
    recovered: int = 0  # found already done in the CRM after an interruption
    failed: dict[str, int] = field(default_factory=dict)  # by reason
    superseded: int = 0
    cancelled: int = 0  # the lead was no longer open (converted, closed, deleted, merged), or owner_kept
    owner_kept: int = 0  # overwrite: false assignments cancelled because a user owns the lead
    retry_later: int = 0
    waiting: int = 0  # tasks left pending until their tier change's owner assignment is done
    awaiting_write: int = 0  # property-triggered workflows left pending until their tier write lands
    riding: int = 0  # pending actions another run holds (the drain's riders, a concurrent route)
    errors: list[str] = field(default_factory=list)
    api_calls: dict[str, int] = field(default_factory=dict)  # by connection: the actions' calls
    # By connection: every call the run made and recorded in api_usage (the login and the rule
    # look-ups too): what `leadscore status` adds up for the day.
    api_calls_recorded: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        """The demo's routing counts: assigned, nurtured (campaign/workflow), paused."""
        return {
            "assigned": self.done.get("assign_owner", 0),
            "nurtured": self.done.get("add_to_campaign", 0) + self.done.get("enroll_workflow", 0),
            "paused": self.done.get("pause_outreach", 0),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"done": dict(sorted(self.done.items())), "recovered": self.recovered,
                "failed": dict(sorted(self.failed.items())), "superseded": self.superseded,
                "cancelled": self.cancelled, "owner_kept": self.owner_kept,
                "retry_later": self.retry_later, "waiting": self.waiting, "awaiting_write": self.awaiting_write,
                "riding": self.riding, "errors": list(self.errors),
                "api_calls": dict(self.api_calls), "api_calls_recorded": dict(self.api_calls_recorded),
                **self.summary()}


def execute_routing(
    engine: Engine,
    config: AppConfig,
    secrets_by_connection: Mapping[str, Any],
    *,
    limit: int | None = None,
    clients: Mapping[str, Any] | None = None,
) -> RoutingReport:
    """Run pending routing actions (and recover interrupted ones), each exactly once.

    Validates the routing config against every CRM that has work first (:func:`validate_routing`;
    a :class:`ConfigError` means nothing was run). ``clients`` may give already-built clients by
    connection name. A connection whose CRM refuses calls (auth, quota, still failing after
    retries; the login, or the look-ups that check its rules), or whose secrets are missing
    (``secrets_by_connection`` raises its ConfigError, :class:`connectors.base.EnvSecrets`), is
    stopped with its error in the report; its actions are retried next run.
    """
    report = RoutingReport()
    conns = {c.name: c for c in config.connections if c.enabled}
    refuse_problems(static_problems(config))
    with unit_of_work(engine) as session:
        query = (select(RoutingAction.id, RoutingAction.connection_id, RoutingAction.status, RoutingAction.action,
                        RoutingAction.lead_score_id)
                 .where(RoutingAction.status.in_((ActionStatus.pending, ActionStatus.sending)))
                 .order_by(RoutingAction.id))
        if limit is not None:
            query = query.limit(limit)
        todo = list(session.execute(query).all())
        conn_names: dict[int, str] = {cid: cname for cid, cname in session.execute(
            select(Connection.id, Connection.name)).all()}
    if not todo:
        return report
    by_conn: dict[int, list[int]] = {}
    statuses: dict[int, str] = {}
    kinds: dict[int, str] = {}
    change_of: dict[int, int] = {}
    for action_id, conn_id, status, action_name, score_id in todo:
        by_conn.setdefault(conn_id, []).append(action_id)
        statuses[action_id] = status
        kinds[action_id] = str(action_name).split("#")[0]
        change_of[action_id] = score_id
    # A task whose tier change also assigns an owner in this run goes in a batch after the
    # assignment's, so it is created for the new owner (lead_refs); the others keep their batch.
    assigning = {change_of[a] for a in change_of if kinds[a] == "assign_owner"}
    after = {a for a in change_of if kinds[a] == "create_task" and change_of[a] in assigning}
    active: dict[str, Any] = {}
    meters: dict[str, CallMeter] = {}  # each client's calls not yet in api_usage
    ids = {name: conn_id for conn_id, name in conn_names.items()}
    for conn_id in by_conn:
        name = conn_names.get(conn_id)
        if name not in conns:
            continue
        client = (clients or {}).get(name)
        if client is not None:
            meters[name] = CallMeter(client_calls(client))
        else:
            try:
                client = client_from(conns[name], secrets_by_connection)
            except ConnectionUnavailable as exc:
                # Missing credentials, or a login refused or unanswered: its actions wait, the others run.
                report.errors.append(f"{name}: {exc}")
                logger.warning("routing on %s stopped: %s", name, exc)
                continue
            meters[name] = CallMeter(client_calls(client), 0)
        active[name] = client
    try:
        _run_connections(engine, config, conns, conn_names, by_conn, statuses, kinds, after, active, report)
    finally:
        for name, meter in meters.items():
            taken = meter.take()
            record_api_calls(engine, ids[name], ApiPurpose.routing, taken)
            report.api_calls_recorded[name] = report.api_calls_recorded.get(name, 0) + taken
    return report


def requeue_failed_actions(session: Session, *, reason: str | None = None) -> Counter[str]:
    """Put the routing actions the CRM refused for good back in the queue, once their cause is fixed
    (the rep who left reactivated or the lead reassigned, a queue made to take Leads, a validation
    rule relaxed): ``failed`` actions become ``pending`` with their attempts reset, and the next
    routing run sends them. Scoring cannot do this: it plans actions only when a tier changes, and
    a hot lead whose task was refused is still hot.

    Only each lead's newest action of its kind is requeued: an older one (its tier change
    overtaken, or a later change that planned the same kind of action) stays as history, so a lead
    never gets a task twice. The run then checks each as it checks any pending action: a lead whose
    tier has moved on since has it ``superseded``, one that left "open" has it ``cancelled``.
    ``reason``: only actions whose error it names (:func:`connectors.errors.failure_matches`:
    ``INACTIVE_OWNER_OR_USER``, or ``inactive_owner`` as ``leadscore status`` words it). Returns
    the requeued actions by connection. No commit.
    """
    failed = [row for row in session.execute(
        select(RoutingAction.id, RoutingAction.lead_id, RoutingAction.action, Connection.name, RoutingAction.error)
        .join(Connection, Connection.id == RoutingAction.connection_id)
        .where(RoutingAction.status == ActionStatus.failed))
        if reason is None or failure_matches(row.error, reason)]
    if not failed:
        return Counter()
    newest: dict[tuple[int, str], int] = {}
    lead_ids = sorted({row.lead_id for row in failed})
    for start in range(0, len(lead_ids), IDS_PER_STATEMENT):
        for lead_id, kind, action_id in session.execute(
            select(RoutingAction.lead_id, RoutingAction.action, func.max(RoutingAction.id))
            .where(among(session, RoutingAction.lead_id, lead_ids[start : start + IDS_PER_STATEMENT]))
            .group_by(RoutingAction.lead_id, RoutingAction.action)
        ):
            newest[(lead_id, kind)] = action_id
    chosen = [row for row in failed if newest.get((row.lead_id, row.action)) == row.id]
    ids = [row.id for row in chosen]
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        session.execute(
            update(RoutingAction).where(among(session, RoutingAction.id, ids[start : start + IDS_PER_STATEMENT]))
            .values(status=ActionStatus.pending, attempts=0),
            execution_options={"synchronize_session": False},
        )
    return Counter(row.name for row in chosen)


def _run_connections(engine: Engine, config: AppConfig, conns: Mapping[str, ConnectionConfig],
                     conn_names: Mapping[int, str], by_conn: Mapping[int, list[int]],
                     statuses: Mapping[int, str], kinds: Mapping[int, str], after: Set[int],
                     active: Mapping[str, Any], report: RoutingReport) -> None:
    routers: dict[str, Router] = {}
    for name, client in active.items():
        router = make_router(conns[name], client)
        try:
            problems = router.problems(config, conns[name])
        except (AuthError, QuotaExhaustedError, RetriableCRMError) as exc:
            # The CRM refused the look-ups that check the rules (a bad token is first seen here):
            # this connection's actions wait, the others run.
            report.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            logger.warning("routing on %s stopped: %s", name, exc)
            continue
        refuse_problems(problems)
        routers[name] = router
    for conn_id, action_ids in by_conn.items():
        name = conn_names.get(conn_id, "")
        if name not in routers:
            continue
        client = active[name]
        router = routers[name]
        before = int(getattr(client, "api_calls", 0))
        try:
            # Interrupted actions first, one by one: each is looked up in the CRM before any resend.
            for action_id in action_ids:
                if statuses[action_id] == ActionStatus.sending:
                    _run_one(engine, router, action_id, report)
            # Sorted by type, so a batch holds few types (each type is one call of its endpoint);
            # ``after`` (tasks whose owner this run assigns) in batches of their own, after the rest.
            pending = sorted((a for a in action_ids if statuses[a] == ActionStatus.pending),
                             key=lambda a: (a in after, kinds[a], a))
            split = next((i for i, a in enumerate(pending) if a in after), len(pending))
            live = crm_states(engine, router, pending)
            for part in (pending[:split], pending[split:]):
                for start in range(0, len(part), router.batch_size):
                    _run_batch(engine, router, part[start:start + router.batch_size], report, live)
        except (AuthError, QuotaExhaustedError, RetriableCRMError) as exc:
            report.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            logger.warning("routing on %s stopped: %s", name, exc)
        report.api_calls[name] = int(getattr(client, "api_calls", 0)) - before
        CALLS_BY_KIND[conns[name].kind] += report.api_calls[name]


def _run_one(engine: Engine, router: Router, action_id: int, report: RoutingReport) -> None:
    with unit_of_work(engine) as session:
        action = session.get(RoutingAction, action_id)
        if action is None or action.status not in (ActionStatus.pending, ActionStatus.sending):
            return
        lead = session.get(Lead, action.lead_id)
        current_tier = session.scalar(
            select(LeadScore.tier).where(LeadScore.lead_id == action.lead_id, LeadScore.is_current.is_(True)))
        state = LeadLifecycle.deleted if lead is None else LeadLifecycle(lead.lifecycle)
        if state != LeadLifecycle.open and action.status == ActionStatus.pending:
            # Converted, closed, deleted or merged before the action ran: never act on it.
            action.status = ActionStatus.cancelled
            action.error = not_open_reason(state, "action")
            report.cancelled += 1
            return
        if lead is None:
            action.status = ActionStatus.failed
            action.error = "LEAD_DELETED: the lead is gone from the store"
            report.failed["LEAD_DELETED"] = report.failed.get("LEAD_DELETED", 0) + 1
            return
        if action.status == ActionStatus.pending and current_tier is not None and current_tier != action.to_tier:
            action.status = ActionStatus.superseded
            action.error = f"the lead's tier changed again (to {current_tier}) before the action ran"
            report.superseded += 1
            return
        recovering = action.status == ActionStatus.sending
        action.status = ActionStatus.sending
        action.attempts += 1
        attempts = action.attempts
        ref = lead_refs(session, [action], {lead.id: lead})[0][action.id]
    # Committed: from here on a crash leaves the action "sending", and the next run looks it up.
    kind = str(action.params.get("type"))
    checked = not recovering  # whether the CRM is known not to hold the action's effect
    try:
        crm_ref = router.find_existing(action, ref) if recovering else None
        checked = True
        if crm_ref is not None:
            report.recovered += 1
        elif state != LeadLifecycle.open:
            # Interrupted, not done in the CRM, and the lead has left "open" since: do not send.
            _finish(engine, action_id, None, not_open_reason(state, "action"), ActionStatus.cancelled)
            report.cancelled += 1
            return
        else:
            crm_ref = router.perform(action, ref)
    except RetriableCRMError as exc:
        _finish(engine, action_id, None, f"{exc.code or 'RETRIABLE'}: {exc}",
                ActionStatus.failed if attempts >= MAX_ATTEMPTS else ActionStatus.sending)
        report.retry_later += 1
        raise
    except (AuthError, QuotaExhaustedError) as exc:
        # Refused whole, so not applied: pending again once the CRM is known not to hold it,
        # else still to be looked up; the attempt is not counted either way.
        _unclaim(engine, [action_id], ActionStatus.pending if checked else ActionStatus.sending,
                 f"{exc.code or type(exc).__name__}: {exc}")
        raise
    except CRMError as exc:
        reason = exc.code or (f"HTTP_{exc.status}" if exc.status else type(exc).__name__)
        _finish(engine, action_id, None, f"{reason}: {exc}", ActionStatus.failed)
        report.failed[reason] = report.failed.get(reason, 0) + 1
        return
    _finish(engine, action_id, crm_ref[:128], None, ActionStatus.done)
    report.done[kind] = report.done.get(kind, 0) + 1


def crm_states(engine: Engine, router: Router, action_ids: Sequence[int]) -> dict[int, LiveLead]:
    """By lead id, the CRM's state and owner now of the leads these pending actions would call the
    CRM for (open in the store; a workflow the tier property triggers makes no call): a lead a rep
    closed or converted after the last sync gets no task, one a rep took is not moved by an
    ``overwrite: false`` assignment (one query per 300 Salesforce leads, one batch read per 100
    HubSpot contacts, once per run)."""
    by_crm_id: dict[str, int] = {}
    with unit_of_work(engine) as session:
        for start in range(0, len(action_ids), IDS_PER_STATEMENT):
            chunk = action_ids[start:start + IDS_PER_STATEMENT]
            for lead_id, crm_id, params in session.execute(
                    select(Lead.id, Lead.crm_id, RoutingAction.params)
                    .join(Lead, Lead.id == RoutingAction.lead_id)
                    .where(among(session, RoutingAction.id, chunk), RoutingAction.status == ActionStatus.pending,
                           Lead.lifecycle == LeadLifecycle.open)):
                if not _property_trigger(params or {}):
                    by_crm_id[str(crm_id)] = int(lead_id)
    if not by_crm_id:
        return {}
    return {by_crm_id[crm_id]: state for crm_id, state in router.live_states(sorted(by_crm_id)).items()
            if crm_id in by_crm_id}


def _run_batch(engine: Engine, router: Router, action_ids: Sequence[int], report: RoutingReport,
               live: Mapping[int, LiveLead]) -> None:
    """Run pending actions in one batch: claimed (``sending``, attempts+1) in one transaction before
    the CRM calls, each marked from the CRM's per-record answer right after them. ``live``: the
    CRM's state of the leads now (:func:`crm_states`)."""
    items: list[tuple[RoutingAction, LeadRef]] = []
    with unit_of_work(engine) as session:
        # FOR UPDATE SKIP LOCKED (PostgreSQL): an action the write-back drain is claiming to ride
        # along a score write (connectors.riders) is skipped here, or seen no longer pending.
        actions = list(session.scalars(select(RoutingAction).where(
            RoutingAction.id.in_(list(action_ids)), RoutingAction.status == ActionStatus.pending)
            .order_by(RoutingAction.id).with_for_update(skip_locked=True)))
        if len(actions) < len(action_ids):  # skipped: locked by the drain, or no longer pending
            still = session.scalar(select(func.count(RoutingAction.id)).where(
                RoutingAction.id.in_(list(action_ids)), RoutingAction.status == ActionStatus.pending)) or 0
            report.riding += max(0, int(still) - len(actions))
        lead_ids = sorted({a.lead_id for a in actions})
        leads = {lead.id: lead for lead in session.scalars(select(Lead).where(Lead.id.in_(lead_ids)))}
        tiers = {lead_id: tier for lead_id, tier in session.execute(
            select(LeadScore.lead_id, LeadScore.tier).where(LeadScore.lead_id.in_(lead_ids),
                                                            LeadScore.is_current.is_(True)))}
        written = _last_tier_writes(session, [a.lead_id for a in actions if _property_trigger(a.params)])
        refs, waiting = lead_refs(session, actions, leads, live)
        for action in actions:
            lead = leads.get(action.lead_id)
            if not admit(action, lead, tiers.get(action.lead_id), report, live.get(action.lead_id),
                         owner_is_user=router.owner_is_user):
                continue
            if _property_trigger(action.params):
                _property_triggered(action, written.get(action.lead_id), report)
                continue
            if action.id in waiting:
                report.waiting += 1  # stays pending: its owner assignment runs first
                continue
            action.status = ActionStatus.sending
            action.attempts += 1
            items.append((action, refs[action.id]))
    # Committed: from here on a crash leaves these actions "sending", and the next run looks them up.
    if not items:
        return
    try:
        results = router.perform_batch(items)
    except RetriableCRMError as exc:
        _finish_many(engine, [(a.id, None, f"{exc.code or 'RETRIABLE'}: {exc}",
                               ActionStatus.failed if a.attempts >= MAX_ATTEMPTS else ActionStatus.sending)
                              for a, _ in items])
        report.retry_later += len(items)
        raise
    except (AuthError, QuotaExhaustedError) as exc:
        # A call refused whole took no effect: what the CRM answered before it is recorded, the
        # rest goes back to pending as it was (the next run sends it without looking it up first).
        answered = {r.action_id for r in exc.answered}
        _record_results(engine, [item for item in items if item[0].id in answered], exc.answered, report)
        _unclaim(engine, [a.id for a, _ in items if a.id not in answered], ActionStatus.pending,
                 f"{exc.code or type(exc).__name__}: {exc}")
        raise
    except CRMError as exc:
        reason = exc.code or (f"HTTP_{exc.status}" if exc.status else type(exc).__name__)
        _finish_many(engine, [(a.id, None, f"{reason}: {exc}", ActionStatus.failed) for a, _ in items])
        report.failed[reason] = report.failed.get(reason, 0) + len(items)
        return
    _record_results(engine, items, results, report)


def _record_results(engine: Engine, items: Sequence[tuple[RoutingAction, LeadRef]],
                    results: Sequence[ActionResult], report: RoutingReport) -> None:
    """Each claimed action marked from the CRM's answer for it; one without an answer stays
    ``sending`` (it may have happened: the next run looks it up before any resend)."""
    if not items:
        return
    by_id = {a.id: a for a, _ in items}
    rows: list[tuple[int, str | None, str | None, str]] = []
    for result in results:
        if result.action_id not in by_id:
            continue
        action = by_id.pop(result.action_id)
        kind = str(action.params.get("type"))
        if result.outcome == "done":
            rows.append((action.id, (result.crm_ref or "")[:128], None, ActionStatus.done))
            report.done[kind] = report.done.get(kind, 0) + 1
            continue
        detail = f"{result.reason or 'UNKNOWN'}: {result.message}" if result.message else (result.reason or "UNKNOWN")
        if result.outcome == "failed" or action.attempts >= MAX_ATTEMPTS:
            rows.append((action.id, None, detail, ActionStatus.failed))
            reason = result.reason or "UNKNOWN"
            report.failed[reason] = report.failed.get(reason, 0) + 1
        else:
            # retry: the CRM did not apply it; unknown: it may have, so the next run looks it up first.
            again = ActionStatus.pending if result.outcome == "retry" else ActionStatus.sending
            rows.append((action.id, None, detail, again))
            report.retry_later += 1
    for action in by_id.values():  # no answer at all: looked up before any resend
        rows.append((action.id, None, "NO_RESULT: the CRM gave no answer for this action", ActionStatus.sending))
        report.retry_later += 1
    _finish_many(engine, rows)


def lead_refs(session: Session, actions: Sequence[RoutingAction], leads: Mapping[int, Lead],
              live: Mapping[int, LiveLead] | None = None) -> tuple[dict[int, LeadRef], set[int]]:
    """Each action's :class:`LeadRef` (by action id, for the actions whose lead is in ``leads``),
    and the ids of the ``create_task`` actions that must wait.

    A task goes to the owner the same tier change's ``assign_owner`` gave the lead (its
    ``crm_ref``), not to the owner the store last synced: a rule that assigns a queue and creates a
    task gave the previous rep a task for a lead no longer theirs. While that assignment is still
    pending or being sent (the write-back may be carrying it), the task waits for the next run;
    once it failed or was cancelled, the task goes to the owner the lead has: in the CRM right
    before the call when ``live`` (:func:`crm_states`) holds it, else as last synced.
    """
    score_ids = {a.lead_score_id for a in actions}
    scores = {sid: (value, tuple(reasons or ())) for sid, value, reasons in session.execute(
        select(LeadScore.id, LeadScore.score, LeadScore.reasons).where(LeadScore.id.in_(score_ids)))}
    assigned: dict[int, tuple[str, str | None]] = {}  # by the tier change's score id
    for score_id, status, crm_ref in session.execute(
            select(RoutingAction.lead_score_id, RoutingAction.status, RoutingAction.crm_ref)
            .where(RoutingAction.lead_score_id.in_(score_ids), RoutingAction.action.startswith("assign_owner"))
            .order_by(RoutingAction.id)):
        if assigned.get(score_id, ("",))[0] != ActionStatus.done:  # one done assignment decides
            assigned[score_id] = (status, crm_ref)
    refs: dict[int, LeadRef] = {}
    waiting: set[int] = set()
    for action in actions:
        lead = leads.get(action.lead_id)
        if lead is None:
            continue
        now = (live or {}).get(lead.id)
        owner = now.owner_crm_id if now is not None else lead.owner_crm_id
        if action.params.get("type") == "create_task":
            status, crm_ref = assigned.get(action.lead_score_id, ("", None))
            if status in (ActionStatus.pending, ActionStatus.sending):
                waiting.add(action.id)
            elif status == ActionStatus.done and crm_ref:
                owner = crm_ref
        value, reasons = scores.get(action.lead_score_id, (None, ()))
        refs[action.id] = LeadRef(crm_id=lead.crm_id, email=lead.email, owner_crm_id=owner, score=value,
                                  reasons=reasons)
    return refs, waiting


def admit(action: RoutingAction, lead: Lead | None, current_tier: str | None, report: RoutingReport,
          live: LiveLead | None, *, owner_is_user: Callable[[str | None], bool]) -> bool:
    """True when a pending action may run now; else it is marked ``cancelled`` (the lead is no
    longer open in the store, or in the CRM: ``live``, read right before; or an ``overwrite:
    false`` assignment finds a user owning the lead, in the CRM now or else as last synced) or
    ``superseded`` (the lead's tier changed again before it ran)."""
    state = LeadLifecycle.deleted if lead is None else LeadLifecycle(lead.lifecycle)
    if state != LeadLifecycle.open:
        action.status = ActionStatus.cancelled
        action.error = not_open_reason(state, "action")
        report.cancelled += 1
        return False
    if live is not None and live.state != LeadLifecycle.open:
        action.status = ActionStatus.cancelled
        action.error = f"{not_open_reason(live.state, 'action')} ({SINCE_SYNC})"
        report.cancelled += 1
        return False
    owner = live.owner_crm_id if live is not None else lead.owner_crm_id if lead is not None else None
    if action.params.get("overwrite") is False and owner_is_user(owner):  # RoutingActionConfig.keeps_owner
        action.status = ActionStatus.cancelled
        action.error = f"{OWNER_KEPT} ({owner})"
        report.cancelled += 1
        report.owner_kept += 1
        return False
    if current_tier is not None and current_tier != action.to_tier:
        action.status = ActionStatus.superseded
        action.error = f"the lead's tier changed again (to {current_tier}) before the action ran"
        report.superseded += 1
        return False
    return True


def _property_trigger(params: Mapping[str, Any]) -> bool:
    """An enroll_workflow the written tier property triggers (actions planned before the option
    existed carry no ``trigger`` and were planned as v2 enrollments)."""
    return params.get("type") == "enroll_workflow" and params.get("trigger", "enrollment") == "property"


def _last_tier_writes(session: Session, lead_ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
    """{lead id: (status, tier)} of each lead's latest score write (outbox row)."""
    out: dict[int, tuple[str, str | None]] = {}
    ids = sorted(set(lead_ids))
    for start in range(0, len(ids), 500):
        latest = (select(Outbox.lead_id, func.max(Outbox.id).label("max_id"))
                  .where(Outbox.lead_id.in_(ids[start:start + 500])).group_by(Outbox.lead_id).subquery())
        # The tier its score row holds (a row queued by scoring has no payload until the drain claims it).
        for lead_id, status, tier, payload, error in session.execute(
                select(Outbox.lead_id, Outbox.status, LeadScore.tier, Outbox.payload, Outbox.last_error)
                .join(latest, Outbox.id == latest.c.max_id)
                .outerjoin(LeadScore, LeadScore.id == Outbox.lead_score_id)):
            unchanged = status == OutboxStatus.superseded and str(error or "").startswith("unchanged:")
            sent = status == OutboxStatus.sent or unchanged
            out[lead_id] = (OutboxStatus.sent if sent else status, tier or (payload or {}).get("tier"))
    return out


def _property_triggered(action: RoutingAction, write: tuple[str, str | None] | None, report: RoutingReport) -> None:
    """A workflow the written tier property triggers: done once that write landed in the CRM (no call)."""
    workflow = str(action.params.get("workflow_id"))
    if write is not None and write[0] == OutboxStatus.pending:
        report.awaiting_write += 1
        return  # the tier is not in the CRM yet: decide on a later run
    if write is not None and write[0] == OutboxStatus.sent and write[1] == action.to_tier:
        action.status = ActionStatus.done
        action.crm_ref = f"workflow:{workflow}:property-trigger"
        action.done_at = datetime.now(UTC)
        report.done["enroll_workflow"] = report.done.get("enroll_workflow", 0) + 1
        return
    action.status = ActionStatus.failed
    action.error = (f"NO_TIER_WRITE: workflow {workflow} enrolls on the tier property, and the write of tier "
                    f"{action.to_tier} did not land (score write {write[0] if write else 'missing'})")
    report.failed["NO_TIER_WRITE"] = report.failed.get("NO_TIER_WRITE", 0) + 1


def _unclaim(engine: Engine, action_ids: Sequence[int], status: str, error: str) -> None:
    """Actions claimed for a call the CRM refused whole (credentials, quota): back to ``status``
    with the attempt not counted (nothing was applied, so it is no attempt of the action's) and
    the refusal in ``error``, for whoever looks before the next run."""
    if not action_ids:
        return
    with unit_of_work(engine) as session:
        for action in session.scalars(select(RoutingAction).where(RoutingAction.id.in_(list(action_ids)))):
            action.status = status
            action.attempts = max(0, action.attempts - 1)
            action.error = error


def _finish_many(engine: Engine, rows: Sequence[tuple[int, str | None, str | None, str]]) -> None:
    """Record (action id, CRM reference, error, status) for many actions in one transaction."""
    now = datetime.now(UTC)
    with unit_of_work(engine) as session:
        by_id = {a.id: a for a in session.scalars(
            select(RoutingAction).where(RoutingAction.id.in_([r[0] for r in rows])))}
        for action_id, crm_ref, error, status in rows:
            action = by_id.get(action_id)
            if action is None:
                continue
            action.status = status
            action.error = error
            if crm_ref is not None:
                action.crm_ref = crm_ref
            if status == ActionStatus.done:
                action.done_at = now
        note_assigned_owners(session, list(by_id.values()))


def note_assigned_owners(session: Session, actions: Sequence[RoutingAction]) -> None:
    """The store's owner of each lead an ``assign_owner`` just moved (done: its ``crm_ref`` is the
    owner the CRM took), so a preview, ``explain`` or the next tier change's planning reads the
    owner the CRM holds without waiting for the next sync (which reads it again)."""
    by_owner: dict[str, list[int]] = {}
    for action in actions:
        if (action.status == ActionStatus.done and action.crm_ref
                and str(action.params.get("type")) == "assign_owner"):
            by_owner.setdefault(action.crm_ref, []).append(action.lead_id)
    for owner, lead_ids in by_owner.items():  # one statement per owner (a queue, a round-robin's reps)
        session.execute(update(Lead).where(among(session, Lead.id, lead_ids)).values(owner_crm_id=owner))


def _finish(engine: Engine, action_id: int, crm_ref: str | None, error: str | None, status: str) -> None:
    with unit_of_work(engine) as session:
        action = session.get(RoutingAction, action_id)
        if action is None:
            return
        action.status = status
        action.error = error
        if crm_ref is not None:
            action.crm_ref = crm_ref
        if status == ActionStatus.done:
            action.done_at = datetime.now(UTC)
        note_assigned_owners(session, [action])
