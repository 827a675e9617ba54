from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_BASE_URL as REDIS_URL  # the configured Redis or the one the session started

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not answering at {REDIS_URL}: {exc}")
    return REDIS_URL


def start_worker(env: dict[str, str], queue: str, *extra: str) -> subprocess.Popen[bytes]:
    """A real Celery worker process consuming ``queue`` (one per test: tests never share queues)."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", queue, "--pool", "solo",
         "--without-gossip", "--without-mingle", "-l", "warning", "-n", f"{queue}@%h", *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


@pytest.fixture
def worker_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "LEADSCORE_BROKER_URL": redis_url,
        "LEADSCORE_RESULT_BACKEND": redis_url,
        "LEADSCORE_VAR_DIR": str(tmp_path / "var"),
    })
    return env


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(name)
