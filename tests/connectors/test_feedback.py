"""Rep feedback: left in crmsim (both CRMs), read back by the sync through the real clients, shown
by tier in the summary and the HTML report."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, select

from connectors.sync import sync_connection
from connectors.writeback import drain_outbox
from scoring.feedback import feedback_of, feedback_summary
from scoring.report import render_report
from store.db import unit_of_work
from store.models import Connection, Lead, LeadLifecycle
from tests.connectors.test_writeback_support import (
    app_config,
    create_hubspot_score_properties,
    score,
    secrets_for,
    start_sim,
)


def test_feedback_left_in_the_crms_reaches_the_store_and_the_report(sqlite_engine: Engine) -> None:
    sim = start_sim(leads=80, seed=31)
    try:
        create_hubspot_score_properties(sim)
        config = app_config(sim)
        secrets = secrets_for(sim)
        for conn in config.connections:
            sync_connection(sqlite_engine, conn, secrets[conn.name], full=True)
        with unit_of_work(sqlite_engine) as session:
            # Only open leads are written (converted or closed ones are refused by the CRMs).
            ids = list(session.scalars(select(Lead.id).where(Lead.lifecycle == LeadLifecycle.open)))
        assert len(ids) > 30
        half = len(ids) // 2
        score(sqlite_engine, ids[:half], score_value=95, tier="A")  # scored far too high for most
        score(sqlite_engine, ids[half:], score_value=5, tier="D")
        assert drain_outbox(sqlite_engine, config, secrets).records_written == len(ids)

        sim.world.clock.advance(timedelta(hours=1))
        left = sim.reps_leave_feedback(share=0.5, seed=3)
        total_left = sum(sum(v.values()) for v in left.values())
        assert left["salesforce"] and left["hubspot"]
        assert sum(left["salesforce"].values()) + sum(left["hubspot"].values()) == total_left
        # Feedback depends on the score's distance from the truth: a 95 for an average lead is "Too high".
        assert left["salesforce"].get("Too high", 0) + left["hubspot"].get("Too high", 0) > 0
        # Already-flagged leads are not flagged twice.
        again = sim.reps_leave_feedback(share=0.5, seed=3)
        assert sum(sum(v.values()) for v in again.values()) < total_left

        sim.world.clock.advance(timedelta(minutes=5))
        for conn in config.connections:
            sync_connection(sqlite_engine, conn, secrets[conn.name])
        with unit_of_work(sqlite_engine) as session:
            seen = 0
            for kind, raw in session.execute(
                select(Connection.kind, Lead.raw).join(Connection, Connection.id == Lead.connection_id)
            ):
                value, _comment = feedback_of(kind, raw, None)
                seen += value is not None
            assert seen == total_left + sum(sum(v.values()) for v in again.values())
            summary = feedback_summary(session, config)
            assert summary["leads_with_feedback"] == seen
            by_tier = summary["by_tier"]
            assert sum(by_tier["A"][v] for v in ("Too high", "Too low", "About right")) > 0
            assert by_tier["A"]["Too low"] == 0  # nobody calls a 95 too low here
            assert summary["outcomes"]["Too high"]["leads"] == by_tier["A"]["Too high"] + by_tier["D"]["Too high"]
            page = render_report(session)
    finally:
        sim.stop()
    assert "Rep feedback on scores" in page and "Too high" in page
    # Its table counts every scored lead, converted and closed too, and says so (not `tiers show`'s open leads).
    assert "scored leads, open or not" in page
    assert "No rep feedback yet" not in page
