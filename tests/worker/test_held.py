"""A task a dead worker holds is not a problem once the store shows its work done since
(worker.held): measured from the task's arguments and the time it was taken, never assumed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from store.db import engine_for
from store.migrate import upgrade
from store.models import Lead, LeadScore, ModelVersion, SyncRun, SyncWindow
from tests.factories import make_connection, make_lead
from worker.held import work_done_since
from worker.liveness import HeldTask

TAKEN = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def _held(name: str, *args: object) -> HeldTask:
    return HeldTask(name=name, task_id=f"{name}{args}", taken_at=TAKEN, returns_at=TAKEN + timedelta(hours=1),
                    args=tuple(args))


def test_only_work_the_store_shows_done_since_the_task_was_taken_settles_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'held.db'}"
    upgrade(url)
    engine = engine_for(url)
    with Session(engine) as session:
        sf, hs = make_connection(session, "sf"), make_connection(session, "hs", kind="hubspot")
        windows = []
        for part, status in enumerate(("done", "running")):
            window = SyncWindow(connection_id=sf.id, plan=1, plan_until=TAKEN, server_time=TAKEN, stage=0,
                                stream="leads", part=part, window_end=TAKEN, status=status)
            session.add(window)
            windows.append(window)
        # sf: a sync succeeded after the task was taken; hs: only before it, and one failed after.
        session.add_all([
            SyncRun(connection_id=sf.id, stream="leads", status="succeeded", started_at=TAKEN + timedelta(minutes=2),
                    finished_at=TAKEN + timedelta(minutes=3)),
            SyncRun(connection_id=hs.id, stream="contacts", status="succeeded", started_at=TAKEN - timedelta(minutes=5),
                    finished_at=TAKEN - timedelta(minutes=4)),
            SyncRun(connection_id=hs.id, stream="contacts", status="failed", started_at=TAKEN + timedelta(minutes=2)),
        ])
        session.commit()
        done_window, open_window = windows[0].id, windows[1].id
    held = [_held("leadscore.sync.window", "sf", done_window), _held("leadscore.sync.window", "sf", open_window),
            _held("leadscore.sync.connection", "sf"), _held("leadscore.sync.connection", "hs"),
            _held("leadscore.writeback.drain"), _held("leadscore.train.model"),
            _held("leadscore.sync.window")]  # arguments unreadable: cannot tell, so not settled
    done = work_done_since(engine, held)
    assert done == {
        held[0].task_id: f"its sync unit {done_window} finished",
        held[2].task_id: "a sync of sf succeeded since, at 09:03 UTC",
        # Nothing pending in the outbox: the drain has nothing of its own left.
        held[4].task_id: "no write queued before it is still pending",
    }
    engine.dispose()


def test_a_held_scoring_is_settled_once_no_lead_that_changed_before_it_waits_for_a_score(tmp_path: Path) -> None:
    """A worker killed while scoring changed leads: later scorings (the beat's, or `leadscore
    score`) score those leads, so the held task has nothing left; a trial saw `status` exit 1 for
    the hour with every lead scored. Leads that changed after it was taken are not its work."""
    url = f"sqlite:///{tmp_path / 'held.db'}"
    upgrade(url)
    engine = engine_for(url)
    held = _held("leadscore.score.changed")
    with Session(engine) as session:
        sf = make_connection(session, "sf")
        leads = [make_lead(session, sf, inputs_hash=f"h{i}", inputs_changed_at=TAKEN - timedelta(minutes=5))
                 for i in range(3)]
        session.commit()
        ids = [lead.id for lead in leads]
    # Before any model: the task would score nothing.
    assert work_done_since(engine, [held]) == {held.task_id: "no champion model to score with: it would score nothing"}

    with Session(engine) as session:
        mv = ModelVersion(version="v1", status="champion", family="catboost", artifact=b"", promoted_at=TAKEN)
        session.add(mv)
        session.flush()

        def scored(lead_id: int, minutes: int = 2) -> None:
            session.add(LeadScore(lead_id=lead_id, model_version_id=mv.id, probability=0.1, score=50, tier="C",
                                  reasons=[], inputs_hash=session.get(Lead, lead_id).inputs_hash,  # type: ignore[union-attr]
                                  is_current=True, scored_at=TAKEN + timedelta(minutes=minutes)))

        scored(ids[0])
        session.commit()
        # Two leads that changed before the task was taken still wait: its work is undone.
        assert work_done_since(engine, [held]) == {}
        scored(ids[1])
        session.get(Lead, ids[2]).inputs_changed_at = TAKEN + timedelta(minutes=4)  # type: ignore[union-attr]
        session.commit()
        # The one left changed after: a newer task's work.
        assert work_done_since(engine, [held]) == {
            held.task_id: "every lead that waits for a score changed after it was taken (1: newer tasks)"}
        scored(ids[2], minutes=6)
        session.commit()
        assert work_done_since(engine, [held]) == {held.task_id: "no open lead waits for a score"}
    engine.dispose()
