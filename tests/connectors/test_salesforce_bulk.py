"""First loads through Bulk API 2.0 against crmsim (real client, real sockets, real PostgreSQL).

The store a Bulk first load leaves must equal the one the REST path leaves, row by row, and the
cursor must be the same; a job that fails (or whose results vanish midway) moves no cursor and the
next run completes.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, inspect, select
from sqlalchemy.orm import Session

from config.app_config import ConnectionConfig
from connectors.base import ConnectionSecrets
from connectors.errors import CRMError, RetriableCRMError
from connectors.salesforce.streams import SalesforceConnector
from connectors.sync import ProgressEvent, sync_connection
from crmsim.app import CRMSim
from store.models import Activity, Connection, Lead, SyncCursor
from tests.connectors import expected
from tests.connectors.conftest import salesforce_config

# Columns that differ between two connections holding the same CRM rows: surrogate keys, the
# connection, and when the row was written.
_NOT_COMPARED = {"id", "connection_id", "lead_id", "synced_at", "inputs_changed_at", "created_at", "updated_at"}


def _rows(engine: Engine, connection: str, model: type[Any]) -> dict[str, dict[str, Any]]:
    columns = [c.key for c in inspect(model).column_attrs if c.key not in _NOT_COMPARED]
    with Session(engine) as session:
        conn_id = session.execute(select(Connection.id).where(Connection.name == connection)).scalar_one()
        rows = session.execute(select(model).where(model.connection_id == conn_id)).scalars().all()
        return {row.crm_id: {c: getattr(row, c) for c in columns} for row in rows}


def _cursors(engine: Engine, connection: str) -> dict[str, tuple[Any, Any]]:
    with Session(engine) as session:
        rows = session.execute(select(SyncCursor).join(Connection).where(Connection.name == connection)).scalars()
        return {row.stream: (row.cursor_ts, row.cursor_id) for row in rows}


def _bulk_connector(sim: CRMSim, name: str, threshold: int = 100,
                    page_records: int | None = None) -> tuple[ConnectionConfig, ConnectionSecrets, SalesforceConnector]:
    # Pages of 100: a first page is full (only then is the stream counted) in a small world.
    conn, secrets = salesforce_config(sim, name, bulk_threshold=threshold, page_size=100)
    connector = SalesforceConnector(conn, secrets, bulk_poll_seconds=0.005)
    if page_records is not None:
        connector.bulk.page_records = page_records
    return conn, secrets, connector


def _assert_same_store(engine: Engine, one: str, other: str) -> None:
    for model in (Lead, Activity):
        left, right = _rows(engine, one, model), _rows(engine, other, model)
        assert left, f"no {model.__name__} rows"
        assert left.keys() == right.keys()
        differing = [crm_id for crm_id in left if left[crm_id] != right[crm_id]]
        assert not differing, (differing[:3], left[differing[0]], right[differing[0]])


def test_bulk_first_load_equals_rest(small_sim: CRMSim, committing_pg_engine: Engine) -> None:
    rest, rest_secrets = salesforce_config(small_sim, "rest-sf", bulk_threshold=None)
    report = sync_connection(committing_pg_engine, rest, rest_secrets)
    assert report.status == "succeeded", report.error
    small_sim.reset_counts()
    conn, secrets, connector = _bulk_connector(small_sim, "bulk-sf")
    report = sync_connection(committing_pg_engine, conn, secrets, connector=connector)
    assert report.status == "succeeded", report.error
    big = [name for name, stream in report.streams.items() if stream.records > 100]
    assert big and connector.bulk_streams == big  # every stream above the threshold went through Bulk
    counts = small_sim.call_counts()["salesforce"]
    assert counts["POST jobs/query"] == len(big)
    assert counts["GET jobs/query/{id}/results"] == len(big)  # 50,000-record pages: one page each
    _assert_same_store(committing_pg_engine, "rest-sf", "bulk-sf")
    assert _cursors(committing_pg_engine, "bulk-sf") == _cursors(committing_pg_engine, "rest-sf")
    # The next run is incremental REST from the Bulk snapshot's cursor: nothing lost, nothing twice.
    small_sim.advance(5)
    jobs_before = small_sim.call_counts()["salesforce"]["POST jobs/query"]
    for config, secret in ((rest, rest_secrets), (conn, secrets)):
        again = sync_connection(committing_pg_engine, config, secret)
        assert again.status == "succeeded", again.error
        assert again.records > 0
    assert small_sim.call_counts()["salesforce"]["POST jobs/query"] == jobs_before
    _assert_same_store(committing_pg_engine, "rest-sf", "bulk-sf")
    expected.assert_database_matches(committing_pg_engine, "bulk-sf", expected.salesforce(small_sim))


def test_failed_job_moves_no_cursor_and_a_retry_completes(small_sim: CRMSim, committing_pg_engine: Engine) -> None:
    small_sim.set_faults("sf.bulk_job_fail=1", seed=3)
    conn, secrets, connector = _bulk_connector(small_sim, "bulk-fail-sf")
    with pytest.raises(RetriableCRMError, match="Failed"):
        sync_connection(committing_pg_engine, conn, secrets, connector=connector, streams=["leads"])
    assert _cursors(committing_pg_engine, "bulk-fail-sf") == {}
    small_sim.set_faults("", seed=3)
    conn, secrets, connector = _bulk_connector(small_sim, "bulk-fail-sf")
    report = sync_connection(committing_pg_engine, conn, secrets, connector=connector)
    assert report.status == "succeeded", report.error
    assert "leads" in connector.bulk_streams
    expected.assert_database_matches(committing_pg_engine, "bulk-fail-sf", expected.salesforce(small_sim))


def test_results_lost_midway_keep_the_cursor_and_a_retry_completes(small_sim: CRMSim,
                                                                    committing_pg_engine: Engine) -> None:
    conn, secrets, connector = _bulk_connector(small_sim, "bulk-mid-sf", page_records=100)
    pages: list[int] = []

    def lose_jobs(event: ProgressEvent) -> None:
        if event.kind == "page":
            pages.append(event.records)
            small_sim.salesforce.bulk.jobs.clear()  # the job's results are gone (deleted, expired)

    with pytest.raises(CRMError, match="404"):
        sync_connection(committing_pg_engine, conn, secrets, connector=connector, streams=["leads"],
                        progress=lose_jobs)
    assert pages == [100]  # one page was committed ...
    assert 0 < len(_rows(committing_pg_engine, "bulk-mid-sf", Lead)) <= 100  # (bad records: quarantined)
    assert _cursors(committing_pg_engine, "bulk-mid-sf") == {}  # ... and the cursor did not move
    conn, secrets, connector = _bulk_connector(small_sim, "bulk-mid-sf", page_records=100)
    report = sync_connection(committing_pg_engine, conn, secrets, connector=connector, streams=["leads"])
    assert report.status == "succeeded", report.error
    assert report.streams["leads"].pages > 1 and connector.bulk_streams == ["leads"]
    assert _rows(committing_pg_engine, "bulk-mid-sf", Lead).keys() == expected.salesforce(small_sim).leads.keys()
    assert set(_cursors(committing_pg_engine, "bulk-mid-sf")) == {"leads"}
