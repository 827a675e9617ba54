"""Reason codes: SHAP adds up, sentences use the lead's values, no raw feature names, 255 chars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.features import FEATURE_SPEC
from scoring.reasons import Reason, explain, join_reasons, reason_strings, render
from scoring.training import BIAS
from tests.factories import synthetic_training


def _hot_lead(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of the most ordinary example turned into a lead hammering the pricing page."""
    row = frame.iloc[[0]].copy()
    row["web_visit_7d"] = row["web_visit_30d"] = row["web_visit_90d"] = 9
    row["high_intent_visits_7d"] = row["high_intent_visits_30d"] = 8
    row["engagement_30d"] = 12
    row["days_since_last_engagement"] = 0
    return row


def test_catboost_contributions_sum_to_the_raw_prediction() -> None:
    result, tset = synthetic_training()
    sample = tset.frame.sample(300, random_state=0)
    contributions = result.model.contributions(sample)
    assert list(contributions.columns) == [*result.model.spec.columns, BIAS]
    np.testing.assert_allclose(contributions.sum(axis=1).to_numpy(), result.model.raw_log_odds(sample), atol=1e-6)


def test_many_pricing_visits_give_a_pricing_reason() -> None:
    result, tset = synthetic_training()
    lead = _hot_lead(tset.frame)
    (reasons,) = explain(result.model.contributions(lead), lead)
    positives = [r for r in reasons if r.impact > 0]
    assert any("pricing" in r.text for r in positives), reasons
    assert "8 pricing/demo page visits in the last 7 days" in [r.text for r in positives]


def test_reasons_are_sentences_not_feature_names_and_fit_the_crm_field() -> None:
    result, tset = synthetic_training()
    sample = tset.frame.sample(200, random_state=1)
    all_reasons = explain(result.model.contributions(sample), sample)
    names = set(FEATURE_SPEC.columns)
    for reasons in all_reasons:
        ups = [r for r in reasons if r.impact > 0]
        downs = [r for r in reasons if r.impact < 0]
        assert len(ups) <= 3 and len(downs) <= 2
        assert [r.impact for r in ups] == sorted((r.impact for r in ups), reverse=True)
        for r in reasons:
            assert not any(name in r.text for name in names), r.text
            assert "_" not in r.text
        assert len(join_reasons(reason_strings(reasons))) <= 255
    assert any(reasons for reasons in all_reasons)


@pytest.mark.parametrize(
    ("concept", "values", "text"),
    [
        ("high_intent", {"high_intent_visits_7d": 4, "high_intent_visits_30d": 6},
         "4 pricing/demo page visits in the last 7 days"),
        ("high_intent", {"high_intent_visits_7d": 0, "high_intent_visits_30d": 1},
         "1 pricing/demo page visit in the last 30 days"),
        ("persona", {"seniority": "VP", "department": "Engineering"}, "VP-level title in Engineering"),
        ("persona", {"seniority": None, "department": None}, "Job title shows no seniority"),
        ("days_since_last_engagement", {"days_since_last_engagement": 45.0}, "No engagement for 45 days"),
        ("days_since_last_engagement", {"days_since_last_engagement": float("nan")}, "No engagement yet"),
        ("email_type", {"email_type": "Free-mail"}, "Free-mail address"),
        ("employee_band", {"employee_band": "1001-5000"}, "Company size 1001-5000 employees"),
        ("employee_band", {"employee_band": "__missing__"}, "Company size unknown"),
        ("type:meeting", {"meeting_7d": 0, "meeting_30d": 2, "meeting_90d": 2}, "2 meetings in the last 30 days"),
        ("type:webinar", {"webinar_7d": 0, "webinar_30d": 0, "webinar_90d": 0},
         "No webinars attended in the last 90 days"),
        ("committee_size", {"committee_size": 3}, "3 colleagues became leads in the last 90 days"),
        ("attr_seats_requested", {"attr_seats_requested": 12.0}, "Seats requested: 12"),
    ],
)
def test_render(concept: str, values: dict[str, object], text: str) -> None:
    assert render(concept, values) == text


def test_join_reasons_keeps_whole_sentences_within_the_limit() -> None:
    strings = [f"+ reason number {i} " + "x" * 60 for i in range(6)]
    joined = join_reasons(strings)
    assert len(joined) <= 255 and joined.count("; ") == 2
    assert join_reasons(["+ " + "y" * 400]).endswith("…") and len(join_reasons(["+ " + "y" * 400])) == 255
    assert reason_strings([Reason("Free-mail address", -0.4), Reason("Met twice", 0.9)]) == [
        "- Free-mail address", "+ Met twice"]
