"""Features: point-in-time honesty, normalisation, windows, committee, custom fields, personas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session

from scoring import personas
from scoring.dataset import build_training_set
from scoring.features import (
    FEATURE_SPEC,
    build_feature_frame,
    clean_text,
    feature_spec_for,
    load_activities_frame,
    load_leads_frame,
    normalise_country,
)
from tests.factories import BASE_TIME, add_activities, make_activity, make_connection, make_lead

DAY = timedelta(days=1)


def _frames(session: Session, at: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    leads = load_leads_frame(session)
    return leads, load_activities_frame(session, None, before=at)


def test_activity_after_snapshot_or_conversion_never_reaches_a_feature(sqlite_session: Session) -> None:
    conn = make_connection(sqlite_session)
    t0 = BASE_TIME
    lead = make_lead(sqlite_session, conn, crm_created_at=t0, converted_at=t0 + 30 * DAY)
    # Known at the day-7 snapshot: one pricing visit on day 3.
    make_activity(sqlite_session, lead, "web_visit", t0 + 3 * DAY, "/pricing")
    # After the day-7 snapshot but before conversion: only the day-21 snapshot may see it.
    make_activity(sqlite_session, lead, "email_click", t0 + 10 * DAY)
    # After the conversion: onboarding meetings, calls and pricing visits. Never a feature.
    add_activities(sqlite_session, lead, [("meeting", t0 + 31 * DAY + i * DAY, None) for i in range(5)])
    add_activities(sqlite_session, lead, [("web_visit", t0 + 35 * DAY, "/pricing")] * 4)
    add_activities(sqlite_session, lead, [("call", t0 + 40 * DAY, None)])
    # An event exactly at a snapshot instant is not yet known either.
    make_activity(sqlite_session, lead, "call", t0 + 21 * DAY)
    as_of = t0 + 400 * DAY

    tset = build_training_set(sqlite_session, as_of=as_of, offsets=(1, 7, 21, 60))
    frame = tset.frame.set_index(tset.frame["snapshot_at"] - t0)
    # Day 60 is after the conversion: not an example at all.
    assert sorted(frame.index.days) == [1, 7, 21]
    assert frame["converted"].tolist() == [1, 1, 1]
    assert (frame["meeting_90d"] == 0).all() and (frame["call_90d"] == 0).all()
    assert frame["web_visit_90d"].tolist() == [0, 1, 1]
    assert frame["high_intent_visits_30d"].tolist() == [0, 1, 1]
    assert frame["email_click_90d"].tolist() == [0, 0, 1]
    assert frame.loc[pd.Timedelta(days=7), "days_since_last_engagement"] == 4
    assert np.isnan(frame.loc[pd.Timedelta(days=1), "days_since_last_engagement"])


def test_outcome_fields_owner_and_raw_do_not_change_features(sqlite_session: Session) -> None:
    conn = make_connection(sqlite_session)
    lead = make_lead(sqlite_session, conn)
    make_activity(sqlite_session, lead, "meeting", BASE_TIME + 2 * DAY)
    at = BASE_TIME + 10 * DAY
    leads, acts = _frames(sqlite_session, at)
    before = build_feature_frame(leads, acts, at)
    changed = leads.copy()
    changed["is_converted"] = True
    changed["converted_at"] = pd.Timestamp(BASE_TIME + 5 * DAY)
    changed["status"] = "Converted"
    changed["owner_crm_id"] = "005OTHER"
    changed["raw"] = [{"Status": "Closed Won", "Amount": 1e6}]
    pd.testing.assert_frame_equal(before, build_feature_frame(changed, acts, at))


def test_normalisation_placeholders_casing_and_absurd_numbers() -> None:
    leads = pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "email": ["a@acme.com", "b@gmail.com", None, "test@example.com"],
            "first_name": ["Ann", "Bo", "Cy", "Test"],
            "last_name": ["Xu", "Yang", "Zed", "asdf"],
            "title": ["VP of Engineering", "Select", "CEO", None],
            "company": ["Acme Inc", "N/A", "Beta", "-1"],
            "company_key": [None, None, None, None],
            "industry": ["software", "SOFTWARE ", "N/A", "Select"],
            "employees": [250, -1, 99_999_999, None],
            "annual_revenue": [2e7, 0, 5e14, None],
            "country": ["usa", "United States", "none", "Germany"],
            "lead_source": ["Web", "web", "-1", None],
            "campaign": [None, "Spring Webinar", None, None],
            "crm_created_at": [BASE_TIME] * 4,
            "attributes": [{}, {}, {}, {}],
        }
    )
    acts = pd.DataFrame({"lead_id": [], "type": [], "occurred_at": [], "detail": []})
    f = build_feature_frame(leads, acts, BASE_TIME + DAY)
    assert f["industry"].tolist()[:2] == ["Software", "Software"]
    assert pd.isna(f["industry"].iloc[2]) and pd.isna(f["industry"].iloc[3])
    assert f["country"].tolist()[:2] == ["United States", "United States"]
    assert pd.isna(f["country"].iloc[2])
    assert f["employee_band"].iloc[0] == "201-1000"
    assert pd.isna(f["employee_band"].iloc[1]) and pd.isna(f["employee_band"].iloc[2])
    assert pd.isna(f["revenue_band"].iloc[2])
    assert f["lead_source"].tolist()[:2] == ["Web", "Web"] and pd.isna(f["lead_source"].iloc[2])
    assert f["email_type"].tolist()[:2] == ["Corporate", "Free-mail"] and pd.isna(f["email_type"].iloc[2])
    assert f["seniority"].iloc[0] == "VP" and f["department"].iloc[0] == "Engineering"
    assert pd.isna(f["seniority"].iloc[1])
    assert f["junk_flags"].iloc[0] == 0 and f["junk_flags"].iloc[2] >= 2 and f["junk_flags"].iloc[3] >= 3
    assert f["missing_fields"].iloc[0] == 0 and f["missing_fields"].iloc[3] >= 5
    assert list(f.columns) == FEATURE_SPEC.columns


def test_activity_windows_velocity_content_and_intent(sqlite_session: Session) -> None:
    conn = make_connection(sqlite_session)
    lead = make_lead(sqlite_session, conn, crm_created_at=BASE_TIME - 200 * DAY)
    at = BASE_TIME
    events = [
        ("web_visit", at - 2 * DAY, "/pricing"),
        ("web_visit", at - 3 * DAY, "/demo"),
        ("web_visit", at - 4 * DAY, "/contact-sales"),
        ("web_visit", at - 5 * DAY, "/blog/post"),
        ("web_visit", at - 20 * DAY, "/pricing"),
        ("content_download", at - 1 * DAY, "Buyer's guide"),
        ("content_download", at - 6 * DAY, "Buyer's guide"),
        ("webinar", at - 25 * DAY, "Live demo"),
        ("email_open", at - 40 * DAY, None),
        ("email_open", at - 45 * DAY, None),
        ("email_send", at - 1 * DAY, None),  # our action, not theirs
        ("meeting", at - 100 * DAY, None),  # beyond every window
    ]
    add_activities(sqlite_session, lead, events)
    leads, acts = _frames(sqlite_session, at)
    f = build_feature_frame(leads, acts, at).iloc[0]
    assert (f["web_visit_7d"], f["web_visit_30d"], f["web_visit_90d"]) == (4, 5, 5)
    assert f["high_intent_visits_7d"] == 3 and f["high_intent_visits_30d"] == 4
    assert f["content_depth_7d"] == 1 and f["content_depth_30d"] == 2
    assert f["email_open_30d"] == 0 and f["email_open_90d"] == 2
    assert f["meeting_90d"] == 0
    assert f["engagement_30d"] == 8
    assert f["engagement_velocity"] == 8 - 2
    assert f["days_since_last_engagement"] == 1
    assert f["lead_age_days"] == 200


def test_committee_counts_only_colleagues_created_before_the_snapshot(sqlite_session: Session) -> None:
    conn = make_connection(sqlite_session)
    mk = {"company": "Globex Corp.", "email": None}
    first = make_lead(sqlite_session, conn, crm_created_at=BASE_TIME, **mk)
    make_lead(sqlite_session, conn, crm_created_at=BASE_TIME + 2 * DAY, **mk)
    make_lead(sqlite_session, conn, crm_created_at=BASE_TIME + 9 * DAY, company="GLOBEX, Corp", email=None)
    make_lead(sqlite_session, conn, crm_created_at=BASE_TIME + 3 * DAY, is_deleted=True, **mk)
    make_lead(sqlite_session, conn, crm_created_at=BASE_TIME, company="Initech", email=None)
    leads = load_leads_frame(sqlite_session)
    live = leads[~leads["is_deleted"]]
    peers = live[["id", "company_key", "crm_created_at"]]
    acts = load_activities_frame(sqlite_session, None, before=BASE_TIME + 100 * DAY)
    row = live[live["id"] == first.id]
    sizes = [
        build_feature_frame(row, acts, BASE_TIME + d * DAY, company_peers=peers)["committee_size"].iloc[0]
        for d in (1, 5, 10, 93, 200)
    ]
    # Colleagues count for 90 days after they became leads: the committee is who is active now.
    assert sizes == [0, 1, 2, 1, 0]


def test_custom_attributes_become_typed_features() -> None:
    leads = pd.DataFrame(
        {
            "id": [1, 2, 3], "email": [None] * 3, "first_name": [None] * 3, "last_name": [None] * 3,
            "title": [None] * 3, "company": [None] * 3, "company_key": [None] * 3, "industry": [None] * 3,
            "employees": [None] * 3, "annual_revenue": [None] * 3, "country": [None] * 3,
            "lead_source": [None] * 3, "campaign": [None] * 3, "crm_created_at": [BASE_TIME] * 3,
            "attributes": [{"Seats Requested": 12, "Plan Interest": "enterprise"}, {"Seats Requested": "3"}, {}],
        }
    )
    acts = pd.DataFrame({"lead_id": [], "type": [], "occurred_at": [], "detail": []})
    f = build_feature_frame(leads, acts, BASE_TIME + DAY)
    spec = feature_spec_for(f)
    assert "attr_seats_requested" in spec.numeric and "attr_plan_interest" in spec.categorical
    assert f["attr_seats_requested"].tolist()[:2] == [12.0, 3.0]
    assert f["attr_plan_interest"].iloc[0] == "Enterprise"


def test_snapshot_must_be_timezone_aware() -> None:
    leads = pd.DataFrame({"id": [1], "crm_created_at": [BASE_TIME]})
    with pytest.raises(ValueError, match="timezone-aware"):
        build_feature_frame(leads, pd.DataFrame(), datetime(2026, 1, 1))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("title", "level", "dept"),
    [
        ("VP of Engineering", "VP", "Engineering"),
        ("Chief Financial Officer", "C-Level", "Finance"),
        ("CTO", "C-Level", "IT"),
        ("Director, Demand Generation", "Director", "Marketing"),
        ("Head of Sales", "Director", "Sales"),
        ("Senior Software Engineer", "Individual Contributor", "Engineering"),
        ("IT Manager", "Manager", "IT"),
        ("Marketing Coordinator", "Individual Contributor", "Marketing"),
        ("Student", "Student", None),
        ("Select", None, None),
        ("", None, None),
    ],
)
def test_personas_from_titles(title: str, level: str | None, dept: str | None) -> None:
    assert personas.seniority(title) == level
    assert personas.department(title) == dept


@pytest.mark.parametrize(
    ("company", "email", "key"),
    [
        ("Acme, Inc.", None, "acme"),
        ("ACME Inc", "x@gmail.com", "acme"),
        ("N/A", "jo@acme-logistics.com", "acme-logistics.com"),
        (None, "jo@gmail.com", None),
        ("Globex GmbH", None, "globex"),
    ],
)
def test_company_key_normalisation(company: str | None, email: str | None, key: str | None) -> None:
    assert personas.company_key(company, email) == key


def test_free_mail() -> None:
    assert personas.is_free_mail("a@Gmail.com") is True
    assert personas.is_free_mail("a@acme.com") is False
    assert personas.is_free_mail("no-at-sign") is None


def test_vectorised_build_handles_many_leads_in_one_call() -> None:
    n = 20_000
    rng = np.random.default_rng(0)
    leads = pd.DataFrame(
        {
            "id": np.arange(1, n + 1), "email": [f"p{i}@co{i % 500}.com" for i in range(n)],
            "first_name": ["A"] * n, "last_name": ["B"] * n,
            "title": rng.choice(["VP Sales", "Engineer", "CFO", "Student"], n),
            "company": [f"Co {i % 500}" for i in range(n)],
            "company_key": [f"co-{i % 500}" for i in range(n)], "industry": ["Software"] * n,
            "employees": rng.integers(1, 10_000, n), "annual_revenue": [None] * n, "country": ["US"] * n,
            "lead_source": ["Web"] * n, "campaign": [None] * n,
            "crm_created_at": [BASE_TIME - timedelta(days=int(d)) for d in rng.integers(0, 300, n)],
            "attributes": [{}] * n,
        }
    )
    m = 200_000
    acts = pd.DataFrame(
        {
            "lead_id": rng.integers(1, n + 1, m),
            "type": rng.choice(["web_visit", "email_open", "meeting"], m),
            "occurred_at": [BASE_TIME - timedelta(hours=int(h)) for h in rng.integers(1, 24 * 300, m)],
            "detail": rng.choice(np.array(["/pricing", "/blog", None], dtype=object), m),
        }
    )
    f = build_feature_frame(leads, acts, datetime(2026, 1, 1, tzinfo=UTC))
    assert len(f) == n
    assert f["web_visit_90d"].sum() > 0 and 0 < f["committee_size"].max() < n / 500


def test_committee_from_per_company_counts_matches_per_lead_peers(sqlite_session: Session) -> None:
    from scoring.features import load_company_peers

    conn = make_connection(sqlite_session)
    for i in range(12):
        make_lead(sqlite_session, conn, crm_created_at=BASE_TIME + i * DAY, company=f"Firm {i % 3}", email=None)
    make_lead(sqlite_session, conn, crm_created_at=BASE_TIME, company=None, email="solo@gmail.com")
    at = BASE_TIME + 8 * DAY + timedelta(hours=1)
    leads = load_leads_frame(sqlite_session)
    acts = load_activities_frame(sqlite_session, None, before=at)
    keys = leads["company_key"].dropna().tolist()
    per_lead = build_feature_frame(leads, acts, at, company_peers=load_company_peers(sqlite_session, keys))
    counted = build_feature_frame(leads, acts, at, company_peers=load_company_peers(sqlite_session, keys, before=at))
    assert per_lead["committee_size"].tolist() == counted["committee_size"].tolist()
    # Three colleagues per firm exist at the snapshot; leads created later still see all three.
    assert sorted(per_lead["committee_size"].tolist()) == [0] + [2] * 9 + [3] * 3


def test_scoring_reads_only_the_windows_yet_builds_the_whole_historys_features(any_session: Session) -> None:
    """batch_inputs reads activities of the last 90 days plus the latest older engagement of each
    lead not engaged within them: the features equal those built from every activity, for leads
    engaged long ago, recently, both, never, or only through e-mails we sent (not an engagement,
    long ago or lately) and deleted activities."""
    from scoring.inputs import batch_inputs

    conn = make_connection(any_session)
    at = BASE_TIME + 400 * DAY
    long_ago = make_lead(any_session, conn, crm_created_at=BASE_TIME)
    add_activities(any_session, long_ago, [("web_visit", at - 200 * DAY, "/pricing"), ("call", at - 120 * DAY, None),
                                           ("email_send", at - 100 * DAY, None)])
    both = make_lead(any_session, conn, crm_created_at=BASE_TIME)
    add_activities(any_session, both, [("meeting", at - 300 * DAY, None), ("email_open", at - 45 * DAY, None),
                                       ("web_visit", at - 3 * DAY, "/demo"), ("email_click", at - 90 * DAY, None)])
    sent_only = make_lead(any_session, conn, crm_created_at=BASE_TIME)
    add_activities(any_session, sent_only, [("email_send", at - 150 * DAY, None)])
    make_activity(any_session, sent_only, "call", at - 130 * DAY, is_deleted=True)
    never = make_lead(any_session, conn, crm_created_at=at - 10 * DAY)
    # Within the windows only an e-mail we sent: its older engagement is still looked up.
    sent_lately = make_lead(any_session, conn, crm_created_at=BASE_TIME)
    add_activities(any_session, sent_lately, [("email_send", at - 5 * DAY, None), ("meeting", at - 200 * DAY, None)])
    ids = [long_ago.id, both.id, sent_only.id, never.id, sent_lately.id]

    leads, frame, aging = batch_inputs(any_session, ids, at)
    whole = build_feature_frame(load_leads_frame(any_session, ids), load_activities_frame(any_session, ids, before=at),
                                at)
    pd.testing.assert_frame_equal(frame.drop(columns="committee_size").reset_index(drop=True),
                                  whole.drop(columns="committee_size").reset_index(drop=True))
    by_id = frame.set_index(leads["id"].to_numpy())
    assert by_id.loc[long_ago.id, "days_since_last_engagement"] == 120  # the call, older than every window
    assert by_id.loc[both.id, "days_since_last_engagement"] == 3
    assert np.isnan(by_id.loc[sent_only.id, "days_since_last_engagement"])
    assert np.isnan(by_id.loc[never.id, "days_since_last_engagement"])
    assert by_id.loc[sent_lately.id, "days_since_last_engagement"] == 200
    assert long_ago.id not in aging  # nothing of it can still leave a window


def test_custom_fields_read_from_the_store_are_each_leads_own(any_session: Session) -> None:
    """Custom fields are read as JSON text and each distinct text parsed once: every lead still
    gets its own dict, equal to what was stored (nested values, unicode, numbers as stored)."""
    conn = make_connection(any_session)
    shared = {"Plan Interest": "enterprise", "Seats": 12, "Tags": ["a", "b"], "Région": "Île-de-France"}
    stored = [shared, dict(shared), {}, {"Seats": 3.5}, {}]
    leads = [make_lead(any_session, conn, attributes=a) for a in stored]
    frame = load_leads_frame(any_session, [lead.id for lead in leads])
    read = frame["attributes"].tolist()
    assert read == stored
    read[0]["Seats"] = 99
    read[2]["Seats"] = 1
    assert read[1]["Seats"] == 12 and read[4] == {}


def _pandas_clean(s: pd.Series, max_len: int = 64) -> pd.Series:
    """clean_text as pandas' string methods wrote it before it cleaned distinct values in Python."""
    from scoring.features import _ALL_PLACEHOLDERS

    text = s.astype("string").str.strip().str.replace(r"\s+", " ", regex=True)
    text = text.where(~text.str.lower().isin(_ALL_PLACEHOLDERS).fillna(True))
    return text.str.lower().str.slice(0, max_len).str.title()


@pytest.mark.parametrize("max_len", [64, 5])
def test_clean_text_matches_the_pandas_string_methods(max_len: int) -> None:
    values = ["  Software ", "software", "SOFTWARE\tand  services", "N/A", " n/a ", "unknown", "-1", "", "   ",
              None, np.nan, 42, 3.5, True, "ÉCOLE  privée", "o'neil mcdonald-smith", "x" * 90, "Financial\nServices",
              "\u00a0Retail\u00a0", "Select"]
    s = pd.Series(values * 3, index=range(100, 100 + 3 * len(values)), dtype=object)
    got = clean_text(s, max_len=max_len)
    pd.testing.assert_series_equal(got, _pandas_clean(s, max_len), check_names=False)
    assert got.index.equals(s.index) and str(got.dtype) == "string"


def test_country_spellings_per_distinct_value() -> None:
    countries = pd.Series([" USA", "u.s.", "deutschland ", "France", None, "n/a", "united states of america"])
    assert normalise_country(countries).tolist() == [
        "United States", "United States", "Germany", "France", pd.NA, pd.NA, "United States"]


def test_the_recency_reason_stays_true_until_the_lead_is_rescored(any_session: Session) -> None:
    """What a rep reads of a lead's last engagement ("Last engaged 1-4 weeks ago", "No engagement
    for over a month") stays true at every moment until the score's ``next_aging_at``, when the lead
    is rescored: a quiet lead's "No engagement for 45 days" used to stay in the CRM for weeks."""
    from scoring.inputs import batch_inputs
    from scoring.reasons import render

    conn = make_connection(any_session)
    at = BASE_TIME + 400 * DAY
    ago = (0.5, 3, 6.9, 7, 12, 29.5, 31, 60, 89.9, 95, 200)
    leads = [make_lead(any_session, conn, crm_created_at=BASE_TIME) for _ in ago]
    for lead, days in zip(leads, ago, strict=True):
        add_activities(any_session, lead, [("web_visit", at - days * DAY, "/pricing"),
                                           ("email_send", at - 1 * DAY, None)])  # not an engagement
    ids = [lead.id for lead in leads]

    def sentences(when: datetime) -> dict[int, str]:
        found, frame, _ = batch_inputs(any_session, ids, when)
        return {int(i): render("days_since_last_engagement", {"days_since_last_engagement": v})
                for i, v in zip(found["id"], frame["days_since_last_engagement"], strict=True)}

    now, aging = sentences(at), batch_inputs(any_session, ids, at)[2]
    for lead, days in zip(leads, ago, strict=True):
        until = aging.get(lead.id, at + 400 * DAY)  # none: nothing ages, the sentence is true for good
        for step in np.linspace(0.0, 1.0, 9)[:-1]:
            when = at + (until - at) * float(step)
            assert sentences(when)[lead.id] == now[lead.id], (days, when, now[lead.id])
    assert {now[lead.id] for lead in leads} == {
        "Engaged in the last 7 days", "Last engaged 1-4 weeks ago", "No engagement for over a month",
        "No engagement for over 3 months"}
