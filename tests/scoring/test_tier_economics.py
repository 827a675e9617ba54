"""The cost-based tier suggestion and precision/recall at cut-offs, on data whose answer is known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from scoring.tier_economics import EconomicsError, policy_value, precision_recall_at_cutoffs, suggest_thresholds
from scoring.tiers import Policy


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


def test_precision_and_recall_at_the_cut_offs_by_hand() -> None:
    # Scores 90, 70, 70, 40, 10 with outcomes 1, 0, 1, 1, 0 under A>=80, B>=60, C>=30.
    p = np.array([0.9, 0.7, 0.7, 0.4, 0.1])
    y = np.array([1, 0, 1, 1, 0], dtype="float64")
    rows = precision_recall_at_cutoffs(p, y, Policy("score", {"A": 80, "B": 60, "C": 30}))
    assert rows["A"] == {"leads": 1, "precision": 1.0, "recall": pytest.approx(1 / 3)}
    assert rows["B"] == {"leads": 3, "precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3)}
    assert rows["C"] == {"leads": 4, "precision": 0.75, "recall": 1.0}
    none = precision_recall_at_cutoffs(p, np.zeros(5), Policy("score", {"A": 99, "B": 98, "C": 97}))
    assert none["A"] == {"leads": 0, "precision": None, "recall": None}
