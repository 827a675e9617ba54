"""Beat and worker ride out a broker outage: a PRIVATE redis-server is stopped for 10 s under them.

Never the shared Redis on 6379: this test starts its own redis-server on a free port, stops it,
starts it again on the same port, and kills it at the end (whatever happens). Afterwards both
processes are still alive, the beat sent the next scheduled sync and the worker ran it, and each
logged the outage and the recovery once (not a traceback per retry).
Run under ``flock /tmp/leadscore-redis-e2e.lock`` (real Celery processes).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from store.migrate import upgrade
from worker.processes import kill_tree, start_beat, start_worker, stop

pytestmark = pytest.mark.slow

SENT = "Sending due task sync-all-connections"
RAN = re.compile(r"Task leadscore\.sync\.all\[[^\]]+\] succeeded")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        _wait("private redis-server to answer", lambda: _pings(client), 20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)
        self.proc = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(_free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_beat_and_worker_survive_ten_seconds_without_the_broker(private_redis: PrivateRedis, tmp_path: Path) -> None:
    broker = f"redis://127.0.0.1:{private_redis.port}/0"
    database = f"sqlite:///{tmp_path / 'leadscore.db'}"
    upgrade(database)
    config = tmp_path / "leadscore.yaml"
    config.write_text("schedules: {sync_seconds: 10, writeback_seconds: 3600}\n")
    env = dict(os.environ, LEADSCORE_BROKER_URL=broker, LEADSCORE_RESULT_BACKEND=broker,
               LEADSCORE_DATABASE_URL=database, LEADSCORE_CONFIG_FILE=str(config),
               LEADSCORE_VAR_DIR=str(tmp_path / "var"))
    beat_log, worker_log = tmp_path / "beat.log", tmp_path / "worker.log"
    worker = start_worker(env, worker_log, queues="minute")
    beat = start_beat(env, beat_log, tmp_path / "beat-schedule")
    try:
        def ran() -> int:
            return len(RAN.findall(worker_log.read_text(errors="replace")))

        _wait("the first scheduled sync to run", lambda: ran() >= 1, 90)

        private_redis.stop()
        time.sleep(10)
        assert beat.poll() is None and worker.poll() is None, "a process exited during the outage"
        sent_before, ran_before = beat_log.read_text().count(SENT), ran()
        private_redis.start()

        _wait("beat to send the next schedule after the outage",
              lambda: beat_log.read_text().count(SENT) > sent_before, 60)
        _wait("the worker to run it", lambda: ran() > ran_before, 90)
        assert beat.poll() is None and worker.poll() is None
        beat_text = beat_log.read_text(errors="replace")
        assert beat_text.count("beat: broker unreachable") == 1, beat_text[-3000:]
        assert beat_text.count("beat: broker reachable again") == 1, beat_text[-3000:]
        assert "Traceback" not in beat_text, beat_text[-3000:]
    finally:
        stop(beat)
        stop(worker)
        kill_tree(beat)
        kill_tree(worker)
