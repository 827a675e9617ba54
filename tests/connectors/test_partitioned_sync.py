"""The partitioned sync (streams and first-load time windows run side by side) against crmsim:
the same store contents as the one-process sync, with faults injected, through the real clients."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from connectors.base import NEVER_RESPONDED
from connectors.partition import sync_in_threads
from crmsim.app import CRMSim
from store.models import Connection, SyncCursor, SyncWindow
from tests.connectors import expected
from tests.connectors.conftest import hubspot_config, salesforce_config


def _windows(engine: Engine, connection: str) -> list[SyncWindow]:
    with Session(engine) as session:
        return list(session.execute(select(SyncWindow).join(Connection).where(Connection.name == connection)
                                    .order_by(SyncWindow.id)).scalars())


def test_partitioned_sync_with_faults_equals_crmsim(small_sim: CRMSim, committing_pg_engine: Engine) -> None:
    small_sim.set_faults("rate_429=0.05,rate_503=0.05,rate_500=0.03,drop=0.05,expire_after=15", seed=7)
    sf, sf_secrets = salesforce_config(small_sim, "part-sf", page_size=150, first_load_windows=3)
    hs, hs_secrets = hubspot_config(small_sim, "part-hs", page_size=40)
    for conn, secrets, build in ((sf, sf_secrets, expected.salesforce), (hs, hs_secrets, expected.hubspot)):
        outcomes = sync_in_threads(committing_pg_engine, conn, secrets, threads=3)
        assert outcomes and outcomes[-1].plan_done, outcomes
        expected.assert_database_matches(committing_pg_engine, conn.name, build(small_sim))
        if conn.kind == "salesforce":
            # Each unit's outcome (a Celery task's result) counts what it read and did not store.
            silent = sum(1 for r in small_sim.salesforce.store.records["CampaignMember"].values()
                         if not r.deleted and not r.values["HasResponded"])
            assert silent > 0
            assert sum(o.skipped_by_reason.get(NEVER_RESPONDED, 0) for o in outcomes
                       if o.stream == "campaign_members") >= silent
    # Salesforce's first load of its activity streams was cut into windows read side by side.
    first = _windows(committing_pg_engine, "part-sf")
    windowed = [w for w in first if not w.from_cursor]
    assert {w.stream for w in windowed} == {"tasks", "events", "campaign_members"}
    assert all(w.status == "done" for w in first)
    assert len({w.part for w in windowed if w.stream == "tasks"}) == 3
    small_sim.advance(3)
    for conn, secrets, build in ((sf, sf_secrets, expected.salesforce), (hs, hs_secrets, expected.hubspot)):
        outcomes = sync_in_threads(committing_pg_engine, conn, secrets, threads=3)
        assert outcomes[-1].plan_done
        expected.assert_database_matches(committing_pg_engine, conn.name, build(small_sim))
    # The second run is incremental: one unit per stream, from the cursors the windows left.
    second = [w for w in _windows(committing_pg_engine, "part-sf") if w.id not in {f.id for f in first}]
    assert second and all(w.from_cursor for w in second)
    with Session(committing_pg_engine) as session:
        cursors = session.execute(select(SyncCursor).join(Connection).where(
            Connection.name == "part-sf")).scalars().all()
    assert {c.stream for c in cursors} == {"leads", "tasks", "events", "campaign_members"}
    assert all(c.cursor_ts is not None and c.cursor_ts <= small_sim.world.now for c in cursors)
    assert sum(small_sim.salesforce.faults.injected.values()) > 2
