"""Fit and engagement: the champion's grouped contributions vs two companion models (prints JSON).

On the champion's own test leads (the latest 15 % of its point-in-time training set), compares:

- ``grouped``: the champion's SHAP contributions summed over the fit features and over the
  engagement features (what leadscore writes as the fit and engagement scores);
- ``companion``: a CatBoost trained on the same training part with only the fit features, and
  one with only the engagement features.

For each: the AUC of the fit and engagement values on the test leads, and, for the grouped sums,
whether fit + engagement + bias adds up to the score (it does by construction; the companions'
two probabilities do not add up to anything). Run after ``leadscore demo`` in the same directory::

    .venv/bin/python bench/subscores.py --database-url sqlite:///var/demo/leadscore.db
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from scoring import registry  # noqa: E402
from scoring.dataset import SPLIT_COLUMN, TARGET, build_training_set  # noqa: E402
from scoring.features import align_to_spec  # noqa: E402
from scoring.subscores import ENGAGEMENT, FIT, group_of, split_contributions  # noqa: E402
from scoring.training import split_frame, train_and_compare  # noqa: E402
from store.db import make_engine, unit_of_work  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--iterations", type=int, default=300, help="CatBoost trees of the companion models")
    args = parser.parse_args()
    started = time.perf_counter()
    engine = make_engine(args.database_url)
    with unit_of_work(engine) as session:
        mv = registry.champion(session)
        if mv is None:
            raise SystemExit("no champion model in that database: run `leadscore demo` first")
        model = registry.load_model(mv)
        version = mv.version
        as_of = datetime.fromisoformat(str(mv.params["as_of"]))
        tset = build_training_set(session, as_of=as_of, horizon_days=int(mv.params.get("horizon_days") or 90))
        session.rollback()
    frame = tset.frame.reset_index(drop=True)
    y = frame[TARGET].astype(int).to_numpy()
    _train, _val, test, _ = split_frame(frame, y, time_col=SPLIT_COLUMN, seed=0)
    x_test = align_to_spec(frame.iloc[test], model.spec)
    y_test = y[test]
    contributions = model.contributions(x_test)
    fit, engagement = split_contributions(contributions)
    score = model.raw_log_odds(x_test)
    bias = contributions["__bias__"].to_numpy()
    out: dict[str, object] = {
        "model": version, "test_leads": int(len(test)), "test_positives": int(y_test.sum()),
        "score_auc": round(float(roc_auc_score(y_test, score)), 4),
        "grouped": {"fit_auc": round(float(roc_auc_score(y_test, fit)), 4),
                    "engagement_auc": round(float(roc_auc_score(y_test, engagement)), 4),
                    "adds_up_to_score": bool(np.allclose(fit + engagement + bias, score, atol=1e-6))},
    }
    companion: dict[str, object] = {}
    for group in (FIT, ENGAGEMENT):
        spec = tset.spec.without([c for c in tset.spec.columns if group_of(c) != group])
        result = train_and_compare(frame, target=TARGET, spec=spec, time_col=SPLIT_COLUMN, seed=0,
                                   families=("catboost",), catboost_iterations=args.iterations,
                                   min_per_class=50, drop_leaky=False)
        p = result.model.predict_proba(align_to_spec(frame.iloc[test], result.model.spec))
        grouped = fit if group == FIT else engagement
        companion[f"{group}_auc"] = round(float(roc_auc_score(y_test, p)), 4)
        companion[f"{group}_spearman_with_grouped"] = round(float(spearmanr(p, grouped).statistic), 4)
    out["companion"] = companion
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
