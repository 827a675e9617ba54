"""A scoring run reads the next batch in a reader thread while it builds a batch's features (on
PostgreSQL; SQLite reads in the calling thread), and
explains a batch while the calling thread writes the one before: the session is never used by two
threads at once, the hook runs in the calling thread, and a failed write ends the run with its
own error."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from config.app_config import TierConfig
from scoring import registry, score_writes
from scoring.service import score_leads
from store.models import Lead, LeadScore, Outbox
from tests.factories import BASE_TIME, synthetic_population, synthetic_training

AS_OF = BASE_TIME + timedelta(days=500)
MODES = {"capacity": TierConfig(mode="capacity", thresholds={"A": 10, "B": 20, "C": 30}),
         "score": TierConfig(mode="score", thresholds={"A": 80, "B": 60, "C": 40})}


def _champion(session: Session) -> None:
    result, tset = synthetic_training()
    registry.register(session, result, train_window=tset.window, status="champion")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_session_is_used_by_one_thread_at_a_time_and_the_hook_in_the_calling_one(
    any_session: Session, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = any_session
    synthetic_population(session, leads=240, seed=8)
    _champion(session)
    spans: list[tuple[str, float, float]] = []  # (thread, start, end) of every use of the connection
    started: dict[int, float] = {}

    def before(*_: Any) -> None:
        started[threading.get_ident()] = time.perf_counter()

    def after(*_: Any) -> None:
        spans.append((threading.current_thread().name, started.pop(threading.get_ident()), time.perf_counter()))

    insert_columns = score_writes.insert_columns

    def timed_insert(*args: Any) -> None:  # COPY / executemany go to the driver, past the events
        before()
        try:
            insert_columns(*args)
        finally:
            after()

    monkeypatch.setattr(score_writes, "insert_columns", timed_insert)
    engine = session.get_bind().engine
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    calls: list[str] = []
    try:
        summary = score_leads(session, as_of=AS_OF, all=True, batch_size=30, tier_default=MODES[mode],
                              tier_change_hook=lambda *_: calls.append(threading.current_thread().name))
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    here = threading.current_thread().name
    assert summary.scored == 240 and set(calls) == {here} and len(calls) == 240
    reader = {name for name, _, _ in spans} - {here}
    if session.get_bind().dialect.name == "postgresql":
        assert len(reader) == 1 and next(iter(reader)).startswith("scoring-reads")
        assert sum(1 for name, _, _ in spans if name == here) > 8  # 8 batches written
        assert sum(1 for name, _, _ in spans if name != here) > 8 * 4  # 8 batches read, 4 reads each
    else:  # SQLite's work holds this process's GIL: its reads are made in the calling thread
        assert reader == set() and sum(1 for name, _, _ in spans if name == here) > 8 * 5
    # Never two threads at once: no use by one thread overlaps a use by another.
    overlaps = [(a, b) for a in spans for b in spans if a[0] != b[0] and a[1] < b[2] and b[1] < a[2]]
    assert overlaps == []
    current = session.scalar(select(func.count()).select_from(LeadScore).where(LeadScore.is_current.is_(True)))
    assert current == 240 == session.scalar(select(func.count()).select_from(Outbox))


def test_a_failed_write_ends_the_run_with_its_error_and_writes_no_later_batch(any_session: Session) -> None:
    session = any_session
    synthetic_population(session, leads=200, seed=9)
    _champion(session)
    calls: list[int] = []

    def hook(_session: Session, lead: Lead, *_: Any) -> None:
        calls.append(lead.id)
        if len(calls) == 45:  # in the second batch of 40
            raise RuntimeError("routing failed")

    with pytest.raises(RuntimeError, match="routing failed"):
        score_leads(session, as_of=AS_OF, all=True, batch_size=40, tier_default=MODES["score"],
                    tier_change_hook=hook)
    # The third batch was being explained meanwhile, but was never written: the run stopped at the error.
    assert len(calls) == 45
    session.flush()
    written = session.scalar(select(func.count()).select_from(LeadScore))
    assert written == 80  # the first two batches' rows (the caller's rollback removes them)


def test_an_in_memory_sqlite_store_scores(tmp_path: Any) -> None:
    """SQLite's in-memory connections refuse to be used from another thread: a SQLite store is read
    in the calling thread (no reader thread), so an in-memory one scores like a file."""
    from store.db import make_engine
    from store.models import Base

    engine = make_engine("sqlite:///:memory:")
    Base.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as session:
        synthetic_population(session, leads=150, seed=10)
        _champion(session)
        summary = score_leads(session, as_of=AS_OF, all=True, batch_size=40, tier_default=MODES["score"])
        assert summary.scored == 150 == session.scalar(select(func.count()).select_from(Outbox))
    engine.dispose()
