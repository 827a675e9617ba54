"""Retraining: when it is due, the promotion rule against noise, manual promote and rollback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from config.app_config import MonitoringConfig, ScheduleConfig, TrainingConfig
from scoring import registry
from scoring.retrain import (
    DATA_SINCE_KEY,
    Comparison,
    alert_onset,
    paired_bootstrap,
    promotion_bar,
    promotion_decision,
    retrain_if_due,
)
from scoring.service import score_leads
from store.db import make_engine
from store.models import LeadScore, ModelVersion, MonitorReport
from tests.conftest import rolled_back_session
from tests.scoring.test_monitor import TRAIN_DAY, as_of_day, trained_store_copy

TRAINING = TrainingConfig(horizon_days=60, min_per_class=30)
SCHEDULES = ScheduleConfig(retrain_days=10)
FAST = {"families": ("catboost",), "catboost_iterations": 80, "catboost_grid": ({"depth": 4, "learning_rate": 0.1},)}


@pytest.fixture(scope="module")
def trained_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{trained_store_copy(tmp_path_factory, 'retrain')}")
    yield engine
    engine.dispose()


@pytest.fixture
def session(trained_engine: Engine) -> Iterator[Session]:
    with rolled_back_session(trained_engine) as s:
        yield s


def _comparison(improvement: float, low: float, high: float, positives: int = 100,
                strict: float | None = None) -> Comparison:
    now = datetime(2026, 1, 1).astimezone()
    return Comparison("auc", 0.80, 0.80 + improvement, improvement, low, high, 3000, 1000, positives, now, now,
                      strict_low=low - 0.005 if strict is None else strict)


@pytest.mark.parametrize(
    ("improvement", "low", "high", "healthy", "promoted"),
    [
        (0.030, 0.010, 0.050, True, True),     # clearly better
        (0.030, -0.004, 0.060, True, False),   # better on average, could be noise
        (0.004, 0.001, 0.008, True, False),    # real but below the tolerance
        (0.000, -0.010, 0.010, True, False),   # same model
        (-0.002, -0.004, 0.001, False, True),  # champion under alert: as good within tolerance
        (-0.002, -0.030, 0.020, False, False), # under alert, but too uncertain
        (-0.050, -0.070, -0.030, False, False),
    ],
)
def test_promotion_rule(improvement: float, low: float, high: float, healthy: bool, promoted: bool) -> None:
    decision, why = promotion_decision(_comparison(improvement, low, high), tolerance=0.005,
                                       champion_healthy=healthy)
    assert decision is promoted, why
    assert why.startswith("promoted" if promoted else "kept as candidate")
    if healthy and not promoted and improvement <= 0.005:
        # "not better than the champion (no monitor alert) by 0.005" read as "worse by 0.005" next to
        # an improvement of -0.0034: the 0.005 is the margin a challenger must beat.
        assert "does not beat the champion by more than the required margin 0.005" in why, why


def test_a_healthy_champion_is_replaced_only_beyond_the_one_sided_99_percent_bound() -> None:
    # Seed 3's no-drift promotion: the 90 % interval barely above zero, the 99 % bound below it.
    decision, why = promotion_decision(_comparison(0.0234, 0.0007, 0.0474, strict=-0.006), tolerance=0.005,
                                       champion_healthy=True)
    assert not decision and "could be noise (one-sided 99% lower bound -0.0060)" in why
    # Under an alert the bar stays "at least as good": the strict bound does not apply.
    assert promotion_decision(_comparison(0.0234, 0.0007, 0.0474, strict=-0.006), tolerance=0.005,
                              champion_healthy=False)[0]


def test_a_champion_trained_since_a_change_is_provisional_for_challengers_with_more_of_the_new_world() -> None:
    since = as_of_day(200)
    provisional = ModelVersion(version="v1", params={DATA_SINCE_KEY: since.isoformat(), "examples": 1200})
    bar = promotion_bar(None, provisional, since, 1800)
    assert bar["champion_healthy"] is False
    assert "champion provisional (trained on 1,200 examples" in bar["why_not_healthy"]
    # At least as good within the tolerance, with confidence: promoted, and the decision says why.
    decision, why = promotion_decision(_comparison(0.004, -0.003, 0.011, strict=-0.008), tolerance=0.005, **bar)
    assert decision and why.startswith("promoted: champion provisional")
    # Not provisional: fewer examples than the champion, the window past the boundary, no boundary.
    assert promotion_bar(None, provisional, since, 1000) == {"champion_healthy": True}
    assert promotion_bar(None, provisional, None, 1800) == {"champion_healthy": True}
    assert promotion_bar(None, ModelVersion(version="v0", params={"examples": 900}), since, 1800) == \
        {"champion_healthy": True}
    # The same challenger against a healthy champion: kept (the 99 % bound is below zero).
    assert not promotion_decision(_comparison(0.004, -0.003, 0.011, strict=-0.008), tolerance=0.005,
                                  champion_healthy=True)[0]


def test_too_few_held_out_conversions_never_promote() -> None:
    decision, why = promotion_decision(_comparison(0.2, 0.1, 0.3, positives=5), tolerance=0.005,
                                       champion_healthy=True)
    assert not decision and "too small" in why
    # A small org's 30 held-out days: the decision names the setting and a value that would do.
    now = datetime(2026, 1, 1).astimezone()
    month = Comparison("auc", 0.80, 0.82, 0.02, -0.01, 0.05, 300, 241, 7, now - timedelta(days=30), now)
    assert promotion_decision(month, tolerance=0.005, champion_healthy=True)[1].startswith(
        "kept as candidate: held-out set too small to judge (7 conversions in its 30 days, at least 20 needed): "
        "at this rate, training.holdout_days: 86 would hold out enough; auc ")
    none = Comparison("auc", 0.80, 0.82, 0.02, -0.01, 0.05, 300, 241, 0, now - timedelta(days=30), now)
    assert "too few conversions for any training.holdout_days up to 365" in promotion_decision(
        none, tolerance=0.005, champion_healthy=True)[1]


def test_paired_bootstrap_sees_no_difference_between_equal_models_and_finds_a_real_one() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    signal = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(signal * 1.5 - 2)))).astype(int)
    groups = np.arange(n) // 3
    weak = signal + rng.normal(scale=2.0, size=n)
    same_d, same_lo, same_hi = paired_bootstrap(y, weak, weak.copy(), groups, rounds=200)
    assert same_d == 0 and same_lo == 0 and same_hi == 0
    noisy = weak + rng.normal(scale=0.05, size=n)  # the same model, jittered: noise only
    d, lo, hi = paired_bootstrap(y, weak, noisy, groups, rounds=200)
    assert abs(d) < 0.005 and hi - lo < 0.01
    assert not promotion_decision(_comparison(d, lo, hi), tolerance=0.005, champion_healthy=True)[0]
    strong = signal + rng.normal(scale=0.5, size=n)
    d, lo, hi = paired_bootstrap(y, weak, strong, groups, rounds=200)
    assert d > 0.05 and lo > 0


def test_the_bootstraps_auc_is_sklearns_under_weights_and_ties() -> None:
    # The bootstrap's own AUC (scores sorted once, weighted bincounts) against sklearn's
    # roc_auc_score on the same draws: coarse scores make many ties, weights are draw counts.
    from sklearn.metrics import roc_auc_score

    from scoring.compare import RankedAuc

    rng = np.random.default_rng(7)
    n = 2500
    y = (rng.random(n) < 0.12).astype(int)
    for p in (np.round(rng.random(n) + 0.3 * y, 2), rng.random(n) + 0.5 * y, np.full(n, 0.5)):
        ranked = RankedAuc(y, p)
        assert ranked() == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        for _ in range(20):
            weight = np.bincount(rng.integers(0, n, n), minlength=n).astype("float64")
            assert ranked(weight) == pytest.approx(roc_auc_score(y, p, sample_weight=weight), abs=1e-12)
    zero_positive = np.where(y == 1, 0.0, 1.0)
    assert np.isnan(RankedAuc(y, rng.random(n))(zero_positive))


def test_not_due_right_after_training_then_due_on_schedule(session: Session) -> None:
    monitoring = MonitoringConfig()
    early = retrain_if_due(session, as_of=as_of_day(TRAIN_DAY + 2), training=TRAINING, schedules=SCHEDULES,
                           monitoring=monitoring, **FAST)
    assert not early.due and early.challenger is None, early.reason
    session.add(MonitorReport(as_of=as_of_day(TRAIN_DAY + 3), status="alert",
                              alerts=[{"level": "alert", "kind": "psi_score", "message": "drift"}]))
    session.flush()
    by_alert = retrain_if_due(session, as_of=as_of_day(TRAIN_DAY + 4), training=TRAINING, schedules=SCHEDULES,
                              monitoring=monitoring, **FAST)
    assert by_alert.due and "monitor alert" in by_alert.reason
    assert by_alert.challenger is not None and by_alert.comparison is not None
    # A training happened after the alert: the same alert does not trigger another one.
    again = retrain_if_due(session, as_of=as_of_day(TRAIN_DAY + 5), training=TRAINING, schedules=SCHEDULES,
                           monitoring=monitoring, **FAST)
    assert not again.due


def test_a_challenger_from_the_same_stationary_funnel_is_not_promoted(session: Session) -> None:
    champion_before = registry.champion(session)
    assert champion_before is not None
    outcome = retrain_if_due(session, as_of=as_of_day(TRAIN_DAY + 12), training=TRAINING, schedules=SCHEDULES,
                             monitoring=MonitoringConfig(), **FAST)
    assert outcome.due and outcome.challenger is not None, outcome.decision
    assert outcome.comparison is not None and outcome.comparison.leads > 100
    assert not outcome.promoted, outcome.decision
    challenger = registry.get_version(session, outcome.challenger)
    assert challenger.status == "candidate"
    assert challenger.notes is not None and challenger.notes.startswith("kept as candidate")
    assert challenger.params["comparison"]["champion_version"] == champion_before.version
    assert registry.champion(session).version == champion_before.version  # type: ignore[union-attr]


def test_a_retrain_on_the_same_data_registers_no_second_identical_challenger(session: Session) -> None:
    when = as_of_day(TRAIN_DAY + 12)
    first = retrain_if_due(session, as_of=when, training=TRAINING, schedules=SCHEDULES,
                           monitoring=MonitoringConfig(), force=True, **FAST)
    assert first.challenger is not None, first.decision
    count = len(registry.list_versions(session))
    again = retrain_if_due(session, as_of=when, training=TRAINING, schedules=SCHEDULES,
                           monitoring=MonitoringConfig(), force=True, **FAST)
    assert again.challenger is None and len(registry.list_versions(session)) == count
    assert again.decision.startswith(f"no new challenger: {first.challenger} (candidate) was trained on these same")
    assert again.details["same_as"] == first.challenger
    # Other settings shape another model: that one is trained and registered.
    other = retrain_if_due(session, as_of=when, training=TRAINING, schedules=SCHEDULES, monitoring=MonitoringConfig(),
                           force=True, **{**FAST, "catboost_iterations": 60})
    assert other.challenger not in (None, first.challenger), other.decision
    # So are the same settings on data that moved.
    later = retrain_if_due(session, as_of=when + timedelta(days=1), training=TRAINING, schedules=SCHEDULES,
                           monitoring=MonitoringConfig(), force=True, **FAST)
    assert later.challenger not in (None, first.challenger, other.challenger), later.decision


def test_rollback_restores_the_previous_champion_and_rescoring_uses_it(session: Session) -> None:
    first = registry.champion(session)
    assert first is not None
    outcome = retrain_if_due(session, as_of=as_of_day(TRAIN_DAY + 12), training=TRAINING, schedules=SCHEDULES,
                             monitoring=MonitoringConfig(), force=True, **FAST)
    assert outcome.challenger is not None
    second = registry.promote(session, outcome.challenger)
    now = as_of_day(TRAIN_DAY + 12)
    score_leads(session, as_of=now, all=True)
    current = set(session.scalars(select(LeadScore.model_version_id).where(LeadScore.is_current.is_(True))))
    assert current == {second.id}

    restored = registry.rollback(session)
    assert restored.id == first.id and restored.status == "champion"
    assert registry.get_version(session, second.version).status == "retired"
    summary = score_leads(session, as_of=now + timedelta(hours=1), all=True)
    assert summary.scored > 0
    current = set(session.scalars(select(LeadScore.model_version_id).where(LeadScore.is_current.is_(True))))
    assert current == {first.id}


def _report(session: Session, day: float, kind: str | None, cohort_start_day: float | None = None) -> None:
    """A monitor report on ``day``: an alert of ``kind`` (None: status ok) and its drift cohort."""
    metrics = {"drift": {"cohort_start": as_of_day(cohort_start_day).isoformat()}} if cohort_start_day else {}
    alerts = [{"level": "alert", "kind": kind, "message": kind}] if kind else []
    session.add(MonitorReport(as_of=as_of_day(day), status="alert" if kind else "ok", metrics=metrics,
                              alerts=alerts))
    session.flush()


def test_alert_onset_is_where_the_current_streak_of_drift_alerts_began(session: Session) -> None:
    t = TRAIN_DAY
    _report(session, t + 1, "psi_feature", t - 13)  # an earlier streak, ended by a quiet day
    _report(session, t + 2, None, t - 12)
    _report(session, t + 3, "psi_feature", t - 11)
    _report(session, t + 4, "psi_score", t - 10)
    assert alert_onset(session, as_of=as_of_day(t + 4)) == as_of_day(t - 11)
    assert alert_onset(session, as_of=as_of_day(t + 3.5)) == as_of_day(t - 11)
    # A freshness or performance alert dates no change of the lead population.
    _report(session, t + 5, "freshness", t - 9)
    assert alert_onset(session, as_of=as_of_day(t + 5)) is None


def test_under_a_drift_alert_the_challenger_learns_only_from_leads_since_the_change(session: Session) -> None:
    """The boundary moves the training window's start, is recorded on the challenger, stays with it
    once promoted (a scheduled retraining does not mix the old world back in), and too few leads
    since the change mean no challenger, said so."""
    as_of = TRAIN_DAY + 8  # not yet due on schedule: the alert triggers the retraining
    onset = 150.0
    _report(session, as_of - 1, "psi_feature", onset)
    outcome = retrain_if_due(session, as_of=as_of_day(as_of), training=TRAINING, schedules=SCHEDULES,
                             monitoring=MonitoringConfig(), **FAST)
    assert outcome.due and "monitor alert" in outcome.reason
    assert outcome.details["data_since"] == as_of_day(onset).isoformat()
    assert outcome.challenger is not None, outcome.decision
    challenger = registry.get_version(session, outcome.challenger)
    assert challenger.params[DATA_SINCE_KEY] == as_of_day(onset).isoformat()
    assert challenger.train_start is not None
    assert challenger.train_start >= as_of_day(onset + 14), challenger.train_start  # first snapshots at 14 days

    registry.promote(session, challenger.version)
    _report(session, as_of + 1, None, as_of - 20)
    scheduled = retrain_if_due(session, as_of=as_of_day(as_of + 2), training=TRAINING, schedules=SCHEDULES,
                               monitoring=MonitoringConfig(), force=True, **FAST)
    assert scheduled.details["data_since"] == as_of_day(onset).isoformat()

    _report(session, as_of + 3, "psi_score", as_of - 40)
    said: list[str] = []
    too_recent = retrain_if_due(session, as_of=as_of_day(as_of + 4), training=TRAINING, schedules=SCHEDULES,
                                monitoring=MonitoringConfig(), force=True, progress=said.append, **FAST)
    assert too_recent.challenger is None
    # No lead since the change has a known outcome yet: said so, with when one will, and no
    # training window that ends before it starts.
    change = as_of_day(as_of - 40)
    assert f"no challenger yet: the change began {change:%Y-%m-%d}" in too_recent.decision
    ready = datetime.fromisoformat(too_recent.details["trainable_from"])
    assert ready == change + timedelta(days=14 + TRAINING.horizon_days + TRAINING.holdout_days)
    assert f"trained on around {ready:%Y-%m-%d}" in too_recent.decision
    assert too_recent.details["needed"] == {"positives": TRAINING.min_per_class, "negatives": TRAINING.min_per_class}
    assert not any(line.startswith("retraining") for line in said), said


def test_retraining_covers_segment_models_each_judged_on_its_own_held_out_leads(session: Session) -> None:
    training = TrainingConfig(horizon_days=60, min_per_class=30, segment_by="email_type", min_segment_per_class=30)
    outcome = retrain_if_due(session, as_of=as_of_day(TRAIN_DAY + 12), training=training, schedules=SCHEDULES,
                             monitoring=MonitoringConfig(), force=True, **FAST)
    segments = outcome.details["segments"]
    # A Corporate challenger is big enough to be trained and judged (free-mail may be too small).
    assert not segments["email_type=Corporate"].startswith("no segment challenger"), segments
    assert set(segments) == {"email_type=Corporate", "email_type=Free-mail"}, segments
    champions = registry.segment_champions(session)
    for name, decision in segments.items():
        if decision.startswith("no segment challenger"):
            assert "need at least 30" in decision and name not in champions
            continue
        version = decision.split(":", 1)[0]
        mv = registry.get_version(session, version)
        assert mv.segment == name and mv.notes == decision.split(": ", 1)[1]
        # Both numbers on the segment's held-out leads are recorded with the decision.
        assert re.search(r"against the global champion: .*auc \d\.\d{4} vs champion \d\.\d{4}", decision), decision
        used = decision.split(": ", 1)[1].startswith("segment challenger used")
        assert (champions.get(name) is not None and champions[name].version == version) is used, decision
