"""An upgraded install whose `leadscore db upgrade` has not run yet: every entry point names the
database's revision and the one this code needs, in one line, and loses nothing.

Real processes: crmsim serves both CRMs, the CLI runs as a user runs it against a SQLite store
migrated only to an older revision (the last but one), then upgraded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from alembic.script import ScriptDirectory

from config.errors import LeadscoreError
from config.settings import get_settings
from crmsim.app import CRMSim
from store.migrate import alembic_config, current_revision, schema_problem, upgrade
from tests.cli.support import REPO, assert_one_line_failure, leadscore_here
from tests.connectors.test_writeback_support import hs_conn, sf_conn, start_sim
from worker.cli.ops import refuse_older_schema


def _revisions() -> tuple[str, str]:
    """(the newest revision, the one before it)."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    before = script.get_revision(head).down_revision
    assert isinstance(before, str)
    return head, before


@pytest.fixture
def older(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A SQLite store at the revision before the newest: (url, its revision, the newest)."""
    head, before = _revisions()
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url, before)
    yield url, before, head


# A SQLite store this old lacks a table a sync writes (api_usage, 0008). The newest revisions,
# 0009 and 0010, change nothing on SQLite (its keys stay declared there: store.references; its
# JSON columns are all of one kind), so a store at the revision before the newest syncs as it
# is, and rightly: nothing is missing.
LACKS_SYNC_TABLE = "0007_pending_campaign"


def _env(url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    env.update(LEADSCORE_DATABASE_URL=url, LEADSCORE_VAR_DIR=str(tmp_path / "var"), **extra)
    return env


def _run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)


def test_schema_problem_tells_none_older_newer_and_current(tmp_path: Path, older: tuple[str, str, str]) -> None:
    url, before, head = older
    assert schema_problem(url) == (f"the database's schema is at revision {before}, this leadscore needs {head} "
                                   "(run: leadscore db upgrade)")
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert schema_problem(empty) == "the database has no leadscore schema yet (run: leadscore db upgrade)"
    upgrade(url)
    assert schema_problem(url) is None
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("update alembic_version set version_num = '9999_from_the_future'"))
    engine.dispose()
    problem = schema_problem(url)
    assert problem is not None and "9999_from_the_future, newer than this leadscore knows" in problem


def test_status_names_both_revisions(tmp_path: Path, older: tuple[str, str, str]) -> None:
    url, before, head = older
    result = leadscore_here("status", cwd=tmp_path, env=_env(url, tmp_path))
    line = assert_one_line_failure(result, 1, f"schema is at revision {before}, this leadscore needs {head}")
    assert "leadscore db upgrade" in line


def test_worker_beat_and_console_refuse_to_start(tmp_path: Path, older: tuple[str, str, str]) -> None:
    url, before, head = older
    env = _env(url, tmp_path, LEADSCORE_BROKER_URL="redis://127.0.0.1:6379/15", LEADSCORE_WEB_AUTH="rev:pw:editor")
    # A worker started on this schema would fail every task: it must not start (the timeout ends
    # this test, not a hang, should it start after all).
    for args in (["worker", "--concurrency", "1"], ["beat"], ["web", "--port", str(_free_port())]):
        result = _run(env, *args, timeout=60)
        assert_one_line_failure(result, 1, f"schema is at revision {before}, this leadscore needs {head}")
    assert current_revision(url) == before  # nothing migrated behind the admin's back


def test_worker_start_is_not_refused_for_a_database_that_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Workers start during a database outage and retry (docs/operations.md): only a database that
    # answers with an older schema refuses them.
    monkeypatch.setenv("LEADSCORE_DATABASE_URL", f"postgresql+psycopg://root@127.0.0.1:{_free_port()}/leadscore")
    get_settings.cache_clear()
    try:
        refuse_older_schema()
    finally:
        get_settings.cache_clear()
    monkeypatch.setenv("LEADSCORE_DATABASE_URL", f"sqlite:///{tmp_path / 'not-yet.db'}")
    get_settings.cache_clear()
    try:
        with pytest.raises(LeadscoreError, match="no leadscore schema yet"):
            refuse_older_schema()
    finally:
        get_settings.cache_clear()


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    sim = start_sim(leads=200, seed=3)
    yield sim
    sim.stop()


def test_sync_on_the_older_schema_says_so_then_syncs_after_upgrade(sim: CRMSim, tmp_path: Path) -> None:
    head, _ = _revisions()
    before = LACKS_SYNC_TABLE
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url, before)
    info = sim.info()
    config = {"connections": [c.model_dump(exclude_none=True, exclude={"score_fields"})
                              for c in (sf_conn(sim), hs_conn(sim))]}
    config_path = tmp_path / "leadscore.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = _env(url, tmp_path, LEADSCORE_CONFIG_FILE=str(config_path),
               LEADSCORE_TEST_SF_SESSION=info["salesforce"]["session_id"],
               LEADSCORE_TEST_HS_TOKEN=info["hubspot"]["access_token"])

    failed = _run(env, "sync")
    # Before: "the database has no leadscore schema yet" about a database that has one.
    assert_one_line_failure(failed, 1, f"schema is at revision {before}, this leadscore needs {head}")

    assert _run(env, "db", "upgrade").returncode == 0
    synced = _run(env, "sync")
    assert synced.returncode == 0, synced.stderr
    assert "sf: " in synced.stdout and ", ok" in synced.stdout
    status = _run(env, "status")
    assert status.returncode == 0, status.stderr
    assert "failed" not in status.stdout  # the refused sync left no run behind


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_console_without_a_database_creates_none(tmp_path: Path) -> None:
    # It once created an empty var/leadscore.db, which then hid the demo's data from every command.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    env.update(LEADSCORE_WEB_AUTH="rev:pw:editor")
    result = subprocess.run([sys.executable, "-m", "worker.cli", "web", "--port", str(_free_port())],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert_one_line_failure(result, 1, "no leadscore database at var/leadscore.db and no demo data")
    assert not (tmp_path / "var" / "leadscore.db").exists()


def test_console_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    env.update(LEADSCORE_WEB_AUTH="rev:pw:editor", LEADSCORE_DATABASE_URL=f"sqlite:///{tmp_path / 'ls.db'}")
    assert subprocess.run([sys.executable, "-m", "worker.cli", "db", "upgrade"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        result = subprocess.run([sys.executable, "-m", "worker.cli", "web", "--port", str(port)],
                                capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert_one_line_failure(result, 1, f"cannot listen on 127.0.0.1:{port}")
    assert "console on" not in result.stdout
