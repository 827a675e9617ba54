"""Upserts are idempotent and take the same call on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.models import Connection, Lead
from store.upsert import upsert_rows

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def lead_row(conn_id: int, crm_id: str, email: str, modified: datetime) -> dict[str, object]:
    return {"connection_id": conn_id, "crm_id": crm_id, "email": email, "crm_created_at": T0,
            "crm_modified_at": modified, "attributes": {"budget": 10}, "raw": {"Id": crm_id}}


def test_same_row_twice_is_one_row_updated(any_session: Session) -> None:
    conn = Connection(name="sf", kind="salesforce")
    any_session.add(conn)
    any_session.flush()
    upsert_rows(any_session, Lead, [lead_row(conn.id, "00Q1", "a@x.com", T0)],
                conflict_columns=["connection_id", "crm_id"])
    upsert_rows(any_session, Lead, [lead_row(conn.id, "00Q1", "b@x.com", T0 + timedelta(minutes=1))],
                conflict_columns=["connection_id", "crm_id"])
    assert any_session.scalar(select(func.count()).select_from(Lead)) == 1
    lead = any_session.scalars(select(Lead)).one()
    any_session.refresh(lead)
    assert lead.email == "b@x.com"
    assert lead.crm_modified_at == T0 + timedelta(minutes=1)
    assert lead.crm_modified_at.tzinfo is not None
    assert lead.attributes == {"budget": 10}


def test_same_crm_id_in_two_connections_is_two_leads(any_session: Session) -> None:
    a, b = Connection(name="sf", kind="salesforce"), Connection(name="hs", kind="hubspot")
    any_session.add_all([a, b])
    any_session.flush()
    rows = [lead_row(a.id, "1", "a@x.com", T0), lead_row(b.id, "1", "a@x.com", T0)]
    upsert_rows(any_session, Lead, rows, conflict_columns=["connection_id", "crm_id"])
    upsert_rows(any_session, Lead, rows, conflict_columns=["connection_id", "crm_id"])
    assert any_session.scalar(select(func.count()).select_from(Lead)) == 2


def test_large_batch_is_chunked(any_session: Session) -> None:
    conn = Connection(name="sf", kind="salesforce")
    any_session.add(conn)
    any_session.flush()
    rows = [lead_row(conn.id, f"00Q{i:06d}", f"p{i}@x.com", T0) for i in range(5000)]
    assert upsert_rows(any_session, Lead, rows, conflict_columns=["connection_id", "crm_id"]) == 5000
    assert any_session.scalar(select(func.count()).select_from(Lead)) == 5000


def test_naive_datetimes_are_refused(any_session: Session) -> None:
    conn = Connection(name="sf", kind="salesforce")
    any_session.add(conn)
    any_session.flush()
    row = lead_row(conn.id, "00Q1", "a@x.com", datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(Exception, match="naive datetime"):
        upsert_rows(any_session, Lead, [row], conflict_columns=["connection_id", "crm_id"])


def test_rows_with_different_keys_are_refused(any_session: Session) -> None:
    conn = Connection(name="sf", kind="salesforce")
    any_session.add(conn)
    any_session.flush()
    row_a = lead_row(conn.id, "1", "a@x.com", T0)
    row_b = dict(row_a, title="VP")
    with pytest.raises(ValueError, match="same keys"):
        upsert_rows(any_session, Lead, [row_a, row_b], conflict_columns=["connection_id", "crm_id"])
