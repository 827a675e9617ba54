"""``leadscore evaluate --time-column COL``: the split follows the column, which is no feature."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from worker.cli import main


def _drifting_csv(path: Path, n: int = 1200, seed: int = 0) -> Path:
    """Leads whose signal reverses for the newest 15 % (by ``day``); rows stored shuffled.

    A time-ordered split trains on the old relationship and tests on the reversed one (test AUC
    far below 0.5); a random split mixes both periods everywhere (test AUC above 0.5).
    """
    rng = np.random.default_rng(seed)
    day = rng.integers(0, 300, size=n)  # several leads a day, rows in no particular order
    score = rng.normal(size=n)
    sign = np.where(day < np.quantile(day, 0.85), 1.0, -1.0)
    won = (rng.random(n) < 1 / (1 + np.exp(-(3.0 * sign * score - 0.5)))).astype(int)
    pd.DataFrame({"day": day, "score": score, "won": won}).to_csv(path, index=False)
    return path


def _evaluate(csv: Path, out: Path, *extra: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--csv", str(csv), "--target", "won", "--min-per-class", "100",
              "--json", str(out), *extra])
    assert exit_info.value.code == 0
    return json.loads(out.read_text())


def test_time_column_orders_the_split_and_is_not_a_feature(tmp_path: Path) -> None:
    csv = _drifting_csv(tmp_path / "leads.csv")
    by_time = _evaluate(csv, tmp_path / "time.json", "--time-column", "day")
    at_random = _evaluate(csv, tmp_path / "random.json")
    assert by_time["dataset"]["features"] == ["score"]
    assert "day" in at_random["dataset"]["features"]
    time_auc = by_time["models"]["logistic_regression"]["test"]["auc"]
    random_auc = at_random["models"]["logistic_regression"]["test"]["auc"]
    assert time_auc < 0.3 < 0.5 < random_auc, (time_auc, random_auc)


def test_unknown_time_column_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _drifting_csv(tmp_path / "leads.csv", n=300)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--csv", str(csv), "--target", "won", "--time-column", "ghost"])
    assert exit_info.value.code == 1
    assert "time column 'ghost' not in leads.csv" in capsys.readouterr().err
