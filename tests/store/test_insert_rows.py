"""insert_rows (COPY on PostgreSQL, a driver executemany elsewhere) stores what an ORM insert stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from store.db import among, insert_columns, insert_rows
from store.models import Connection, Lead, Outbox, OutboxStatus

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
OUTBOX: Table = Outbox.__table__  # type: ignore[assignment]


def _lead(session: Session) -> Lead:
    conn = Connection(name="sf", kind="salesforce")
    session.add(conn)
    session.flush()
    lead = Lead(connection_id=conn.id, crm_id="00Q1", crm_created_at=T0, crm_modified_at=T0)
    session.add(lead)
    session.flush()
    return lead


def _row(lead: Lead, n: int, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "connection_id": lead.connection_id, "lead_id": lead.id, "crm_id": lead.crm_id, "kind": "score",
        "payload": {"score": n, "reasons": "+ Fit: VP-level title \u2014 \"quoted\"\ttab", "nested": {"a": [1, None]}},
        "payload_hash": f"h{n}", "status": OutboxStatus.pending, "attempts": 0, "lead_score_id": None,
        "created_at": T0 + timedelta(seconds=n), "next_attempt_at": T0}
    row.update(changes)
    return row


def test_rows_read_back_as_given(any_session: Session) -> None:
    lead = _lead(any_session)
    rows = [_row(lead, n) for n in range(3)] + [_row(lead, 3, payload={}, lead_score_id=None)]
    insert_rows(any_session, OUTBOX, rows)
    stored = any_session.scalars(select(Outbox).where(among(any_session, Outbox.lead_id, [lead.id]))
                                 .order_by(Outbox.payload_hash)).all()
    assert [o.payload_hash for o in stored] == ["h0", "h1", "h2", "h3"]
    first = stored[0]
    assert first.payload == _row(lead, 0)["payload"]
    assert first.status == "pending" and first.kind == "score"
    assert first.created_at == T0 and first.created_at.tzinfo is not None
    assert stored[2].created_at == T0 + timedelta(seconds=2)
    assert stored[3].payload == {} and stored[3].lead_score_id is None


def test_refuses_rows_that_would_lose_a_default_or_a_zone(any_session: Session) -> None:
    lead = _lead(any_session)
    without = _row(lead, 0)
    del without["next_attempt_at"]
    with pytest.raises(ValueError, match="next_attempt_at"):
        insert_rows(any_session, OUTBOX, [without])
    with pytest.raises(ValueError, match="naive datetime"):
        insert_rows(any_session, OUTBOX, [_row(lead, 1, created_at=T0.replace(tzinfo=None))])


def test_columns_store_what_rows_store(any_session: Session) -> None:
    lead = _lead(any_session)
    rows = [_row(lead, n) for n in range(3)]
    insert_columns(any_session, OUTBOX, {name: [row[name] for row in rows] for name in rows[0]})
    stored = any_session.scalars(select(Outbox).where(among(any_session, Outbox.lead_id, [lead.id]))
                                 .order_by(Outbox.payload_hash)).all()
    assert [(o.payload_hash, o.payload, o.created_at) for o in stored] == [
        (f"h{n}", _row(lead, n)["payload"], T0 + timedelta(seconds=n)) for n in range(3)]


def test_columns_of_different_lengths_are_refused_and_nothing_is_written(any_session: Session) -> None:
    lead = _lead(any_session)
    columns = {name: [row[name] for row in (_row(lead, 0), _row(lead, 1))] for name in _row(lead, 0)}
    columns["payload_hash"] = ["h0"]
    with pytest.raises(ValueError, match="different lengths"):
        insert_columns(any_session, OUTBOX, columns)
    assert any_session.scalars(select(Outbox.id).where(Outbox.lead_id == lead.id)).all() == []
