"""`leadscore status`, `leadscore report` and the console name the same latest monitor run and
date the model on the data's clock (revops compared them and found two answers each)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import select

from scoring.monitoring.clock import data_clock, trained_at
from scoring.monitoring.run import latest_report
from store.db import unit_of_work
from store.models import ModelStatus, ModelVersion
from tests.cli.support import leadscore_here
from tests.web.conftest import World


def test_status_names_the_latest_report_and_the_models_data_date(world: World, tmp_path: Path) -> None:
    env = {"LEADSCORE_DATABASE_URL": world.url, "LEADSCORE_CONFIG_FILE": str(world.config_file),
           "LEADSCORE_VAR_DIR": str(tmp_path / "var")}
    with unit_of_work(world.engine) as session:
        newest = data_clock(session)
        champion = session.scalars(select(ModelVersion).where(ModelVersion.status == ModelStatus.champion)).one()
        trained = trained_at(champion)
    assert newest is not None

    # A run as of a time after the newest data (the latest CRM time a monitor run may take: a
    # year typed wrong is refused): it stays the latest report after a plain run.
    later = datetime.combine(newest.date() + timedelta(days=1), time(0), tzinfo=UTC)  # the next day: another date
    ahead = leadscore_here("monitor", "--as-of", later.isoformat(), cwd=tmp_path, env=env)
    assert ahead.returncode == 0, ahead.stderr
    assert re.search(r"\((\d+ alerts?(, \d+ warnings?)?|\d+ warnings?)\)", ahead.stdout), ahead.stdout
    plain = leadscore_here("monitor", cwd=tmp_path, env=env)
    assert plain.returncode == 0 and "is after the newest" not in plain.stderr

    with unit_of_work(world.engine) as session:
        latest = latest_report(session)
        assert latest is not None
        shown = latest.as_of
    assert shown.replace(tzinfo=UTC) >= later > newest  # not the plain run's (the newest data's)
    status = leadscore_here("status", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    # Before: status took the last run (as of the newest data), report and console the later one.
    assert f"monitor: {latest.status} as of {shown:%Y-%m-%d}" in status.stdout
    assert f"trained as of {trained:%Y-%m-%d}" in status.stdout, status.stdout[-1500:]

