"""What the demo measures once the loop ran: CRM API calls per phase, records written, routing
actions done, refusals, the model on its held-out leads against the simulator's truth, and what a
rep sees (score spread, reasons, rescoring, the fields in the CRMs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score
from sqlalchemy import func, select

from config.errors import LeadscoreError
from connectors.base import ConnectionSecrets
from connectors.registry import read_back
from connectors.writeback import make_client
from crmsim.faults import COUNT_SUMMARIES
from scoring import registry
from scoring.dataset import LEAD_ID_COLUMN, SPLIT_COLUMN, TARGET, build_training_set
from scoring.feedback import feedback_summary
from scoring.service import crm_now
from scoring.tier_changes import champion_scores
from scoring.tiers import active_policy, tiers_for
from scoring.training import split_frame
from store.db import unit_of_work
from store.models import (
    ACCOUNT_OUTBOX_KIND,
    OUTBOX_KIND,
    ActionStatus,
    Activity,
    Connection,
    Lead,
    LeadScore,
    Outbox,
    OutboxStatus,
    RoutingAction,
    SyncRun,
)


@dataclass
class PhaseCalls:
    salesforce: int = 0
    hubspot: int = 0
    by_label: dict[str, dict[str, int]] = field(default_factory=dict)


def crm_calls(sim: Any) -> dict[str, Any]:
    counts = sim.call_counts()
    return {"salesforce": dict(counts["salesforce"]), "hubspot": dict(counts["hubspot"]),
            "total": dict(counts["total"])}


def calls_between(before: dict[str, Any], after: dict[str, Any]) -> PhaseCalls:
    labels = {}
    for api in ("salesforce", "hubspot"):
        labels[api] = {k: after[api].get(k, 0) - before[api].get(k, 0)
                       for k in after[api]
                       if k not in COUNT_SUMMARIES and after[api].get(k, 0) != before[api].get(k, 0)}
    return PhaseCalls(
        salesforce=after["total"]["salesforce"] - before["total"]["salesforce"],
        hubspot=after["total"]["hubspot"] - before["total"]["hubspot"],
        by_label=labels,
    )


def rep_view(runtime: Any) -> dict[str, Any]:
    """What reps see, measured: score spread, reason repetition, rescoring, fields in the CRMs."""

    out: dict[str, Any] = {}
    with unit_of_work(runtime.engine) as session:
        now = crm_now(session)
        recent = session.execute(
            select(LeadScore.score).join(Lead, Lead.id == LeadScore.lead_id).where(
                LeadScore.is_current.is_(True), Lead.is_deleted.is_(False), Lead.is_converted.is_(False),
                Lead.crm_created_at >= now - timedelta(days=60))).scalars().all()
        bins = [0] * 10
        for score in recent:
            bins[min(max(int(score) - 1, 0) // 10, 9)] += 1
        out["recent_open_leads"] = len(recent)
        out["score_deciles"] = [round(b / len(recent), 4) if recent else 0.0 for b in bins]
        current = session.execute(select(LeadScore.reasons).where(LeadScore.is_current.is_(True))).scalars().all()
        counts: dict[str, int] = {}
        for reasons in current:
            for text in set(reasons or []):
                counts[text] = counts.get(text, 0) + 1
        top = max(counts.items(), key=lambda kv: kv[1]) if counts else ("", 0)
        out["reasons"] = {"scored_leads": len(current), "distinct": len(counts), "most_common": top[0],
                          "max_share": round(top[1] / len(current), 4) if current else 0.0,
                          "leads_without_reasons": sum(1 for r in current if not r)}
        multi = session.execute(
            select(LeadScore.lead_id).group_by(LeadScore.lead_id)
            .having(func.count(func.distinct(LeadScore.as_of)) >= 2)).scalars().all()
        # The example shown is a lead whose score moved during the week, if any did.
        moved = session.execute(
            select(Lead.crm_id).join(LeadScore, LeadScore.lead_id == Lead.id)
            .where(LeadScore.is_current.is_(True), LeadScore.score_change != 0).order_by(Lead.id).limit(1)
        ).scalar()
        example = moved or (session.get(Lead, multi[0]).crm_id if multi else None)  # type: ignore[union-attr]
        out["rescored_in_week"] = {"leads": len(multi), "example_crm_id": example}

        fb = feedback_summary(session, runtime.config)
        out["feedback"] = {k: fb[k] for k in ("leads_with_feedback", "by_tier", "outcomes")}
    fields_seen: dict[str, Any] = {}
    accounts_seen: dict[str, Any] = {}  # accounts holding an account score, read back from each CRM
    for conn in runtime.config.connections:
        seen = read_back(conn, make_client(conn, ConnectionSecrets.from_env(conn)))
        fields_seen[conn.name] = seen.leads
        accounts_seen[conn.name] = {"accounts_with_score": seen.accounts_with_score, "sample": seen.account_sample}
    out["crm_fields_sample"] = fields_seen
    out["accounts_in_crm"] = accounts_seen
    return out


def population(runtime: Any) -> dict[str, int]:
    with unit_of_work(runtime.engine) as session:
        leads = session.scalar(select(func.count()).select_from(Lead).where(Lead.is_deleted.is_(False))) or 0
        activities = session.scalar(select(func.count()).select_from(Activity)) or 0
    return {"leads": int(leads), "activities": int(activities)}


def synced(runtime: Any, connection: str, since: datetime) -> dict[str, int]:
    """Records read and quarantined by the sync runs of ``connection`` started at or after ``since``
    (a sync is a plan of units, each with its own ``sync_run``; the sync task itself only starts them)."""
    with unit_of_work(runtime.engine) as session:
        records, quarantined = session.execute(
            select(func.coalesce(func.sum(SyncRun.records), 0), func.coalesce(func.sum(SyncRun.quarantined), 0))
            .join(Connection, Connection.id == SyncRun.connection_id)
            .where(Connection.name == connection, SyncRun.started_at >= since)).one()
    return {"records": int(records), "quarantined": int(quarantined)}


def tally(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """{"salesforce": n, "hubspot": n}: calls counted by the connectors between two tallies."""
    return {kind: int(after.get(kind, 0) - before.get(kind, 0)) for kind in ("salesforce", "hubspot")}


def writeback_counts(runtime: Any, writes: PhaseCalls, calls: dict[str, int] | None = None,
                      account_calls: dict[str, int] | None = None,
                      lookup_calls: dict[str, int] | None = None) -> dict[str, dict[str, int | None]]:
    """Records confirmed per connection (outbox rows sent) and the write calls made: the drain's own
    count when it ran in this process (``calls``), else the write calls the CRMs counted (routing's
    Composite and batch calls then count too). ``accounts``: account rows sent (Salesforce
    Accounts, HubSpot companies), in ``account_api_calls`` calls (None: not measured in process).
    ``lookup_calls``: of ``api_calls``, the drain's look-ups (queues, users) for owner changes riding
    in the score writes, one set per drain, not per record (None: not measured in process)."""
    with unit_of_work(runtime.engine) as session:
        counted = session.execute(
            select(Connection.name, Outbox.kind, Outbox.status, func.count())
            .join(Outbox, Outbox.connection_id == Connection.id)
            .group_by(Connection.name, Outbox.kind, Outbox.status)).all()
    def sent(wanted: str, status_wanted: str) -> dict[str, int]:
        return {name: n for name, outbox_kind, status, n in counted if (outbox_kind, status) == (wanted, status_wanted)}

    rows, failed = sent(OUTBOX_KIND, OutboxStatus.sent), sent(OUTBOX_KIND, OutboxStatus.failed)
    accounts = sent(ACCOUNT_OUTBOX_KIND, OutboxStatus.sent)
    accounts_failed = sent(ACCOUNT_OUTBOX_KIND, OutboxStatus.failed)
    sf_labels = writes.by_label.get("salesforce", {})
    hs_labels = writes.by_label.get("hubspot", {})
    sf_calls = int(sum(v for k, v in sf_labels.items() if k.startswith("POST composite") and "sobjects" not in k))
    hs_calls = int(sum(v for k, v in hs_labels.items() if "batch/update" in k))
    if calls is not None:
        sf_calls, hs_calls = calls["salesforce"], calls["hubspot"]
    return {
        name: {"records": int(rows.get(name, 0)), "failed": int(failed.get(name, 0)), "api_calls": api,
               "accounts": int(accounts.get(name, 0)), "accounts_failed": int(accounts_failed.get(name, 0)),
               "account_api_calls": account_calls.get(name) if account_calls is not None else None,
               "lookup_calls": lookup_calls.get(name) if lookup_calls is not None else None}
        for name, api in (("salesforce", sf_calls), ("hubspot", hs_calls))
    }


def routing_counts(runtime: Any) -> dict[str, int]:


    with unit_of_work(runtime.engine) as session:
        rows: dict[str, int] = {action: n for action, n in session.execute(
            select(RoutingAction.action, func.count()).where(RoutingAction.status == ActionStatus.done)
            .group_by(RoutingAction.action)).all()}
    return {
        "assigned": int(rows.get("assign_owner", 0)),
        "tasks": int(rows.get("create_task", 0)),
        "nurtured": int(rows.get("add_to_campaign", 0) + rows.get("enroll_workflow", 0)
                        + rows.get("set_property", 0)),
        "paused": int(rows.get("pause_outreach", 0)),
    }


def evaluate(runtime: Any, sim: Any, trained: dict[str, Any]) -> dict[str, Any]:
    """Test AUC, oracle AUC and conversion by tier on the model's own held-out (latest) leads."""

    truth = {(row["crm"], row["crm_id"]): row for row in sim.truth() if row.get("crm_id")}
    with unit_of_work(runtime.engine) as session:
        mv = registry.champion(session)
        if mv is None:
            raise LeadscoreError("training registered no champion model")
        model = registry.load_model(mv)
        as_of = datetime.fromisoformat(trained["as_of"])
        tset = build_training_set(session, as_of=as_of, horizon_days=runtime.config.training.horizon_days)
        frame = tset.frame.reset_index(drop=True)
        y = frame[TARGET].astype(int).to_numpy()
        _train, _val, test, _ = split_frame(frame, y, time_col=SPLIT_COLUMN, seed=0)
        test_frame = frame.iloc[test]
        proba = model.predict_proba(test_frame)
        lead_ids = [int(i) for i in test_frame[LEAD_ID_COLUMN]]
        crm_of = {lid: (kind, crm_id) for lid, kind, crm_id in session.execute(
            select(Lead.id, _connection_kind(), Lead.crm_id).where(Lead.id.in_(set(lead_ids)))).all()}
        policy = active_policy(session, runtime.config.tiers)
        # Score tiers rank the test leads against the champion's reference (capacity shares would
        # be cut on these test leads themselves).
        tiers = tiers_for(policy, proba, scores=champion_scores(session, proba))
    y_test = y[test]
    oracle = np.array([truth.get(crm_of.get(lid, ("", "")), {}).get("true_probability", np.nan) for lid in lead_ids],
                      dtype=float)
    known = ~np.isnan(oracle)
    by_tier: dict[str, dict[str, float | int]] = {}
    for tier in ("A", "B", "C", "D"):
        mask = np.array([t == tier for t in tiers])
        by_tier[tier] = {"leads": int(mask.sum()),
                         "conversion_rate": round(float(y_test[mask].mean()), 4) if mask.any() else 0.0}
    overall = float(y_test.mean()) if len(y_test) else 0.0
    a_rate = float(by_tier["A"]["conversion_rate"])
    return {
        "overall_conversion_rate": round(overall, 4),
        "tier_a_lift": round(a_rate / overall, 2) if overall else None,
        "test_auc": round(float(roc_auc_score(y_test, proba)), 4),
        "oracle_auc": round(float(roc_auc_score(y_test[known], oracle[known])), 4) if known.any() else None,
        "tiers": by_tier,
    }


def _connection_kind() -> Any:


    return select(Connection.kind).where(Connection.id == Lead.connection_id).scalar_subquery()
