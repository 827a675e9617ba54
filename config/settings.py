"""Process settings from the environment (prefix ``LEADSCORE_``); secrets are ``SecretStr``.

What revops edit (connections' field mappings, tiers, routing, schedules) lives in the YAML
file named by ``LEADSCORE_CONFIG_FILE`` (see :mod:`config.app_config`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.checks import check_broker_url, check_database_url, weak_password
from config.errors import ConfigError

# Celery with Redis redelivers a task not acked within the visibility timeout; time limits stay
# below it so a long task is killed before it is duplicated.
DEFAULT_VISIBILITY_TIMEOUT = 3600
NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEADSCORE_", extra="ignore")

    # Storage and broker. No broker means tasks run in process (the embedded default).
    var_dir: Path = Path("var")
    database_url: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    # Prefix of every Redis key of this installation (Celery's queues, results and broadcasts,
    # leadscore's locks): two installations on one Redis database each need their own, or the
    # workers of one take the other's tasks and one beat schedules for both. Empty: no prefix.
    redis_namespace: str = ""
    config_file: Path | None = None

    # Celery limits (seconds)
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT
    task_soft_time_limit: int = 1500
    task_time_limit: int = 1800

    # Secrets: from the environment or a file, never the database or logs. A CRM connection's
    # secrets are read from the variables its YAML names (``*_env``; connectors.base.ConnectionSecrets).
    flower_basic_auth: SecretStr | None = None  # "user:password"
    flower_basic_auth_file: Path | None = None  # a file holding "user:password" (e.g. a mounted secret)
    environment: str = Field(default="development")

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is not None:
            check_database_url(value)
        return value

    @field_validator("broker_url", "result_backend")
    @classmethod
    def _known_broker(cls, value: str | None) -> str | None:
        if value:
            check_broker_url(value)
        return value

    @field_validator("redis_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if value and not NAMESPACE.fullmatch(value):
            raise ValueError(f"{value!r} is not a namespace: 1-64 letters, digits, '_', '-' or '.', "
                             "starting with a letter or digit (no ':')")
        return value

    @model_validator(mode="after")
    def _limits_below_visibility(self) -> Settings:
        if not self.task_soft_time_limit < self.task_time_limit < self.visibility_timeout:
            raise ValueError(
                "need task_soft_time_limit < task_time_limit < visibility_timeout "
                f"(got {self.task_soft_time_limit}, {self.task_time_limit}, {self.visibility_timeout})"
            )
        if self.environment == "production" and self.flower_basic_auth is not None:
            problem = weak_password(self.flower_basic_auth.get_secret_value())
            if problem is not None:
                raise ValueError(f"flower_basic_auth {problem}")
        return self

    @property
    def effective_database_url(self) -> str:
        """The configured database, or SQLite under ``var_dir`` (the embedded default)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'leadscore.db').as_posix()}"

    @property
    def redis_prefix(self) -> str:
        """What every Redis key of this installation starts with: ``"<namespace>:"``, or nothing."""
        return f"{self.redis_namespace}:" if self.redis_namespace else ""

    @property
    def eager(self) -> bool:
        """True when no broker is configured: tasks execute in process."""
        return not self.broker_url


def load_settings() -> Settings:
    """Read settings from the environment; a bad value raises ConfigError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"]) or "settings"
        name = f"LEADSCORE_{loc.upper()}" if first["loc"] else "LEADSCORE_* settings"
        raise ConfigError(f"environment: {name}: {first['msg'].removeprefix('Value error, ')}") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached). Tests call ``get_settings.cache_clear()`` after changing env."""
    return load_settings()
