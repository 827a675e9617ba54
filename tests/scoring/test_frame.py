"""Code tier: the one frame builder used by training and scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from catboost import CatBoostClassifier, CatBoostError, Pool

from scoring.frame import MISSING_TOKEN, FeatureSpec, FrameError, prepare_frame

SPEC = FeatureSpec(numeric=("visits", "flag"), categorical=("source", "city"))


def test_spec_columns_without_and_round_trip() -> None:
    assert SPEC.columns == ["visits", "flag", "source", "city"]
    assert SPEC.without(["flag", "city", "unknown"]) == FeatureSpec(("visits",), ("source",))
    assert FeatureSpec.from_dict(SPEC.to_dict()) == SPEC
    with pytest.raises(ValueError, match="both numeric and categorical"):
        FeatureSpec(numeric=("a",), categorical=("a",))


def test_pandas_string_missing_and_placeholders_become_the_missing_token() -> None:
    df = pd.DataFrame(
        {
            "visits": ["3", None, "x", 7],
            "flag": [True, False, True, False],
            "source": pd.Series(["Web", np.nan, "Select", " Ads "], dtype="str"),
            "city": pd.Series([None, "N/A", "", "Mumbai"], dtype="object"),
            "ignored": [1, 2, 3, 4],
        }
    )
    out = prepare_frame(df, SPEC)
    assert list(out.columns) == SPEC.columns
    assert out["visits"].dtype == np.float64 and out["flag"].dtype == np.float64
    assert out["visits"].iloc[0] == 3.0 and np.isnan(out["visits"].iloc[1]) and np.isnan(out["visits"].iloc[2])
    assert out["source"].tolist() == ["Web", MISSING_TOKEN, MISSING_TOKEN, "Ads"]
    assert out["city"].tolist() == [MISSING_TOKEN, MISSING_TOKEN, MISSING_TOKEN, "Mumbai"]
    assert all(isinstance(v, str) for v in out["source"])


def test_catboost_accepts_the_prepared_frame_where_raw_pandas_strings_fail() -> None:
    df = pd.DataFrame(
        {
            "visits": [1.0, 2.0, np.nan, 4.0] * 5,
            "flag": [1, 0, 1, 0] * 5,
            "source": pd.Series(["a", np.nan, "b", "a"] * 5, dtype="str"),
            "city": pd.Series([np.nan] * 20, dtype="str"),
        }
    )
    y = [0, 1, 0, 1] * 5
    with pytest.raises(CatBoostError, match="cat_features must be integer or string"):
        Pool(df[SPEC.columns].astype({"source": str, "city": str}), y, cat_features=[2, 3])
    prepared = prepare_frame(df, SPEC)
    model = CatBoostClassifier(iterations=5, verbose=False, allow_writing_files=False, thread_count=1)
    model.fit(Pool(prepared, y, cat_features=[2, 3]))
    assert model.predict_proba(Pool(prepared, cat_features=[2, 3])).shape == (20, 2)


def test_index_is_preserved_and_missing_columns_are_named() -> None:
    df = pd.DataFrame({"visits": [1], "flag": [0], "source": ["a"], "city": ["b"]}, index=[42])
    assert prepare_frame(df, SPEC).index.tolist() == [42]
    with pytest.raises(FrameError, match="city"):
        prepare_frame(df.drop(columns=["city"]), SPEC)


def test_integral_float_codes_meet_their_integer_spelling() -> None:
    spec = FeatureSpec(numeric=(), categorical=("code",))
    trained = prepare_frame(pd.DataFrame({"code": [1.0, np.nan, 2.5]}), spec)
    scored = prepare_frame(pd.DataFrame({"code": [1, 2, 3]}), spec)
    assert trained["code"].tolist() == ["1", MISSING_TOKEN, "2.5"]
    assert scored["code"].tolist() == ["1", "2", "3"]


def test_text_columns_encode_each_distinct_value_as_the_general_path_does() -> None:
    from scoring.frame import categorical_series

    words = [" Web ", "Web", None, np.nan, "n/a", "", "Ads", " Web ", "Select", "  "] * 3
    fast = categorical_series(pd.Series(words, dtype=object))
    # A number in the column takes the value-by-value path: the texts must come out the same.
    general = categorical_series(pd.Series([*words, 7], dtype=object)).iloc[:-1]
    assert fast.tolist() == general.tolist()
    assert fast.tolist()[:4] == ["Web", "Web", MISSING_TOKEN, MISSING_TOKEN]
