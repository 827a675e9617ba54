"""Engines and sessions. Nothing connects at import time; callers own their unit of work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from config.errors import ConfigError, LeadscoreError


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for PostgreSQL (psycopg 3) or SQLite with the settings each needs.

    SQLite: the parent folder is created, WAL journaling and a busy timeout let the in-process
    worker and the CLI share the file, and foreign keys are enforced as on PostgreSQL.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        folder = Path(parsed.database).parent if parsed.database and parsed.database != ":memory:" else None
        if folder is not None and not folder.is_dir():
            if not _is_embedded_default(url):
                # Never mkdir -p a typo: a wrong path would silently start an empty database elsewhere.
                raise ConfigError(f"database: the folder {folder} of the SQLite file does not exist "
                                  "(create it first)")
            folder.mkdir(parents=True, exist_ok=True)  # the embedded default owns its var/ folder
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _one_line_connect_errors(engine)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    _one_line_connect_errors(engine)
    return engine


def _is_embedded_default(url: str) -> bool:
    """True for the SQLite file under ``LEADSCORE_VAR_DIR`` used when no database URL is set."""
    from config.settings import get_settings

    settings = get_settings()
    return settings.database_url is None and url == settings.effective_database_url


class DatabaseUnreachable(LeadscoreError):
    """The database did not accept a connection (host, port, database name, role or password)."""


def _one_line_connect_errors(engine: Engine) -> None:
    """Turn a failed *connect* (not a failed statement) into one line naming the database."""

    @event.listens_for(engine, "handle_error")
    def _connect_failed(context: ExceptionContext) -> None:
        if context.connection is not None or context.is_pre_ping:
            return  # a statement failed, or the pool's liveness probe: SQLAlchemy handles those
        if not isinstance(context.sqlalchemy_exception, OperationalError):
            return
        original = context.original_exception
        text = str(original).strip()
        reason = text.splitlines()[0] if text else original.__class__.__name__
        raise DatabaseUnreachable(
            f"database unreachable: {engine.url.render_as_string(hide_password=True)}: {reason}"
        ) from original


@lru_cache(maxsize=4)
def engine_for(url: str) -> Engine:
    """A process-wide engine per URL (cached: engines hold pools)."""
    return make_engine(url)


def get_engine() -> Engine:
    """The engine of the configured database (``LEADSCORE_DATABASE_URL`` or SQLite under var/)."""
    from config.settings import get_settings

    return engine_for(get_settings().effective_database_url)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def unit_of_work(engine: Engine | None = None) -> Iterator[Session]:
    """One transaction: commits if the block succeeds, rolls back if it raises."""
    session = session_factory(engine or get_engine())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
