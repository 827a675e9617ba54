"""Scoring waits for a connection's partitioned sync to finish (a user trial found HubSpot contacts
scored, written and routed between their contacts stream and their engagement streams: D, then A
seconds later, with a nurture enrollment and a second hot-lead task on the way)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from scoring.service import score_leads
from store.db import make_engine
from store.models import Activity, Lead, LeadLifecycle, LeadScore, SyncWindow, WindowStatus
from tests.factories import make_connection
from tests.scoring.test_monitor import TRAIN_DAY, as_of_day, trained_store_copy

NOW = as_of_day(TRAIN_DAY)


@pytest.fixture
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{trained_store_copy(tmp_path_factory, 'midsync')}")
    yield engine
    engine.dispose()


def _split_and_touch(session: Session, touched: int) -> tuple[list[int], list[int]]:
    """Every other open lead moved to a HubSpot connection; ``touched`` leads of each connection
    changed by a sync after their score (stale). Returns the stale ids of each connection."""
    hs = make_connection(session, "hs", kind="hubspot")
    ids = list(session.scalars(select(Lead.id).where(Lead.lifecycle == LeadLifecycle.open).order_by(Lead.id)))
    moved = ids[1::2]
    session.execute(update(Lead).where(Lead.id.in_(moved)).values(connection_id=hs.id))
    stale_sf, stale_hs = ids[0::2][:touched], moved[:touched]
    # Scored after every stored activity arrived; then a sync changed the touched leads.
    scored = datetime.now(UTC) - timedelta(hours=1)
    session.execute(update(Activity).values(synced_at=scored - timedelta(minutes=1)))
    session.execute(update(LeadScore).values(scored_at=scored))
    session.execute(update(Lead).where(Lead.id.in_(stale_sf + stale_hs))
                    .values(inputs_changed_at=scored + timedelta(minutes=30)))
    return stale_sf, stale_hs


def _unit(session: Session, stage: int, stream: str, status: str, moved_ago: timedelta) -> SyncWindow:
    hs_id = session.scalar(select(Lead.connection_id).where(Lead.connection_id.is_not(None))
                           .order_by(Lead.connection_id.desc()).limit(1))
    unit = SyncWindow(connection_id=hs_id, plan=1, plan_until=NOW, server_time=NOW, full=False, stage=stage,
                      stream=stream, part=0, from_cursor=True, window_end=NOW, status=status, records=0,
                      api_calls=0)
    session.add(unit)
    session.flush()
    # The units' last move, on the wall clock (the hold is about a sync running now).
    session.execute(update(SyncWindow).where(SyncWindow.id == unit.id)
                    .values(updated_at=datetime.now(UTC) - moved_ago))
    return unit


def _current(session: Session, ids: list[int]) -> dict[int, int]:
    return dict(session.execute(select(LeadScore.lead_id, LeadScore.id).where(
        LeadScore.lead_id.in_(ids), LeadScore.is_current.is_(True))).tuples().all())


def test_leads_of_a_connection_mid_sync_wait_for_the_rest_of_its_streams(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        stale_sf, stale_hs = _split_and_touch(session, 40)
        # The contacts stream is read; the engagement streams (the next stage) are not yet.
        _unit(session, 0, "contacts", WindowStatus.done, timedelta(seconds=5))
        emails = _unit(session, 1, "emails", WindowStatus.pending, timedelta(seconds=5))
        before = _current(session, stale_hs)

        first = score_leads(session, as_of=NOW)

        assert first.held == {"hs": len(stale_hs)}
        assert first.scored == len(stale_sf)
        assert _current(session, stale_hs) == before  # not rescored: no new score, write or routing
        assert first.to_dict()["held"] == {"hs": len(stale_hs)}

        # Asked for by id, a lead is scored as asked.
        asked = score_leads(session, as_of=NOW, lead_ids=stale_hs[:3])
        assert asked.scored == 3 and asked.held == {}

        # The last unit done, the plan is finished: the next run scores the leads that waited.
        emails.status = WindowStatus.done
        session.flush()
        after = score_leads(session, as_of=NOW)
        assert after.held == {} and after.scored == len(stale_hs) - 3
        session.rollback()


def test_a_stuck_sync_holds_nothing_back(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        stale_sf, stale_hs = _split_and_touch(session, 10)
        # A unit failing for good, untouched for an hour: its leads are as complete as they get.
        _unit(session, 0, "contacts", WindowStatus.failed, timedelta(hours=1))
        summary = score_leads(session, as_of=NOW)
        assert summary.held == {} and summary.scored == len(stale_sf) + len(stale_hs)
        session.rollback()
