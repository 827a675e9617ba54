"""One path from scores to CRM actions: score -> tier -> plan routing, for every entry point.

The Celery scoring tasks, ``leadscore score``, ``leadscore tiers set`` (re-tiering) and
``leadscore models promote/rollback`` (rescoring with the new champion) all call these functions,
so a tier change plans the same routing actions wherever it came from. Like the stages they call,
they run inside the caller's transaction and never commit.

Routing planning is ``connectors.routing.plan_routing`` (the tier-change hook); this module is the
only place in scoring/ that imports it, and connectors/ never imports this module (no cycle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.app_config import AppConfig
from scoring import registry
from scoring.accounts import refresh_accounts
from scoring.inputs import id_chunks
from scoring.score_run import (
    BATCH_SIZE,
    Progress,
    ScoreSummary,
    ScoringPlan,
    retier_to_plan,
    score_chunk,
    score_leads,
)
from scoring.tier_changes import RecentLabelled, preview, refuse_empty_tiers, retier
from scoring.tiers import Policy, check_policy, current_scores, find_active_policy, set_policy, tiers_for
from store.db import among
from store.models import ActionStatus, Connection, Lead, LeadScore, ModelStatus, ModelVersion, RoutingAction

if TYPE_CHECKING:
    from connectors.routing import RoutingPlanner


def routing_hook(config: AppConfig, *, route: bool = True) -> RoutingPlanner | None:
    """The tier-change hook that plans ``config``'s routing rules (None with ``route=False`` or
    without rules: then scoring loads no lead objects for tier changes at all)."""
    if not route or not config.routing:
        return None
    from connectors.routing import plan_routing

    return plan_routing(config)


def _held(hook: RoutingPlanner | None) -> int:
    """Actions the run's repeat guard held back (:attr:`RoutingPlanner.held`)."""
    return hook.held if hook is not None else 0


def _planned_by_type(session: Session, since_id: int) -> dict[str, int]:
    """Routing actions inserted after ``since_id`` in this transaction to run, by action type
    (not the ``overwrite: false`` assignments recorded as cancelled: a rep owns their leads)."""
    out: dict[str, int] = {}
    for action, n in session.execute(
        select(RoutingAction.action, func.count()).where(RoutingAction.id > since_id,
                                                         RoutingAction.status == ActionStatus.pending)
        .group_by(RoutingAction.action)
    ).all():
        kind = str(action).split("#", 1)[0]  # "create_task#2": a second task of the same change
        out[kind] = out.get(kind, 0) + int(n)
    return dict(sorted(out.items()))


def _last_action_id(session: Session) -> int:
    return int(session.scalar(select(func.max(RoutingAction.id))) or 0)


def score_and_plan(
    session: Session,
    config: AppConfig,
    *,
    all: bool = False,  # noqa: A002 - the CLI's --all
    lead_ids: Sequence[int] | None = None,
    as_of: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    route: bool = True,
) -> ScoreSummary:
    """Score (changed or all) leads, tier them, plan the routing of every tier change and refresh
    the accounts of the leads scored (:func:`scoring.accounts.refresh_accounts`).

    ``summary.routing_planned`` counts the planned actions by type, ``summary.accounts`` the
    account refresh. Raises ``NoChampionError`` before any model exists.
    """
    before = _last_action_id(session)
    last_score = session.scalar(select(func.max(LeadScore.id)))
    hook = routing_hook(config, route=route)
    summary = score_leads(
        session, all=all, lead_ids=lead_ids, as_of=as_of, batch_size=batch_size, progress=progress,
        tier_change_hook=hook, tier_default=config.tiers,
    )
    session.flush()
    summary.routing_planned, summary.routing_held = _planned_by_type(session, before), _held(hook)
    summary.accounts = refresh_accounts(session, since_score_id=last_score).to_dict()
    return summary


def score_chunk_and_plan(
    session: Session,
    config: AppConfig,
    plan: ScoringPlan,
    lead_ids: Sequence[int],
    *,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    route: bool = True,
) -> ScoreSummary:
    """One chunk of a planned run (:func:`scoring.score_run.plan_scoring`), scored as
    :func:`score_and_plan` scores a whole run: tier changes plan their routing. For workers that
    score a plan's chunks in parallel; the summary counts this chunk. Accounts are not refreshed
    here (a chunk alone would miss the scores of chunks running beside it): after the last chunk,
    call :func:`scoring.accounts.refresh_accounts` (the ``leadscore.score.chunk`` task does)."""
    before = _last_action_id(session)
    hook = routing_hook(config, route=route)
    summary = score_chunk(session, plan, lead_ids, batch_size=batch_size, progress=progress, tier_change_hook=hook)
    session.flush()
    summary.routing_planned, summary.routing_held = _planned_by_type(session, before), _held(hook)
    return summary


def finish_planned_run(session: Session, config: AppConfig, plan: ScoringPlan, *, route: bool = True) -> ScoreSummary:
    """After the last chunk of a planned run: the open leads the plan did not rescore tiered by its
    capacity cut-offs (:func:`scoring.score_run.retier_to_plan`, routing planned as for any tier
    change), then the accounts refreshed once over every chunk's scores."""
    before = _last_action_id(session)
    hook = routing_hook(config, route=route)
    summary = retier_to_plan(session, plan, tier_change_hook=hook)
    session.flush()
    summary.routing_planned, summary.routing_held = _planned_by_type(session, before), _held(hook)
    summary.accounts = refresh_accounts(session).to_dict()
    return summary


@dataclass
class RetierResult:
    """What ``tiers set`` did: the new policy version, leads whose tier changed, routing planned."""

    version: int
    mode: str
    thresholds: dict[str, float]
    changed: int
    routing_planned: dict[str, int] = field(default_factory=dict)
    unchanged: bool = False  # the policy asked for is the active one: no new version, nothing re-tiered
    routing_held: int = 0  # actions the repeat guard held back (RoutingPlanner.held)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "mode": self.mode, "thresholds": self.thresholds,
                "changed": self.changed, "routing_planned": dict(self.routing_planned),
                "routing_held": self.routing_held, "unchanged": self.unchanged}


def retier_and_plan(
    session: Session,
    config: AppConfig,
    mode: str,
    thresholds: Mapping[str, Any],
    *,
    created_by: str | None,
    route: bool = True,
) -> RetierResult:
    """Activate a new tier policy, re-tier current scores and plan routing for the changed leads.

    The active policy asked for again (same mode and thresholds) is left as it is: no new version
    in the history with nobody's tier changed (``unchanged``). Capacity shares that would leave a
    tier without a lead are refused (:func:`scoring.tier_changes.refuse_empty_tiers`)."""
    values = check_policy(mode, thresholds)
    active = find_active_policy(session)
    if active is not None and active.mode == mode and check_policy(active.mode, active.thresholds) == values:
        return RetierResult(version=active.version, mode=active.mode, thresholds=values, changed=0,
                            unchanged=True)
    refuse_empty_tiers(session, mode, values)
    before = _last_action_id(session)
    policy = set_policy(session, mode, values, created_by=created_by)
    hook = routing_hook(config, route=route)
    changed = retier(session, policy, tier_change_hook=hook)
    session.flush()
    return RetierResult(version=policy.version, mode=policy.mode, thresholds=dict(policy.thresholds),
                        changed=changed, routing_planned=_planned_by_type(session, before), routing_held=_held(hook))


def routing_preview(session: Session, config: AppConfig, mode: str, thresholds: Mapping[str, Any]) -> dict[str, Any]:
    """How many routing actions of each type a new policy would plan (changes nothing).

    The same tiers :func:`retier` would give, per lead whose tier would change, through the same
    rules and repeat guard ``plan_routing`` applies (``held``: the actions the guard holds back; a
    re-tier keeps each score's ``as_of``, the clock the guard compares).
    """
    from connectors.routing import data_clock, earlier_actions, owned_by_user, planned_actions, without_repeats

    values = check_policy(mode, thresholds)
    current = current_scores(session)
    new_tiers = tiers_for(Policy(mode=mode, thresholds=values), current["probability"].to_numpy(),
                          scores=current["score"].to_numpy())
    conn_of: dict[int, tuple[str, str | None]] = {
        lead_id: (name, owner) for lead_id, name, owner in session.execute(
            select(Lead.id, Connection.name, Lead.owner_crm_id).join(Connection, Connection.id == Lead.connection_id))}
    configured = {c.name: c for c in config.connections}
    changed = [(int(lead_id), int(score_id), old, new) for lead_id, score_id, old, new in zip(
        current["lead_id"].tolist(), current["score_id"].tolist(), current["tier"].tolist(), new_tiers, strict=True)
        if old != new]
    earlier = earlier_actions(session, [lead_id for lead_id, _, _, _ in changed])
    clocks: dict[int, datetime] = {}
    score_ids = [score_id for lead_id, score_id, _, _ in changed if lead_id in earlier]
    for chunk in id_chunks(score_ids):
        for score_id, as_of, scored_at in session.execute(
            select(LeadScore.id, LeadScore.as_of, LeadScore.scored_at).where(among(session, LeadScore.id, chunk))
        ):
            clocks[int(score_id)] = data_clock(as_of, scored_at)
    actions: dict[str, int] = {}
    leads = taken = held = 0
    for lead_id, score_id, old, new in changed:
        name, owner = conn_of.get(lead_id, ("", None))
        conn = configured.get(name)
        # As RoutingPlanner plans them: the repeat guard first (held back), then an assignment that
        # keeps a rep's lead is recorded as cancelled, not planned.
        candidates = planned_actions(config, conn, old, new, owner=owner) if conn is not None else []
        kept, n = without_repeats(candidates, new, clocks.get(score_id), earlier.get(lead_id, ()))
        held += n
        planned = [a for a in kept if a.kept_by is None]
        if planned:
            leads += 1
        for action in planned:
            actions[action.config.type] = actions.get(action.config.type, 0) + 1
            if action.config.type == "assign_owner" and conn is not None and owned_by_user(conn, owner):
                taken += 1  # an assignment that overwrites a rep's ownership (``overwrite`` left true)
    return {"leads": leads, "actions": dict(sorted(actions.items())), "total": sum(actions.values()),
            "reassigned_from_users": taken, "held": held}


def reassigned_from_users(n: int) -> str:
    """What a preview says of ``n`` planned ``assign_owner`` actions that would move leads a rep
    owns (one wording for the CLI and the console)."""
    return (f"{n} owner assignment{'s' if n != 1 else ''} would take {'leads' if n != 1 else 'a lead'} "
            f"from the rep{'s' if n != 1 else ''} who own{'' if n != 1 else 's'} "
            f"{'them' if n != 1 else 'it'} (`overwrite: false` on an assign_owner keeps a rep's leads)")


def preview_with_routing(
    session: Session, config: AppConfig, mode: str, thresholds: Mapping[str, Any], *, recent_days: int = 180,
    recent: RecentLabelled | None = None,
) -> dict[str, Any]:
    """:func:`scoring.tier_changes.preview` plus ``"routing"``: the actions the change would plan.

    ``recent``: see :func:`scoring.tier_changes.preview` (the console passes the leads it computed once).
    """
    data = preview(session, mode, thresholds, recent_days=recent_days,
                   horizon_days=config.training.horizon_days, recent=recent)
    data["routing"] = routing_preview(session, config, mode, thresholds)
    return data


def promote_and_rescore(
    session: Session, config: AppConfig, version: str, *, by: str | None = None, progress: Progress | None = None,
    route: bool = True,
) -> tuple[ModelVersion, ScoreSummary | None]:
    """Make ``version`` the champion of its segment and rescore the leads it now scores. Already the
    champion: nothing is changed, recorded or rescored (summary None)."""
    if (current := registry.get_version(session, version)).status == ModelStatus.champion:
        return current, None
    mv = registry.promote(session, version, by=by)
    return mv, score_and_plan(session, config, progress=progress, route=route)


def rollback_and_rescore(
    session: Session, config: AppConfig, *, by: str | None = None, progress: Progress | None = None,
    route: bool = True,
) -> tuple[ModelVersion, ScoreSummary]:
    """Bring back the previous champion and rescore the leads the retired one had scored."""
    mv = registry.rollback(session, by=by)
    return mv, score_and_plan(session, config, progress=progress, route=route)
