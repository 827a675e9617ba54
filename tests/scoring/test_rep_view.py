"""What a rep sees: rank score, likelihood, fit/engagement, ageing, 7-day change, history, tiers."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config.errors import LeadscoreError
from scoring import registry
from scoring.reference import rank
from scoring.score_writes import render_queued
from scoring.service import explain_lead, find_lead, score_leads, stale_lead_ids
from scoring.tiers import Policy, set_policy, tiers_for
from store.models import Lead, LeadLifecycle, LeadScore, Outbox, QuarantinedRecord
from tests.factories import BASE_TIME, add_activities, make_lead, synthetic_population, synthetic_training

AS_OF = BASE_TIME + timedelta(days=500)


def _champion(session: Session) -> registry.ModelVersion:
    result, tset = synthetic_training()
    return registry.register(session, result, train_window=tset.window, status="champion")


def _current(session: Session, lead_id: int) -> LeadScore:
    return session.scalars(select(LeadScore).where(LeadScore.lead_id == lead_id, LeadScore.is_current.is_(True))).one()


def _outbox_count(session: Session, lead_id: int | None = None) -> int:
    stmt = select(func.count()).select_from(Outbox)
    if lead_id is not None:
        stmt = stmt.where(Outbox.lead_id == lead_id)
    return int(session.scalar(stmt) or 0)


def test_rank_is_the_share_of_reference_leads_outranked() -> None:
    ref = np.sort(np.linspace(0.0, 1.0, 101))
    assert rank(np.array([-1.0, 0.5, 2.0]), ref).tolist() == [1, 50, 99]
    assert rank(np.array([0.905]), ref).tolist() == [90]  # outranks 91 of 101
    assert rank(np.array([0.3]), []).tolist() == [50]


def test_a_quiet_lead_ages_its_engagement_falls_and_fields_are_rewritten_only_on_change(
    any_session: Session,
) -> None:
    conn = synthetic_population(any_session, leads=200, seed=7)
    _champion(any_session)
    hot = make_lead(any_session, conn, crm_created_at=AS_OF - timedelta(days=12), title="VP Engineering")
    # A burst of engagement in the last days, then nothing more.
    add_activities(any_session, hot, [
        *(("web_visit", AS_OF - timedelta(days=2, hours=h), "/pricing") for h in range(6)),
        ("meeting", AS_OF - timedelta(days=3), "Intro call"),
        *(("email_click", AS_OF - timedelta(days=4, hours=h), None) for h in range(3)),
    ])
    first = score_leads(any_session, as_of=AS_OF)
    assert first.scored == 201
    start = _current(any_session, hot.id)
    assert start.engagement_score is not None and start.engagement_score >= 80
    assert start.next_aging_at == AS_OF - timedelta(days=4, hours=2) + timedelta(days=7)
    written = _outbox_count(any_session, hot.id)
    assert written == 1

    # One quiet day: no window moved (the first moves at 2 days 22 hours), nothing is rescored or written.
    score_leads(any_session, as_of=AS_OF + timedelta(days=1))
    assert _current(any_session, hot.id).id == start.id and _outbox_count(any_session, hot.id) == written

    # Eight quiet days: the 7-day window emptied; the lead is rescored.
    assert hot.id in stale_lead_ids(any_session, [registry.champion(any_session).id],  # type: ignore[union-attr]
                                     as_of=AS_OF + timedelta(days=8))
    total_before = _outbox_count(any_session)
    day8 = score_leads(any_session, as_of=AS_OF + timedelta(days=8))
    later = _current(any_session, hot.id)
    assert later.id != start.id and later.as_of == AS_OF + timedelta(days=8)
    assert later.score_change == later.score - start.score
    # Every rescored lead got a CRM write only if something a rep sees changed.
    rescored = list(any_session.scalars(
        select(LeadScore).where(LeadScore.as_of == AS_OF + timedelta(days=8), LeadScore.is_current.is_(True))))
    assert len(rescored) == day8.scored > 0
    shown_changed = 0
    for row in rescored:
        before = any_session.scalars(
            select(LeadScore).where(LeadScore.lead_id == row.lead_id, LeadScore.id < row.id)
            .order_by(LeadScore.id.desc()).limit(1)).one()
        fields = ("score", "tier", "reasons", "fit_score", "engagement_score", "score_change")
        same = all(getattr(before, f) == getattr(row, f) for f in fields) \
            and round(100 * before.probability, 1) == round(100 * row.probability, 1)
        shown_changed += not same
    assert _outbox_count(any_session) - total_before == day8.outbox_rows == shown_changed

    # Long after the last event every window is empty: the engagement score has fallen.
    score_leads(any_session, as_of=AS_OF + timedelta(days=95))
    cold = _current(any_session, hot.id)
    assert cold.as_of == AS_OF + timedelta(days=95)
    assert cold.engagement_score is not None and cold.engagement_score < start.engagement_score - 30
    assert cold.next_aging_at is None or cold.score_change != 0


def test_change_over_seven_days_and_history(any_session: Session) -> None:
    conn = synthetic_population(any_session, leads=80, seed=8)
    _champion(any_session)
    lead = make_lead(any_session, conn, crm_created_at=AS_OF - timedelta(days=20))
    score_leads(any_session, as_of=AS_OF)
    before = _current(any_session, lead.id)
    assert before.score_change is None  # a first score: nothing to compare with yet
    # A week later the lead comes back hot.
    week = AS_OF + timedelta(days=7)
    add_activities(any_session, lead, [
        *(("web_visit", week - timedelta(hours=h + 1), "/pricing") for h in range(5)),
        ("meeting", week - timedelta(hours=8), None),
    ])
    any_session.execute(
        Lead.__table__.update().where(Lead.id == lead.id).values(inputs_changed_at=week)  # type: ignore[attr-defined]
    )
    score_leads(any_session, as_of=week)
    after = _current(any_session, lead.id)
    assert after.score > before.score and after.score_change == after.score - before.score
    info = explain_lead(any_session, lead.crm_id, history=True)
    assert [h["score"] for h in info["history"]] == [before.score, after.score]
    assert info["score_change"] == after.score_change and info["history"][-1]["as_of"] == week.isoformat()
    assert all(h["model"] for h in info["history"])
    outbox = any_session.scalars(select(Outbox).where(Outbox.lead_id == lead.id).order_by(Outbox.id.desc())).first()
    assert outbox is not None and render_queued(any_session, [outbox]) == 1  # as the drain will send it
    assert outbox.payload is not None and outbox.payload["score_change"] == after.score_change
    # The change names the score it is measured against: the week-old one here.
    from worker.cli.scoring import _score_line

    assert info["score_change_since"] == AS_OF.date().isoformat()
    assert f"score {after.score} ({after.score_change:+d} since {AS_OF.date().isoformat()})," in _score_line(info)
    # Rescored 10 days after that (no score in between): measured against the first, 10 days back.
    later = week + timedelta(days=10)
    add_activities(any_session, lead, [("meeting", later - timedelta(hours=2), None)])
    any_session.execute(
        Lead.__table__.update().where(Lead.id == lead.id).values(inputs_changed_at=later)  # type: ignore[attr-defined]
    )
    score_leads(any_session, as_of=later)
    latest = _current(any_session, lead.id)
    again = explain_lead(any_session, lead.crm_id)
    assert again["score_change_since"] == week.date().isoformat()
    assert latest.score_change == latest.score - after.score  # the score the date names


def test_explain_says_a_converted_or_closed_lead_keeps_its_last_score_while_open(any_session: Session) -> None:
    # Its current score row stays (history), with the tier it had while open: read without its
    # standing, a converted lead's "tier A" looks like a hot lead to call.
    conn = synthetic_population(any_session, leads=60, seed=8)
    _champion(any_session)
    lead = make_lead(any_session, conn, crm_created_at=AS_OF - timedelta(days=20))
    score_leads(any_session, as_of=AS_OF)
    assert explain_lead(any_session, lead.crm_id)["standing"] is None
    lead.lifecycle, lead.status, lead.is_converted = LeadLifecycle.converted, "Closed - Converted", True
    lead.converted_at = AS_OF + timedelta(days=2)
    never = make_lead(any_session, conn, lifecycle=LeadLifecycle.closed, status="Closed - Not Converted")
    any_session.flush()
    info = explain_lead(any_session, lead.crm_id)
    converted_on = (AS_OF + timedelta(days=2)).date().isoformat()
    assert info["standing"] == f"converted {converted_on} (CRM status: Closed - Converted)"
    assert info["lifecycle"] == "converted" and info["score"] == _current(any_session, lead.id).score
    with pytest.raises(LeadscoreError, match="is closed \\(CRM status: Closed - Not Converted\\) and was never "
                       "scored: leadscore scores open leads only"):
        explain_lead(any_session, never.crm_id)
    opened = make_lead(any_session, conn)
    with pytest.raises(LeadscoreError, match="has no score yet: run `leadscore score`"):
        explain_lead(any_session, opened.crm_id)


def test_likelihood_tiers_cut_the_probability_and_score_tiers_the_rank(any_session: Session) -> None:
    probs = np.array([0.02, 0.12, 0.31, 0.6])
    ranks = np.array([35, 75, 92, 99])
    assert tiers_for(Policy("likelihood", {"A": 30, "B": 10, "C": 5}), probs) == ["D", "B", "A", "A"]
    assert tiers_for(Policy("score", {"A": 90, "B": 70, "C": 40}), probs, scores=ranks) == ["D", "B", "A", "A"]
    synthetic_population(any_session, leads=60, seed=9)
    _champion(any_session)
    policy = set_policy(any_session, "likelihood", {"A": 30, "B": 15, "C": 5}, created_by="test")
    assert policy.mode == "likelihood"
    score_leads(any_session, as_of=AS_OF)
    rows = any_session.scalars(select(LeadScore).where(LeadScore.is_current.is_(True))).all()
    for row in rows:
        pct = 100 * row.probability
        expected = "A" if pct >= 30 else "B" if pct >= 15 else "C" if pct >= 5 else "D"
        assert row.tier == expected


@pytest.mark.parametrize("mode", ["score", "likelihood"])
def test_threshold_modes_validate(mode: str, sqlite_session: Session) -> None:
    from scoring.tiers import TierPolicyError

    with pytest.raises(TierPolicyError, match="ordered"):
        set_policy(sqlite_session, mode, {"A": 40, "B": 70, "C": 10}, created_by="test")


def test_account_score_one_hot_lead_vs_five_warm_vs_five_cold() -> None:
    from scoring.accounts import account_scores, combine

    reference = np.sort(np.random.default_rng(0).beta(1, 9, 4000))  # a 10 % base rate population
    rows = [("hot", 0.6, 95)]
    rows += [("warm", 0.2, 60 + i) for i in range(5)]
    rows += [("cold", 0.02, 20) for _ in range(5)]
    rows += [("", 0.9, 99)]  # no company: no account
    scores = account_scores(rows, reference)
    assert set(scores) == {"hot", "warm", "cold"}
    assert combine([0.2] * 5) == pytest.approx(1 - 0.8**5)
    assert scores["warm"].probability > scores["hot"].probability > scores["cold"].probability
    assert scores["hot"].score >= 95 and scores["warm"].score >= 95 and scores["cold"].score < 70
    assert (scores["hot"].engaged_people, scores["warm"].engaged_people, scores["cold"].engaged_people) == (1, 5, 0)
    assert scores["warm"].leads == 5


def test_a_number_that_is_one_leads_crm_id_and_anothers_internal_id_is_refused(any_session: Session) -> None:
    # HubSpot's CRM ids are numbers: "explain 5864" showed the HubSpot lead 5864 while the header
    # of another lead's explain read "(id 5864)". id:N is always the internal id.
    conn = synthetic_population(any_session, leads=5, seed=8)
    first = make_lead(any_session, conn)
    second = make_lead(any_session, conn, crm_id=str(first.id))
    with pytest.raises(LeadscoreError, match=f"'{first.id}' names two leads: the one whose {conn.name} CRM id it is "
                       f"\\(give `{conn.name}:{first.id}` or `id:{second.id}`\\) and the one whose internal id it is "
                       f"\\(give `id:{first.id}`\\)"):
        find_lead(any_session, str(first.id))
    # The CRM id in its connection, as a rep copies it from the CRM: the lead whose CRM id it is.
    assert find_lead(any_session, f"{conn.name}:{first.id}").id == second.id
    with pytest.raises(LeadscoreError, match=f"no lead with CRM id '424242' in connection {conn.name}"):
        find_lead(any_session, f"{conn.name}:424242")
    assert find_lead(any_session, f"id:{first.id}").id == first.id
    assert find_lead(any_session, f"id:{second.id}").id == second.id
    assert find_lead(any_session, first.crm_id).id == first.id
    with pytest.raises(LeadscoreError, match="no lead with internal id 999999"):
        find_lead(any_session, "id:999999")


def test_explain_of_a_quarantined_record_says_why_it_has_no_score(any_session: Session) -> None:
    # A user trial: an open lead whose head count was absurd was quarantined by the sync, and
    # `explain` said "no lead with CRM id", nothing about why a lead the rep sees has no score.
    conn = synthetic_population(any_session, leads=3, seed=8)
    any_session.add(QuarantinedRecord(connection_id=conn.id, stream="leads", crm_id="00QQUARANTINED1",
                                      reason="absurd_value: NumberOfEmployees=1000000000", raw={},
                                      created_at=BASE_TIME))
    any_session.flush()
    with pytest.raises(LeadscoreError) as refused:
        find_lead(any_session, "00QQUARANTINED1")
    assert str(refused.value) == (
        f"00QQUARANTINED1 was quarantined by the {conn.name} sync on {BASE_TIME:%Y-%m-%d} (leads: absurd_value: "
        "NumberOfEmployees=1000000000), so it has no score; fix the record in the CRM and the next sync reads it")
    with pytest.raises(LeadscoreError, match="no lead with CRM id or internal id '00QNOPE'"):
        find_lead(any_session, "00QNOPE")
