"""A drain finds each lead's last sent write through the lead's index, whatever the planner's
statistics say: while a drain runs, rows turn from pending to sent long before PostgreSQL
analyzes the outbox again."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from connectors.writeback import _last_sent_hashes, last_sent_statement
from store.db import insert_rows
from store.models import OUTBOX_KIND, Lead, Outbox, OutboxStatus
from tests.factories import synthetic_population

ROWS_PER_LEAD = 6


def test_last_sent_rows_are_read_through_the_leads_index_with_stale_statistics(pg_session: Session) -> None:
    session = pg_session
    conn = synthetic_population(session, leads=1500, seed=3)
    leads = session.execute(select(Lead.id, Lead.crm_id).where(Lead.connection_id == conn.id).order_by(Lead.id)).all()
    now = datetime(2026, 6, 1, tzinfo=UTC)
    insert_rows(session, Outbox.__table__, [  # type: ignore[arg-type]
        {"connection_id": conn.id, "lead_id": lead_id, "account_id": None, "crm_id": crm_id, "kind": OUTBOX_KIND,
         "payload": {"score": n}, "payload_hash": f"{lead_id}-{n}", "status": OutboxStatus.pending, "attempts": 0,
         "lead_score_id": None, "created_at": now, "next_attempt_at": now}
        for n in range(ROWS_PER_LEAD) for lead_id, crm_id in leads
    ])
    # The statistics of a freshly scored outbox (nothing sent yet), then a drain's worth of sends.
    session.execute(text("ANALYZE outbox"))
    session.execute(update(Outbox).where(Outbox.connection_id == conn.id).values(status=OutboxStatus.sent))
    some = [lead_id for lead_id, _ in leads[-500:]]

    # Only the choice between the two indexes is under test: rows rolled back by earlier tests on
    # the shared database can make a sequential scan of this small table look cheaper than either.
    session.execute(text("SET LOCAL enable_seqscan = off"))
    compiled = last_sent_statement(session, conn.id, some).compile(session.get_bind())
    plan = "\n".join(row[0] for row in session.connection().exec_driver_sql(f"EXPLAIN {compiled}", compiled.params))
    assert "ix_outbox_lead" in plan and "ix_outbox_status_connection" not in plan, plan

    # And it finds, per lead, the newest sent row.
    last = _last_sent_hashes(session, conn.id, some)
    assert len(last) == len(some)
    assert all(digest == f"{lead_id}-{ROWS_PER_LEAD - 1}" for lead_id, (_, digest) in last.items())
