"""Code tier: metrics on hand-computable inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scoring.metrics import classification_metrics, conversion_by_tier, expected_calibration_error


def test_perfect_ranking() -> None:
    # 20 leads, 4 converters scored highest: top 10 % = 2 leads, both converters.
    y = [1, 1, 1, 1] + [0] * 16
    p = np.linspace(0.95, 0.0, 20)
    m = classification_metrics(y, p)
    assert m["auc"] == 1.0 and m["pr_auc"] == 1.0
    assert m["precision_at_10pct"] == 1.0
    assert m["recall_at_10pct"] == 0.5  # 2 of 4 converters
    assert m["lift_top_decile"] == pytest.approx(1.0 / 0.2)  # precision 1.0 over base rate 0.2
    assert m["lift_by_decile"][:2] == pytest.approx([5.0, 5.0])
    assert m["lift_by_decile"][2:] == pytest.approx([0.0] * 8)
    assert m["rows"] == 20 and m["positives"] == 4


def test_reversed_ranking_and_hand_computed_brier() -> None:
    y = [0, 0, 1, 1]
    p = [0.9, 0.8, 0.2, 0.1]
    m = classification_metrics(y, p)
    assert m["auc"] == 0.0
    assert m["brier"] == pytest.approx((0.81 + 0.64 + 0.64 + 0.81) / 4)
    assert m["precision_at_10pct"] == 0.0  # ceil(0.4) = 1 row, a non-converter


def test_expected_calibration_error_by_hand() -> None:
    # bin 1 (0.1-0.2): predicted 0.1 ×2, observed 0.5 → gap 0.4; bin 9: predicted 0.9 ×2, observed 1.0 → 0.1
    y = [0, 1, 1, 1]
    p = [0.1, 0.1, 0.9, 0.9]
    assert expected_calibration_error(y, p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0
    table = classification_metrics(y, p)["calibration"]
    assert table == [
        {"bin": 1, "predicted": pytest.approx(0.1), "observed": 0.5, "count": 2},
        {"bin": 9, "predicted": pytest.approx(0.9), "observed": 1.0, "count": 2},
    ]


def test_single_class_gives_nan_not_a_crash() -> None:
    m = classification_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(m["auc"]) and math.isnan(m["recall_at_10pct"])


def test_length_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        classification_metrics([0, 1], [0.5])


def test_conversion_by_tier() -> None:
    out = conversion_by_tier([1, 0, 1, 1, 0, 0], ["A", "A", "B", "A", "D", "B"])
    assert out == {
        "A": {"leads": 3, "converted": 2, "conversion_rate": pytest.approx(2 / 3)},
        "B": {"leads": 2, "converted": 1, "conversion_rate": 0.5},
        "D": {"leads": 1, "converted": 0, "conversion_rate": 0.0},
    }
