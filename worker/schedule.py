"""The beat schedule: what runs when. Intervals come from the YAML config's ``schedules``.

Every entry expires (about 1.5x its period): a message that could not be delivered in time is
dropped rather than piling up behind a stalled worker, because the next tick does the same work.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab, schedule

from config.app_config import AppConfig, ScheduleConfig


def _every(seconds: int) -> schedule | crontab:
    if seconds % 60 == 0 and seconds <= 3600:
        minutes = seconds // 60
        return crontab(minute="*" if minutes == 1 else f"*/{minutes}")
    return schedule(timedelta(seconds=seconds))


def _cron(expression: str) -> crontab:
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(f"cron expression {expression!r} needs 5 fields")
    minute, hour, day_of_month, month_of_year, day_of_week = parts
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                   month_of_year=month_of_year, day_of_week=day_of_week)


def beat_entries(schedules: ScheduleConfig) -> dict[str, dict[str, Any]]:
    """Beat entries for a schedule config (pure: tested without Celery running)."""
    return {
        "sync-all-connections": {
            "task": "leadscore.sync.all",
            "schedule": _every(schedules.sync_seconds),
            "options": {"expires": schedules.sync_seconds * 1.5},
        },
        "writeback-drain": {
            "task": "leadscore.writeback.drain",
            "schedule": _every(schedules.writeback_seconds),
            "options": {"expires": schedules.writeback_seconds * 1.5},
        },
        "routing-execute": {
            # Routing runs after each scoring pass too; this tick picks up actions a busy pass
            # left behind (a pass that finds the lock held skips rather than waits).
            "task": "leadscore.routing.execute",
            "schedule": _every(schedules.writeback_seconds),
            "options": {"expires": schedules.writeback_seconds * 1.5},
        },
        "monitor-daily": {
            "task": "leadscore.monitor.daily",
            "schedule": _cron(schedules.monitor_cron),
            "options": {"expires": 36 * 3600},
        },
        "retrain-check": {
            # Runs daily; the task itself decides whether retrain_days have passed or an alert fired.
            "task": "leadscore.train.retrain_if_due",
            "schedule": crontab(minute="45", hour="3"),
            "options": {"expires": 36 * 3600},
        },
        "rescore-daily": {
            # Recency features decay with time even when nothing changes: a daily full rescore.
            "task": "leadscore.score.all",
            "schedule": crontab(minute="30", hour="4"),
            "options": {"expires": 36 * 3600},
        },
    }


def build_beat_schedule(config: AppConfig | None = None) -> dict[str, dict[str, Any]]:
    """The schedule from the configured YAML file (defaults when none is configured)."""
    if config is None:
        from config.app_config import load_config
        from config.settings import get_settings

        config = load_config(get_settings().config_file)
    return beat_entries(config.schedules)
