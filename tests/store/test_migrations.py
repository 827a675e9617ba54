"""The schema is only changed by migrations: the models and the migrations must agree."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from store.db import make_engine
from store.migrate import current_revision, upgrade
from store.models import Base
from store.references import include_object


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                         "include_object": include_object(conn.dialect.name)})
        return list(compare_metadata(context, Base.metadata))


def test_postgresql_migrations_match_models(pg_engine: Engine, pg_database: str) -> None:
    assert _diff(pg_engine) == []
    assert current_revision(pg_database) is not None
    indexes = {ix["name"] for ix in inspect(pg_engine).get_indexes("lead_score")}
    assert "uq_lead_score_current" in indexes


def test_sqlite_migrations_match_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    upgrade(url)  # idempotent: a second upgrade is a no-op
    engine = make_engine(url)
    try:
        assert _diff(engine) == []
        assert set(inspect(engine).get_table_names()) >= {"lead", "activity", "outbox", "routing_action"}
    finally:
        engine.dispose()
