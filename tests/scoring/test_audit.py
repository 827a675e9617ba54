"""Data tier: the audit on the real X Education file and on synthetic frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config.errors import LeadscoreError
from scoring.audit import AuditReport, DataError, InsufficientDataError, audit_frame, looks_like_identifier
from scoring.frame import FeatureSpec

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
X_EDUCATION = SHARED_DATA / "x_education" / "Leads.csv"


@pytest.fixture(scope="module")
def x_audit() -> tuple[AuditReport, FeatureSpec]:
    if not X_EDUCATION.is_file():
        pytest.skip(f"X Education data absent at {X_EDUCATION} (shared data ships beside the repo)")
    df = pd.read_csv(X_EDUCATION)
    features = [c for c in df.columns if c != "Converted"]
    numeric = tuple(c for c in features if pd.api.types.is_numeric_dtype(df[c]))
    spec = FeatureSpec(numeric=numeric, categorical=tuple(c for c in features if c not in numeric))
    return audit_frame(df, target="Converted", spec=spec)


def test_x_education_label_set_and_counts(x_audit: tuple[AuditReport, FeatureSpec]) -> None:
    report, _ = x_audit
    assert (report.rows, report.positives, report.negatives) == (9240, 3561, 9240 - 3561)


def test_x_education_tags_is_leaky_and_dropped(x_audit: tuple[AuditReport, FeatureSpec]) -> None:
    report, spec = x_audit
    assert "Tags" in report.leaky_features
    assert "Tags" not in spec.columns and report.dropped["Tags"].startswith("leaky")
    # features that are merely useful are not called leaky
    for useful in ("Total Time Spent on Website", "Lead Origin", "Lead Source"):
        assert useful not in report.leaky_features and useful in spec.columns
    # strong but not separating post-contact columns get a warning the user can act on
    assert any(w.startswith("Lead Quality: strongly predictive") for w in report.warnings)


def test_x_education_identifiers_and_constants(x_audit: tuple[AuditReport, FeatureSpec]) -> None:
    report, spec = x_audit
    assert set(report.identifiers) == {"Prospect ID", "Lead Number"}
    for constant in ("Magazine", "Receive More Updates About Our Courses", "I agree to pay the amount through cheque"):
        assert report.dropped[constant] == "constant (a single value)"
    assert report.dropped["Newspaper Article"].startswith("near-constant")
    assert not {"Prospect ID", "Lead Number", "Magazine"} & set(spec.columns)


def test_x_education_select_is_a_placeholder(x_audit: tuple[AuditReport, FeatureSpec]) -> None:
    report, _ = x_audit
    for col in ("Specialization", "How did you hear about X Education", "Lead Profile", "City"):
        assert report.placeholder_values[col] == ["Select"]
    # "Select" counts as missing: City is 15 % blank + 24 % "Select"
    assert report.missing_share["City"] == pytest.approx(0.397, abs=0.01)
    assert report.to_dict()["placeholder_values"]["City"] == ["Select"]


def _frame(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    signal = y + rng.normal(0, 1.5, n)
    return pd.DataFrame(
        {
            "lead_id": np.arange(n) + 1000,
            "signal": signal,
            "signal_copy": signal * 2 + 1,
            "measurement": rng.normal(size=n),  # continuous, all distinct: not an identifier
            "outcome_code": np.where(y == 1, "won", "lost"),  # separates perfectly: leaky
            "filled_later": y * 3.0,
            "region": pd.Series(rng.choice(["north", "south", "Select", "N/A"], n), dtype="str"),
            "constant": "x",
            "y": y,
        }
    )


SYNTH_SPEC = FeatureSpec(
    numeric=("lead_id", "signal", "signal_copy", "measurement", "filled_later"),
    categorical=("outcome_code", "region", "constant"),
)


def test_synthetic_audit_drops_each_problem_with_its_reason() -> None:
    report, spec = audit_frame(_frame(), target="y", spec=SYNTH_SPEC, min_per_class=100, post_outcome=["filled_later"])
    assert report.dropped["filled_later"].startswith("declared post-outcome")
    assert report.dropped["lead_id"].startswith("identifier")
    assert report.dropped["constant"].startswith("constant")
    assert report.dropped["outcome_code"].startswith("leaky")
    assert report.correlated_pairs == [("signal", "signal_copy", 1.0)]
    assert report.dropped["signal_copy"] == "redundant with signal (correlation 1.00)"
    assert report.placeholder_values["region"] == ["N/A", "Select"]
    assert spec == FeatureSpec(numeric=("signal", "measurement"), categorical=("region",))


def test_keep_leaky_reports_without_dropping() -> None:
    report, spec = audit_frame(_frame(), target="y", spec=SYNTH_SPEC, min_per_class=100, drop_leaky=False)
    assert "outcome_code" in report.leaky_features and "outcome_code" in spec.columns


def test_duplicates_are_counted() -> None:
    df = _frame(600)
    df = pd.concat([df, df.iloc[:25]], ignore_index=True)
    report, _ = audit_frame(df, target="y", spec=FeatureSpec(("signal",), ("region",)), min_per_class=100)
    assert report.duplicates == 25


def test_identifier_detection() -> None:
    assert looks_like_identifier("Prospect ID", pd.Series(["a", "b", "c"]))
    assert looks_like_identifier("Lead Number", pd.Series([5, 9, 7, 7.0] * 1 + list(range(100, 196))))
    assert looks_like_identifier("anything", pd.Series([3, 1, 2]))
    assert not looks_like_identifier("amount", pd.Series([0.11, 0.52, 0.93]))
    assert not looks_like_identifier("country", pd.Series(["in", "us", "in"]))


def test_insufficient_data_message_and_bad_target() -> None:
    df = _frame(300)
    pos = int(df["y"].sum())
    with pytest.raises(InsufficientDataError, match=f"{pos} positive and {300 - pos} negative, need at least 500"):
        audit_frame(df, target="y", spec=SYNTH_SPEC)
    df["y3"] = df["y"] + (df.index % 3 == 0)
    with pytest.raises(DataError, match="not binary") as caught:
        audit_frame(df, target="y3", spec=SYNTH_SPEC, min_per_class=1)
    assert isinstance(caught.value, LeadscoreError)
    with pytest.raises(DataError, match="feature columns not found: nope"):
        audit_frame(df, target="y", spec=FeatureSpec(("nope",), ()), min_per_class=1)


def test_rare_outcome_does_not_make_ordinary_levels_look_leaky() -> None:
    # 6 % base rate; students (40 % of leads) almost never convert - a real, pre-contact signal.
    rng = np.random.default_rng(3)
    n = 12000
    title = rng.choice(["student", "manager", "director", "engineer"], n, p=[0.4, 0.3, 0.1, 0.2])
    rate = np.select([title == "student", title == "director"], [0.004, 0.2], 0.08)
    y = (rng.random(n) < rate).astype(int)
    disposition = np.where(y == 1, "closed won", rng.choice(["no answer", "not interested"], n))
    df = pd.DataFrame({"title": title, "disposition": disposition, "y": y})
    report, spec = audit_frame(df, target="y", spec=FeatureSpec((), ("title", "disposition")), min_per_class=300)
    assert report.leaky_features == ["disposition"]
    assert spec.columns == ["title"]
