"""A scoring run explains a batch while a writer thread writes the one before: the session is
never used by two threads at once, and a failed write ends the run with its own error."""

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
def test_the_session_is_used_by_one_thread_at_a_time(
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

    insert_rows = score_writes.insert_rows

    def timed_insert(*args: Any) -> None:  # COPY / executemany go to the driver, past the events
        before()
        try:
            insert_rows(*args)
        finally:
            after()

    monkeypatch.setattr(score_writes, "insert_rows", timed_insert)
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
    assert summary.scored == 240 and len(calls) == 240
    threads = {name for name, _, _ in spans}
    assert len(threads) == 2, threads  # this thread reads, the writer thread writes
    spans.sort(key=lambda s: s[1])
    for (name_a, _, end_a), (name_b, start_b, _) in zip(spans, spans[1:], strict=False):
        assert name_a == name_b or end_a <= start_b, f"{name_a} and {name_b} used the session at once"
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
    # The third batch was explained meanwhile, but never written: the run stopped at the error.
    assert len(calls) == 45
    session.flush()
    written = session.scalar(select(func.count()).select_from(LeadScore))
    assert written == 80  # the first two batches' rows (the caller's rollback removes them)
