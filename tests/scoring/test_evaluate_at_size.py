"""`evaluate` past its size limit samples with a stated method; tiny test splits are flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scoring.evaluate import MIN_TEST_ROWS_PER_CLASS, evaluate_csv, format_evaluation

FAST = {"catboost_iterations": 60, "catboost_grid": [{"depth": 4, "learning_rate": 0.1}], "forest_trees": 20}


def _csv(path: Path, rows: int, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    visits = rng.poisson(3, rows)
    level = rng.choice(["IC", "Manager", "VP"], rows)
    logit = -2.5 + 0.4 * visits + np.where(level == "VP", 1.0, 0.0)
    frame = pd.DataFrame({"visits": visits, "level": level, "noise": rng.normal(size=rows),
                          "converted": (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)})
    frame.to_csv(path, index=False)
    return path


def test_past_the_limit_a_stratified_sample_is_evaluated_and_said_so(tmp_path: Path) -> None:
    path = _csv(tmp_path / "big.csv", 6000)
    rate = pd.read_csv(path)["converted"].mean()
    stages: list[str] = []

    result = evaluate_csv(path, target="converted", min_per_class=50, max_rows=2000, progress=stages.append, **FAST)

    sampling = result["dataset"]["sampling"]
    assert sampling["rows_available"] == 6000 and sampling["rows_used"] == result["dataset"]["rows"]
    assert abs(sampling["rows_used"] - 2000) <= 2
    assert "stratified random sample" in sampling["method"]
    # Stratified: the sample keeps the conversion rate.
    assert abs(result["dataset"]["positives"] / result["dataset"]["rows"] - rate) < 0.002
    assert any("stratified random sample" in w for w in result["audit"]["warnings"])
    assert "stratified random sample" in format_evaluation(result)
    # Progress per stage: reading, sampling, split, each model family, selection.
    assert stages[0].startswith("reading") and any(s.startswith("sampled 2,000 of 6,000") for s in stages)
    assert any(s.startswith("split") for s in stages) and stages[-1].startswith("selected")


def test_under_the_limit_nothing_is_sampled(tmp_path: Path) -> None:
    result = evaluate_csv(_csv(tmp_path / "small.csv", 1500), target="converted", min_per_class=50,
                          max_rows=2000, **FAST)
    assert result["dataset"]["sampling"] is None and result["dataset"]["rows"] == 1500
    assert not any("not meaningful" in w for w in result["audit"]["warnings"])


def test_a_test_split_with_under_30_rows_of_a_class_is_flagged(tmp_path: Path) -> None:
    path = _csv(tmp_path / "tiny.csv", 60)
    result = evaluate_csv(path, target="converted", min_per_class=1, **FAST)
    test = next(iter(result["models"].values()))["test"]
    assert min(test["positives"], test["rows"] - test["positives"]) < MIN_TEST_ROWS_PER_CLASS
    warning = [w for w in result["audit"]["warnings"] if "not meaningful" in w]
    assert warning and f"{test['positives']} positive" in warning[0]
    assert "not meaningful" in format_evaluation(result)
