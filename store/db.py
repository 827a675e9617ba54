"""Engines and sessions. Nothing connects at import time; callers own their unit of work."""

from __future__ import annotations

import json
import operator
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any

import psycopg.adapt
import psycopg.postgres
import psycopg.pq
import psycopg.sql
from sqlalchemy import (
    JSON,
    Engine,
    Select,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import UserDefinedType

from config.errors import ConfigError, LeadscoreError


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for PostgreSQL (psycopg 3) or SQLite with the settings each needs.

    SQLite: the parent folder is created, WAL journaling and a busy timeout let the in-process
    worker and the CLI share the file, and foreign keys are enforced as on PostgreSQL.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        folder = None if in_memory_sqlite(parsed) else Path(str(parsed.database)).parent
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


def in_memory_sqlite(url: URL) -> bool:
    """An SQLite database that lives in its connection (``sqlite://``, ``:memory:``, a URI with
    ``mode=memory``): other connections, and other threads, do not see it."""
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory")


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


# Ids per statement where id lists are cut: :func:`among` sends them as one parameter, so this
# bounds a statement's result, not its text (a 2,000-lead scoring batch is one statement).
IDS_PER_STATEMENT = 5000


def among(session: Session, column: ColumnElement[Any] | QueryableAttribute[Any],
          values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values`` as one parameter, whatever the count: PostgreSQL gets ``column =
    ANY(:array)``, SQLite ``column IN (SELECT value FROM json_each(:json))``. Neither SQLAlchemy
    nor the driver then renders and parses a statement with a thousand placeholders per batch, and
    the statement's text (and plan) is the same for every batch. Other databases: a plain ``IN``."""
    dialect = session.get_bind().dialect.name
    texts = bool(values) and isinstance(values[0], str)
    if dialect == "postgresql":
        # One array parameter written as its literal at once: the driver's list dumper costs a
        # Python call per element (about 6 ms per 5,000 ids, several statements per batch). A
        # parameter, not a cast in the SQL: the planner sees the array's values (a text cast to
        # bigint[] is not folded, and was parsed again for every row scanned).
        if texts:
            quoted = ['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values]
            return column == any_(bindparam(None, _TextArray("{" + ",".join(quoted) + "}"), type_=_ArrayType()))
        numbers = ",".join(map(str, map(operator.index, values)))
        return column == any_(bindparam(None, _IdArray("{" + numbers + "}"), type_=_ArrayType()))
    if dialect == "sqlite":
        # One JSON text parameter read back as a table: the same SQL text for any count (and no
        # limit on the number of host parameters); the IN still uses the column's index.
        listed: Select[Any] = select(literal_column("value")).select_from(
            func.json_each(bindparam(None, json.dumps(list(values) if texts else list(map(operator.index, values))))))
        return column.in_(listed)
    return column.in_(list(values))


class _IdArray(str):
    """Integers as one PostgreSQL array literal (``{1,2,3}``), sent as a ``bigint[]`` parameter."""


class _TextArray(str):
    """Texts as one PostgreSQL array literal (each element quoted), sent as a ``varchar[]``
    parameter."""


class _ArrayLiteralDumper(psycopg.adapt.Dumper):
    """An array literal's text, sent as a parameter of the array type ``oid`` names."""

    def dump(self, obj: Any) -> bytes:
        return str(obj).encode("utf-8")


class _IdArrayDumper(_ArrayLiteralDumper):
    oid = psycopg.postgres.types["int8"].array_oid


class _TextArrayDumper(_ArrayLiteralDumper):
    oid = psycopg.postgres.types["varchar"].array_oid


psycopg.adapters.register_dumper(_IdArray, _IdArrayDumper)
psycopg.adapters.register_dumper(_TextArray, _TextArrayDumper)


class _ArrayType(UserDefinedType[str]):
    """An :class:`_IdArray` or :class:`_TextArray` parameter as it is (no bind processing, no
    cast in the SQL: its dumper names the type)."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "ARRAY"


class JSONText(str):
    """A value already serialised as JSON text: :func:`insert_columns` stores it as it is (the caller
    needed the text anyway, e.g. to hash it) instead of serialising the value a second time."""


def insert_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (mappings with the same keys) into ``table``: :func:`insert_columns` of
    their columns."""
    if rows:
        names = list(rows[0])
        insert_columns(session, table, {name: [row[name] for row in rows] for name in names})


def insert_columns(session: Session, table: Table, columns: Mapping[str, Sequence[Any]]) -> None:
    """Insert rows given column by column (``{name: values}``, one value per row in each) into
    ``table`` in the session's transaction, at the driver: SQLAlchemy's per-row parameter
    handling cost more than the database's work, and callers that hold columns need not build a
    mapping per row.

    PostgreSQL: one binary ``COPY ... FROM STDIN`` (psycopg; each value sent as its column's
    type), an order of magnitude faster than one INSERT per row; JSON values go as their JSON
    text, enums as their values, naive datetimes
    are refused as :class:`store.types.UTCDateTime` refuses them. Elsewhere: one driver
    ``executemany`` with each column's own bind processing applied a column at a time. Every
    column with a default must be given (no defaults are filled in here). A JSON column's
    :class:`JSONText` values go in as their text.
    """
    names = list(columns)
    sizes = {len(columns[name]) for name in names}
    if len(sizes) > 1:
        raise ValueError(f"insert_columns into {table.name}: columns of different lengths {sorted(sizes)}")
    if not names or not sizes.pop():
        return
    missing = [c.name for c in table.c if c.name not in names and c.default is not None and not c.primary_key]
    if missing:
        raise ValueError(f"insert_columns into {table.name}: give {', '.join(missing)} (defaults are not applied)")
    session.flush()  # the driver bypasses the ORM: pending objects go first
    connection = session.connection()
    raw = connection.connection.driver_connection
    if raw is None:  # a connection SQLAlchemy has already released: not in a live transaction
        raise RuntimeError("insert_columns needs the session's open connection")
    dialect = connection.dialect
    if dialect.name != "postgresql":
        compiled = insert(table).compile(dialect=dialect, column_keys=names)
        order = list(compiled.positiontup or names)
        processed: list[Sequence[Any]] = []
        for name in order:
            process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            values = columns[name]
            if process is None:
                processed.append(values)
            elif isinstance(table.c[name].type, JSON):
                processed.append([str(v) if isinstance(v, JSONText) else process(v) for v in values])
            else:
                # Rows of one run share their times (scored_at, as_of, ...): process each once.
                done: dict[Any, Any] = {}
                processed.append([done[v] if v in done else done.setdefault(v, process(v)) for v in values])
        cursor = raw.cursor()
        try:
            cursor.executemany(str(compiled), zip(*processed, strict=True))
        finally:
            cursor.close()
        return
    copied = [_copy_column(columns[name], isinstance(table.c[name].type, JSON)) for name in names]
    # Binary COPY: the server takes each value as it is stored (no text to parse for numbers and
    # times), about a third less of its work than text COPY for score and outbox rows. Each value
    # is sent as its column's own type (read from the catalog); JSON goes as its text.
    statement = psycopg.sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        psycopg.sql.Identifier(table.name), psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, names)))
    with raw.cursor() as cursor:
        types = dict(cursor.execute(
            "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
            " AND NOT attisdropped", [psycopg.sql.Identifier(table.name).as_string(raw)]).fetchall())
        for dumper in (_JSONTextBinary, _JSONBTextBinary):
            cursor.adapters.register_dumper(None, dumper)
        with cursor.copy(statement) as copy:
            copy.set_types([int(types[name]) for name in names])
            for row in zip(*copied, strict=True):
                copy.write_row(row)


def driver_rows(session: Session, stmt: Select[Any]) -> list[Any]:
    """A select's rows as the database driver returns them, without SQLAlchemy's per-value result
    processing (UTC datetimes, JSON, enums, booleans): for many rows that processing costs more
    than the query itself. Callers convert what they read (SQLite gives times and JSON as text,
    PostgreSQL as objects)."""
    if session.autoflush:
        session.flush()  # what session.execute would do first
    result = session.connection().execute(stmt)
    try:
        return list(result.cursor.fetchall()) if result.cursor is not None else []
    finally:
        result.close()


class _JSONTextBinary(psycopg.adapt.Dumper):
    """A ``json`` value for binary COPY from its JSON text (the wire form is the text itself)."""

    format = psycopg.pq.Format.BINARY
    oid = psycopg.postgres.types["json"].oid

    def dump(self, obj: Any) -> bytes:
        return str(obj).encode("utf-8")


class _JSONBTextBinary(_JSONTextBinary):
    """A ``jsonb`` value for binary COPY from its JSON text (a version byte, then the text)."""

    oid = psycopg.postgres.types["jsonb"].oid

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + str(obj).encode("utf-8")


def _copy_column(values: Sequence[Any], is_json: bool) -> Sequence[Any]:
    """One column's values as COPY takes them: JSON as its text, enums as their values; naive
    datetimes refused. A column at a time: one pass per column, not one call per value."""
    if is_json:
        return [None if v is None else str(v) if isinstance(v, JSONText) else json.dumps(v) for v in values]
    # The checks look at the column's value types first (one pass in C), not at each value.
    kinds = set(map(type, values))
    if any(issubclass(k, Enum) for k in kinds):
        values = [v.value if isinstance(v, Enum) else v for v in values]
    if not any(issubclass(k, datetime) for k in kinds):
        return values
    naive = next((v for v in set(values) if isinstance(v, datetime) and v.tzinfo is None), None)
    if naive is not None:
        raise ValueError(f"naive datetime {naive!r}: leadscore stores timezone-aware UTC only")
    return values
