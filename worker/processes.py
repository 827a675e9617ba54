"""Start real Celery worker and beat processes (the demo with a broker, end-to-end tests, benches)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def start_worker(env: dict[str, str], log: Path, *, queues: str = "minute,long", concurrency: int = 2,
                 name: str | None = None) -> subprocess.Popen[bytes]:
    """A ``celery worker`` process writing to ``log``; ``env`` carries the LEADSCORE_* settings."""
    node = name or f"worker-{os.getpid()}-{log.stem}"
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", queues,
             "--concurrency", str(concurrency), "-l", "info", "-n", f"{node}@%h",
             "--without-gossip", "--without-mingle"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def start_beat(env: dict[str, str], log: Path, schedule: Path) -> subprocess.Popen[bytes]:
    """A ``celery beat`` process (the Redis-locked scheduler) writing to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "celery", "-A", "worker.app", "beat", "-l", "info", "-s", str(schedule)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill_tree(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal the process group (a prefork worker's children too) and reap the parent."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Ask politely (warm shutdown), then kill."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
    except ProcessLookupError:
        return
