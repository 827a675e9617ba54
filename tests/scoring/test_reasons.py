"""Reason codes: SHAP adds up, sentences use the lead's values, no raw feature names, 255 chars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session

from scoring.features import FEATURE_SPEC, NAMED_FIELDS, crm_spellings
from scoring.reasons import (
    NAMED_CONCEPTS,
    Reason,
    _dense,
    _first_rows,
    _Sentences,
    compared,
    crm_reason_indices,
    explain,
    explain_marked,
    join_reasons,
    reason_strings,
    render,
    typical_values,
)
from scoring.training import BIAS
from tests.factories import make_connection, make_lead, synthetic_training


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
        ("days_since_last_engagement", {"days_since_last_engagement": 45.0}, "No engagement for over a month"),
        ("days_since_last_engagement", {"days_since_last_engagement": 89.0}, "No engagement for over a month"),
        ("days_since_last_engagement", {"days_since_last_engagement": 90.0}, "No engagement for over 3 months"),
        ("days_since_last_engagement", {"days_since_last_engagement": 400.0}, "No engagement for over 3 months"),
        ("days_since_last_engagement", {"days_since_last_engagement": 29.0}, "Last engaged 1-4 weeks ago"),
        ("days_since_last_engagement", {"days_since_last_engagement": 7.0}, "Last engaged 1-4 weeks ago"),
        ("days_since_last_engagement", {"days_since_last_engagement": 6.0}, "Engaged in the last 7 days"),
        ("days_since_last_engagement", {"days_since_last_engagement": 0.0}, "Engaged in the last 7 days"),
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


def test_reasons_compare_with_typical_leads_group_by_sub_score_and_skip_the_common() -> None:
    from scoring.reasons import is_absence, typical_values

    result, tset = synthetic_training()
    sample = tset.frame.sample(400, random_state=2)
    typical = typical_values(sample)
    # Sentences that a large share of these leads would get are never reasons.
    assert typical["common"] and all(share > 0.25 for share in typical["common"].values())
    lead = _hot_lead(tset.frame)
    (reasons,) = explain(result.model.contributions(lead), lead, typical=typical)
    pricing = [r for r in reasons if "pricing" in r.text]
    assert pricing and pricing[0].group == "engagement" and pricing[0].impact > 0
    zero_share = typical["numeric"]["high_intent_visits_7d"]["zero"]
    assert pricing[0].text.endswith(" (most leads have none)") == (zero_share >= 0.5)
    assert reason_strings(pricing)[0].startswith("+ Engagement: ")
    all_reasons = explain(result.model.contributions(sample), sample, typical=typical)
    rows = sample.to_dict(orient="records")
    for _values, row_reasons in zip(rows, all_reasons, strict=True):
        for r in row_reasons:
            assert r.text not in typical["common"]
            assert r.group in ("fit", "engagement")
            if r.impact > 0:  # an absence never reads as a plus
                assert not r.text.startswith("No "), r.text
    counts: dict[str, int] = {}
    for row_reasons in all_reasons:
        for r in row_reasons:
            counts[r.text] = counts.get(r.text, 0) + 1
    assert max(counts.values()) / len(all_reasons) <= 0.4
    assert is_absence("type:call", {"call_7d": 0, "call_30d": 0, "call_90d": 0})
    assert not is_absence("type:call", {"call_7d": 0, "call_30d": 1, "call_90d": 1})
    assert rows  # the sample is not empty


@pytest.mark.parametrize(
    ("concept", "values", "text"),
    [
        ("committee_size", {"committee_size": 1}, "1 colleague became a lead in the last 90 days"),
        ("engagement_velocity", {"engagement_velocity": 1},
         "Engagement rising: 1 more action than in the 30 days before"),
        ("engagement_velocity", {"engagement_velocity": -3},
         "Engagement falling: 3 fewer actions than in the 30 days before"),
        ("type:web_visit", {"web_visit_7d": 3}, "3 website visits in the last 7 days (most leads have none)"),
        ("type:web_visit", {"web_visit_7d": 0, "web_visit_30d": 0, "web_visit_90d": 0},
         "No website visits in the last 90 days (most leads have some)"),
        ("engagement_30d", {"engagement_30d": 9}, "9 engagements in the last 30 days (typical lead: 2)"),
    ],
)
def test_render_with_typical_values(concept: str, values: dict[str, object], text: str) -> None:
    typical = {"numeric": {"web_visit_7d": {"zero": 0.8, "median": 0.0},
                           "web_visit_90d": {"zero": 0.3, "median": 2.0},
                           "engagement_30d": {"zero": 0.2, "median": 2.0}}}
    assert render(concept, values, typical) == text


def test_a_minus_reason_never_says_the_lead_has_more_than_most() -> None:
    # The model lowered the score through web visits, yet the lead has more visits than most leads:
    # "- 3 website visits ... (most leads have none)" would contradict itself, so it is left out,
    # while the same sentence as a plus stays, and "; " never appears inside one reason.
    typical = {"numeric": {"web_visit_7d": {"zero": 0.9, "median": 0.0}, "web_visit_30d": {"zero": 0.9, "median": 0.0},
                           "web_visit_90d": {"zero": 0.9, "median": 0.0}}, "common": {}}
    features = pd.DataFrame([{"web_visit_7d": 3, "web_visit_30d": 3, "web_visit_90d": 3}] * 2)
    contributions = pd.DataFrame({"web_visit_7d": [-0.8, 0.8], "web_visit_30d": [0.0, 0.0],
                                  "web_visit_90d": [0.0, 0.0], BIAS: [0.0, 0.0]})
    minus, plus = explain(contributions, features, typical=typical)
    assert minus == []
    assert [r.text for r in plus] == ["3 website visits in the last 7 days (most leads have none)"]
    assert "; " not in plus[0].text


def test_a_reason_never_compares_the_lead_against_its_own_direction() -> None:
    # Found in a user trial: "- Engagement: 3 website visits in the last 30 days (typical lead: 1)"
    # on 21 of 62 minus reasons comparing with the typical lead. More than typical as a minus, or
    # fewer than typical as a plus, reads as a contradiction: left out, as with "most leads".
    typical = {"numeric": {f"web_visit_{w}d": {"zero": 0.2, "median": 2.0} for w in (7, 30, 90)}, "common": {}}
    features = pd.DataFrame([{"web_visit_7d": 3, "web_visit_30d": 3, "web_visit_90d": 3}] * 2
                            + [{"web_visit_7d": 1, "web_visit_30d": 1, "web_visit_90d": 1}] * 2)
    contributions = pd.DataFrame({"web_visit_7d": [-0.8, 0.8, -0.8, 0.8], "web_visit_30d": [0.0] * 4,
                                  "web_visit_90d": [0.0] * 4, BIAS: [0.0] * 4})
    minus, plus, fewer_minus, fewer_plus = explain(contributions, features, typical=typical)
    assert minus == [] and fewer_plus == []
    assert [r.text for r in plus] == ["3 website visits in the last 7 days (typical lead: 2)"]
    assert [r.text for r in fewer_minus] == ["1 website visit in the last 7 days (typical lead: 2)"]


@pytest.mark.parametrize(("text", "direction"), [
    ("3 website visits in the last 7 days (most leads have none)", 1),
    ("No website visits in the last 90 days (most leads have some)", -1),
    ("9 engagements in the last 30 days (typical lead: 2)", 1),
    ("Engaged with 1 content piece in the last 7 days (typical lead: 4)", -1),
    ("12 colleagues became leads in the last 90 days (typical lead: 3)", 1),
    ("From campaign Q3 2025 webinar", 0),
    ("Engaged in the last 7 days", 0),
])
def test_how_a_sentence_compares_the_lead_with_most_leads(text: str, direction: int) -> None:
    assert compared(text) == direction


def test_a_name_from_the_crm_reads_as_the_crm_spells_it() -> None:
    # The features hold names cleaned and title-cased (the model's categories): "Content: Roi
    # Guide", "Buyer'S Checklist". A rep reads the CRM's own spelling; a sentence too common to be
    # a reason ("Industry: Saas" here) stays out whatever its spelling.
    features = pd.DataFrame({"campaign": ["Content: Roi Guide", "Buyer'S Checklist", "Webinar"],
                             "industry": ["Saas", "Saas", "Saas"]})
    contributions = pd.DataFrame({"campaign": [0.9, 0.9, 0.9], "industry": [0.5, 0.5, 0.5], BIAS: [0.0] * 3})
    typical = {"common": {"Industry: Saas": 0.9}}
    names = {"campaign": {"Content: Roi Guide": "Content: ROI Guide", "Buyer'S Checklist": "Buyer's Checklist"},
             "industry": {"Saas": "SaaS"}}
    spelled = explain(contributions, features, typical=typical, names=names)
    assert [[r.text for r in row] for row in spelled] == [
        ["From campaign Content: ROI Guide"], ["From campaign Buyer's Checklist"], ["From campaign Webinar"]]
    held = explain(contributions, features, typical=typical)
    assert [[r.text for r in row] for row in held] == [
        ["From campaign Content: Roi Guide"], ["From campaign Buyer'S Checklist"], ["From campaign Webinar"]]


def test_crm_spellings_are_the_most_common_spelling_of_each_held_name(any_session: Session) -> None:
    conn = make_connection(any_session)
    for campaign, industry in [("Content: ROI Guide", "SaaS"), ("Content: ROI Guide", "SaaS"),
                               ("content:  roi guide ", "SAAS"), ("Buyer's Checklist", "Software"),
                               ("Webinar", None), (None, "Software")]:
        make_lead(any_session, conn, campaign=campaign, industry=industry)
    make_lead(any_session, conn, lead_source="OTHER_CAMPAIGNS")  # HubSpot's hs_analytics_source code
    spellings = crm_spellings(any_session)
    assert set(spellings) == set(NAMED_FIELDS) == set(NAMED_CONCEPTS)
    assert spellings["campaign"] == {"Content: Roi Guide": "Content: ROI Guide",
                                     "Buyer'S Checklist": "Buyer's Checklist"}
    assert spellings["industry"] == {"Saas": "SaaS"}  # "Software" is spelled as held: not listed
    assert spellings["lead_source"] == {"Other_Campaigns": "Other campaigns"}


def test_marked_reasons_are_the_strings_of_the_explained_ones() -> None:
    """A scoring run stores explain_marked's strings: the same as each Reason's marked text."""
    result, tset = synthetic_training()
    sample = tset.frame.sample(400, random_state=3)
    contributions = result.model.contributions(sample)
    typical = typical_values(tset.frame)
    for kwargs in ({}, {"typical": typical}, {"typical": typical, "names": {"industry": {"Software": "SaaS"}}}):
        marked = explain_marked(contributions, sample, **kwargs)  # type: ignore[arg-type]
        assert marked == [reason_strings(r) for r in explain(contributions, sample, **kwargs)]  # type: ignore[arg-type]
    assert sum(len(m) for m in marked) > 400


def test_text_columns_code_as_their_values_whatever_their_dtype() -> None:
    """pandas' "str" columns (texts and NaN) and object columns of the same values give each row
    the same value, every gap one value."""
    values = ["Software", None, "Retail", "Software", None, "Retail ", "software"]
    as_str = pd.Series(values, dtype="str")
    as_object = pd.Series(as_str.tolist(), dtype=object)  # texts and NaN: the general loop
    decoded = []
    for column in (as_str, as_object):
        codes, held = _Sentences(pd.DataFrame({"industry": column}), None)._column_codes("industry")
        decoded.append([held[c] for c in codes])
        assert len(held) == 5
    assert [type(v) for v in decoded[0]] == [type(v) for v in decoded[1]]
    assert [v if isinstance(v, str) else "gap" for v in decoded[0]] == [
        v if isinstance(v, str) else "gap" for v in decoded[1]] == [
        "Software", "gap", "Retail", "Software", "gap", "Retail ", "software"]


def test_reasons_join_whole_within_the_limit_when_all_fit_or_not() -> None:
    fits = ["+ a" * 10, "- b" * 10]
    assert join_reasons(fits) == "; ".join(fits)
    assert join_reasons(["x" * 200, "y" * 53]) == "x" * 200 + "; " + "y" * 53  # 255 exactly
    assert join_reasons(["x" * 200, "y" * 54]) == "x" * 200


def test_the_crm_field_keeps_a_reason_of_each_sign_and_group_when_not_all_fit() -> None:
    """A user trial on crmsim: three long "+ Engagement" reasons filled the 255 characters, and the
    rep read "fit 16" beside no fit reason and nothing that pulled the score down (`explain` listed
    "- Fit: Based in India" and "- Fit: Lead source: Paid Search" as not in the CRM field)."""
    plus = [f"+ Engagement: {n} website visits in the last 30 days, more than most leads had in their first weeks"
            for n in (9, 7, 5)]
    minus = ["- Fit: Based in India", "- Fit: Lead source: Paid Search"]
    joined = join_reasons(plus + minus)
    assert len(joined) <= 255
    assert joined == "; ".join([plus[0], plus[1], *minus])  # in their order; the third plus left out
    # A fit reason is kept even when every reason has one sign; and a sign even within one group.
    assert join_reasons([*plus, "+ Fit: Director-level title in Engineering"]).split("; ") == [
        plus[0], plus[1], "+ Fit: Director-level title in Engineering"]
    assert join_reasons([*plus, "- Engagement: No meetings"]).split("; ") == [
        plus[0], plus[1], "- Engagement: No meetings"]
    assert crm_reason_indices(plus + minus) == [0, 1, 3, 4]
    assert crm_reason_indices(minus) == [0, 1]  # all fit: all, in order


def test_good_news_is_never_a_minus_reason() -> None:
    # A rep read "- Engagement: Last engaged 2 days ago" as a contradiction: the model lowered the
    # score through recency for another reason (an interaction). Good news may only be a plus; bad
    # news of the same concept ("No engagement for over a month") may still be a minus.
    features = pd.DataFrame([{"days_since_last_engagement": 2.0, "engagement_velocity": 3.0},
                             {"days_since_last_engagement": 2.0, "engagement_velocity": 3.0},
                             {"days_since_last_engagement": 40.0, "engagement_velocity": -2.0}])
    contributions = pd.DataFrame({"days_since_last_engagement": [-0.9, 0.9, -0.9],
                                  "engagement_velocity": [-0.5, 0.5, -0.5], BIAS: [0.0, 0.0, 0.0]})
    rows = explain(contributions, features, typical=None)
    assert rows[0] == []  # the good news the model counted against the lead: left out
    assert sorted(r.text for r in rows[1]) == [
        "Engaged in the last 7 days", "Engagement rising: 3 more actions than in the 30 days before"]
    assert all(r.impact > 0 for r in rows[1])
    assert sorted(r.text for r in rows[2]) == [
        "Engagement falling: 2 fewer actions than in the 30 days before", "No engagement for over a month"]
    assert all(r.impact < 0 for r in rows[2])


def test_a_missing_field_or_junk_is_never_a_plus_reason() -> None:
    # A crmsim trial's second lead read "+ Fit: 1 key field missing on the record": bad news the
    # model happened to count for the lead (an interaction). It may only be a minus; a complete
    # record may still be a plus.
    features = pd.DataFrame([{"missing_fields": 1.0, "junk_flags": 1.0}, {"missing_fields": 1.0, "junk_flags": 1.0},
                             {"missing_fields": 0.0, "junk_flags": 0.0}])
    contributions = pd.DataFrame({"missing_fields": [0.6, -0.6, 0.6], "junk_flags": [0.4, -0.4, 0.4],
                                  BIAS: [0.0, 0.0, 0.0]})
    rows = explain(contributions, features, typical=None)
    assert rows[0] == []
    assert sorted(r.text for r in rows[1]) == ["1 key field missing on the record",
                                               "Record shows signs of test or junk data"]
    assert all(r.impact < 0 for r in rows[1])
    assert sorted(r.text for r in rows[2]) == ["Complete record", "Record looks genuine"]
    assert all(r.impact > 0 for r in rows[2])


@pytest.mark.parametrize(("rows", "span"), [(5000, 84), (5000, 1 << 20), (7, 3), (0, 0), (1, 1)])
def test_combinations_code_as_numpy_unique_codes_them(rows: int, span: int) -> None:
    """The sentences' combination codes (a table of flags for small spans, a sort for large ones)
    are np.unique's: each key's rank among the distinct keys, and each code's first row."""
    keys = np.random.default_rng(rows + span).integers(0, max(span, 1), rows)
    codes = _dense(keys, span)
    assert codes.tolist() == np.unique(keys, return_inverse=True)[1].reshape(-1).tolist()
    count = int(codes.max()) + 1 if rows else 0
    assert _first_rows(codes, count).tolist() == np.unique(codes, return_index=True)[1].tolist()
