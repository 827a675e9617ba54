"""``leadscore report / monitor / models`` through the real CLI on a SQLite store."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from config.settings import get_settings
from scoring.registry import RegistryError
from store.db import make_engine
from store.models import ModelVersion
from tests.scoring.test_monitor import trained_store_copy
from worker.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_store_copy(tmp_path_factory, "cli")


@pytest.fixture
def store(store_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the trained store as the configured database."""
    path = tmp_path / "leadscore.db"
    shutil.copy(store_template, path)
    monkeypatch.setenv("LEADSCORE_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.delenv("LEADSCORE_CONFIG_FILE", raising=False)
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def _versions(path: Path) -> dict[str, str]:
    engine = make_engine(f"sqlite:///{path}")
    with Session(bind=engine) as s:
        out = {mv.version: mv.status for mv in s.scalars(select(ModelVersion))}
    engine.dispose()
    return out


def test_models_list_monitor_and_report(store: Path, tmp_path: Path) -> None:
    (version,) = _versions(store)
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert version in listed.output and "champion" in listed.output

    monitored = runner.invoke(app, ["monitor"])
    assert monitored.exit_code == 0, monitored.output
    assert monitored.output.startswith("monitor: ")

    html = tmp_path / "out" / "health.html"
    reported = runner.invoke(app, ["report", "--html", str(html)])
    assert reported.exit_code == 0, reported.output
    assert html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert f"champion: {version}" in reported.output


def test_promote_unknown_version_and_rollback_without_history_are_user_errors(store: Path) -> None:
    unknown = runner.invoke(app, ["models", "promote", "m-nope"])
    assert isinstance(unknown.exception, RegistryError)
    assert "unknown model version" in str(unknown.exception)
    nothing = runner.invoke(app, ["models", "rollback"])
    assert isinstance(nothing.exception, RegistryError)


def test_promote_then_rollback_by_hand(store: Path) -> None:
    from datetime import timedelta

    from config.app_config import MonitoringConfig, ScheduleConfig, TrainingConfig
    from scoring.retrain import retrain_if_due
    from tests.scoring.test_monitor import TRAIN_DAY, as_of_day

    engine = make_engine(f"sqlite:///{store}")
    with Session(bind=engine, expire_on_commit=False) as s:
        outcome = retrain_if_due(s, as_of=as_of_day(TRAIN_DAY) + timedelta(days=12),
                                 training=TrainingConfig(horizon_days=60, min_per_class=30),
                                 schedules=ScheduleConfig(), monitoring=MonitoringConfig(), force=True,
                                 families=("catboost",), catboost_iterations=60,
                                 catboost_grid=({"depth": 4, "learning_rate": 0.1},))
        s.commit()
    engine.dispose()
    assert outcome.challenger is not None
    (first,) = [v for v, status in _versions(store).items() if status == "champion"]
    promoted = runner.invoke(app, ["models", "promote", outcome.challenger])
    assert promoted.exit_code == 0, promoted.output
    assert _versions(store)[outcome.challenger] == "champion"
    rolled = runner.invoke(app, ["models", "rollback"])
    assert rolled.exit_code == 0, rolled.output
    assert first in rolled.output
    statuses = _versions(store)
    assert statuses[first] == "champion" and statuses[outcome.challenger] == "retired"
