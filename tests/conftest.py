"""Shared fixtures: a real PostgreSQL database per test session, SQLite per test, data paths, Chromium.

PostgreSQL tests create their own database (``leadscore_test_<pid>``) and drop it at the end;
each test runs inside a transaction that is rolled back (savepoints for the code's own commits).
The servers are the configured ones when they answer, else throwaway ones this session starts
(tests/services.py); that is decided here, at import, before any other conftest or test module reads
``LEADSCORE_TEST_PG_ADMIN`` / ``LEADSCORE_TEST_REDIS``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from store.db import make_engine
from store.models import Base
from tests import services

_SERVICE_ERROR: str | None = None
try:
    PG_ADMIN_DSN, REDIS_BASE_URL = services.ensure_services()
except services.ServiceError as exc:
    # Reported by pytest_configure as one line (an exit raised while a conftest loads shows a traceback).
    _SERVICE_ERROR = str(exc)
    PG_ADMIN_DSN, REDIS_BASE_URL = services.DEFAULT_PG, services.DEFAULT_REDIS


def pytest_configure(config: pytest.Config) -> None:
    if _SERVICE_ERROR is not None:
        raise pytest.UsageError(f"test services: {_SERVICE_ERROR}")
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding a test marked ``slow`` run first, each file's tests in their own order.

    ``make test`` hands whole files to its workers in collection order (``--dist loadfile
    --no-loadscope-reorder``): a file of several minutes handed out last would keep one worker busy
    long after the other ran out of work. Every worker sorts the same collection the same way.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order otherwise unchanged


@pytest.fixture(autouse=True)
def _no_salesforce_token_from_another_test() -> None:
    """Salesforce clients reuse this process's token for an org (connectors.salesforce.client): a
    test starts with none, so its login counts do not depend on the tests before it."""
    from connectors.salesforce.client import forget_tokens

    forget_tokens()


@pytest.fixture(autouse=True)
def _no_unresponsive_crm_from_another_test() -> None:
    """A CRM that timed out counts as unresponsive in this process for a while
    (connectors.retry): a test starts with every CRM answering."""
    from connectors.retry import forget_unresponsive

    forget_unresponsive()


def pytest_report_header(config: pytest.Config) -> str:
    return services.describe()


def pytest_unconfigure(config: pytest.Config) -> None:
    # At the session's end (atexit and the signal handlers cover the abnormal ends).
    services.stop_all()


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


def signal_state(pid: int) -> str:
    """The process's pending, blocked, ignored and caught signal masks (/proc), for a failure message."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError as exc:
        return f"no /proc status: {exc}"
    masks = ("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")
    return ", ".join(line.replace("\t", " ") for line in lines if line.startswith(masks))


@contextmanager
def fresh_database(label: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (dropped afterwards); its SQLAlchemy URL."""
    name = f"leadscore_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def committing_pg_engine() -> Iterator[Engine]:
    """A fresh, migrated database per test, for code that commits (syncs, drains, processes).

    The shared session database is for tests isolated by rollback; anything that commits must
    not leave rows there for other tests to count.
    """
    from store.migrate import upgrade

    with fresh_database("commit") as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session; its SQLAlchemy URL."""
    name = f"leadscore_test_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_engine(pg_database: str) -> Iterator[Engine]:
    """An engine on the session database with the schema created from the migrations."""
    from store.migrate import upgrade

    upgrade(pg_database)
    engine = make_engine(pg_database)
    yield engine
    engine.dispose()


@contextmanager
def rolled_back_session(engine: Engine) -> Iterator[Session]:
    """A session whose work is rolled back at the end, even if the code under test commits
    (its commits release savepoints inside one outer transaction)."""
    connection = engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture
def pg_session(pg_engine: Engine) -> Iterator[Session]:
    """A session on the shared test database whose work is rolled back after the test."""
    with rolled_back_session(pg_engine) as session:
        yield session


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'leadscore.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_session(sqlite_engine: Engine) -> Iterator[Session]:
    session = Session(bind=sqlite_engine, expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_session(request: pytest.FixtureRequest) -> Session:
    """The same test on both databases leadscore supports."""
    fixture = "sqlite_session" if request.param == "sqlite" else "pg_session"
    return request.getfixturevalue(fixture)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (it ships beside the repo)")
    return SHARED_DATA


CHROMIUM_ENV = "LEADSCORE_TEST_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_INSTALL = "apt-get install -y chromium"


def find_chromium() -> str | None:
    """A Chromium (or Chrome) binary: ``LEADSCORE_TEST_CHROMIUM`` if set, else the first on PATH."""
    explicit = os.environ.get(CHROMIUM_ENV)
    if explicit:
        return shutil.which(explicit)
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser for tests that render pages. Without one a test is skipped with the reason and the
    install command, except in CI (``CI=true``), which installs it and so must never skip these."""
    found = find_chromium()
    if found is None:
        where = os.environ.get(CHROMIUM_ENV) or "/".join(CHROMIUM_NAMES)
        reason = f"no Chromium found ({where} not on PATH); install it with: {CHROMIUM_INSTALL}"
        if running_in_ci():
            pytest.fail(f"{reason} -- CI installs it and must not skip browser tests")
        pytest.skip(reason)
    return found
