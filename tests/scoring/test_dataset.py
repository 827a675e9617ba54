"""The training set: labels, exclusions, split by lead and time, and a simulated funnel end to end."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.app_config import TrainingConfig
from scoring.dataset import SNAPSHOT_OFFSETS_DAYS, SPLIT_COLUMN, TARGET, build_training_set, label_examples
from scoring.features import load_leads_frame
from scoring.service import train_from_store
from scoring.training import split_frame
from store.db import make_engine
from store.models import Base, Lead
from tests.factories import BASE_TIME, generate_world, load_world, make_connection, make_lead, synthetic_population

DAY = timedelta(days=1)


def test_labels_and_exclusions(sqlite_session: Session) -> None:
    conn = make_connection(sqlite_session)
    as_of = BASE_TIME + 200 * DAY
    # Converted on day 10: positive at snapshots 1 and 7, already converted at 21 and 60.
    converted = make_lead(sqlite_session, conn, converted_at=BASE_TIME + 10 * DAY)
    # Converted on day 120: negative at day 1 (121 > 1 + 90), positive from day 60 on.
    late = make_lead(sqlite_session, conn, converted_at=BASE_TIME + 120 * DAY)
    never = make_lead(sqlite_session, conn)
    # Created 149 days before as_of: snapshots 1, 7 and 21 are labelled, 60 is not (60 + 90 > 149).
    young = make_lead(sqlite_session, conn, crm_created_at=as_of - 149 * DAY)
    make_lead(sqlite_session, conn, is_deleted=True)
    make_lead(sqlite_session, conn, is_converted=True, converted_at=None)
    examples, excluded = label_examples(load_leads_frame(sqlite_session), as_of=as_of, offsets=(1, 7, 21, 60))
    got = {
        (int(r.id), int((r.snapshot_at - r.crm_created_at).days)): int(r.converted)
        for r in examples.itertuples()
    }
    assert got == {
        (converted.id, 1): 1, (converted.id, 7): 1,
        (late.id, 1): 0, (late.id, 7): 0, (late.id, 21): 0, (late.id, 60): 1,
        (never.id, 1): 0, (never.id, 7): 0, (never.id, 21): 0, (never.id, 60): 0,
        (young.id, 1): 0, (young.id, 7): 0, (young.id, 21): 0,
    }
    assert excluded == {"deleted": 1, "converted_without_time": 1, "already_converted": 2,
                        "horizon_not_elapsed": 1}


def test_examples_of_a_lead_share_one_split_part_and_test_leads_are_later(sqlite_session: Session) -> None:
    synthetic_population(sqlite_session, leads=600, seed=1)
    tset = build_training_set(sqlite_session, as_of=BASE_TIME + 500 * DAY)
    frame = tset.frame
    assert frame["lead_id"].value_counts().max() == len(SNAPSHOT_OFFSETS_DAYS)
    train, val, test, _ = split_frame(frame, frame[TARGET].to_numpy(), time_col=SPLIT_COLUMN, seed=0)
    parts = [set(frame["lead_id"].iloc[p]) for p in (train, val, test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    created = {i: c for i, c in sqlite_session.execute(select(Lead.id, Lead.crm_created_at)).all()}
    assert max(created[i] for i in parts[0]) <= min(created[i] for i in parts[2])
    assert set(tset.spec.columns) <= set(frame.columns)
    assert not {"status", "is_converted", "converted_at", "owner_crm_id", "raw"} & set(tset.spec.columns)


@pytest.fixture(scope="module")
def world_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Session]]:
    """A simulated funnel (3,000 leads) loaded once into a private SQLite store for this module."""
    world, sink = generate_world(seed=5, leads=3000, history_days=400)
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('world') / 'world.db'}")
    Base.metadata.create_all(engine)
    session = Session(engine, expire_on_commit=False)
    load_world(session, sink)
    yield world, sink, session
    session.close()
    engine.dispose()


def test_model_on_a_simulated_funnel_beats_chance_and_stays_below_the_oracle(
    world_db: tuple[Any, Any, Session],
) -> None:
    world, _sink, session = world_db
    as_of = world.now
    outcome = train_from_store(
        session, as_of=as_of, config=TrainingConfig(min_per_class=50),
        families=("catboost",), catboost_iterations=150,
        training_options={"catboost_grid": [{"depth": 4, "learning_rate": 0.1}]},
    )
    assert outcome.model_version.status == "champion"
    tset = build_training_set(session, as_of=as_of)
    frame = tset.frame
    y = frame[TARGET].to_numpy()
    _, _, test, _ = split_frame(frame, y, time_col=SPLIT_COLUMN, seed=0)
    truth = {r["person_key"]: r["true_probability"] for r in world.truth()}
    crm_ids = {i: c for i, c in session.execute(select(Lead.id, Lead.crm_id)).all()}
    oracle = np.array([truth[crm_ids[i]] for i in frame["lead_id"].iloc[test]])
    model_auc = float(roc_auc_score(y[test], outcome.result.model.predict_proba(frame.iloc[test])))
    oracle_auc = float(roc_auc_score(y[test], oracle))
    recorded = outcome.result.metrics["catboost"]["test"]["auc"]
    assert model_auc == pytest.approx(recorded, abs=1e-9)
    print(f"simulated funnel: model test AUC {model_auc:.3f}, oracle {oracle_auc:.3f}")
    assert 0.6 < model_auc < oracle_auc


def test_simulated_post_conversion_activity_never_reaches_training_features(
    world_db: tuple[Any, Any, Session],
) -> None:
    world, sink, session = world_db
    tset = build_training_set(session, as_of=world.now)
    frame = tset.frame
    converted_at = {p.key: p.converted_at for p in sink.people.values()}
    crm_ids = {i: c for i, c in session.execute(select(Lead.id, Lead.crm_id)).all()}
    # Every example's snapshot precedes the lead's conversion ...
    for lead_id, snap in zip(frame["lead_id"], frame["snapshot_at"], strict=True):
        conv = converted_at[crm_ids[int(lead_id)]]
        assert conv is None or snap < conv
    # ... and its activity counts are at most what happened before the snapshot.
    by_person: dict[str, list[Any]] = {}
    for a in sink.activities:
        by_person.setdefault(a.person_key, []).append(a)
    sample = frame.sample(200, random_state=0)
    for lead_id, snap, total in zip(sample["lead_id"], sample["snapshot_at"], sample["engagement_30d"], strict=True):
        key = crm_ids[int(lead_id)]
        known = sum(
            1 for a in by_person.get(key, [])
            if a.type != "email_send" and snap - timedelta(days=30) < a.occurred_at < snap
        )
        assert total == known
