"""The score and tier each lead had at `COHORT_AGE_DAYS` days old: served, or reconstructed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.app_config import TierConfig
from scoring import registry
from scoring.features import (
    align_to_spec,
)
from scoring.monitoring.clock import as_utc
from scoring.monitoring.cohorts import COHORT_AGE_DAYS, build_cohort
from scoring.monitoring.reference_cohort import reference_window
from scoring.tier_changes import champion_scores
from scoring.tiers import Policy, PolicyLike, capacity_cutoffs, current_scores, find_active_policy, tiers_for
from store.models import (
    Lead,
    LeadScore,
    ModelVersion,
)


def scores_at_age(session: Session, lead_ids: Sequence[int], age_days: int) -> pd.DataFrame:
    """For each lead, its latest LeadScore written no later than ``created + age_days``, both on
    the CRM's clock: a score's ``as_of`` (the data clock its run scored at; ``scored_at``, the
    machine's, only for rows written before ``as_of`` was kept). The machine's time against the
    CRM's creation time found no served score at all where the two clocks differ (a simulated
    CRM, an import of history), and every shadow comparison waited for data it had."""
    rows: list[Any] = []
    for i in range(0, len(lead_ids), 1000):
        chunk = list(lead_ids[i : i + 1000])
        stmt = (
            select(LeadScore.lead_id, LeadScore.probability, LeadScore.tier,
                   func.coalesce(LeadScore.as_of, LeadScore.scored_at), LeadScore.model_version_id, Lead.crm_created_at)
            .join(Lead, Lead.id == LeadScore.lead_id)
            .where(LeadScore.lead_id.in_(chunk))
        )
        rows.extend(session.execute(stmt).all())
    df = pd.DataFrame([tuple(r) for r in rows],
                      columns=["lead_id", "probability", "tier", "scored_at", "model_version_id", "created_at"])
    if df.empty:
        return df
    df["scored_at"] = pd.to_datetime(df["scored_at"], utc=True)
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True)
    # A score stamped before the lead existed cannot have been served to it (a store loaded
    # out of order): only scores written during the lead's first ``age_days`` count.
    df = df[(df["scored_at"] >= df["created_at"]) & (df["scored_at"] <= df["created_at"] + pd.Timedelta(days=age_days))]
    df = df.sort_values(["lead_id", "scored_at"]).groupby("lead_id", as_index=False).tail(1)
    return df.reset_index(drop=True)


def active_tier_policy(session: Session) -> PolicyLike:
    """The active tier policy (the configured default when none was created yet)."""
    found = find_active_policy(session)
    if found is not None:
        return found
    default = TierConfig()
    return Policy(mode=default.mode, thresholds=dict(default.thresholds))


def live_tier_policy(session: Session) -> PolicyLike:
    """The active policy as live scoring applies it today (:func:`as_live`): what the monitor tiers
    reconstructed scores and the reference's leads by."""
    return as_live(session, active_tier_policy(session))


def as_live(session: Session, policy: PolicyLike) -> PolicyLike:
    """``policy`` as live scoring applies it today: a capacity policy as the score cut-offs its
    shares give on every open lead's current score (unchanged in the other modes, or while no open
    lead holds a score: then a cohort is cut on its own).

    A lead tiered by it gets the tier live scoring gives its score today, as the tier preview tiers
    its recent leads. Cut within each cohort instead, the monitor's "tier A" was the top 5 % of the
    elapsed leads, the reps' the top 5 % of the open leads: a trial read tier A converting 58 % in
    the monitor and 29 % in the preview of the same policy."""
    if policy.mode != "capacity":
        return policy
    scores = current_scores(session)["score"].to_numpy(dtype="float64")
    if not len(scores):
        return policy
    return Policy(mode="score", thresholds=capacity_cutoffs(scores, policy.thresholds))


def elapsed_scores(session: Session, champion: ModelVersion, lead_ids: Sequence[int], policy: PolicyLike,
                   counts: dict[str, Any]) -> pd.DataFrame:
    """The score and tier each lead had at :data:`COHORT_AGE_DAYS` days old.

    Served scores (``lead_score`` history, whichever model wrote them) are used where recorded.
    A lead scored only later (history imported at installation, as in the demo) gets the
    champion's point-in-time score at that age instead -- but only when the champion never
    learnt from it (created in its test period or later); others are left out and counted.
    ``counts`` receives ``served``, ``reconstructed`` and ``excluded_in_training``.
    """
    served = scores_at_age(session, lead_ids, COHORT_AGE_DAYS)
    columns = ["lead_id", "probability", "tier", "scored_at", "model_version_id"]
    served = served[columns] if not served.empty else pd.DataFrame(columns=columns)
    served = served.assign(source="served")
    missing = sorted(set(lead_ids) - set(served["lead_id"].astype("int64").tolist()))
    window = reference_window(champion)
    counts["served"] = len(served)
    counts["reconstructed"] = 0
    counts["excluded_in_training"] = 0
    if not missing:
        return served.reset_index(drop=True)
    if window is None:
        counts["excluded_in_training"] = len(missing)
        return served.reset_index(drop=True)
    created: dict[int, datetime] = {}
    for i in range(0, len(missing), 1000):
        created.update(session.execute(
            select(Lead.id, Lead.crm_created_at).where(Lead.id.in_(missing[i : i + 1000]))).tuples().all())
    unseen = [i for i in missing if i in created and as_utc(created[i]) >= window[0]]
    counts["excluded_in_training"] = len(missing) - len(unseen)
    if not unseen:
        return served.reset_index(drop=True)
    cohort = build_cohort(session, unseen)
    model = registry.load_model(champion)
    proba = np.asarray(model.predict_proba(align_to_spec(cohort.features, model.spec)), dtype="float64")

    rebuilt = pd.DataFrame({
        "lead_id": cohort.leads["id"].astype("int64").to_numpy(), "probability": proba,
        # Score tiers rank against the champion's reference leads, as live scoring does.
        "tier": tiers_for(policy, proba, scores=champion_scores(session, proba)),
        "scored_at": cohort.snapshots.to_numpy(),
        "model_version_id": champion.id, "source": "reconstructed",
    })
    counts["reconstructed"] = len(rebuilt)
    frames = [f for f in (served, rebuilt) if not f.empty]
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    out["scored_at"] = pd.to_datetime(out["scored_at"], utc=True)
    return out
