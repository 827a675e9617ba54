"""A connection whose secret variable is not set where the sync runs: the failure is recorded and
`status` shows it, from the CLI and from a worker (a worker started without the variable failed
every sync while `status` showed the last success and exited 0).

Real processes: crmsim, the CLI in-process as a user runs it, a Celery worker on the real Redis.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from celery import Celery
from sqlalchemy import select

from crmsim.app import CRMSim
from store.db import engine_for, unit_of_work
from store.migrate import upgrade
from store.models import Connection, SyncRun
from tests.cli.support import leadscore_here
from tests.connectors.test_writeback_support import hs_conn, running_sim
from tests.worker.conftest import start_worker

MISSING = "connection 'salesforce': environment variable LS_TEST_SF_SECRET (client_secret_env) is not set"


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    yield from running_sim(80, 4)


@pytest.fixture
def synced(sim: CRMSim, tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A store both connections synced into once; (env with every secret, env without sf's)."""
    sf = sim.info()["salesforce"]
    config = {"connections": [
        {"name": "salesforce", "kind": "salesforce", "instance_url": sf["instance_url"], "domain": "crmsim.my",
         "client_id": sf["client_id"], "ca_bundle": sf["ca_bundle"], "login_via_instance": True,
         "client_secret_env": "LS_TEST_SF_SECRET"},
        hs_conn(sim, "hubspot").model_dump(mode="json", exclude_none=True, exclude={"score_fields"}),
    ]}
    (tmp_path / "leadscore.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'leadscore.db'}"
    upgrade(url)
    without = {"LEADSCORE_CONFIG_FILE": str(tmp_path / "leadscore.yaml"), "LEADSCORE_DATABASE_URL": url,
               "LEADSCORE_VAR_DIR": str(tmp_path / "var"),
               "LEADSCORE_TEST_HS_TOKEN": sim.info()["hubspot"]["access_token"]}
    env = {**without, "LS_TEST_SF_SECRET": sf["client_secret"]}
    first = leadscore_here("sync", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    # The summary's API-call column adds up: each stream's calls, then the calls no stream made.
    for name, rows in _summary_calls(first.stdout).items():
        total = [n for stream, n in rows if stream == "total"]
        calls = {stream: n for stream, n in rows if stream != "total"}
        assert len(total) == 1 and sum(n for stream, n in rows if stream != "total") == total[0] > 0, (name, rows)
        assert calls.get("other calls", 0) > 0, first.stdout  # a login or the CRM's clock at least
    status = leadscore_here("status", cwd=tmp_path, env=env)
    assert status.returncode == 0 and "last run failed" not in status.stdout, status.stdout + status.stderr
    return env, without


def _summary_calls(stdout: str) -> dict[str, list[tuple[str, int]]]:
    """The sync summary's API calls by connection and stream, whatever the terminal's width (a
    narrow table cuts names short and wraps a row's cells over several lines)."""
    out: dict[str, list[tuple[str, int]]] = {}
    row: list[str] | None = None
    for line in [*stdout.split("sync summary", 1)[1].splitlines(), "└"]:
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if row is not None and (not cells or cells[0]):  # a new row (or the end): the last one is whole
            out.setdefault(row[0], []).append((row[1].strip(), int(row[6])))
            row = None
        if len(cells) == 8 and cells[0]:
            row = cells
        elif len(cells) == 8 and row is not None:
            row = [a + (" " + b if b else "") for a, b in zip(row, cells, strict=True)]
    return out


def _salesforce_runs(url: str) -> list[tuple[str, str | None]]:
    with unit_of_work(engine_for(url)) as session:
        return [(status, error) for status, error in session.execute(
            select(SyncRun.status, SyncRun.error).join(Connection)
            .where(Connection.name == "salesforce").order_by(SyncRun.id))]


def _assert_status_shows_it(cwd: Path, env: dict[str, str]) -> None:
    status = leadscore_here("status", cwd=cwd, env=env)
    assert status.returncode == 1, status.stdout + status.stderr
    assert f"sync salesforce: last run failed: {MISSING}" in status.stdout, status.stdout
    assert "sync hubspot" not in status.stdout


def test_cli_sync_records_an_unset_secret_and_status_shows_it(synced: tuple[dict[str, str], dict[str, str]],
                                                              tmp_path: Path) -> None:
    env, without = synced
    before = len(_salesforce_runs(env["LEADSCORE_DATABASE_URL"]))

    result = leadscore_here("sync", cwd=tmp_path, env=without)

    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"sync failed for 1 of 2 connection(s): salesforce ({MISSING})" in result.stderr, result.stderr
    runs = _salesforce_runs(env["LEADSCORE_DATABASE_URL"])[before:]
    assert runs and all(run == ("failed", MISSING) for run in runs), runs
    _assert_status_shows_it(tmp_path, without)
    # The variable set again: the next sync succeeds and status is clean again.
    again = leadscore_here("sync", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert leadscore_here("status", cwd=tmp_path, env=env).returncode == 0


def _sync_in_worker(env: dict[str, str], queue_name: str, redis_url: str) -> tuple[BaseException, str]:
    """A worker started with ``env`` syncs salesforce once: the task's error (its state must be
    FAILURE) and the worker's log."""
    worker = start_worker(env, queue_name)
    try:
        client = Celery("leadscore-test", broker=redis_url, backend=redis_url)
        client.conf.task_serializer = "json"
        result = client.send_task("leadscore.sync.connection", args=["salesforce"], queue=queue_name)
        with pytest.raises(Exception) as failed:
            result.get(timeout=120)
        assert result.state == "FAILURE"
    finally:
        worker.terminate()
        try:
            output, _ = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
    return failed.value, output.decode(errors="replace")


def test_worker_sync_records_an_unset_secret_without_a_traceback(
        synced: tuple[dict[str, str], dict[str, str]], tmp_path: Path, worker_env: dict[str, str],
        queue_name: str, redis_url: str) -> None:
    env, without = synced
    before = len(_salesforce_runs(env["LEADSCORE_DATABASE_URL"]))
    error, log = _sync_in_worker({k: v for k, v in {**worker_env, **without}.items() if k != "LS_TEST_SF_SECRET"},
                                 queue_name, redis_url)
    # A failure, as Flower and the result backend show it (a SUCCESS hid it), with its one line.
    assert str(error) == MISSING, error
    assert "Traceback" not in log, log
    assert f"sync salesforce not started: {MISSING}" in log, log
    runs = _salesforce_runs(env["LEADSCORE_DATABASE_URL"])[before:]
    assert runs and all(run == ("failed", MISSING) for run in runs), runs
    _assert_status_shows_it(tmp_path, without)


def test_worker_sync_refused_by_the_crm_fails_in_one_line(
        synced: tuple[dict[str, str], dict[str, str]], worker_env: dict[str, str],
        queue_name: str, redis_url: str) -> None:
    """A secret the CRM refuses (rotated in the org, not in the worker's environment): the task
    ends FAILURE with the CRM's one line, the worker logs it without a traceback (beat would
    print one every minute) and the failure is recorded for `status`."""
    env, _ = synced
    before = len(_salesforce_runs(env["LEADSCORE_DATABASE_URL"]))
    refused, log = _sync_in_worker({**worker_env, **env, "LS_TEST_SF_SECRET": "rotated-since"}, queue_name,
                                   redis_url)
    assert "Traceback" not in log, log
    assert f"sync salesforce failed: {refused}" in log, log
    runs = _salesforce_runs(env["LEADSCORE_DATABASE_URL"])[before:]
    assert runs and all(status == "failed" and error == str(refused) for status, error in runs), runs
