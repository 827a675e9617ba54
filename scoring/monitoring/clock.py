"""The data's clock: CRM timestamps as UTC, when a model was trained, the CRM's "now"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.models import (
    Activity,
    Lead,
    ModelVersion,
    SyncRun,
    SyncStatus,
)

DEFAULT_HORIZON_DAYS = 90


def as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_time(value: Any) -> datetime | None:
    """A stored timestamp (ISO string, datetime or None) as an aware UTC datetime, or None."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    if pd.isna(ts):
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def trained_at(mv: ModelVersion) -> datetime:
    """The (CRM-clock) time a version was trained as of: ``params["as_of"]``, else its window end
    plus the horizon, else the row's creation time."""
    params = mv.params or {}
    when = parse_time(params.get("as_of"))
    if when is not None:
        return when
    if mv.train_end is not None:
        return as_utc(mv.train_end) + timedelta(days=horizon_of(mv))
    return as_utc(mv.created_at)


def horizon_of(mv: ModelVersion | None) -> int:
    """The label horizon (days) a version was trained with (90 when not recorded)."""
    if mv is None:
        return DEFAULT_HORIZON_DAYS
    value = (mv.params or {}).get("horizon_days")
    return int(value) if isinstance(value, int | float) and value > 0 else DEFAULT_HORIZON_DAYS


def data_clock(session: Session) -> datetime | None:
    """The CRM's time as synced: the newest modification time of any synced lead or activity
    (None for an empty store). The monitor cuts its windows here, not on the machine's clock: the
    data may lag the wall clock (a demo's simulated CRM, an import of history, a stalled sync)."""
    newest = [session.scalar(select(func.max(Lead.crm_modified_at))),
              session.scalar(select(func.max(Activity.crm_modified_at)))]
    present = [as_utc(t) for t in newest if t is not None]
    return max(present) if present else None


def crm_now(session: Session, as_of: datetime, explicit: bool) -> datetime:
    """The CRM's "now" for freshness. With an explicit ``as_of`` that is it. Otherwise the CRM's
    clock at the newest successful sync (its ``server_time``) plus the real time that has passed
    since that sync finished: the CRM's clock keeps running when our syncs stop."""
    if explicit:
        return as_of
    row = session.execute(
        select(SyncRun.server_time, SyncRun.finished_at).where(SyncRun.status == SyncStatus.succeeded,
                                                               SyncRun.finished_at.is_not(None))
        .order_by(SyncRun.finished_at.desc()).limit(1)).first()
    if row is None or row[0] is None or row[1] is None:
        return as_of
    elapsed = datetime.now(UTC) - as_utc(row[1])
    return max(as_of, as_utc(row[0]) + max(elapsed, timedelta(0)))
