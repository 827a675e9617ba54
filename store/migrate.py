"""Run Alembic migrations programmatically (``leadscore db upgrade`` and tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config(url: str) -> Config:
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (creating it for SQLite)."""
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from store.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def schema_problem(url: str) -> str | None:
    """One line saying why the database's schema does not fit this leadscore, or None when it is
    at the newest revision (or was created from the models without Alembic, as tests and benches
    do): no schema at all, an older one (an upgraded install whose ``leadscore db upgrade`` has
    not run yet) or one newer than this code knows. One connection."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    from store.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            has_tables = current is None and inspect(conn).has_table("sync_run")
    finally:
        engine.dispose()
    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_current_head()
    if current == head or has_tables:  # has_tables: created from the models directly
        return None
    if current is None:
        return "the database has no leadscore schema yet (run: leadscore db upgrade)"
    if current not in {rev.revision for rev in script.walk_revisions()}:
        return (f"the database's schema is at revision {current}, newer than this leadscore knows ({head}): "
                "run the leadscore release that upgraded it")
    return (f"the database's schema is at revision {current}, this leadscore needs {head} "
            "(run: leadscore db upgrade)")
