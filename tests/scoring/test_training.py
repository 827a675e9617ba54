"""Model tier: training, split, guard, calibration, contributions, artifacts, behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config.errors import LeadscoreError
from scoring.audit import InsufficientDataError
from scoring.calibration import fit_calibrator
from scoring.card import render_model_card
from scoring.frame import FeatureSpec
from scoring.metrics import expected_calibration_error
from scoring.training import BIAS, TrainedModel, TrainingResult, split_frame, train_and_compare

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
X_EDUCATION = SHARED_DATA / "x_education" / "Leads.csv"
FAST = {"catboost_iterations": 150, "catboost_grid": [{"depth": 4, "learning_rate": 0.15}], "forest_trees": 40}
SPEC = FeatureSpec(numeric=("engagement", "pages", "noise"), categorical=("source", "industry"))


def synthetic(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Leads whose conversion rises with engagement and depends on source; created over a year."""
    rng = np.random.default_rng(seed)
    engagement = rng.gamma(2.0, 2.0, n)
    pages = rng.poisson(3, n).astype(float)
    pages[rng.random(n) < 0.1] = np.nan
    source = rng.choice(["web", "referral", "event", "ads"], n, p=[0.4, 0.2, 0.15, 0.25])
    industry = pd.Series(rng.choice(["saas", "retail", "health"], n), dtype="str")
    industry[rng.random(n) < 0.2] = np.nan  # pandas 3 string dtype with NaN: the pitfall
    effect = {"web": 0.0, "referral": 1.2, "event": 0.6, "ads": -0.5}
    logit = -2.0 + 0.45 * engagement + 0.1 * np.nan_to_num(pages) + np.vectorize(effect.get)(source)
    converted = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    created = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 365, n), unit="D")
    return pd.DataFrame(
        {
            "engagement": engagement,
            "pages": pages,
            "noise": rng.normal(size=n),
            "source": pd.Series(source, dtype="str"),
            "industry": industry,
            "created_at": created,
            "converted": converted,
        }
    )


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return synthetic()


@pytest.fixture(scope="module")
def result(data: pd.DataFrame) -> TrainingResult:
    return train_and_compare(data, target="converted", spec=SPEC, seed=0, min_per_class=200, **FAST)


def test_every_family_has_validation_and_test_metrics_and_selection_uses_validation(
    result: TrainingResult,
) -> None:
    assert set(result.metrics) == {"catboost", "logistic_regression", "random_forest"}
    for parts in result.metrics.values():
        assert {"validation", "test"} <= set(parts)
        for metrics in parts.values():
            assert 0.5 < metrics["auc"] <= 1.0
            assert "ece_before_calibration" in metrics
    best = max(result.metrics, key=lambda f: result.metrics[f]["validation"]["auc"])
    assert result.selected == best
    assert result.model.family == best
    assert result.split["kind"] == "stratified"
    assert result.split["train_rows"] + result.split["validation_rows"] + result.split["test_rows"] == 3000
    assert result.audit.rows == 3000


@pytest.mark.parametrize("family", ["catboost", "logistic_regression", "random_forest"])
def test_contributions_sum_to_raw_log_odds(result: TrainingResult, data: pd.DataFrame, family: str) -> None:
    model = result.models[family]
    sample = data.iloc[:200]
    contributions = model.contributions(sample)
    assert list(contributions.columns) == [*model.spec.columns, BIAS]
    assert np.allclose(contributions.sum(axis=1).to_numpy(), model.raw_log_odds(sample), atol=1e-6)


def test_strong_feature_gets_the_largest_contributions(result: TrainingResult, data: pd.DataFrame) -> None:
    contributions = result.models["catboost"].contributions(data.iloc[:500]).drop(columns=[BIAS])
    assert contributions.abs().mean().idxmax() == "engagement"


def test_round_trip_through_bytes_gives_identical_predictions(result: TrainingResult, data: pd.DataFrame) -> None:
    for model in result.models.values():
        restored = TrainedModel.from_bytes(model.to_bytes())
        assert restored.family == model.family and restored.spec == model.spec
        assert np.array_equal(restored.predict_proba(data), model.predict_proba(data))
    with pytest.raises(ValueError, match="not a leadscore model"):
        TrainedModel.from_bytes(b"garbage")


def test_predictions_are_probabilities_and_missing_strings_are_handled(result: TrainingResult) -> None:
    unseen = pd.DataFrame(
        {
            "engagement": [1.0, np.nan, 8.0],
            "pages": [np.nan, 2.0, 5.0],
            "noise": [0.0, 0.0, 0.0],
            "source": pd.Series([np.nan, "brand-new-source", "Select"], dtype="str"),
            "industry": pd.Series([np.nan, np.nan, np.nan], dtype="str"),
        }
    )
    for model in result.models.values():
        p = model.predict_proba(unseen)
        assert p.shape == (3,) and np.all((p > 0) & (p < 1))


def test_higher_engagement_raises_the_score_on_average(result: TrainingResult, data: pd.DataFrame) -> None:
    model = result.models["catboost"]
    sample = data.iloc[:300].copy()
    low, high = sample.copy(), sample.copy()
    low["engagement"] = data["engagement"].quantile(0.1)
    high["engagement"] = data["engagement"].quantile(0.9)
    assert model.predict_proba(high).mean() > model.predict_proba(low).mean() + 0.1


@pytest.mark.parametrize("family", ["catboost", "logistic_regression", "random_forest"])
def test_a_value_beyond_the_training_range_counts_as_the_nearest_one_seen(
    result: TrainingResult, data: pd.DataFrame, family: str
) -> None:
    """Live leads reach values no example had (quiet for 470 days where examples, 14 days old,
    stop at 14): no family extrapolates. The logistic regression used to, and a long-quiet lead
    got a likelihood of 100 % in a crmsim trial."""
    model = result.models[family]
    rows = data.iloc[:50].copy()
    top, bottom = rows.copy(), rows.copy()
    top["engagement"], bottom["engagement"] = data["engagement"].max(), data["engagement"].min()
    far_up, far_down = rows.copy(), rows.copy()
    far_up["engagement"], far_down["engagement"] = 30 * data["engagement"].max(), -30 * data["engagement"].max()
    np.testing.assert_allclose(model.predict_proba(far_up), model.predict_proba(top), rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.predict_proba(far_down), model.predict_proba(bottom), rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.contributions(far_up).to_numpy(), model.contributions(top).to_numpy(),
                               rtol=0, atol=1e-9)


def test_monotone_constraint_never_lowers_the_score_when_engagement_rises(data: pd.DataFrame) -> None:
    res = train_and_compare(
        data,
        target="converted",
        spec=SPEC,
        min_per_class=200,
        families=("catboost",),
        monotone={"engagement": 1},
        **FAST,
    )
    grid = np.linspace(0, data["engagement"].max(), 25)
    for _, row in data.iloc[:40].iterrows():
        frame = pd.DataFrame([row] * len(grid)).reset_index(drop=True)
        frame["engagement"] = grid
        scores = res.model.predict_proba(frame)
        assert np.all(np.diff(scores) >= -1e-12)


def test_time_split_puts_later_leads_in_test(data: pd.DataFrame) -> None:
    y = data["converted"].to_numpy()
    train, val, test, info = split_frame(data, y, time_col="created_at", seed=0)
    times = data["created_at"]
    assert times.iloc[train].max() <= times.iloc[val].min()
    assert times.iloc[val].max() <= times.iloc[test].min()
    assert len(train) + len(val) + len(test) == len(data)
    assert info["kind"] == "time" and abs(len(test) / len(data) - 0.15) < 0.01
    assert pd.Timestamp(info["train_to"]) <= pd.Timestamp(info["test_from"])


def test_time_split_keeps_equal_timestamps_on_one_side() -> None:
    # 40 rows, three per timestamp: the 70 % and 85 % cuts (rows 28 and 34) fall inside a tie.
    df = pd.DataFrame({"t": [i // 3 for i in range(40)], "y": [0, 1] * 20})
    train, val, test, _ = split_frame(df, df["y"].to_numpy(), time_col="t", seed=0)
    assert (len(train), len(val), len(test)) == (30, 6, 4)
    assert set(df["t"].iloc[train]) & set(df["t"].iloc[test]) == set()
    assert set(df["t"].iloc[train]) & set(df["t"].iloc[val]) == set()


def test_training_with_time_column_reports_the_time_split(data: pd.DataFrame) -> None:
    res = train_and_compare(
        data,
        target="converted",
        spec=SPEC,
        time_col="created_at",
        min_per_class=200,
        families=("logistic_regression",),
    )
    assert res.split["kind"] == "time"
    assert res.split["validation_to"] <= res.split["test_from"]


def test_insufficient_data_is_refused_with_the_counts(data: pd.DataFrame) -> None:
    small = data.iloc[:400]
    pos = int(small["converted"].sum())
    with pytest.raises(InsufficientDataError) as caught:
        train_and_compare(small, target="converted", spec=SPEC, min_per_class=500, **FAST)
    message = str(caught.value)
    assert str(pos) in message and str(400 - pos) in message and "500" in message
    assert isinstance(caught.value, LeadscoreError)


def test_insufficient_data_can_fall_back_to_the_points_model(data: pd.DataFrame) -> None:
    small = data.iloc[:400]
    res = train_and_compare(small, target="converted", spec=SPEC, min_per_class=500, on_insufficient="rules")
    assert res.selected == "rules" and res.model.family == "rules"
    assert any("points model" in w for w in res.audit.warnings)
    p = res.model.predict_proba(data.iloc[400:600])
    assert np.all((p > 0) & (p < 1))
    contributions = res.model.contributions(data.iloc[400:600])
    assert np.allclose(contributions.sum(axis=1), res.model.raw_log_odds(data.iloc[400:600]))
    assert res.metrics["rules"]["test"]["auc"] > 0.6
    assert TrainedModel.from_bytes(res.model.to_bytes()).family == "rules"


def test_platt_calibration_repairs_an_overconfident_score() -> None:
    rng = np.random.default_rng(1)
    true_logit = rng.normal(-0.5, 1.2, 8000)
    y = (rng.random(8000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    raw = 3.0 * true_logit + 1.0  # overconfident and shifted
    cal = fit_calibrator(raw[:4000], y[:4000])
    before = expected_calibration_error(y[4000:], 1 / (1 + np.exp(-raw[4000:])))
    after = expected_calibration_error(y[4000:], cal.transform(raw[4000:]))
    assert before > 0.1 and after < 0.03
    iso = fit_calibrator(raw[:4000], y[:4000], method="isotonic")
    assert expected_calibration_error(y[4000:], iso.transform(raw[4000:])) < before


def test_calibration_never_worsens_validation_ece_much(result: TrainingResult) -> None:
    for parts in result.metrics.values():
        v = parts["validation"]
        assert v["ece"] <= v["ece_before_calibration"] + 0.01


@pytest.fixture(scope="module")
def x_education() -> pd.DataFrame:
    if not X_EDUCATION.is_file():
        pytest.skip(f"X Education data absent at {X_EDUCATION} (shared data ships beside the repo)")
    return pd.read_csv(X_EDUCATION)


def _x_spec(df: pd.DataFrame) -> FeatureSpec:
    features = [c for c in df.columns if c != "Converted"]
    numeric = tuple(c for c in features if pd.api.types.is_numeric_dtype(df[c]))
    return FeatureSpec(numeric=numeric, categorical=tuple(c for c in features if c not in numeric))


def test_x_education_with_every_column_shows_the_leak(x_education: pd.DataFrame) -> None:
    res = train_and_compare(
        x_education,
        target="Converted",
        spec=_x_spec(x_education),
        drop_leaky=False,
        catboost_iterations=120,
        catboost_grid=[{"depth": 4, "learning_rate": 0.2}],
        forest_trees=60,
    )
    assert "Tags" in res.audit.leaky_features and "Tags" in res.spec.columns
    for family, parts in res.metrics.items():
        assert parts["test"]["auc"] >= 0.95, (family, parts["test"]["auc"])


def test_model_card_covers_every_family_and_the_audit(result: TrainingResult) -> None:
    card = render_model_card(result, version="v-test", train_window=("2025-01-01", "2025-12-31"), notes="hello")
    for section in ("# Lead scoring model v-test", "## Intended use", "## Data audit", "## Metrics", "## Calibration"):
        assert section in card
    assert "## Limitations" in card and "## Notes" in card and "2025-01-01 to 2025-12-31" in card
    for family in result.metrics:
        assert f"| {family} | test |" in card or f"| **{family}** | test |" in card
    assert f"**{result.selected}**" in card
    json.dumps(result.audit.to_dict())


def test_unknown_options_are_refused(data: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="selection metric"):
        train_and_compare(data, target="converted", spec=SPEC, selection_metric="accuracy")
    with pytest.raises(ValueError, match="model families"):
        train_and_compare(data, target="converted", spec=SPEC, families=("xgboost",))


def test_platt_is_applied_only_where_it_helps_out_of_fold() -> None:
    """A validation slice with a handful of conversions stretched an already sound model's
    log-odds (a likelihood of 91.9 % for a lead whose true chance was 22 %): Platt is kept only
    when fits on some folds calibrate the others better than the model's own probabilities."""
    from scoring.calibration import fit_calibrator

    rng = np.random.default_rng(4)
    z = rng.normal(-3.0, 1.0, 600)  # the model's own log-odds, already calibrated
    y = (rng.random(600) < 1 / (1 + np.exp(-z))).astype(int)
    assert 3 <= y.sum() <= 40
    sound = fit_calibrator(z, y)
    assert sound.method == "none" and sound.reason.startswith("Platt scaling not applied: fitted on part of")
    assert np.allclose(sound.transform(z), 1 / (1 + np.exp(-z)))
    # A model whose log-odds are off (shifted by 2, stretched 3 times): Platt is what fixes it.
    off = 3 * z + 2
    fixed = fit_calibrator(off, y)
    assert fixed.method == "platt" and fixed.reason == ""
    assert abs(fixed.transform(off).mean() - y.mean()) < 0.02
    # One conversion cannot fit anything.
    one = np.zeros(600, dtype=int)
    one[0] = 1
    assert fit_calibrator(off, one).reason == ("Platt scaling not applied: 1 conversion in the validation part "
                                               "cannot fit it")
