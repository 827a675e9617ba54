"""Champion against a shadow model on the same leads, as outcomes arrive."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from scoring.compare import paired_bootstrap
from scoring.features import (
    load_leads_frame,
)
from scoring.monitoring.cohorts import COHORT_AGE_DAYS, labels_at
from scoring.monitoring.elapsed import scores_at_age
from scoring.monitoring.stats import MIN_PERFORMANCE_POSITIVES, roc_auc
from scoring.monitoring.status import NOT_ENOUGH
from store.models import (
    Lead,
    ModelVersion,
    ShadowScore,
)


def _shadow_at_age(session: Session, mv: ModelVersion, age_days: int) -> pd.DataFrame:
    rows = session.execute(
        select(ShadowScore.lead_id, ShadowScore.probability, ShadowScore.scored_at, Lead.crm_created_at)
        .join(Lead, Lead.id == ShadowScore.lead_id).where(ShadowScore.model_version_id == mv.id)
    ).all()
    df = pd.DataFrame([tuple(r) for r in rows], columns=["lead_id", "probability", "scored_at", "created_at"])
    if df.empty:
        return df
    df["scored_at"] = pd.to_datetime(df["scored_at"], utc=True)
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True)
    df = df[(df["scored_at"] >= df["created_at"]) & (df["scored_at"] <= df["created_at"] + pd.Timedelta(days=age_days))]
    return df.sort_values(["lead_id", "scored_at"]).groupby("lead_id", as_index=False).tail(1).reset_index(drop=True)


def shadow_comparison(session: Session, mv: ModelVersion, *, as_of: datetime, horizon_days: int,
                      seed: int = 0) -> dict[str, Any]:
    """Champion (as served) vs the shadow ``mv`` on the same leads whose outcome is known: each
    lead's score from both at :data:`COHORT_AGE_DAYS` days old, labelled "converted within the
    horizon after the served score"."""

    out: dict[str, Any] = {"version": mv.version, "status": NOT_ENOUGH, "leads": 0, "needed": MIN_PERFORMANCE_POSITIVES}
    shadow = _shadow_at_age(session, mv, COHORT_AGE_DAYS)
    out["shadow_scored_leads"] = len(shadow)
    if shadow.empty:
        out["reason"] = "no lead has a shadow score from its first days yet"
        return out
    served = scores_at_age(session, shadow["lead_id"].astype("int64").tolist(), COHORT_AGE_DAYS)
    if served.empty:
        out["reason"] = f"none of the {len(shadow)} shadow-scored leads has a served score from its first days"
        return out
    both = served.merge(shadow[["lead_id", "probability"]], on="lead_id", suffixes=("_champion", "_shadow"))
    leads = load_leads_frame(session, both["lead_id"].tolist()).set_index("id").loc[both["lead_id"]].reset_index()
    known, label = labels_at(leads, both["scored_at"], horizon_days, as_of)
    y = label[known]
    p_champion = both["probability_champion"].to_numpy(dtype="float64")[known]
    p_shadow = both["probability_shadow"].to_numpy(dtype="float64")[known]
    pos = int(y.sum())
    out.update({"leads": int(known.sum()), "converted": pos, "awaiting_outcome": int((~known).sum())})
    if min(pos, len(y) - pos) < MIN_PERFORMANCE_POSITIVES:
        out["reason"] = (f"{pos} conversion{'s' if pos != 1 else ''} among {len(y)} leads with a known outcome; "
                         f"at least {MIN_PERFORMANCE_POSITIVES} of each class needed "
                         f"({int((~known).sum())} still awaiting their outcome)")
        return out
    d, low, high = paired_bootstrap(y, p_champion, p_shadow, both["lead_id"].to_numpy()[known], seed=seed)
    out.update({"status": "measured", "champion_auc": roc_auc(y, p_champion), "shadow_auc": roc_auc(y, p_shadow),
                "improvement": d, "ci_low": low, "ci_high": high,
                "champion_versions": sorted({int(v) for v in both["model_version_id"].dropna()})})
    return out


def describe_shadow(comparison: dict[str, Any]) -> str:
    """One line for the CLI and the monitor."""
    c = comparison
    if c.get("status") != "measured":
        return f"shadow {c['version']}: not enough data ({c.get('reason', '')})"
    return (f"shadow {c['version']}: AUC {c['shadow_auc']:.3f} vs champion {c['champion_auc']:.3f} on the same "
            f"{c['leads']:,} leads ({c['converted']} converted; difference {c['improvement']:+.3f}, 90% CI "
            f"{c['ci_low']:+.3f}..{c['ci_high']:+.3f})")
