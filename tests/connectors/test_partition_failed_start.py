"""A worker's sync that fails before any stream starts (a revoked token, a CRM that does not
answer) is recorded on every stream, as `leadscore sync` records it, so `leadscore status` tells
the truth. Before, the workers' partitioned sync recorded nothing: status kept showing the last
success (or an older, different error) while every beat tick failed in the worker's log.

Real crmsim over HTTPS; the connection's token is wrong, then the CRM's port is closed.
"""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import Engine, select

from connectors.base import ConnectionSecrets
from connectors.errors import CRMError
from connectors.partition import start_plan
from connectors.sync import sync_connection
from store.db import unit_of_work
from store.models import SyncRun
from tests.connectors.conftest import salesforce_config
from tests.connectors.test_writeback_support import hs_conn, secrets_for, start_sim


def _runs(engine: Engine) -> list[tuple[str, str, str | None]]:
    with unit_of_work(engine) as session:
        return [(r.stream, r.status, r.error) for r in session.scalars(select(SyncRun).order_by(SyncRun.id))]


def test_a_failed_start_is_recorded_on_every_stream(sqlite_engine: Engine) -> None:
    sim = start_sim(leads=60, seed=3)
    try:
        conn = hs_conn(sim)
        with pytest.raises(CRMError):
            start_plan(sqlite_engine, conn, ConnectionSecrets(access_token="revoked-token"))
        runs = _runs(sqlite_engine)
        streams = {stream for stream, _, _ in runs}
        assert {"contacts", "emails"} <= streams and len(runs) == len(streams)
        assert all(status == "failed" and "authentication" in (error or "").lower() for _, status, error in runs)
        units = start_plan(sqlite_engine, conn, secrets_for(sim)[conn.name])  # the token fixed: a plan starts
        assert units and len(_runs(sqlite_engine)) == len(runs)  # (its runs are recorded by its units)
    finally:
        sim.stop()

    with socket.socket() as sock:  # a CRM that does not answer at all
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = conn.model_copy(update={"host": f"https://127.0.0.1:{port}", "name": "hs-down"})
    with pytest.raises(CRMError):
        start_plan(sqlite_engine, down, secrets_for(sim)[conn.name])
    latest = _runs(sqlite_engine)[len(runs):]
    assert latest and all(status == "failed" and "connection failed" in (error or "") for _, status, error in latest)
    # The line names where the CRM did not answer (an admin's first question).
    assert all(f"(at 127.0.0.1:{port})" in (error or "") for _, _, error in latest), latest[0]


def test_a_salesforce_login_refused_is_recorded_on_every_stream(sqlite_engine: Engine) -> None:
    # Salesforce's client logs in as it is made (OAuth client credentials): a refused login
    # failed before any run was recorded, so status kept showing the last success. Both the CLI's
    # sync and the workers' partitioned sync record it now.
    sim = start_sim(leads=60, seed=3)
    try:
        conn, _good = salesforce_config(sim, "sf-refused")
        wrong = ConnectionSecrets(client_secret="not-the-secret")
        with pytest.raises(CRMError, match="login failed"):
            sync_connection(sqlite_engine, conn, wrong)
        first = _runs(sqlite_engine)
        assert sorted(stream for stream, _, _ in first) == ["campaign_members", "events", "leads", "tasks"]
        assert all(status == "failed" and "login failed" in (error or "") for _, status, error in first)
        with pytest.raises(CRMError, match="login failed"):
            start_plan(sqlite_engine, conn, wrong)
        later = _runs(sqlite_engine)[len(first):]
        assert sorted(stream for stream, _, _ in later) == ["campaign_members", "events", "leads", "tasks"]
        assert all(status == "failed" for _, status, _ in later)
    finally:
        sim.stop()
