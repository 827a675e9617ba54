"""SHAP values by leaf (scoring.leaf_shap) are CatBoost's own SHAP values, at a fraction of the cost."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.frame import prepare_frame
from scoring.leaf_shap import LeafShap, catboost_shap
from scoring.model import TrainedModel
from scoring.training import BIAS, train_and_compare
from tests.scoring.test_training import SPEC, synthetic

DEEP = {"catboost_iterations": 120, "catboost_grid": [{"depth": 6, "learning_rate": 0.15}]}


def _own(model: TrainedModel, frame: pd.DataFrame) -> np.ndarray:
    """CatBoost's SHAP values of the rows, as get_feature_importance gives them."""
    estimator = model.estimator
    return catboost_shap(estimator.model, estimator.prepare(prepare_frame(frame, model.spec)), 2)


def _later_leads() -> pd.DataFrame:
    """Leads unlike the training ones: far more engaged, other sources, new industries."""
    later = synthetic(n=1500, seed=11)
    later["engagement"] *= 4
    later.loc[::3, "source"] = "partner"
    later.loc[::5, "industry"] = "energy"
    return later


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    result = train_and_compare(synthetic(), target="converted", spec=SPEC, seed=0, min_per_class=200,
                               families=("catboost",), **DEEP)
    return result.models["catboost"]


def test_values_by_leaf_equal_catboosts_on_leads_training_never_saw(model: TrainedModel) -> None:
    tables = model.estimator.leaf_shap()
    assert tables is not None and tables.usable
    known = int(tables.known.sum())
    assert known > 0  # training filled the leaves its rows (and their mixes) reach
    later = _later_leads()
    values = model.contributions(later)
    assert list(values.columns) == [*SPEC.columns, BIAS]
    np.testing.assert_allclose(values.to_numpy(), _own(model, later), rtol=0, atol=1e-12)
    assert tables.usable
    # Those leads reached leaves no training row did: the tables grew (and stayed exact).
    assert int(tables.known.sum()) > known


def test_the_tables_travel_in_the_artifact(model: TrainedModel) -> None:
    later = _later_leads()
    model.contributions(later)
    loaded = TrainedModel.from_bytes(model.to_bytes())
    tables, again = model.estimator.leaf_shap(), loaded.estimator.leaf_shap()
    assert tables is not None and again is not None
    assert np.array_equal(tables.known, again.known)
    np.testing.assert_array_equal(loaded.contributions(later).to_numpy(), model.contributions(later).to_numpy())


def test_a_model_stored_before_the_tables_builds_them_from_the_rows_it_explains(model: TrainedModel) -> None:
    old = TrainedModel.from_bytes(model.to_bytes())
    del old.estimator.__dict__["_leaf_shap"]  # what an artifact pickled before the tables holds
    old = TrainedModel.from_bytes(old.to_bytes())
    later = _later_leads()
    values = old.contributions(later)
    tables = old.estimator.leaf_shap()
    assert tables is not None and tables.usable and tables.known.any()
    np.testing.assert_allclose(values.to_numpy(), _own(model, later), rtol=0, atol=1e-12)


def test_trees_that_are_not_symmetric_are_explained_by_catboost() -> None:
    result = train_and_compare(synthetic(), target="converted", spec=SPEC, seed=0, min_per_class=200,
                               families=("catboost",), catboost_iterations=60,
                               catboost_grid=[{"depth": 4, "grow_policy": "Depthwise"}])
    model = result.models["catboost"]
    assert model.estimator.leaf_shap() is None
    later = _later_leads()
    np.testing.assert_array_equal(model.contributions(later).to_numpy(), _own(model, later))


def test_tables_that_disagree_with_catboost_are_not_used(model: TrainedModel) -> None:
    estimator = model.estimator
    later = _later_leads()
    pool = estimator.prepare(prepare_frame(later, model.spec))
    tables = LeafShap(estimator.model)
    tables.fill(estimator.model, pool)
    assert tables.usable
    leaves = np.asarray(estimator.model.calc_leaf_indexes(pool), dtype="int64")
    first_tree = next(t for t, cols in enumerate(tables.columns) if len(cols))
    tables.tables[first_tree][0, leaves[0, first_tree]] += 0.5  # one leaf's value, wrong
    tables._check(estimator.model, pool, leaves)
    assert not tables.usable
    np.testing.assert_array_equal(tables.values(estimator.model, pool, 2), catboost_shap(estimator.model, pool, 2))
