"""Model registry: versions, champion per segment, promote, rollback, cached loading."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sqlalchemy.orm import Session

from config.app_config import TrainingConfig
from scoring import registry
from scoring.service import train_from_store
from tests.factories import FAST_TRAINING, synthetic_population, synthetic_training


def _register(session: Session, **kwargs: object) -> registry.ModelVersion:
    result, tset = synthetic_training()
    return registry.register(session, result, train_window=tset.window, **kwargs)  # type: ignore[arg-type]


def test_register_stores_artifact_metrics_card_and_a_unique_version(any_session: Session) -> None:
    first = _register(any_session)
    second = _register(any_session)
    assert re.fullmatch(r"m\d{8}-\d{6}-[0-9a-f]{4,16}", first.version)
    assert first.version != second.version
    assert first.status == second.status == "candidate"
    assert first.family == "catboost"
    assert first.metrics["catboost"]["test"]["auc"] > 0.5
    assert first.features and first.card.startswith("# ")
    assert first.train_start is not None and first.train_end is not None and first.train_start < first.train_end
    assert registry.champion(any_session) is None
    assert [v.version for v in registry.list_versions(any_session)][:2] == [second.version, first.version]


def test_promote_and_rollback_walk_back_through_champions(any_session: Session) -> None:
    a, b, c = (_register(any_session) for _ in range(3))
    for mv in (a, b, c):
        registry.promote(any_session, mv.version)
    assert registry.champion(any_session).version == c.version  # type: ignore[union-attr]
    assert (a.status, b.status) == ("retired", "retired")
    assert registry.rollback(any_session).version == b.version
    assert c.status == "retired"
    assert registry.rollback(any_session).version == a.version
    with pytest.raises(registry.RegistryError, match="no earlier champion"):
        registry.rollback(any_session)
    with pytest.raises(registry.RegistryError, match="unknown model version"):
        registry.promote(any_session, "m-nope")


def test_a_former_champion_run_in_shadow_stays_in_the_rollback_chain(any_session: Session) -> None:
    a, b, c, d = (_register(any_session) for _ in range(4))
    for mv in (a, b, c):
        registry.promote(any_session, mv.version)
    # b, a champion once, runs in shadow beside c: a rollback still brings it back.
    assert registry.shadow(any_session, b.version) == (b, [])
    assert registry.rollback_target(any_session, c) == b
    # Replaced by another shadow, it goes back to retired (not to candidate, out of the chain).
    assert registry.shadow(any_session, d.version) == (d, [b])
    assert (b.status, d.status) == ("retired", "shadow")
    assert registry.rollback(any_session).version == b.version
    # A shadow that never was a champion goes back to candidate.
    assert registry.shadow(any_session, a.version) == (a, [d])
    assert d.status == "candidate"


def test_segment_champions_are_separate_from_the_global_one(any_session: Session) -> None:
    glob = _register(any_session, status="champion")
    seg = _register(any_session, segment="seniority=VP", status="champion")
    assert registry.champion(any_session).id == glob.id  # type: ignore[union-attr]
    assert registry.champion(any_session, "seniority=VP").id == seg.id  # type: ignore[union-attr]
    assert set(registry.segment_champions(any_session)) == {"seniority=VP"}


def test_load_model_round_trips_and_is_cached(sqlite_session: Session) -> None:
    result, tset = synthetic_training()
    mv = _register(sqlite_session)
    model = registry.load_model(mv)
    assert registry.load_model(mv) is model
    sample = tset.frame.head(50)
    np.testing.assert_allclose(model.predict_proba(sample), result.model.predict_proba(sample))


def test_a_segment_model_worse_than_the_global_one_on_its_segment_keeps_the_global_model(
        sqlite_session: Session) -> None:
    synthetic_population(sqlite_session, leads=1200, seed=2)
    config = TrainingConfig(min_per_class=50, segment_by="email_type", min_segment_per_class=150)
    outcome = train_from_store(sqlite_session, config=config, as_of=_as_of(), **FAST_TRAINING)
    # Free-mail is too small to train; Corporate (80 % of leads) trains a model of its own, which
    # is compared with the global model on Corporate's held-out leads -- and loses here.
    assert "too small" not in outcome.skipped_segments["email_type=Corporate"]
    assert "fewer than 150 per class" in outcome.skipped_segments["email_type=Free-mail"]
    (seg,) = [mv for mv in registry.list_versions(sqlite_session) if mv.segment == "email_type=Corporate"]
    verdict = seg.params["segment_comparison"]
    assert verdict["segment"] < verdict["global"] and verdict["use_segment"] is False, verdict
    assert verdict["leads"] > 0 and verdict["positives"] > 0
    assert seg.status == "candidate" and seg.notes.startswith("global model kept")
    assert f"{verdict['segment']:.4f} vs global {verdict['global']:.4f}" in seg.notes
    assert outcome.segments == {} and registry.segment_champions(sqlite_session) == {}
    with pytest.raises(registry.LeadscoreError, match="segment_by"):
        train_from_store(sqlite_session, config=TrainingConfig(min_per_class=50, segment_by="shoe_size"),
                         as_of=_as_of(), **FAST_TRAINING)


def _as_of():  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from tests.factories import BASE_TIME

    return BASE_TIME + timedelta(days=500)


def test_segment_versus_global_uses_the_segment_model_only_when_it_is_better() -> None:
    from scoring.dataset import SPLIT_COLUMN, TARGET
    from scoring.retrain import segment_versus_global
    from scoring.training import train_and_compare

    result, tset = synthetic_training()
    frame = tset.frame
    noise = frame.copy()
    noise[TARGET] = np.random.default_rng(0).permutation(noise[TARGET].to_numpy())
    blind = train_and_compare(noise, target=TARGET, spec=tset.spec, time_col=SPLIT_COLUMN, seed=0, min_per_class=50,
                              families=FAST_TRAINING["families"],
                              catboost_iterations=FAST_TRAINING["catboost_iterations"], drop_leaky=False,
                              **FAST_TRAINING["training_options"]).model
    worse = segment_versus_global(result.model, blind, frame)
    better = segment_versus_global(blind, result.model, frame)
    assert worse["use_segment"] is False and worse["decision"].startswith("global model kept")
    assert better["segment"] == pytest.approx(worse["global"]) and better["global"] == pytest.approx(worse["segment"])
    assert better["use_segment"] is True, better["decision"]
    assert better["decision"].startswith("segment model used")


def test_short_note_keeps_whole_words_and_marks_what_it_left_out() -> None:
    assert registry.short_note(None) == "" and registry.short_note("retired: rolled back") == "retired: rolled back"
    long = "retired: no longer beats the global champion on its segment (" + "x" * 80 + "); auc 0.81 vs 0.84"
    assert registry.short_note(long) == "retired: no longer beats the global champion on its segment …"
    one_clause = "word " * 40
    short = registry.short_note(one_clause, 30)
    assert short.endswith("word …") and len(short) <= 30, short
