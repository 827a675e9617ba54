"""The HTML model-health report: renders with little history, every plot decodes in a browser."""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from config.app_config import MonitoringConfig
from scoring.monitor import run_monitor
from scoring.report import render_report
from store.db import make_engine
from tests.scoring.test_monitor import TRAIN_DAY, TRAINING, as_of_day, trained_store_copy

SECTIONS = (
    "Score distribution over time", "PSI trend", "Calibration", "Conversion by tier", "Lift by decile",
    "AUC over time", "Champion and challengers", "Top reasons of current scores", "Tier conversion over time",
    "Alert history", "Model card: feature importance, tier cut-offs, family comparison",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{trained_store_copy(tmp_path_factory, 'report')}")
    with Session(bind=engine, expire_on_commit=False) as session:
        # A few weeks of daily monitor runs, the last ones with matured outcomes.
        for d in range(0, 70, 7):
            run_monitor(session, as_of=as_of_day(TRAIN_DAY + d), config=MonitoringConfig(),
                        horizon_days=TRAINING.horizon_days)
        session.commit()
    yield engine
    engine.dispose()


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_an_empty_store_renders_and_says_what_is_missing(sqlite_session: Session) -> None:
    page = render_report(sqlite_session)
    assert page.startswith("<!DOCTYPE html>")
    for title in SECTIONS:
        assert title in page
    assert "No champion model yet" in page and "No scores yet" in page
    assert _images(page) == []


def test_one_model_one_report_renders_what_exists(trained_engine: Engine, tmp_path: Path) -> None:
    with Session(bind=trained_engine) as session:
        page = render_report(session, as_of=as_of_day(TRAIN_DAY))
    # One monitor report: elapsed leads the champion never learnt from (its test period) are scored
    # as they were at 7 days old, so calibration and tier conversion are live from the first run.
    # Which scores: served ones (what reps saw) or reconstructed from their features then.
    assert re.search(r"Source: leads whose outcome is known, as scored at 7 days old "
                     r"\(\d+ served scores, \d+ reconstructed", page)
    assert "No tier outcomes yet" not in page
    images = _images(page)
    assert len(images) >= 6 and all(img.startswith(PNG_MAGIC) for img in images)
    assert "http://" not in page and "https://" not in page  # self-contained
    # The latest run in the CLI's words: each measure line, then the notes no measure line says.
    import html as html_text

    from scoring.monitor import reports
    from scoring.monitoring.describe import describe_measures, unsaid_notes

    with Session(bind=trained_engine) as session:
        metrics = dict(reports(session, as_of=as_of_day(TRAIN_DAY))[-1].metrics or {})
    shown = [html_text.unescape(x) for x in re.findall(r"<li>(.*?)</li>", page)]
    said = describe_measures(metrics)
    assert said and all(line in shown for line in said), (said, shown)
    run = page[page.index("<ul class='measures'>"):]
    run = run[:run.index("<h2")]
    notes = [html_text.unescape(x) for x in re.findall(r"<p class='note'>(.*?)</p>", run)]
    assert notes == unsaid_notes(metrics, said) and notes, (notes, metrics.get("notes"))


def test_full_report_has_every_plot_and_decodes_in_a_headless_browser(trained_engine: Engine, tmp_path: Path,
                                                                        chromium: str) -> None:
    with Session(bind=trained_engine) as session:
        page = render_report(session, as_of=as_of_day(TRAIN_DAY + 70))
    for alt in ("score distribution over time", "PSI trend", "calibration curve", "conversion by tier",
                "lift by decile", "AUC over time", "top reasons"):
        assert f'alt="{alt}"' in page, alt
    assert "Champion and challengers" in page and "<table>" in page
    # Every section has content: no "missing" placeholder once the monitor has run for weeks.
    assert 'class="missing"' not in page, re.findall(r'<p class="missing">([^<]*)</p>', page)
    assert "<th>work down to tier</th>" in page and "<th>what reps see</th>" in page
    assert "<th>A norm</th>" in page
    images = _images(page)
    assert len(images) == 7 and all(img.startswith(PNG_MAGIC) for img in images)

    html_file = tmp_path / "report.html"
    html_file.write_text(page, encoding="utf-8")
    shot = tmp_path / "report.png"
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,4000"]
    dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", html_file.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None
    assert 'data-ok="true"' in body.group(0), body.group(0)
    assert 'data-images="7"' in body.group(0), body.group(0)
    subprocess.run([*common, f"--screenshot={shot}", html_file.as_uri()], capture_output=True, timeout=120,
                   check=True)
    assert shot.read_bytes().startswith(PNG_MAGIC)


def test_report_as_of_ignores_later_monitor_runs(trained_engine: Engine) -> None:
    with Session(bind=trained_engine) as session:
        early = render_report(session, as_of=as_of_day(TRAIN_DAY) + timedelta(hours=1))
        late = render_report(session, as_of=as_of_day(TRAIN_DAY + 70))
    assert f"Latest monitor run {as_of_day(TRAIN_DAY):%Y-%m-%d}" in early
    assert f"Latest monitor run {as_of_day(TRAIN_DAY + 63):%Y-%m-%d}" in late
    assert f"{as_of_day(TRAIN_DAY + 63):%Y-%m-%d}" not in early


def test_the_versions_table_says_who_changed_a_champion_by_hand(trained_engine: Engine) -> None:
    # A champion promoted by hand read only its evaluation's "kept as candidate" in the report.
    from sqlalchemy import select

    from store.models import ModelVersion

    with Session(bind=trained_engine) as session:
        mv = session.scalars(select(ModelVersion)).first()
        assert mv is not None
        version = mv.version
        mv.params = {**(mv.params or {}), "promotions": [{"action": "promote", "by": "alice",
                                                          "at": "2025-12-20T09:15:00+00:00"}]}
        session.flush()
        page = render_report(session, as_of=as_of_day(TRAIN_DAY))
        session.rollback()
    table = page[page.index("changed by hand"):]
    row = next(r for r in table.split("<tr>") if version in r)
    assert "promote by alice at 2025-12-20 09:15 UTC" in row, row
