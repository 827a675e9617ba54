"""The runbook's two workers on one host (`leadscore worker -Q minute`, `leadscore worker -Q long`)
are two Celery nodes: each is named after its queues. Before, both were celery@host, so Flower
and `celery inspect` saw one worker (DuplicateNodenameWarning)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from store.migrate import upgrade

REPO = Path(__file__).resolve().parents[2]


def _nodes(env: dict[str, str]) -> set[str]:
    result = subprocess.run([sys.executable, "-m", "celery", "-A", "worker.app", "inspect", "ping", "--json",
                             "-t", "2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return set(json.loads(lines[-1])) if lines else set()


def test_two_workers_on_one_host_are_two_nodes(worker_env: dict[str, str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    env = {k: v for k, v in worker_env.items() if not k.startswith("LEADSCORE_DATABASE")}
    env["LEADSCORE_DATABASE_URL"] = url
    tag = uuid.uuid4().hex[:8]  # queues of this test only: no other test's tasks are consumed
    queues = [f"t{tag}-minute", f"t{tag}-long"]
    workers = [subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "-Q", q, "--concurrency", "1",
                                 "--loglevel", "warning"], cwd=REPO, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for q in queues]
    try:
        expected = {f"{q}@{os.uname().nodename}" for q in queues}
        seen: set[str] = set()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not expected <= seen:
            time.sleep(2)
            seen = _nodes(env)
        assert expected <= seen, seen
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
