"""A scoring run planned once and scored in chunks (as parallel workers do) writes the same score
rows, tiers, reasons and outbox rows as one ``score_leads`` call, in every tier mode."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.app_config import TierConfig
from scoring import registry
from scoring.score_run import retier_to_plan
from scoring.score_writes import render_queued
from scoring.service import ScoringPlan, plan_scoring, score_chunk, score_leads
from scoring.tiers import Policy, assign_tiers, current_scores
from store.models import Lead, LeadLifecycle, LeadScore, Outbox
from tests.factories import BASE_TIME, make_activity, synthetic_population, synthetic_training

AS_OF = BASE_TIME + timedelta(days=500)
TIERS = {"capacity": TierConfig(mode="capacity", thresholds={"A": 10, "B": 20, "C": 30})}


def _written(session: Session) -> dict[int, tuple[Any, ...]]:
    """Per lead: what its current score and pending outbox row say (the write time left out)."""
    out: dict[int, tuple[Any, ...]] = {}
    for s in session.scalars(select(LeadScore).where(LeadScore.is_current.is_(True))):
        box = session.scalars(select(Outbox).where(Outbox.lead_score_id == s.id)).one_or_none()
        render_queued(session, [box] if box else [])  # as the drain will send it
        payload = {k: v for k, v in (box.payload if box else {}).items() if k != "scored_at"}
        out[s.lead_id] = (s.score, s.tier, list(s.reasons), round(s.probability, 12), s.fit_score,
                          s.engagement_score, s.score_change, s.next_aging_at, s.model_version_id,
                          json.dumps(payload, sort_keys=True))
    return out


def test_chunks_of_a_plan_write_what_one_run_writes(sqlite_session: Session) -> None:
    """Capacity tiers, the mode where a lead's tier depends on the other leads' new scores."""
    session = sqlite_session
    mode = "capacity"
    synthetic_population(session, leads=150, seed=6)
    result, tset = synthetic_training()
    registry.register(session, result, train_window=tset.window, status="champion")
    # A first run gives every lead a current score: the second run's capacity cut-offs then mix
    # existing scores with new ones, and outbox rows depend on what changed.
    score_leads(session, as_of=AS_OF - timedelta(days=30), all=True, tier_default=TIERS[mode])
    session.commit()

    nested = session.begin_nested()
    whole = score_leads(session, as_of=AS_OF, all=True)
    expected = _written(session)
    nested.rollback()

    plan = ScoringPlan.from_dict(json.loads(json.dumps(plan_scoring(session, as_of=AS_OF, all=True).to_dict())))
    chunks = plan.chunks(60)
    assert len(chunks) == 3 and [i for c in chunks for i in c] == plan.lead_ids
    assert plan.cutoffs is not None
    summary = plan.summary()
    for chunk in reversed(chunks):  # any order: chunks do not depend on each other
        summary.add(score_chunk(session, plan, chunk, batch_size=40))
    assert _written(session) == expected
    assert (summary.scored, summary.outbox_rows, summary.tier_changes, summary.tiers) == (
        whole.scored, whole.outbox_rows, whole.tier_changes, whole.tiers)
    assert summary.scored == len(plan.lead_ids) > 120


def test_a_run_over_every_live_lead_compares_reasons_with_the_same_typical_leads(
    sqlite_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capacity run over every live lead takes the live sample's features from the batches it
    read; what the reasons compare with equals what reading the sample from the store gives."""
    from scoring import champions

    # A sample of some of the live leads, spread over every batch (as 2,000 of a larger org).
    monkeypatch.setattr(champions, "LIVE_SAMPLE", 160)
    monkeypatch.setattr(champions, "LIVE_SAMPLE_MIN", 100)
    session = sqlite_session
    synthetic_population(session, leads=320, seed=7)
    result, tset = synthetic_training()
    mv = registry.register(session, result, train_window=tset.window, status="champion")
    champions._live_typical_cache.clear()
    read = champions.live_typical(session, mv, AS_OF)
    assert read is not None and read["common"]  # enough live leads for a sample of its own

    champions._live_typical_cache.clear()
    summary = score_leads(session, as_of=AS_OF, all=True, tier_default=TIERS["capacity"], batch_size=70)
    assert summary.scored >= champions.LIVE_SAMPLE_MIN
    (cached,) = [typical for (_, version), (_, typical) in champions._live_typical_cache.items()
                 if version == mv.version]
    assert cached == read


def test_a_plan_with_probability_cutoffs_from_an_older_leadscore_is_refused() -> None:
    """Capacity cut-offs are 1-99 scores now; an older queued plan's probabilities compared with
    scores would tier nearly every lead A (and route it as a hot lead)."""
    from config.errors import LeadscoreError

    old = {"as_of": AS_OF.isoformat(), "model_version": "v1", "model_ids": [1], "policy_id": 1, "lead_ids": [1, 2],
           "considered": 2, "cutoffs": {"A": 0.31, "B": 0.12, "C": 0.05}}
    with pytest.raises(LeadscoreError, match="older leadscore"):
        ScoringPlan.from_dict(old)
    plan = ScoringPlan.from_dict({**{k: v for k, v in old.items() if k != "cutoffs"},
                                  "score_cutoffs": {"A": 62.0, "B": 46.0, "C": 26.0}})
    assert plan.cutoffs == {"A": 62.0, "B": 46.0, "C": 26.0}
    assert ScoringPlan.from_dict(plan.to_dict()) == plan


def _tiers_by_score(session: Session) -> dict[int, set[str]]:
    """Per 1-99 score, the tiers the open leads' current scores hold."""
    out: dict[int, set[str]] = {}
    for score, tier in session.execute(
        select(LeadScore.score, LeadScore.tier).join(Lead, Lead.id == LeadScore.lead_id)
        .where(LeadScore.is_current.is_(True), Lead.lifecycle == LeadLifecycle.open)
    ):
        out.setdefault(int(score), set()).add(str(tier))
    return out


def test_a_capacity_run_over_some_leads_tiers_the_others_by_its_cutoffs_too(sqlite_session: Session) -> None:
    """A run's new scores move the capacity cut-offs: the leads it did not rescore follow them, so
    a score is one tier on every open lead (in the CRM, a lower score never outranks a higher one),
    whether one process scores the run or workers score its chunks."""
    session = sqlite_session
    synthetic_population(session, leads=150, seed=6)
    result, tset = synthetic_training()
    registry.register(session, result, train_window=tset.window, status="champion")
    score_leads(session, as_of=AS_OF - timedelta(days=30), all=True, tier_default=TIERS["capacity"])
    session.commit()
    some = sorted(_written(session))[:50]
    for lead in session.scalars(select(Lead).where(Lead.id.in_(some))):  # they engage: their scores rise
        for d in range(4):
            make_activity(session, lead, "web_visit", AS_OF - timedelta(days=1, hours=d), "/pricing")
        make_activity(session, lead, "meeting", AS_OF - timedelta(days=2))
    session.commit()

    nested = session.begin_nested()
    whole = score_leads(session, as_of=AS_OF, all=True, lead_ids=some)
    assert whole.scored == 50
    assert whole.retiered > 0  # this run moved the cut-offs past some of the other 100 leads
    assert all(len(tiers) == 1 for tiers in _tiers_by_score(session).values()), _tiers_by_score(session)
    current = current_scores(session)
    policy = Policy("capacity", TIERS["capacity"].thresholds)
    assert current["tier"].tolist() == assign_tiers(current["score"].to_numpy(), policy)
    expected = _written(session)
    nested.rollback()

    plan = ScoringPlan.from_dict(json.loads(json.dumps(plan_scoring(session, as_of=AS_OF, all=True,
                                                                     lead_ids=some).to_dict())))
    summary = plan.summary()
    for chunk in plan.chunks(20):
        summary.add(score_chunk(session, plan, chunk))
    summary.add(retier_to_plan(session, plan))  # the last chunk's task does this
    assert summary.retiered == whole.retiered
    assert _written(session) == expected
