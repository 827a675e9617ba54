"""A scoring run computes its SHAP values in calls that gather several batches (CatBoost's SHAP
costs a fixed part per call), the first batch alone: the rows written are the same however the
calls are cut, and a failed call ends the run with its error."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import catboost
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.app_config import TierConfig
from scoring import registry, score_run
from scoring.champions import ensure_score_reference
from scoring.score_writes import render_queued
from scoring.service import score_leads
from store.models import LeadScore, Outbox
from tests.factories import BASE_TIME, synthetic_population, synthetic_training

AS_OF = BASE_TIME + timedelta(days=500)
TIERS = TierConfig(mode="capacity", thresholds={"A": 10, "B": 20, "C": 30})


@pytest.fixture
def shap_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The rows of every SHAP call: each looks its rows' leaves up once (``calc_leaf_indexes``,
    scoring.leaf_shap; the real computation, counted on its way)."""
    rows: list[int] = []
    real = catboost.CatBoost.calc_leaf_indexes

    def counted(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        rows.append(data.num_row())
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(catboost.CatBoost, "calc_leaf_indexes", counted)
    yield rows


def _scored(session: Session) -> list[tuple[Any, ...]]:
    scores = session.execute(select(LeadScore.lead_id, LeadScore.probability, LeadScore.score, LeadScore.tier,
                                    LeadScore.reasons, LeadScore.fit_score, LeadScore.engagement_score)
                             .order_by(LeadScore.lead_id)).all()
    assert render_queued(session, list(session.scalars(select(Outbox)))) > 0  # as the drain will send them
    writes = session.execute(select(Outbox.lead_id, Outbox.payload_hash).order_by(Outbox.lead_id)).all()
    return [tuple(r) for r in scores] + [tuple(r) for r in writes]


def test_gathered_calls_write_what_one_call_per_batch_writes(
    any_session: Session, shap_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    session = any_session
    synthetic_population(session, leads=240, seed=8)
    result, tset = synthetic_training()
    mv = registry.register(session, result, train_window=tset.window, status="champion")
    ensure_score_reference(session, mv)  # its SHAP call made once, before the runs compared
    session.flush()
    runs: dict[int, list[tuple[Any, ...]]] = {}
    calls: dict[int, list[int]] = {}
    for gather in (1, 100, 10_000):
        monkeypatch.setattr(score_run, "SHAP_ROWS", gather)
        shap_calls.clear()
        savepoint = session.begin_nested()
        # The same instant for every run: payloads (hashed) carry the time they were scored.
        summary = score_leads(session, as_of=AS_OF, all=True, batch_size=30, tier_default=TIERS)
        assert summary.scored == 240
        runs[gather] = _scored(session)
        calls[gather] = list(shap_calls)
        savepoint.rollback()
    # The first call takes the first batch alone (the writes wait for its reasons), then calls
    # gather batches until they hold SHAP_ROWS rows; the last takes what is left.
    assert calls == {1: [30] * 8, 100: [30, 120, 90], 10_000: [30, 210]}
    lead_scores = {gather: [r[:7] for r in rows if len(r) == 7] for gather, rows in runs.items()}
    assert len(lead_scores[1]) == 240
    assert lead_scores[1] == lead_scores[100] == lead_scores[10_000]
    outbox = {gather: [r[0] for r in rows if len(r) == 2] for gather, rows in runs.items()}
    assert outbox[1] == outbox[100] == outbox[10_000] and len(outbox[1]) == 240


def test_a_failed_shap_call_ends_the_run_with_its_error(
    any_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = any_session
    synthetic_population(session, leads=200, seed=9)
    result, tset = synthetic_training()
    registry.register(session, result, train_window=tset.window, status="champion")
    monkeypatch.setattr(score_run, "SHAP_ROWS", 60)
    real = catboost.CatBoost.calc_leaf_indexes
    made: list[int] = []

    def second_fails(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(data.num_row())  # each SHAP call looks its rows' leaves up once
        if len(made) == 2:
            raise catboost.CatBoostError("out of memory in SHAP")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(catboost.CatBoost, "calc_leaf_indexes", second_fails)
    with pytest.raises(catboost.CatBoostError, match="out of memory in SHAP"):
        score_leads(session, as_of=AS_OF, all=True, batch_size=20, tier_default=TIERS)
    # The first call's three batches may be written; none of the failed call's or later ones.
    written = session.scalars(select(LeadScore.lead_id)).all()
    assert len(written) <= 60
