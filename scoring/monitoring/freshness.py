"""Freshness of the syncs and failed CRM writes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.app_config import MonitoringConfig
from connectors.actions import OWNER_KEPT
from connectors.errors import error_code, expected_refusal
from scoring.monitoring.clock import crm_now, parse_time
from scoring.monitoring.status import ALERT, NOT_ENOUGH, WARN, Alert, Findings, worst
from store.models import (
    ActionStatus,
    Connection,
    LeadScore,
    Outbox,
    OutboxStatus,
    RoutingAction,
    SyncRun,
    SyncStatus,
)

FRESHNESS_ACTION = ("scores are computed on stale CRM data: check `leadscore status` and the worker log for the "
                    "failing sync (credentials, API limits, network)")
WRITEBACK_ACTION = ("reps see old scores for these leads: `leadscore status` shows why the CRM refused them "
                    "(field permissions, missing fields, deleted records); fix the cause (e.g. `leadscore crm setup`), "
                    "then `leadscore writeback --retry-failed` sends them again")


def failed_writes(session: Session) -> tuple[dict[str, int], dict[str, int]]:
    """Outbox rows that failed for good, split in two: refusals a healthy installation expects (the
    CRM's validation rules, converted, merged or deleted leads, inactive owners; counted by what they
    mean, :data:`connectors.errors.EXPECTED_REFUSALS`) and the others, counted by error code."""
    rows = session.execute(select(Outbox.last_error, func.count(Outbox.id)).where(Outbox.status == OutboxStatus.failed)
                           .group_by(Outbox.last_error)).all()
    refused: dict[str, int] = {}
    unexpected: dict[str, int] = {}
    for error, n in rows:
        kind = expected_refusal(error)
        if kind is not None:
            refused[kind] = refused.get(kind, 0) + int(n)
        else:
            code = _code(error)
            unexpected[code] = unexpected.get(code, 0) + int(n)
    return refused, unexpected


def _code(error: str | None) -> str:
    """The CRM's code when there is one, else the start of the text ("HTTP 400", "gave up after 5 attempts")."""
    head = str(error or "").split(":", 1)[0][:60]
    code = error_code(error)
    # A CRM code is one upper-case word ("INACTIVE_OWNER_OR_USER"); "HTTP 400" keeps its status.
    return code if code.isupper() and code == head else (head or "no error recorded")


def routing_counts(session: Session) -> dict[str, int]:
    """Routing actions by status (``status --json``'s ``routing``)."""
    return {str(status): int(n) for status, n in session.execute(
        select(RoutingAction.status, func.count(RoutingAction.id)).group_by(RoutingAction.status))}


def routing_words(session: Session, counts: dict[str, int] | None = None) -> str:
    """Routing actions by status, failed ones by action and why, as `status` says it:
    "done 491, failed 6 (create_task 4: inactive_owner 4; pause_outreach 2: validation_rule 2)"
    ("" when no action was ever planned). A failed tier-A task leaves a hot lead uncalled: the CRM's
    reason (an inactive owner) is what revops fixes. ``counts``: :func:`routing_counts` already read."""
    counts = routing_counts(session) if counts is None else counts
    if not counts:
        return ""
    why: dict[str, dict[str, int]] = {}
    for action, error, n in session.execute(
            select(RoutingAction.action, RoutingAction.error, func.count(RoutingAction.id))
            .where(RoutingAction.status == ActionStatus.failed).group_by(RoutingAction.action, RoutingAction.error)):
        kind = expected_refusal(error) or _code(error)
        kinds = why.setdefault(action, {})
        kinds[kind] = kinds.get(kind, 0) + int(n)
    failed = "; ".join(f"{action} {sum(kinds.values())}: " + ", ".join(f"{k} {v}" for k, v in sorted(
        kinds.items(), key=lambda kv: -kv[1])) for action, kinds in sorted(why.items()))
    # Why actions were cancelled: the lead left "open" (lead_converted, ...), or an ``overwrite:
    # false`` assignment found a rep owning the lead (owner_kept).
    reasons: dict[str, int] = {}
    for error, n in session.execute(
            select(RoutingAction.error, func.count(RoutingAction.id))
            .where(RoutingAction.status == ActionStatus.cancelled).group_by(RoutingAction.error)):
        kind = "owner_kept" if str(error or "").startswith(OWNER_KEPT) else _code(error).lower()
        reasons[kind] = reasons.get(kind, 0) + int(n)
    cancelled = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    # A pending action for a tier its lead has left since (a rollback, a later rescore) will not
    # run: `route` marks it superseded. Counted as work waiting, it overstated what is left.
    stale = 0
    if counts.get(str(ActionStatus.pending)):
        stale = int(session.scalar(
            select(func.count(RoutingAction.id))
            .join(LeadScore, (LeadScore.lead_id == RoutingAction.lead_id) & LeadScore.is_current.is_(True))
            .where(RoutingAction.status == ActionStatus.pending, LeadScore.tier != RoutingAction.to_tier)) or 0)
    left = f"{stale} for a tier the lead has left since: `leadscore route` marks them superseded" if stale else ""
    notes = {str(ActionStatus.failed): failed, str(ActionStatus.cancelled): cancelled,
             str(ActionStatus.pending): left}
    return ", ".join(f"{status} {n}" + (f" ({notes[status]})" if notes.get(status) else "")
                     for status, n in sorted(counts.items()))


def failed_words(refused: dict[str, int], unexpected: dict[str, int]) -> str:
    """What failed outbox rows were, as `status` and the console say it: "109 refused by the CRM's
    own rules, as expected: validation_rule 109", "3 unexpected: HTTP 400 3", or both."""
    parts: list[str] = []
    for n, what, counts in ((sum(unexpected.values()), "unexpected", unexpected),
                            (sum(refused.values()), "refused by the CRM's own rules, as expected", refused)):
        if n:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
            parts.append(f"{n} {what}: {kinds}")
    return "; ".join(parts)


def measure_freshness(session: Session, as_of: datetime, config: MonitoringConfig, out: Findings, *,
               explicit: bool = True, configured: Sequence[str] = ()) -> None:
    """Each connection's last successful sync on the CRM's clock (alert past ``freshness_hours``;
    never synced warns), and the outbox's failed and stuck writes. ``configured``: the configured
    connections' names, so one that never synced (not in the store yet) warns too."""
    now = crm_now(session, as_of, explicit)
    # A sync's time on the CRM's clock: the server time it read (the wall clock of its end when absent).
    sync_time = func.coalesce(SyncRun.server_time, SyncRun.finished_at)
    rows = session.execute(
        select(Connection.id, Connection.name, func.max(sync_time))
        .outerjoin(SyncRun, (SyncRun.connection_id == Connection.id) & (SyncRun.status == SyncStatus.succeeded)
                   & (sync_time <= now))
        .group_by(Connection.id, Connection.name)
        .order_by(Connection.name)
    ).all()
    # Connections whose first successful sync is later than ``now`` (a past --as-of): not "never
    # synced", just not measurable then.
    first_success: dict[int | None, Any] = {}
    last_success: dict[int | None, Any] = {}
    for conn_id, first, latest in session.execute(
            select(SyncRun.connection_id, func.min(sync_time), func.max(sync_time))
            .where(SyncRun.status == SyncStatus.succeeded).group_by(SyncRun.connection_id)).tuples():
        first_success[conn_id], last_success[conn_id] = first, latest
    fresh: dict[str, Any] = {}
    limit = timedelta(hours=config.freshness_hours)
    found: list[Alert] = []
    stored = {name for _id, name, _last in rows}
    listed: list[tuple[int | None, str, Any]] = [(r[0], r[1], r[2]) for r in rows]
    listed += [(None, name, None) for name in configured if name not in stored]
    for listed_id, name, last in listed:
        last_utc = parse_time(last)
        age_hours = (now - last_utc).total_seconds() / 3600 if last_utc is not None else None
        fresh[name] = {"last_success": last_utc, "age_hours": age_hours}
        later = parse_time(first_success.get(listed_id)) if last_utc is None else None
        if later is not None:
            fresh[name]["first_success"] = later
            fresh[name]["reason"] = f"its first successful sync ({later:%Y-%m-%d %H:%M} CRM clock) is after the as-of"
            out.notes.append(f"freshness of {name} not measured: {fresh[name]['reason']}")
        elif last_utc is None:
            found.append(Alert(WARN, "freshness", f"connection {name} has never synced successfully",
                               action=FRESHNESS_ACTION))
        elif now - last_utc > limit:
            # A look-back (past --as-of) that a later sync already caught up: true then, nothing to fix now.
            since = parse_time(last_success.get(listed_id))
            action = FRESHNESS_ACTION if not explicit or since is None or since <= now else (
                f"a look-back: {name} synced successfully later (last {since:%Y-%m-%d %H:%M} CRM clock), so "
                "nothing to fix now unless `leadscore monitor` without --as-of warns too")
            found.append(Alert(ALERT, "freshness", f"connection {name}: last successful sync {age_hours:.1f} h "
                               f"ago on the CRM's clock (limit {config.freshness_hours:g} h)", age_hours,
                               config.freshness_hours, action=action))
    out.metrics["freshness"] = fresh
    out.metrics["clock"]["crm_now"] = now
    refused, unexpected = failed_writes(session)
    failed = sum(unexpected.values())
    # An outbox row records when this machine queued it, on this machine's clock (the CRM's may be
    # a simulation's, or ahead of ours): its age is measured on the same clock.
    queued_before = datetime.now(UTC) - limit
    stuck = int(session.scalar(
        select(func.count(Outbox.id)).where(Outbox.status == OutboxStatus.pending, Outbox.attempts > 0,
                                            Outbox.created_at < queued_before)) or 0)
    out.metrics["outbox"] = {"failed": failed, "failed_codes": unexpected, "refused_expected": refused,
                             "pending_retrying": stuck}
    if failed:
        codes = ", ".join(f"{code} {n}" for code, n in sorted(unexpected.items(), key=lambda kv: -kv[1]))
        found.append(Alert(ALERT, "writeback", f"{failed} CRM writes failed for good ({codes})", float(failed), 0.0,
                           action=WRITEBACK_ACTION))
    if refused:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(refused.items(), key=lambda kv: -kv[1]))
        out.notes.append(f"{sum(refused.values())} CRM writes refused by the CRM's own rules, as expected ({kinds}): "
                         "those leads keep their previous values in the CRM (not an alert)")
    if stuck:
        found.append(Alert(WARN, "writeback", f"{stuck} CRM writes still retrying after "
                           f"{config.freshness_hours:g} h", float(stuck), 0.0, action=WRITEBACK_ACTION))
    out.alerts.extend(found)
    measured = sum(1 for row in fresh.values() if "first_success" not in row)
    measure: dict[str, Any] = {"status": worst(found) if measured or found else NOT_ENOUGH, "connections": measured}
    if not measured:
        measure["reason"] = "no connection synced by this as-of" if rows else "no connection configured or synced"
    out.metrics["measures"]["freshness"] = measure
