"""Explain one lead: its current score, likelihood, fit, engagement, change, tier, reasons, history."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.app_config import AppConfig
from config.errors import LeadscoreError
from scoring.feedback import lead_feedback
from scoring.reasons import MAX_REASONS_CHARS, crm_reason_indices
from scoring.score_writes import change_baseline_as_of
from scoring.tiers import likelihood_percent
from store.models import Connection, Lead, LeadLifecycle, LeadScore, ModelVersion, QuarantinedRecord, TierPolicy
from store.queries import routing_actions


def find_lead(session: Session, ref: str) -> Lead:
    """A lead by CRM id (any connection) or, failing that, by internal id; ``id:N`` is always the
    internal id, ``CONNECTION:CRMID`` (``hubspot:5864``) the CRM id in that connection (HubSpot's
    CRM ids are numbers too: "5864" may be both, of two different leads)."""
    if ref.startswith("id:") and ref[3:].isdigit():
        lead = session.get(Lead, int(ref[3:]))
        if lead is None:
            raise LeadscoreError(f"no lead with internal id {ref[3:]}")
        return lead
    name, colon, crm_id = ref.partition(":")
    if colon and crm_id and (conn_id := session.scalar(select(Connection.id).where(Connection.name == name))):
        found = session.scalar(select(Lead).where(Lead.connection_id == conn_id, Lead.crm_id == crm_id))
        if found is None:
            raise LeadscoreError(f"no lead with CRM id {crm_id!r} in connection {name}")
        return found
    matches = list(session.scalars(select(Lead).where(Lead.crm_id == ref)))
    names = dict(session.execute(select(Connection.id, Connection.name)).tuples().all()) if matches else {}
    if len(matches) == 1:
        if ref.isdigit() and (other := session.get(Lead, int(ref))) is not None and other.id != matches[0].id:
            conn = names[matches[0].connection_id]
            raise LeadscoreError(f"{ref!r} names two leads: the one whose {conn} CRM id it is (give `{conn}:{ref}` "
                                 f"or `id:{matches[0].id}`) and the one whose internal id it is (give `id:{other.id}`)")
        return matches[0]
    if len(matches) > 1:
        forms = " or ".join(f"`{names[m.connection_id]}:{ref}`" for m in matches)
        raise LeadscoreError(f"CRM id {ref!r} exists in {len(matches)} connections: give {forms}")
    if ref.isdigit():
        lead = session.get(Lead, int(ref))
        if lead is not None:
            return lead
    held = session.execute(
        select(QuarantinedRecord.reason, QuarantinedRecord.stream, QuarantinedRecord.created_at, Connection.name)
        .join(Connection, Connection.id == QuarantinedRecord.connection_id)
        .where(QuarantinedRecord.crm_id == ref).order_by(QuarantinedRecord.id.desc()).limit(1)).first()
    if held is not None:
        # Read by a sync but not stored: a user trial found "no lead with CRM id" for an open lead
        # whose head count was absurd, with nothing saying why it had no score.
        raise LeadscoreError(
            f"{ref} was quarantined by the {held.name} sync on {held.created_at:%Y-%m-%d} ({held.stream}: "
            f"{held.reason}), so it has no score; fix the record in the CRM and the next sync reads it")
    raise LeadscoreError(f"no lead with CRM id or internal id {ref!r}")


def _standing(lead: Lead) -> str:
    """``converted 2026-07-01 (CRM status: Closed - Converted)``: where a lead that is no longer open
    stands."""
    converted = lead.converted_at if lead.lifecycle == LeadLifecycle.converted else None
    when = f" {converted.date().isoformat()}" if converted is not None else ""
    # The CRM's own status beside leadscore's word: HubSpot's lead status can still read OPEN on a
    # customer ("converted (OPEN)" read as a contradiction in a trial).
    return f"{LeadLifecycle(lead.lifecycle).value}{when}" + (f" (CRM status: {lead.status})" if lead.status else "")


# Beside a reason the CRM's reasons field cannot hold (``explain`` and the console's lead page).
NOT_IN_CRM = f"(not in the CRM field: it holds {MAX_REASONS_CHARS} characters)"


def reasons_not_in_crm(reasons: list[str]) -> list[str]:
    """The reasons the CRM's reasons field does not hold (:func:`crm_reason_indices`; a single
    over-long reason is written cut, so it counts as held)."""
    kept = set(crm_reason_indices(reasons))
    return [r for i, r in enumerate(reasons) if i not in kept]


def _score_view(row: LeadScore, version: str | None, policy: int | None = None) -> dict[str, Any]:
    reasons = list(row.reasons or [])
    return {
        "tier_policy": policy,  # the tier policy's version the row was tiered under
        "score": row.score,
        "likelihood": float(likelihood_percent(np.array([row.probability]))[0]),
        "probability": round(row.probability, 4),
        "fit": row.fit_score,
        "engagement": row.engagement_score,
        "score_change": row.score_change,
        "tier": row.tier,
        "reasons": reasons,
        # Which of them the CRM's reasons field holds (whole reasons within its 255 characters:
        # a user trial read five reasons in `explain` and four in the CRM, with nothing saying why).
        "reasons_in_crm": len(reasons) - len(left_out := reasons_not_in_crm(reasons)),
        "reasons_not_in_crm": left_out,
        "model": version,
        "scored_at": row.scored_at.isoformat(),
        "as_of": row.as_of.isoformat() if row.as_of else None,
    }


def _change_since(session: Session, current: LeadScore) -> str | None:
    """The date of the score the change is measured against (a lead scored 10 days apart changed
    over those 10 days, not "in 7 days"); None when the change is blank."""
    base = change_baseline_as_of(session, current)
    return base.date().isoformat() if base is not None else None


def explain_lead(session: Session, ref: str, *, history: bool = False,
                 config: AppConfig | None = None) -> dict[str, Any]:
    """A lead's current score, likelihood, fit, engagement, change, tier, reasons and model (for
    ``leadscore explain`` and the console's lead page); ``rep_feedback``: the rep's feedback on the
    score as last synced (``{"feedback", "comment"}``, the fields ``config`` names, or None);
    ``routing_actions``: what its tier changes planned, newest first, with each one's status and
    error (why it was cancelled or refused); with ``history`` also every score of the lead, oldest
    first."""
    lead = find_lead(session, ref)
    current = session.scalar(select(LeadScore).where(LeadScore.lead_id == lead.id, LeadScore.is_current.is_(True)))
    lifecycle = LeadLifecycle(lead.lifecycle)
    if current is None:
        if lifecycle is not LeadLifecycle.open:
            raise LeadscoreError(f"lead {ref} is {_standing(lead)} and was never scored: leadscore scores open "
                                 "leads only")
        raise LeadscoreError(f"lead {ref} has no score yet: run `leadscore score`")
    versions = dict(session.execute(select(ModelVersion.id, ModelVersion.version)).tuples().all())
    name = " ".join(p for p in (lead.first_name, lead.last_name) if p) or None
    out: dict[str, Any] = {
        "lead_id": lead.id,
        "crm_id": lead.crm_id,
        "name": name,
        "company": lead.company,
        "title": lead.title,
        **_score_view(current, versions.get(current.model_version_id or -1)),
        "score_change_since": _change_since(session, current),
        "deleted": lead.is_deleted,
        # Only open leads are rescored, written and routed: a converted or closed lead keeps its
        # last score while open, which a reader must not take for a current one.
        "lifecycle": lifecycle.value,
        "status": lead.status,
        "converted_at": lead.converted_at.isoformat() if lead.converted_at else None,
        "standing": None if lifecycle is LeadLifecycle.open else _standing(lead),
        "rep_feedback": lead_feedback(session, lead, config),
        "routing_actions": routing_actions(session, lead.id),
    }
    if history:
        rows = session.scalars(
            select(LeadScore).where(LeadScore.lead_id == lead.id).order_by(LeadScore.scored_at, LeadScore.id)
        )
        policies = dict(session.execute(select(TierPolicy.id, TierPolicy.version)).tuples().all())
        out["history"] = []
        for r in rows:
            view = _score_view(r, versions.get(r.model_version_id or -1), policies.get(r.tier_policy_id or -1))
            before = out["history"][-1] if out["history"] else None
            # The same score on the same data, tiered again under another policy (`tiers set`): a
            # trial read such a row as a rescore.
            view["retier"] = (before is not None and before["tier_policy"] != view["tier_policy"]
                              and (before["score"], before["as_of"]) == (view["score"], view["as_of"]))
            out["history"].append(view)
    return out
