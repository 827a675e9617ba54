"""Celery settings, read from leadscore's environment settings (``LEADSCORE_*``).

No broker configured (the embedded default) means tasks execute in process (eager). With
``LEADSCORE_BROKER_URL=redis://...`` tasks go to real workers. Time limits stay below the Redis
visibility timeout: a task still running when the timeout passes would be delivered twice.
"""

from __future__ import annotations

from config.errors import ConfigError
from config.settings import get_settings
from worker.queues import Queue, task_routes, transport_options
from worker.schedule import build_beat_schedule

try:
    _settings = get_settings()
    _beat_schedule = build_beat_schedule()
except ConfigError as exc:
    # `celery -A worker.app worker|beat` started directly: the same one line `config check`
    # prints, not a traceback from Celery's start-up.
    raise SystemExit(f"error: {exc}") from None

broker_url = _settings.broker_url or "memory://localhost/"
result_backend = _settings.result_backend or (
    _settings.broker_url if (_settings.broker_url or "").startswith("redis") else None
)
# Ride out broker outages: retry the connection forever (with Celery's backoff) at start-up and
# whenever it drops, never exit on a blip (docs/operations.md, "Broker outages").
broker_connection_retry_on_startup = True
broker_connection_retry = True
broker_connection_max_retries = None
broker_channel_error_retry = True
redis_retry_on_timeout = True
redis_socket_keepalive = True
# LEADSCORE_REDIS_NAMESPACE: every key of the queues, results and broadcasts (pidbox, events)
# starts with "<namespace>:", as leadscore's own locks do (worker.locks.redis_key).
broker_transport_options = transport_options(_settings)
result_backend_transport_options = transport_options(_settings)
result_expires = 24 * 3600

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# Every task is idempotent (upserts keyed by CRM id, cursors after commit, outbox rows until
# confirmed, routing actions keyed by lead + score + action), so late acks are safe: a worker
# killed mid-task leaves the message to be redelivered, never lost.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_soft_time_limit = _settings.task_soft_time_limit
task_time_limit = _settings.task_time_limit
task_track_started = True
worker_send_task_events = True
task_send_sent_event = True

task_default_queue = Queue.MINUTE.value
task_routes = task_routes()

task_always_eager = _settings.eager
task_eager_propagates = True

beat_schedule = _beat_schedule
beat_scheduler = "worker.beat:LockedScheduler"
