"""Tiers: score and capacity modes, policy versions, validation, preview = set, re-tiering."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from config.app_config import TierConfig
from scoring import registry
from scoring.service import explain_lead, score_leads
from scoring.tier_changes import MIN_TIER_CONVERSIONS, few_conversions_caution, preview, retier
from scoring.tiers import (
    Policy,
    TierPolicyError,
    active_policy,
    assign_tiers,
    current_scores,
    empty_capacity_tiers,
    parse_threshold_args,
    set_policy,
)
from store.models import Lead, LeadLifecycle, LeadScore, Outbox, TierPolicy
from tests.factories import BASE_TIME, synthetic_population, synthetic_training
from worker.cli.scoring import app

AS_OF = BASE_TIME + timedelta(days=500)


def _scored_store(session: Session, leads: int = 400) -> None:
    synthetic_population(session, leads=leads, seed=3)
    result, tset = synthetic_training()
    registry.register(session, result, train_window=tset.window, status="champion")
    score_leads(session, as_of=AS_OF)


def test_assign_tiers_in_score_mode() -> None:
    policy = Policy("score", {"A": 80, "B": 60, "C": 35})
    assert assign_tiers(np.array([100, 80, 79, 60, 35, 34, 0]), policy) == ["A", "A", "B", "B", "C", "D", "D"]


def test_assign_tiers_in_capacity_mode_cuts_shares_and_keeps_ties_together() -> None:
    values = np.linspace(1.0, 0.0, 100)
    tiers = assign_tiers(values, Policy("capacity", {"A": 10, "B": 20, "C": 30}))
    assert [tiers.count(t) for t in "ABCD"] == [10, 20, 30, 40]
    # 1-99 scores tie: a share's boundary inside a run of equal scores moves to the side nearer
    # the share. A's 2 leads: {99} (1 lead) is nearer than {99, 90, 90, 90} (4); A or B's 4 leads
    # take the 90s; A, B or C's 7 take the 80s and the 70.
    scores = np.array([99, 90, 90, 90, 80, 80, 70, 60, 50, 40])
    tiers = assign_tiers(scores, Policy("capacity", {"A": 20, "B": 20, "C": 30}))
    assert tiers == ["A", "B", "B", "B", "C", "C", "C", "D", "D", "D"]
    for score in set(scores.tolist()):  # one score, one tier
        assert len({t for t, s in zip(tiers, scores, strict=True) if s == score}) == 1
    # As near either way: the run goes into the tier.
    assert assign_tiers(np.array([99, 90, 90, 50]), Policy("capacity", {"A": 50, "B": 0, "C": 0})) == [
        "A", "A", "A", "D"]
    # Cut on a reference distribution: 0.95 is in the top 10 % of the reference, 0.55 is not.
    ref = np.linspace(1.0, 0.0, 101)
    assert assign_tiers(np.array([0.95, 0.55]), Policy("capacity", {"A": 10, "B": 20, "C": 30}), reference=ref) == [
        "A", "C"]


@pytest.mark.parametrize(
    ("mode", "thresholds", "message"),
    [
        ("score", {"A": 50, "B": 60, "C": 35}, "ordered A > B > C"),
        ("score", {"A": 80, "B": 60}, "tier C has no threshold"),
        ("score", {"A": 80, "B": 60, "C": 35, "E": 1}, "unknown tier 'E'"),
        ("score", {"A": 180, "B": 60, "C": 35}, "within"),
        ("score", {"A": "x", "B": 60, "C": 35}, r"threshold A: 'x' is not a number"),
        ("capacity", {"A": 50, "B": 30, "C": 30}, "room for D"),
        ("ranked", {"A": 1, "B": 2, "C": 3}, "unknown tier mode 'ranked'"),
    ],
)
def test_set_policy_refuses_bad_thresholds_naming_the_key(
    sqlite_session: Session, mode: str, thresholds: dict[str, Any], message: str
) -> None:
    with pytest.raises(TierPolicyError, match=message):
        set_policy(sqlite_session, mode, thresholds, created_by="test")
    assert sqlite_session.scalar(select(func.count(TierPolicy.id))) == 0


def test_policy_versions(any_session: Session) -> None:
    first = active_policy(any_session, TierConfig(mode="score", thresholds={"A": 70, "B": 50, "C": 20}))
    assert (first.version, first.thresholds, first.created_by) == (1, {"A": 70, "B": 50, "C": 20}, "config")
    assert active_policy(any_session, TierConfig()).id == first.id
    second = set_policy(any_session, "capacity", {"A": 10, "B": 20, "C": 30}, created_by="revops")
    assert second.version == 2 and not first.is_active
    assert active_policy(any_session).id == second.id
    assert any_session.scalar(select(func.count(TierPolicy.id)).where(TierPolicy.is_active.is_(True))) == 1


@pytest.mark.parametrize(
    ("mode", "thresholds"),
    [("score", {"A": 30, "B": 20, "C": 10}), ("capacity", {"A": 10, "B": 20, "C": 30})],
)
def test_preview_matches_what_set_then_produces(any_session: Session, mode: str, thresholds: dict[str, float]) -> None:
    _scored_store(any_session)
    # Leads that converted or closed since they were scored keep their last score as history:
    # re-tiering skips them, so the preview must not count them (it counted them once: a preview
    # of 1,223 changes, a `tiers set` of 1,213, and 10 "changes" on every later preview).
    gone = any_session.scalars(select(LeadScore.lead_id).where(LeadScore.is_current.is_(True))
                               .order_by(LeadScore.probability.desc()).limit(6)).all()
    for lead_id, state in zip(gone, [LeadLifecycle.converted, LeadLifecycle.closed] * 3, strict=True):
        any_session.get_one(Lead, lead_id).lifecycle = state
    any_session.flush()
    kept = {s.lead_id: s.tier for s in any_session.scalars(select(LeadScore).where(
        LeadScore.is_current.is_(True), LeadScore.lead_id.in_(gone)))}
    before_scores = current_scores(any_session)
    assert not set(gone) & set(before_scores["lead_id"])
    shown = preview(any_session, mode, thresholds, as_of=AS_OF)
    hooked: list[tuple[str | None, str]] = []
    policy = set_policy(any_session, mode, thresholds, created_by="test")
    changed = retier(any_session, policy, tier_change_hook=lambda s, lead, prev, cur: hooked.append(
        (prev.tier if prev else None, cur.tier)))
    after = current_scores(any_session)
    counts = after["tier"].value_counts().to_dict()
    assert {t: row["leads"] for t, row in shown["tiers"].items()} == {t: counts.get(t, 0) for t in "ABCD"}
    assert shown["changes"] == changed == len(hooked) > 0
    assert all(prev != cur for prev, cur in hooked)
    # Re-tiering keeps probabilities and scores: no retraining, no rescoring.
    merged = before_scores.merge(after, on="lead_id", suffixes=("_before", "_after"))
    assert (merged["probability_before"] == merged["probability_after"]).all()
    assert (merged["score_before"] == merged["score_after"]).all()
    pending = any_session.scalars(select(Outbox).where(Outbox.status == "pending")).all()
    # One pending write per open lead: re-tier writes superseded the older ones (the gone leads'
    # writes of their last score stay as they were).
    assert len([o for o in pending if o.lead_id not in gone]) == len(after)
    # The recent leads were labelled, so the preview reports conversion per tier.
    assert shown["recent"]["leads"] > 0
    assert retier(any_session, policy) == 0
    assert preview(any_session, mode, thresholds, as_of=AS_OF)["changes"] == 0
    assert {s.lead_id: s.tier for s in any_session.scalars(select(LeadScore).where(
        LeadScore.is_current.is_(True), LeadScore.lead_id.in_(gone)))} == kept
    # A re-tiered lead's history says so (a trial read the row as a rescore: same score, new tier).
    moved = after.merge(before_scores, on="lead_id", suffixes=("", "_before"))
    lead_id = int(moved.loc[moved["tier"] != moved["tier_before"], "lead_id"].iloc[0])
    history = explain_lead(any_session, f"id:{lead_id}", history=True)["history"]
    assert [h["retier"] for h in history] == [False] * (len(history) - 1) + [True]
    assert history[-1]["tier_policy"] == policy.version and history[-2]["tier_policy"] != policy.version


def test_preview_reports_recent_conversion_higher_in_a_than_d(sqlite_session: Session) -> None:
    _scored_store(sqlite_session, leads=800)
    shown = preview(sqlite_session, "capacity", {"A": 20, "B": 20, "C": 20}, as_of=AS_OF, recent_days=300)
    a, rest = shown["tiers"]["A"], [shown["tiers"][t] for t in "BCD"]
    # Recent leads are tiered by the score they had at 7 days against today's integer cut-offs, so
    # low tiers can hold few or no recent leads (ties at low scores); A must beat everyone else.
    rest_leads = sum(t["recent_leads"] for t in rest)
    rest_converted = sum(t["recent_leads"] * (t["recent_conversion_rate"] or 0) for t in rest)
    assert a["recent_leads"] > 0 and rest_leads > 0
    assert a["recent_conversion_rate"] > rest_converted / rest_leads
    # Each tier's conversions counted, and the tiers whose rate rests on too few named as such.
    few = []
    for tier, row in shown["tiers"].items():
        assert row.get("recent_converted", 0) == round((row["recent_conversion_rate"] or 0) * row["recent_leads"])
        if row["recent_leads"] and row["recent_converted"] < MIN_TIER_CONVERSIONS:
            few.append(tier)
    caution = shown["recent"].get("caution") or ""
    assert ("rests on fewer than" in caution) == bool(few), caution
    assert all(f" {t} (" in caution for t in few), caution
    # Leads the champion was trained or chosen on (before its test period) are said to be there.
    mv = registry.champion(sqlite_session)
    assert mv is not None
    test_from = pd.Timestamp(mv.params["split"]["test_from"])
    recent = shown["recent"]
    created = pd.to_datetime(pd.Series(sqlite_session.scalars(select(Lead.crm_created_at).where(
        Lead.crm_created_at >= datetime.fromisoformat(recent["created_from"]),
        Lead.crm_created_at <= datetime.fromisoformat(recent["created_to"]))).all()), utc=True)
    at_most = int((created + pd.Timedelta(days=recent["snapshot_days"]) < test_from).sum())
    assert 0 < recent["before_test"] <= at_most and recent["test_from"] == test_from.isoformat()
    assert "T" in recent["test_from"]  # ISO 8601 as created_from and created_to
    assert (f"{recent['before_test']:,} of these {recent['leads']:,} leads came before the champion's test "
            f"period (from {str(test_from.date())})") in caution, caution
    # Preview changed nothing.
    assert sqlite_session.scalar(select(func.count(TierPolicy.id))) == 1
    assert sqlite_session.scalar(select(func.count(LeadScore.id))) == 800


def test_a_tier_rate_on_few_conversions_comes_with_a_caution() -> None:
    """A crmsim trial's preview: B converted 4.3 % (2 of 46) below C's 7.4 % (4 of 54), without a word."""
    row = {"A": {"leads": 22, "converted": 8}, "B": {"leads": 46, "converted": 2},
           "C": {"leads": 54, "converted": 4}, "D": {"leads": 77, "converted": 1}}
    assert few_conversions_caution(row) == (
        "the recent conversion of tiers A (8 conversions), B (2 conversions), C (4 conversions) and D (1 conversion) "
        "rests on fewer than 10 conversions each: too few to compare tiers by it")
    assert few_conversions_caution({**row, "A": {"leads": 90, "converted": 30}, "B": {"leads": 0, "converted": 0},
                                    "C": {"leads": 200, "converted": 12}}) == (
        "the recent conversion of tier D (1 conversion) rests on fewer than 10 conversions: too few to compare it "
        "with the other tiers")
    assert few_conversions_caution({"A": {"leads": 90, "converted": 30}, "D": {"leads": 900, "converted": 10}}) is None


@pytest.mark.parametrize(
    ("args", "capacity", "message"),
    [
        (["A=x"], False, "not a number"),
        (["A80"], False, "expected TIER=VALUE"),
        (["A=10%"], False, "percentages are for --capacity"),
        (["A=10", "A=20"], False, "given twice"),
    ],
)
def test_parse_threshold_args_rejects_bad_usage(args: list[str], capacity: bool, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_threshold_args(args, capacity=capacity)


def test_parse_threshold_args() -> None:
    assert parse_threshold_args(["a=10%", "B=20%", "C=30"], capacity=True) == {"A": 10, "B": 20, "C": 30}


def test_cli_tiers_set_with_a_bad_value_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["tiers", "set", "A=x", "B=60", "C=35"])
    assert result.exit_code == 2
    assert "not a number" in result.output


def test_scoring_under_a_capacity_policy_cuts_the_new_distribution(any_session: Session) -> None:
    synthetic_population(any_session, leads=300, seed=11)
    result, tset = synthetic_training()
    registry.register(any_session, result, train_window=tset.window, status="champion")
    set_policy(any_session, "capacity", {"A": 10, "B": 20, "C": 30}, created_by="test")
    summary = score_leads(any_session, as_of=AS_OF)
    assert summary.scored == 300
    current = current_scores(any_session)
    expected = assign_tiers(current["score"].to_numpy(), Policy("capacity", {"A": 10, "B": 20, "C": 30}))
    assert current["tier"].tolist() == expected
    for _score, tiers in current.groupby("score")["tier"]:  # a rep never sees one score in two tiers
        assert tiers.nunique() == 1
    # Each cumulative tier (A; A or B; A, B or C) holds the whole-score boundary nearest its share:
    # the leads at or above some score, as near 10 %, 30 %, 60 % of the 300 as scores allow.
    at_or_above = current["score"].value_counts().sort_index(ascending=False).cumsum().tolist()
    ranks = {"A": 0, "B": 1, "C": 2, "D": 3}
    for i, (tier, target) in enumerate((("A", 30), ("B", 90), ("C", 180))):
        held = int((current["tier"].map(ranks) <= i).sum())
        assert held in [0, *at_or_above]
        assert abs(held - target) == min(abs(k - target) for k in [0, *at_or_above]), (tier, held)
    assert int((current["tier"] == "A").sum()) >= 25


def test_empty_capacity_tiers_name_the_least_share_that_fills_each() -> None:
    """Shares under one lead, and shares whose leads tie with another tier's, leave a tier empty;
    the share each line names is the least (at two significant digits) that gives it a lead."""
    ties = np.array([99] * 30 + [s for s in range(1, 90) for _ in range(10)], dtype="float64")  # 920 leads
    empty = empty_capacity_tiers(ties, {"A": 1, "B": 10, "C": 20})
    assert list(empty) == ["A"] and empty["A"].startswith("equal scores share a tier"), empty
    least = float(re.search(r"give A at least ([0-9.]+)%", empty["A"]).group(1))  # type: ignore[union-attr]
    assert least == 1.6  # the 30 leads at 99 join A once its share is nearer 30 leads than none
    assert empty_capacity_tiers(ties, {"A": least, "B": 10, "C": 20}) == {}
    assert "A" in empty_capacity_tiers(ties, {"A": least - 0.1, "B": 10, "C": 20})
    tiny = empty_capacity_tiers(ties, {"A": 5, "B": 0.05, "C": 20})
    assert tiny == {"B": "0.05% of 920 current leads is 0.46 of a lead; give B at least 0.93%"}, tiny
    # B's leads start at A's cut-off: it needs nearer the next run of ten equal scores than none.
    assert empty_capacity_tiers(ties, {"A": 5, "B": 0.93, "C": 20}) == {}
    assert "B" in empty_capacity_tiers(ties, {"A": 5, "B": 0.92, "C": 20})
    crowded = empty_capacity_tiers(ties, {"A": 99, "B": 0.5, "C": 0.4})  # C's room: under 0.5%
    assert list(crowded) == ["C"] and crowded["C"].endswith("gives it one: use score thresholds"), crowded
    assert empty_capacity_tiers(np.array([]), {"A": 0.01, "B": 0.01, "C": 0.01}) == {}
