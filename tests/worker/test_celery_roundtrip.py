"""A task travels through the real Redis broker to a real worker process and back."""

from __future__ import annotations

import subprocess

from celery import Celery

from tests.worker.conftest import start_worker


def test_ping_round_trip_through_redis(worker_env: dict[str, str], queue_name: str, redis_url: str) -> None:
    client = Celery("leadscore-test", broker=redis_url, backend=redis_url)
    client.conf.task_serializer = "json"
    worker = start_worker(worker_env, queue_name)
    try:
        result = client.send_task("leadscore.ping", args=["hello"], queue=queue_name)
        reply = result.get(timeout=60)
        assert reply["value"] == "hello"
        assert reply["pid"] == worker.pid  # answered by the worker process, not in this process
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


def test_embedded_default_runs_tasks_in_process() -> None:
    from worker.app import app
    from worker.tasks import ping

    assert app.conf.task_always_eager is True  # no LEADSCORE_BROKER_URL in the test environment
    assert ping.delay("x").get()["value"] == "x"
