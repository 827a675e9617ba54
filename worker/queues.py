"""Queue names in one place. Long work (training, monitoring) never delays the minute loop."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config.settings import Settings


class Queue(StrEnum):
    MINUTE = "minute"  # sync, score, write-back, routing: the loop that keeps CRM fields fresh
    LONG = "long"  # training, retraining, monitoring, full rescoring


def task_routes() -> dict[str, dict[str, str]]:
    return {
        "leadscore.train.*": {"queue": Queue.LONG.value},
        "leadscore.monitor.*": {"queue": Queue.LONG.value},
        "leadscore.score.all": {"queue": Queue.LONG.value},
        "leadscore.score.chunk": {"queue": Queue.LONG.value},
        "leadscore.*": {"queue": Queue.MINUTE.value},
    }


def transport_options(settings: Settings) -> dict[str, Any]:
    """The broker's (and Redis result backend's) transport options: the visibility timeout, and
    the namespace every key starts with. From the settings alone: ``leadscore status`` asks the
    workers with them even when the YAML file is broken (``celeryconfig`` refuses to load then)."""
    prefix = {"global_keyprefix": settings.redis_prefix} if settings.redis_prefix else {}
    return {"visibility_timeout": settings.visibility_timeout, **prefix}
