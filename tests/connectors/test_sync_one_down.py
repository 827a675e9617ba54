"""One CRM down: `leadscore sync` still syncs the other, records the failure, exits 1; `status` shows it.

Real processes and sockets: crmsim serves HubSpot; the Salesforce connection points at a port
where nothing listens. The CLI runs as a user runs it, against a fresh PostgreSQL database.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine, select

from crmsim.app import CRMSim
from store.db import unit_of_work
from store.models import Connection, SyncRun
from tests.connectors.test_writeback_support import hs_conn, start_sim

REPO = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    sim = start_sim(leads=200, seed=3)
    yield sim
    sim.stop()


def _leadscore(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=240)


def test_salesforce_down_hubspot_synced_failure_recorded(sim: CRMSim, committing_pg_engine: Engine,
                                                         tmp_path: Path) -> None:
    info = sim.info()
    config = {"connections": [
        {"name": "salesforce", "kind": "salesforce", "instance_url": f"https://127.0.0.1:{_closed_port()}",
         "ca_bundle": info["salesforce"]["ca_bundle"], "login_via_instance": True,
         "session_id_env": "LEADSCORE_TEST_SF_SESSION"},
        hs_conn(sim, "hubspot").model_dump(exclude_none=True, exclude={"score_fields"}),
    ]}
    config_path = tmp_path / "leadscore.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, LEADSCORE_DATABASE_URL=committing_pg_engine.url.render_as_string(hide_password=False),
               LEADSCORE_CONFIG_FILE=str(config_path), LEADSCORE_VAR_DIR=str(tmp_path / "var"),
               LEADSCORE_TEST_SF_SESSION=info["salesforce"]["session_id"],
               LEADSCORE_TEST_HS_TOKEN=info["hubspot"]["access_token"])
    env.pop("LEADSCORE_BROKER_URL", None)
    env.pop("COLUMNS", None)
    out = tmp_path / "sync.json"

    result = _leadscore(env, "sync", "--json", str(out))

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "sync failed for 1 of 2 connection(s): salesforce (Salesforce connection failed" in result.stderr
    document = json.loads(out.read_text())
    assert set(document["connections"]) == {"salesforce", "hubspot"}
    hubspot, salesforce = document["connections"]["hubspot"], document["connections"]["salesforce"]
    assert hubspot["error"] is None and hubspot["records"] > 0 and hubspot["api_calls"] > 0
    # What happened, in words (a user trial read "ConnectionError"), and where.
    assert salesforce["records"] == 0 and "Salesforce connection failed: connection refused (at https://127.0.0.1:" \
        in salesforce["error"]
    with unit_of_work(committing_pg_engine) as session:
        runs = session.execute(select(Connection.name, SyncRun.status, SyncRun.error).join(Connection)).all()
    by_connection: dict[str, set[str]] = {}
    for name, status, _error in runs:
        by_connection.setdefault(name, set()).add(status)
    assert by_connection == {"salesforce": {"failed"}, "hubspot": {"succeeded"}}
    assert all("Salesforce connection failed" in (error or "") for name, _s, error in runs if name == "salesforce")

    status = _leadscore(env, "status")
    # Everything shown, then the failure in the exit status too (as `sync` exits 1), for scripts.
    assert status.returncode == 1, status.stderr
    assert status.stderr.strip() == "error: status: 1 problem(s): sync salesforce: last run failed", status.stderr
    assert "sync salesforce: last run failed: Salesforce connection failed" in status.stdout
    assert "sync hubspot" not in status.stdout  # HubSpot's last runs succeeded: no failure line
    # Piped, as into a file or a ticket: every connection and stream name whole in its row (rich
    # assumed 80 columns and printed "campaign_m…").
    streams = {(name, stream) for name, stream in _streams(committing_pg_engine)}
    assert any(len(stream) > 11 for _n, stream in streams), streams
    for name, stream in streams:
        row = rf"│ {re.escape(name)} +│ {re.escape(stream)} +│"
        assert re.search(row, status.stdout), (name, stream, status.stdout)


def _streams(engine: Engine) -> list[tuple[str, str]]:
    with unit_of_work(engine) as session:
        return [tuple(r) for r in session.execute(select(Connection.name, SyncRun.stream).join(Connection).distinct())]


def test_status_tells_unreachable_database_from_missing_schema(tmp_path: Path) -> None:
    env = dict(os.environ, LEADSCORE_VAR_DIR=str(tmp_path / "var"))
    env.pop("LEADSCORE_CONFIG_FILE", None)
    env["LEADSCORE_DATABASE_URL"] = f"postgresql+psycopg://root@127.0.0.1:{_closed_port()}/leadscore"
    unreachable = _leadscore(env, "status")
    assert unreachable.returncode == 1
    assert "database unreachable" in unreachable.stderr and "Traceback" not in unreachable.stderr
    (tmp_path / "var").mkdir()
    path = tmp_path / "var" / "empty.db"
    env["LEADSCORE_DATABASE_URL"] = f"sqlite:///{path}"
    missing = _leadscore(env, "status")  # no file: refused, and none created
    assert missing.returncode == 1 and "no database at" in missing.stderr and not path.exists(), missing.stderr
    sqlite3.connect(path).execute("create table unrelated (x integer)").connection.close()
    empty = _leadscore(env, "status")
    assert empty.returncode == 1
    assert "no leadscore schema yet" in empty.stderr and "Traceback" not in empty.stderr
