"""An activity read again unchanged (every incremental sync's overlap re-reads the last minutes)
leaves its lead's score alone; an edited one makes the lead stale. Before, every re-read stamped
the activity as newly synced, and under a CRM clock that stands still (crmsim, a quiet org) the
lead was rescored on every sync, each time with the same values."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from connectors.sync import sync_connection
from crmsim.app import CRMSim
from crmsim.model import Activity as SimActivity
from scoring import registry
from scoring.inputs import crm_now
from scoring.service import score_leads, stale_lead_ids
from store.db import unit_of_work
from store.models import Connection, Lead, LeadLifecycle
from tests.connectors.test_writeback_support import app_config, secrets_for, start_sim
from tests.factories import synthetic_training


def _sync(engine: Engine, sim: CRMSim, *, full: bool = False) -> int:
    """Sync both connections; the activity records read."""
    config, secrets = app_config(sim), secrets_for(sim)
    read = 0
    for conn in config.connections:
        report = sync_connection(engine, conn, secrets[conn.name], full=full)
        assert report.status == "succeeded", report.error
        read += sum(s.records for name, s in report.streams.items() if name not in ("leads", "contacts"))
    return read


def _stale(engine: Engine) -> list[int]:
    with unit_of_work(engine) as session:
        champion = registry.champion(session)
        assert champion is not None
        return stale_lead_ids(session, [champion.id], as_of=crm_now(session))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "committing_pg_engine")


def test_an_activity_read_again_unchanged_leaves_the_score_and_an_edit_rescores(engine: Engine) -> None:
    sim = start_sim(leads=60, seed=29)
    try:
        sf_store = sim.salesforce.store
        _sync(engine, sim, full=True)
        with unit_of_work(engine) as session:
            lead_id, crm_id = session.execute(select(Lead.id, Lead.crm_id).join(Connection).where(
                Connection.name == "sf", Lead.lifecycle == LeadLifecycle.open).order_by(Lead.id).limit(1)).one()
        person = next(p for p in sim.world.people.values() if sf_store.crm_id(p.key) == crm_id)
        sim.world.clock.advance(timedelta(minutes=1))
        visit = SimActivity("ARESYNC01", person.key, "web_visit", sim.world.clock.now(), "/pricing")
        sf_store.put_activity(visit)
        assert _sync(engine, sim) >= 1
        with unit_of_work(engine) as session:
            result, tset = synthetic_training()
            registry.register(session, result, train_window=tset.window, status="champion")
        with unit_of_work(engine) as session:
            first = score_leads(session)
            open_leads = len(session.scalars(select(Lead.id).where(Lead.lifecycle == LeadLifecycle.open)).all())
        assert first.scored == open_leads > 20
        assert _stale(engine) == []

        # The clock stands still: the next sync's overlap reads the new visit again, unchanged.
        assert _sync(engine, sim) >= 1
        assert _stale(engine) == []
        with unit_of_work(engine) as session:
            assert score_leads(session).scored == 0

        # The same visit edited in the CRM (another page): its lead, and only it, is stale.
        sf_store.put_activity(SimActivity("ARESYNC01", person.key, "web_visit", visit.occurred_at, "/demo"))
        assert _sync(engine, sim) >= 1
        assert _stale(engine) == [lead_id]
    finally:
        sim.stop()
