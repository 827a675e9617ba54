"""insert_rows (COPY on PostgreSQL, a driver executemany elsewhere) stores what an ORM insert stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
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


def test_a_column_refuses_a_naive_datetime_after_aware_ones_and_takes_enums_beside_text(any_session: Session) -> None:
    lead = _lead(any_session)
    rows = [_row(lead, n, status=OutboxStatus.pending if n % 2 else "pending") for n in range(4)]
    insert_rows(any_session, OUTBOX, rows)
    stored = any_session.scalars(select(Outbox.status).where(Outbox.lead_id == lead.id)).all()
    assert stored == ["pending"] * 4
    mixed = [_row(lead, n + 10) for n in range(3)] + [_row(lead, 13, created_at=T0.replace(tzinfo=None))]
    with pytest.raises(ValueError, match="naive datetime"):
        insert_rows(any_session, OUTBOX, mixed)


def test_among_finds_exactly_the_rows_of_many_ids(any_session: Session) -> None:
    conn = Connection(name="sf", kind="salesforce")
    any_session.add(conn)
    any_session.flush()
    crm_ids = [f"00Q{n}" for n in range(39)] + ['odd "id" \\ {1,2}']  # quotes, a backslash, braces
    leads = [Lead(connection_id=conn.id, crm_id=c, crm_created_at=T0, crm_modified_at=T0) for c in crm_ids]
    any_session.add_all(leads)
    any_session.flush()
    ids = [lead.id for lead in leads]
    wanted = ids[::3] + [max(ids) + 1000]  # one id that no row has
    found = any_session.scalars(select(Lead.id).where(among(any_session, Lead.id, wanted))).all()
    assert sorted(found) == ids[::3]
    as_numpy = list(np.asarray(ids[1::2], dtype="int64"))  # numpy integers, as batches hold them
    assert sorted(any_session.scalars(select(Lead.id).where(among(any_session, Lead.id, as_numpy))).all()) == ids[1::2]
    texts = ["00Q1", "00Q7", crm_ids[-1], "x,{}"]
    by_crm = any_session.scalars(select(Lead.id).where(among(any_session, Lead.crm_id, texts))).all()
    assert sorted(by_crm) == [ids[1], ids[7], ids[-1]]
    assert any_session.scalars(select(Lead.id).where(among(any_session, Lead.id, []))).all() == []
