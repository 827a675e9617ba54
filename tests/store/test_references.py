"""The keys of lead_score and outbox hold on both databases: declared on SQLite, checked once per
statement by triggers on PostgreSQL (store.references). Each refusal is the database's own."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import pytest
from alembic import command
from sqlalchemy import Engine, Table, delete, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.db import insert_columns, insert_rows, make_engine
from store.migrate import alembic_config, upgrade
from store.models import Base, Connection, Lead, LeadScore, Outbox, OutboxStatus
from store.references import SET_CHECKED, check_inserted_ddl, constraint_name
from tests.conftest import fresh_database

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SCORES: Table = LeadScore.__table__  # type: ignore[assignment]
OUTBOX: Table = Outbox.__table__  # type: ignore[assignment]


def _lead(session: Session, crm_id: str = "00Q1") -> Lead:
    conn = session.scalars(select(Connection).where(Connection.name == "sf")).first()
    if conn is None:
        conn = Connection(name="sf", kind="salesforce")
        session.add(conn)
        session.flush()
    lead = Lead(connection_id=conn.id, crm_id=crm_id, crm_created_at=T0, crm_modified_at=T0)
    session.add(lead)
    session.flush()
    return lead


def _scores(lead_ids: list[int]) -> dict[str, list[object]]:
    n = len(lead_ids)
    return {"lead_id": lead_ids, "probability": [0.1] * n, "score": [5] * n, "tier": ["D"] * n,
            "reasons": ["[]"] * n, "is_current": [False] * n, "scored_at": [T0] * n}


def _refused(session: Session, work: Callable[[], object], key: str, missing: int | None = None) -> None:
    """``work()`` fails with the database's own foreign key refusal (PostgreSQL's names ``key``;
    SQLite's names none; PostgreSQL's detail names ``missing``); the session goes on (a savepoint
    undoes the failed statement). Bulk inserts go through the driver, so its error class may come
    unwrapped."""
    with pytest.raises((IntegrityError, sqlite3.IntegrityError, psycopg.errors.IntegrityError)) as caught, \
            session.begin_nested():
        work()
    error = caught.value.orig if isinstance(caught.value, IntegrityError) else caught.value
    if session.get_bind().dialect.name == "postgresql":
        assert isinstance(error, psycopg.errors.ForeignKeyViolation) and key in str(error), error
        if missing is not None:  # the detail names a missing id, as a declared key's does
            assert f")=({missing}) is not present in table" in str(error.diag.message_detail), error.diag
    else:
        assert "FOREIGN KEY constraint failed" in str(error)


def test_a_score_of_a_missing_lead_is_refused_in_a_batch_of_good_ones(any_session: Session) -> None:
    good = [_lead(any_session, f"00Q{i}").id for i in range(3)]
    _refused(any_session, lambda: insert_columns(any_session, SCORES, _scores([*good, 987654321, 987654320, good[0]])),
             "fk_lead_score_lead_id_lead", missing=987654320)  # the lowest missing id
    assert any_session.scalars(select(LeadScore.id).where(LeadScore.lead_id.in_(good))).all() == []
    insert_columns(any_session, SCORES, _scores(good))  # the same rows without the stranger: stored
    assert len(any_session.scalars(select(LeadScore.id).where(LeadScore.lead_id.in_(good))).all()) == 3


def test_an_outbox_row_of_a_missing_score_is_refused(any_session: Session) -> None:
    lead = _lead(any_session)
    row = {"connection_id": lead.connection_id, "lead_id": lead.id, "crm_id": lead.crm_id, "kind": "score",
           "payload": {}, "payload_hash": "h", "status": OutboxStatus.pending, "attempts": 0,
           "lead_score_id": 987654321, "created_at": T0, "next_attempt_at": T0}
    _refused(any_session, lambda: insert_rows(any_session, OUTBOX, [row]),
             "fk_outbox_lead_score_id_lead_score", missing=987654321)
    _refused(any_session, lambda: insert_rows(any_session, OUTBOX, [{**row, "lead_score_id": None,
                                                                       "connection_id": 98765}]),
             "fk_outbox_connection_id_connection")
    insert_rows(any_session, OUTBOX, [{**row, "lead_score_id": None}])
    assert any_session.scalars(select(Outbox.lead_id)).all() == [lead.id]


def test_a_referenced_lead_cannot_be_deleted_nor_a_reference_moved_to_nothing(any_session: Session) -> None:
    lead, other = _lead(any_session, "00Q1"), _lead(any_session, "00Q2")
    insert_columns(any_session, SCORES, _scores([lead.id]))
    _refused(any_session, lambda: any_session.execute(delete(Lead).where(Lead.id == lead.id)),
             "fk_lead_score_lead_id_lead")
    _refused(any_session, lambda: any_session.execute(
        update(LeadScore).where(LeadScore.lead_id == lead.id).values(lead_id=987654321)),
        "never change")
    any_session.execute(delete(Lead).where(Lead.id == other.id))  # nothing refers to it
    assert any_session.get(Lead, lead.id) is not None


def test_postgresql_checks_the_keys_by_statement_however_the_schema_was_made(pg_engine: Engine) -> None:
    """Migrations (the session database) and create_all (the bench, some tests) give the same
    triggers and no declared key for the seven set-checked references."""
    with fresh_database("refs") as url:
        made = make_engine(url)
        try:
            Base.metadata.create_all(made)
            Base.metadata.create_all(made)  # again: the hook replaces its functions and triggers
            seen = [_checks(engine) for engine in (pg_engine, made)]
        finally:
            made.dispose()
    assert seen[0] == seen[1]
    triggers, keys, functions = seen[0]
    assert set(functions) == {"leadscore_check_references", "leadscore_check_referenced", "leadscore_refuse_change"}
    assert {"lead_score_references", "outbox_references", "lead_referenced", "lead_id_fixed"} <= triggers
    assert not keys & {constraint_name(*ref) for ref in SET_CHECKED}
    assert "fk_routing_action_lead_score_id_lead_score" in keys  # the other keys stay declared


def _checks(engine: Engine) -> tuple[set[str], set[str], dict[str, str]]:
    with engine.connect() as conn:
        triggers = set(conn.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).scalars())
        functions = {str(name): str(source) for name, source in conn.execute(text(
            "SELECT proname, prosrc FROM pg_proc WHERE proname LIKE 'leadscore%'"))}
        keys = {fk["name"] for table in ("lead_score", "outbox", "routing_action")
                for fk in inspect(conn).get_foreign_keys(table)}
    return triggers, keys, functions


def test_the_insert_check_goes_back_and_forth_with_its_migration() -> None:
    """``0014`` replaces the insert check and its downgrade restores 0009's; both refuse a
    missing lead, and the upgraded one is the one ``create_all`` installs."""
    with fresh_database("refs_mig") as url:
        made = make_engine(url)
        try:
            upgrade(url)
            newest = _checks(made)[2]["leadscore_check_references"]
            command.downgrade(alembic_config(url), "0013_outbox_payload_at_claim")
            before = _checks(made)[2]["leadscore_check_references"]
            assert before != newest and "count(DISTINCT" in before
            with Session(made) as session:
                _refused(session, lambda: insert_columns(session, SCORES, _scores([987654321])),
                         "fk_lead_score_lead_id_lead", missing=987654321)
            upgrade(url)
            assert _checks(made)[2]["leadscore_check_references"] == newest
            assert "CREATE OR REPLACE FUNCTION leadscore_check_references()" in check_inserted_ddl()
            assert newest.strip() in check_inserted_ddl()
        finally:
            made.dispose()
