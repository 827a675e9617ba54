from __future__ import annotations

from celery.schedules import crontab, schedule

from config.app_config import ScheduleConfig
from worker.schedule import beat_entries


def test_every_entry_expires_and_names_a_leadscore_task() -> None:
    entries = beat_entries(ScheduleConfig())
    assert {"sync-all-connections", "writeback-drain", "routing-execute", "monitor-daily", "retrain-check",
            "rescore-daily"} <= set(entries)
    for entry in entries.values():
        assert entry["task"].startswith("leadscore.")
        assert entry["options"]["expires"] > 0


def test_intervals_come_from_the_config() -> None:
    entries = beat_entries(ScheduleConfig(sync_seconds=120, writeback_seconds=45, monitor_cron="0 6 * * 1"))
    sync = entries["sync-all-connections"]["schedule"]
    assert isinstance(sync, crontab) and sync.minute == set(range(0, 60, 2))
    assert isinstance(entries["writeback-drain"]["schedule"], schedule)
    assert entries["writeback-drain"]["options"]["expires"] == 67.5
    monitor = entries["monitor-daily"]["schedule"]
    assert isinstance(monitor, crontab) and monitor.hour == {6} and monitor.day_of_week == {1}
