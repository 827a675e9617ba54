"""Queue names in one place. Long work (training, monitoring) never delays the minute loop."""

from __future__ import annotations

from enum import StrEnum


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
