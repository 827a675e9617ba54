"""End to end with sync: our own write bumps the CRM's modstamp, the next sync reads the lead again,
and its inputs_hash is unchanged, so nothing is queued for rescoring (no echo loop)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, select

from connectors.sync import sync_connection
from connectors.writeback import drain_outbox
from store.db import unit_of_work
from store.models import Lead, LeadLifecycle
from tests.connectors.test_writeback_support import (
    app_config,
    create_hubspot_score_properties,
    hs_api_writes,
    score,
    secrets_for,
    sf_api_writes,
    start_sim,
)


def _leads(engine: Engine) -> dict[int, tuple[str, str | None, object, object]]:
    with unit_of_work(engine) as session:
        return {lead.id: (lead.crm_id, lead.inputs_hash, lead.inputs_changed_at, lead.crm_modified_at)
                for lead in session.scalars(select(Lead).where(Lead.lifecycle == LeadLifecycle.open))}


def test_a_resync_after_write_back_sees_the_leads_but_changes_no_inputs(sqlite_engine: Engine) -> None:
    sim = start_sim(leads=60, seed=29)
    try:
        create_hubspot_score_properties(sim)
        config = app_config(sim)
        secrets = secrets_for(sim)
        for conn in config.connections:
            sync_connection(sqlite_engine, conn, secrets[conn.name], full=True)
        before = _leads(sqlite_engine)
        assert len(before) > 20
        sim.world.clock.advance(timedelta(minutes=5))  # our writes get a later modstamp than the sync saw

        score(sqlite_engine, before, score_value=66, tier="B")
        report = drain_outbox(sqlite_engine, config, secrets)
        assert report.records_written == len(before)
        assert len(sf_api_writes(sim)) + len(hs_api_writes(sim)) == len(before)

        sim.world.clock.advance(timedelta(minutes=5))
        reread = 0
        for conn in config.connections:
            result = sync_connection(sqlite_engine, conn, secrets[conn.name])
            reread += result.streams["leads" if conn.kind == "salesforce" else "contacts"].records
        after = _leads(sqlite_engine)
    finally:
        sim.stop()
    # Every lead was read again (its modstamp moved) ...
    assert reread >= len(before)
    assert all(after[i][3] > before[i][3] for i in before)  # type: ignore[operator]
    # ... and none looks changed to scoring.
    assert {i: after[i][1:3] for i in before} == {i: before[i][1:3] for i in before}
