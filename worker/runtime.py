"""What a task or command needs to do its work: settings, the YAML config, the database engine."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Engine

from config.app_config import AppConfig, load_config
from config.settings import Settings, get_settings
from store.db import engine_for


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    config: AppConfig
    engine: Engine


@lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    """Settings, validated config and engine for this process (cached; config errors raise here)."""
    settings = get_settings()
    config = load_config(settings.config_file)
    return Runtime(settings=settings, config=config, engine=engine_for(settings.effective_database_url))


def reset_runtime() -> None:
    """Forget cached settings/config (tests and the demo change the environment)."""
    get_settings.cache_clear()
    get_runtime.cache_clear()
