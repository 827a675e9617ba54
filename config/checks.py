"""Checks that catch, at load time, the configuration that would otherwise crash a process later.

Each function raises ``ValueError`` with a message meant to follow "<file or variable>: <key>: ";
the callers (pydantic validators in :mod:`config.app_config` and :mod:`config.settings`) turn it
into the one-line :class:`~config.errors.ConfigError` that `config check`, the worker and the
beat all print. ``config check --connect`` adds ``worker.cli.ops.connect_problems``, which tries
the database and the broker.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

BROKER_SCHEMES_HINT = "redis://host:6379/0 (or rediss://, memory://)"


def check_cron(expression: str) -> None:
    """Parse a 5-field cron expression with the beat scheduler's own parser (Celery's crontab)."""
    from celery.schedules import crontab

    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(f"{expression!r} is not a cron expression: need 5 fields "
                         "(minute hour day-of-month month day-of-week), e.g. '15 3 * * *'")
    minute, hour, day_of_month, month_of_year, day_of_week = parts
    try:
        crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
                day_of_week=day_of_week)
    except ValueError as exc:
        raise ValueError(f"{expression!r} is not a valid cron expression ({exc})") from exc


def check_http_url(value: str, *, https_only: bool = False) -> None:
    """A URL with an http(s) scheme and a host (and, if given, a numeric port)."""
    parts = urlsplit(value)
    schemes = ("https",) if https_only else ("http", "https")
    if parts.scheme not in schemes or not parts.hostname:
        wanted = " or ".join(f"{s}://" for s in schemes)
        raise ValueError(f"{value!r} is not a URL (expected {wanted}host/...)")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} has an invalid port") from exc


def check_ca_bundle(path: str) -> None:
    """The CA bundle exists and holds at least one PEM certificate the TLS stack can load."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"CA bundle {path} does not exist")
    try:
        context = ssl.create_default_context(cafile=str(file))
    except (ssl.SSLError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"CA bundle {path} is not a PEM certificate file ({exc.__class__.__name__})") from exc
    if not context.get_ca_certs():
        raise ValueError(f"CA bundle {path} holds no CA certificate")


def check_broker_url(url: str) -> None:
    """A URL Celery's transport layer (kombu) knows, with a numeric port."""
    from kombu.transport import resolve_transport

    parts = urlsplit(url)
    if not parts.scheme:
        raise ValueError(f"{url!r} is not a URL (expected {BROKER_SCHEMES_HINT})")
    try:
        resolve_transport(parts.scheme)
    except KeyError as exc:
        raise ValueError(f"unknown broker scheme {parts.scheme + '://'!r} (expected {BROKER_SCHEMES_HINT})") from exc
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"{redact_url(url)} has an invalid port") from exc


def check_database_url(url: str) -> None:
    """A SQLAlchemy URL whose driver is installed, with a numeric port; a SQLite file's folder exists."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(f"not a database URL ({exc}); e.g. postgresql+psycopg://user@host/db "
                         "or sqlite:///path") from exc
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError("must start with sqlite:// or postgresql+psycopg://")
    try:
        parsed.get_dialect()
    except NoSuchModuleError as exc:
        raise ValueError(f"unknown database driver {parsed.drivername!r} (use postgresql+psycopg or sqlite)") from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise ValueError(f"the folder {folder} of the SQLite file does not exist (create it first)")


# Passwords every scanner tries first: a production Flower refuses them.
PLACEHOLDER_PASSWORDS = frozenset({"changeme", "password", "admin", "flower", "secret", "letmein", "test",
                                   "123456", "12345678", "qwerty"})
MIN_PASSWORD_CHARS = 8


def weak_password(user_password: str) -> str | None:
    """Why ``user:password`` may not guard a production dashboard (None when it may)."""
    if ":" not in user_password:
        return "must be user:password"
    user, password = user_password.split(":", 1)
    if not password:
        return "must be user:password with a password"
    if password.lower() in PLACEHOLDER_PASSWORDS or password.lower() == user.lower():
        return "must be user:password with a real password (not a placeholder or the user name)"
    if len(password) < MIN_PASSWORD_CHARS:
        return f"must be user:password with a real password (at least {MIN_PASSWORD_CHARS} characters)"
    return None


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
