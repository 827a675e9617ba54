"""A new model is readied for the live leads it will score when it is trained: its first scoring
run (in any process) neither fills SHAP tables nor measures the live leads' typical values."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy.orm import Session

from config.app_config import TrainingConfig
from scoring import champions
from scoring.features import align_to_spec
from scoring.leaf_shap import LeafShap
from scoring.model import TrainedModel
from scoring.service import train_from_store
from tests.factories import BASE_TIME, FAST_TRAINING, synthetic_population

AS_OF = BASE_TIME + timedelta(days=500)


def test_training_stores_the_live_leads_typical_values_and_fills_the_leaves_they_reach(
    sqlite_session: Session,
) -> None:
    session = sqlite_session
    synthetic_population(session, leads=700, seed=4)
    mv = train_from_store(session, as_of=AS_OF, config=TrainingConfig(min_per_class=50), **FAST_TRAINING).model_version
    session.flush()
    live = champions.read_live_leads(session, AS_OF)
    assert len(live.ids) >= champions.LIVE_SAMPLE_MIN  # enough live leads for typical values of their own

    # The typical values stored with the version (read back from the database) are what a run
    # measuring the live leads itself finds, and a run within LIVE_TYPICAL_DAYS uses them.
    session.expire(mv)
    stored = mv.params[champions.LIVE_TYPICAL_KEY]
    assert stored["as_of"] == AS_OF.isoformat() and stored["typical"]["common"]
    champions._live_typical_cache.clear()
    assert champions.live_typical(session, mv, AS_OF + timedelta(days=champions.LIVE_TYPICAL_DAYS - 1)) == (
        stored["typical"])
    mv.params = {k: v for k, v in mv.params.items() if k != champions.LIVE_TYPICAL_KEY}
    champions._live_typical_cache.clear()
    assert champions.live_typical(session, mv, AS_OF) == stored["typical"]

    # The SHAP tables: the artifact as a new process loads it, its tables emptied (as in an artifact
    # from before they existed), readied again: they know every leaf the live leads reach, and the
    # values looked up by leaf are CatBoost's own.
    model = TrainedModel.from_bytes(mv.artifact)
    model.estimator._leaf_shap = tables = LeafShap(model.estimator.model)
    rows = model.prepare(align_to_spec(live.frame, model.spec))
    leaves = np.asarray(model.estimator.model.calc_leaf_indexes(rows.encoded), dtype="int64") + tables.offsets
    assert not tables.known[leaves].any()
    assert champions.ready_for_live(model, None, live) == {champions.LIVE_TYPICAL_KEY: stored}
    assert tables.usable and tables.known[leaves].all()
    np.testing.assert_allclose(rows.contributions().to_numpy(), model.estimator.catboost_contributions(rows.encoded),
                               rtol=0, atol=1e-12)
