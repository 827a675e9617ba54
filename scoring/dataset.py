"""The training set: leads seen at snapshot times, labelled by what happened next.

Each example is a lead at a snapshot time ``created_at + k days`` for k in
:data:`SNAPSHOT_OFFSETS_DAYS` (default: 14, the age at which a lead's first two weeks of
engagement are known: see ``docs/model.md``, *Point in time*, for why not younger ages). The
label is "converted within ``horizon_days`` after the snapshot". Not examples: leads already converted at
the snapshot, snapshots whose horizon has not fully elapsed by ``as_of`` (their label is not yet
known), deleted/merged leads, and converted leads without a conversion time (cannot be placed).

Every example of a lead carries the same ``split_at`` (its first snapshot), which is the
time-ordered split key: all examples of one lead land in the same part, and the test part holds
leads created after those of training and validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from scoring.features import (
    build_feature_frame,
    feature_spec_for,
    load_activities_frame,
    load_leads_frame,
)
from scoring.frame import FeatureSpec

# One snapshot at 14 days: the first two weeks of engagement are what best separates buyers, and
# every feature window (7/30/90 days) then sees the lead's whole life. Younger snapshots teach
# the model on leads whose telling behaviour has not happened yet (their labels are then mostly
# noise to it); older ones see the early weeks only blurred by the sliding windows.
SNAPSHOT_OFFSETS_DAYS: tuple[int, ...] = (14,)
TARGET = "converted"
SPLIT_COLUMN = "split_at"
SNAPSHOT_COLUMN = "snapshot_at"
LEAD_ID_COLUMN = "lead_id"


@dataclass
class TrainingSet:
    """Features, label and bookkeeping columns of every example, and the feature spec."""

    frame: pd.DataFrame  # spec.columns + TARGET + SNAPSHOT_COLUMN + SPLIT_COLUMN + LEAD_ID_COLUMN
    spec: FeatureSpec
    as_of: datetime
    horizon_days: int
    offsets: tuple[int, ...]
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def window(self) -> tuple[datetime | None, datetime | None]:
        """First and last snapshot time of the examples (None, None when empty)."""
        if self.frame.empty:
            return None, None
        snaps = self.frame[SNAPSHOT_COLUMN]
        return snaps.min().to_pydatetime(), snaps.max().to_pydatetime()

    @property
    def positives(self) -> int:
        return int(self.frame[TARGET].sum()) if not self.frame.empty else 0


def label_examples(
    leads: pd.DataFrame,
    *,
    as_of: datetime,
    horizon_days: int = 90,
    offsets: Sequence[int] = SNAPSHOT_OFFSETS_DAYS,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Expand leads to (lead row, snapshot, label) examples and count what was left out.

    Returns a frame of lead rows (the ``leads`` columns, repeated per snapshot) plus
    ``snapshot_at``, ``split_at`` and ``converted``, and a dict of exclusion counts.
    """
    as_of_ts = pd.Timestamp(as_of).tz_convert("UTC")
    horizon = pd.Timedelta(days=horizon_days)
    live = leads[~leads["is_deleted"].astype(bool)]
    unknown_time = live["is_converted"].astype(bool) & live["converted_at"].isna()
    live = live[~unknown_time]
    excluded = {
        "deleted": int(leads["is_deleted"].astype(bool).sum()),
        "converted_without_time": int(unknown_time.sum()),
        "already_converted": 0,
        "horizon_not_elapsed": 0,
    }
    parts: list[pd.DataFrame] = []
    created = pd.to_datetime(live["crm_created_at"], utc=True)
    first = created + pd.Timedelta(days=min(offsets))
    for k in offsets:
        snap = created + pd.Timedelta(days=k)
        conv = pd.to_datetime(live["converted_at"], utc=True)
        elapsed = snap + horizon <= as_of_ts
        before = conv.notna() & (conv <= snap)
        excluded["horizon_not_elapsed"] += int((~elapsed).sum())
        excluded["already_converted"] += int((elapsed & before).sum())
        keep = elapsed & ~before
        part = live[keep].copy()
        part[SNAPSHOT_COLUMN] = snap[keep]
        part[SPLIT_COLUMN] = first[keep]
        part[TARGET] = (conv[keep].notna() & (conv[keep] <= snap[keep] + horizon)).astype("int64")
        parts.append(part)
    examples = pd.concat(parts, ignore_index=True) if parts else live.iloc[0:0]
    examples = examples.sort_values([SPLIT_COLUMN, "id", SNAPSHOT_COLUMN], kind="stable").reset_index(drop=True)
    return examples, excluded


def build_training_frame(
    leads: pd.DataFrame,
    activities: pd.DataFrame,
    *,
    as_of: datetime,
    horizon_days: int = 90,
    offsets: Sequence[int] = SNAPSHOT_OFFSETS_DAYS,
) -> TrainingSet:
    """Pure version of :func:`build_training_set` on already-loaded frames."""
    examples, excluded = label_examples(leads, as_of=as_of, horizon_days=horizon_days, offsets=offsets)
    peers = leads.loc[~leads["is_deleted"].astype(bool), ["id", "company_key", "crm_created_at"]]
    features = build_feature_frame(examples, activities, examples[SNAPSHOT_COLUMN], company_peers=peers)
    spec = feature_spec_for(features)
    frame = features.copy()
    frame[TARGET] = examples[TARGET].to_numpy()
    frame[SNAPSHOT_COLUMN] = examples[SNAPSHOT_COLUMN].to_numpy()
    frame[SPLIT_COLUMN] = examples[SPLIT_COLUMN].to_numpy()
    frame[LEAD_ID_COLUMN] = examples["id"].to_numpy(dtype=np.int64)
    return TrainingSet(
        frame=frame, spec=spec, as_of=as_of, horizon_days=horizon_days, offsets=tuple(offsets),
        excluded=excluded,
    )


def build_training_set(
    session: Session,
    *,
    as_of: datetime,
    horizon_days: int = 90,
    offsets: Sequence[int] = SNAPSHOT_OFFSETS_DAYS,
) -> TrainingSet:
    """Load leads and activities from the store and build the point-in-time training set.

    Activity is read only up to the last snapshot that can be labelled (``as_of - horizon``):
    nothing later can reach a feature, which also bounds the read.
    """
    leads = load_leads_frame(session)
    last_snapshot = as_of - timedelta(days=horizon_days)
    activities = load_activities_frame(session, None, before=last_snapshot)
    return build_training_frame(leads, activities, as_of=as_of, horizon_days=horizon_days, offsets=offsets)
