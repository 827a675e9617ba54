"""Cohorts: leads created in a window, seen at a fixed age, and their outcomes over a horizon."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from scoring.features import (
    build_feature_frame,
    load_activities_frame,
    load_company_peers,
    load_leads_frame,
)
from store.models import (
    Lead,
)

COHORT_AGE_DAYS = 7


@dataclass
class Cohort:
    """Leads created in a window, seen ``age_days`` after creation: features and lead columns."""
    leads: pd.DataFrame
    features: pd.DataFrame
    snapshots: pd.Series

    def __len__(self) -> int:
        return len(self.leads)


def cohort_leads(session: Session, start: datetime, end: datetime) -> list[int]:
    """Ids of live leads created in [start, end)."""
    stmt = (
        select(Lead.id)
        .where(Lead.crm_created_at >= start, Lead.crm_created_at < end, Lead.is_deleted.is_(False))
        .order_by(Lead.id)
    )
    return list(session.scalars(stmt))


def build_cohort(session: Session, lead_ids: Sequence[int], *, age_days: int = COHORT_AGE_DAYS) -> Cohort:
    """Point-in-time features of leads at ``created + age_days`` (activity strictly before)."""
    leads = load_leads_frame(session, lead_ids)
    if leads.empty:
        empty = pd.DataFrame()
        return Cohort(leads=leads, features=empty, snapshots=pd.Series(dtype="datetime64[ns, UTC]"))
    snapshots = pd.to_datetime(leads["crm_created_at"], utc=True) + pd.Timedelta(days=age_days)
    latest = snapshots.max().to_pydatetime()
    activities = load_activities_frame(session, list(leads["id"]), before=latest)
    peers = load_company_peers(session, [k for k in leads["company_key"].dropna().unique().tolist()])
    features = build_feature_frame(leads, activities, snapshots, company_peers=peers)
    return Cohort(leads=leads, features=features, snapshots=snapshots)


def labels_at(leads: pd.DataFrame, snapshots: pd.Series, horizon_days: int, as_of: datetime
               ) -> tuple[np.ndarray, np.ndarray]:
    """(known mask, label): converted within the horizon after the snapshot; unknown if the
    horizon has not elapsed by ``as_of`` or the lead had converted before the snapshot."""
    conv = pd.to_datetime(leads["converted_at"], utc=True)
    snaps = pd.to_datetime(snapshots, utc=True)
    horizon = pd.Timedelta(days=horizon_days)
    elapsed = (snaps + horizon) <= pd.Timestamp(as_of)
    before = conv.notna() & (conv <= snaps)
    label = conv.notna() & (conv > snaps) & (conv <= snaps + horizon)
    return (elapsed & ~before).to_numpy(dtype=bool), label.to_numpy(dtype="int64")
