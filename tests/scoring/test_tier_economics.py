"""The cost-based tier suggestion, on data whose answer is known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from scoring.reference import rank
from scoring.tier_economics import EconomicsError, policy_value, suggest_thresholds
from scoring.tiers import Policy, capacity_cutoffs, check_policy, probability_to_score


def _labelled(seed: int = 0, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(1.2, 6.0, n)
    return p, (rng.random(n) < p).astype("float64")


@pytest.mark.parametrize(("value", "cost"), [(5000.0, 40.0), (1000.0, 90.0), (20000.0, 15.0)])
def test_the_suggestion_beats_every_policy_on_a_grid(value: float, cost: float) -> None:
    p, y = _labelled()
    best = suggest_thresholds(p, y, conversion_value=value, touch_cost=cost)
    t = best.thresholds
    assert 100 >= t["A"] > t["B"] > t["C"] >= 1
    assert best.leads == 3000 and best.conversions == int(y.sum())
    assert best.expected_value == pytest.approx(
        policy_value(p, y, Policy("score", t), conversion_value=value, touch_cost=cost))
    grid = range(2, 100, 7)
    for a, b, c in itertools.combinations(sorted(grid, reverse=True), 3):
        other = policy_value(p, y, Policy("score", {"A": a, "B": b, "C": c}), conversion_value=value,
                             touch_cost=cost)
        assert best.expected_value >= other - 1e-6, (a, b, c)


def test_dearer_touches_raise_the_cut_offs() -> None:
    p, y = _labelled(seed=1)
    cheap = suggest_thresholds(p, y, conversion_value=5000, touch_cost=20).thresholds
    dear = suggest_thresholds(p, y, conversion_value=5000, touch_cost=200).thresholds
    assert all(dear[t] >= cheap[t] for t in "ABC") and dear != cheap


def test_bad_inputs_are_named() -> None:
    p, y = _labelled(n=50)
    with pytest.raises(EconomicsError, match="value of a converted lead"):
        suggest_thresholds(p, y, conversion_value=0, touch_cost=1)
    with pytest.raises(EconomicsError, match="cost of an SDR touch"):
        suggest_thresholds(p, y, conversion_value=10, touch_cost=float("nan"))
    with pytest.raises(EconomicsError, match="no recent labelled leads"):
        suggest_thresholds(np.zeros(0), np.zeros(0), conversion_value=10, touch_cost=1)


def test_the_suggestion_is_valued_on_the_scores_it_was_cut_on() -> None:
    """The console cuts 1-99 rank scores, not the probability in whole percent: a suggestion valued
    on the latter showed less than the same thresholds typed in by hand (106,590 vs 219,800)."""
    p, y = _labelled(seed=2)
    ranks = rank(p, np.sort(p))  # rank scores: spread over 1-99, unlike round(100 p)
    assert not np.array_equal(ranks, probability_to_score(p))
    best = suggest_thresholds(p, y, conversion_value=5000, touch_cost=40, scores=ranks)
    assert best.expected_value == pytest.approx(policy_value(
        p, y, Policy("score", best.thresholds), conversion_value=5000, touch_cost=40, scores=ranks))
    for a, b, c in itertools.combinations(range(98, 1, -8), 3):
        other = policy_value(p, y, Policy("score", {"A": a, "B": b, "C": c}), conversion_value=5000,
                             touch_cost=40, scores=ranks)
        assert best.expected_value >= other - 1e-6, (a, b, c)


def test_capacity_shares_are_valued_with_the_cutoffs_of_the_reference_scores() -> None:
    p, y = _labelled(seed=3)
    ranks = rank(p, np.sort(p))
    open_leads = np.clip(ranks - 20, 1, 99)  # today's open leads score lower than these labelled ones
    shares = {"A": 10.0, "B": 20.0, "C": 30.0}
    valued = policy_value(p, y, Policy("capacity", shares), conversion_value=5000, touch_cost=40, scores=ranks,
                          reference=open_leads)
    as_scores = policy_value(p, y, Policy("score", capacity_cutoffs(open_leads, shares)), conversion_value=5000,
                             touch_cost=40, scores=ranks)
    assert valued == pytest.approx(as_scores)
    own = policy_value(p, y, Policy("capacity", shares), conversion_value=5000, touch_cost=40, scores=ranks)
    assert own != pytest.approx(valued)


def test_a_tier_pushed_to_one_score_wide_is_named() -> None:
    """Every conversion at one score: each touch pays from that score, so the ordering A > B > C
    leaves B and C one score each. The console showed such a 51/50/24 suggestion unflagged."""
    scores = np.repeat(np.arange(1, 100), 20)
    y = (scores == 80).astype("float64")
    best = suggest_thresholds(scores / 100, y, conversion_value=5000, touch_cost=10, scores=scores)
    assert best.thresholds == {"A": 80.0, "B": 79.0, "C": 78.0}
    assert best.note is not None
    assert "tier B's touch pays from the same score as A's (80), so B is left one score wide (only score 79)" \
        in best.note
    assert "C is left one score wide (only score 78)" in best.note
    # On spread-out data no tier is pushed, and nothing is said.
    p, y = _labelled()
    assert suggest_thresholds(p, y, conversion_value=5000, touch_cost=40).note is None


def test_a_cost_no_lead_pays_for_is_said_plainly() -> None:
    # A touch dearer than any lead's share of the value: touching nobody (all D, worth 0) is the
    # answer no policy can give; the note says so instead of presenting 99/98/97 as a choice.
    p, y = _labelled(seed=4)
    scores = rank(p, np.sort(p))
    best = suggest_thresholds(p, y, conversion_value=100, touch_cost=5000, scores=scores)
    # The fewest touches a valid policy allows: scores stop at 99, so A=99 (A=100 is refused).
    assert best.thresholds == {"A": 99.0, "B": 98.0, "C": 97.0}
    check_policy("score", best.thresholds)
    assert best.expected_value < 0
    touched = int((scores >= 97).sum())
    assert touched > 0
    assert best.note is not None and best.note.startswith("no touch pays for itself at this value and cost")
    assert f"({touched} leads scored 97 or more) and it still loses" in best.note
    assert "highest cut-off" not in best.note
