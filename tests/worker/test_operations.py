"""Operations: one beat schedules at a time; Flower never runs without authentication."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from config.errors import ConfigError
from tests.conftest import REDIS_BASE_URL, signal_state
from tests.services import with_db
from worker.cli.ops import flower_args, flower_env

REPO = Path(__file__).resolve().parents[2]
# A database of its own, so counting queued messages sees only this test's beats.
BEAT_REDIS = with_db(REDIS_BASE_URL, 13)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_flower_refuses_to_start_without_authentication() -> None:
    with pytest.raises(ConfigError, match="refuses to start without authentication"):
        flower_args("0.0.0.0", 5555, None, insecure_loopback=False)  # noqa: S104
    with pytest.raises(ConfigError, match="binds loopback only"):
        flower_args("0.0.0.0", 5555, None, insecure_loopback=True)  # noqa: S104
    with pytest.raises(ConfigError, match="user:password"):
        flower_args("127.0.0.1", 5555, "admin", insecure_loopback=False)
    assert flower_args("127.0.0.1", 5555, None, insecure_loopback=True)[-1] == "--port=5555"
    args = flower_args("0.0.0.0", 5555, "admin:s3cret", False)  # noqa: S104
    assert not any("s3cret" in arg for arg in args)  # credentials travel in the environment only
    assert flower_env("admin:s3cret") == {"FLOWER_BASIC_AUTH": "admin:s3cret"}


def test_flower_command_without_auth_exits_1(tmp_path: Path, redis_url: str) -> None:
    env = dict(os.environ, LEADSCORE_BROKER_URL=redis_url, LEADSCORE_VAR_DIR=str(tmp_path))
    env.pop("LEADSCORE_FLOWER_BASIC_AUTH", None)
    result = subprocess.run([sys.executable, "-m", "worker.cli", "flower"], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=60)
    assert result.returncode == 1
    assert "LEADSCORE_FLOWER_BASIC_AUTH" in result.stderr
    assert "Traceback" not in result.stderr


def test_flower_on_a_taken_port_is_one_line(tmp_path: Path, redis_url: str) -> None:
    """An admin trial started Flower on a port another process held: 38 lines of traceback."""
    env = dict(os.environ, LEADSCORE_BROKER_URL=redis_url, LEADSCORE_VAR_DIR=str(tmp_path),
               LEADSCORE_FLOWER_BASIC_AUTH="admin:s3cret-pass-taken")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "worker.cli", "flower", "--port", str(port)],
                                capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use): another process has it? Choose "
        "another with --port"], result.stderr


@pytest.mark.parametrize("source", ["environment", "file"])
def test_flower_with_basic_auth_rejects_anonymous_requests(tmp_path: Path, redis_url: str, source: str) -> None:
    port = free_port()
    password = "s3cret-pass-" + source
    env = dict(os.environ, LEADSCORE_BROKER_URL=redis_url, LEADSCORE_VAR_DIR=str(tmp_path))
    env.pop("LEADSCORE_FLOWER_BASIC_AUTH", None)
    if source == "environment":
        env["LEADSCORE_FLOWER_BASIC_AUTH"] = f"admin:{password}"
    else:
        secret = tmp_path / "flower-auth"
        secret.write_text(f"admin:{password}\n")
        env["LEADSCORE_FLOWER_BASIC_AUTH_FILE"] = str(secret)
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "flower", "--port", str(port)],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        anonymous = None
        while time.monotonic() < deadline:
            try:
                anonymous = requests.get(url, timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.5)
        assert anonymous is not None, "flower did not start"
        assert anonymous.status_code == 401
        assert requests.get(url, auth=("admin", "wrong"), timeout=5).status_code == 401
        assert requests.get(url, auth=("admin", password), timeout=5).status_code == 200
        # What `ps` shows: the serving process (leadscore exec'd into celery flower) has no password.
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "flower" in cmdline and f"--port={port}" in cmdline
        assert password not in cmdline
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        assert password not in ps
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_flower_credentials_file_unreadable_is_one_line(tmp_path: Path, redis_url: str) -> None:
    env = dict(os.environ, LEADSCORE_BROKER_URL=redis_url, LEADSCORE_VAR_DIR=str(tmp_path),
               LEADSCORE_FLOWER_BASIC_AUTH_FILE=str(tmp_path / "missing"))
    env.pop("LEADSCORE_FLOWER_BASIC_AUTH", None)
    result = subprocess.run([sys.executable, "-m", "worker.cli", "flower"], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=60)
    assert result.returncode == 1
    assert "LEADSCORE_FLOWER_BASIC_AUTH_FILE: cannot read" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("secret", "why"), [
    ("admin:admin", "not a placeholder or the user name"),
    ("admin:changeme", "not a placeholder or the user name"),
    ("ops:s3cret", "at least 8 characters"),
])
def test_production_flower_refuses_a_weak_password_from_the_file_too(tmp_path: Path, redis_url: str, secret: str,
                                                                    why: str) -> None:
    # A mounted secret file is held to what LEADSCORE_FLOWER_BASIC_AUTH is held to in production.
    (tmp_path / "flower-auth").write_text(secret + "\n", encoding="utf-8")
    env = dict(os.environ, LEADSCORE_BROKER_URL=redis_url, LEADSCORE_VAR_DIR=str(tmp_path),
               LEADSCORE_ENVIRONMENT="production", LEADSCORE_FLOWER_BASIC_AUTH_FILE=str(tmp_path / "flower-auth"))
    env.pop("LEADSCORE_FLOWER_BASIC_AUTH", None)
    result = subprocess.run([sys.executable, "-m", "worker.cli", "flower"], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"LEADSCORE_FLOWER_BASIC_AUTH_FILE: {tmp_path / 'flower-auth'}: must be user:password" in result.stderr
    assert why in result.stderr and secret.split(":", 1)[1] not in result.stderr, result.stderr


def _wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def _start_beat(env: dict[str, str], schedule: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            # -X faulthandler: a beat that outlives SIGTERM dumps its threads' stacks on SIGABRT (_stop_beats).
            [sys.executable, "-X", "faulthandler", "-m", "celery", "-A", "worker.app", "beat", "-l", "info", "-s",
             str(schedule)],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def _stop_beats(beats: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    """SIGTERM to each running beat, as a supervisor stops one, and its exit within 20 s. A beat
    that keeps running fails the test with its signal masks and its threads' stacks (SIGABRT:
    faulthandler writes them to its log), and is not left behind sending ticks."""
    running = [(beat, log) for beat, log in zip(beats, logs, strict=False) if beat.poll() is None]
    for beat, _ in running:
        beat.terminate()
    stuck: list[str] = []
    for beat, log in running:
        try:
            beat.wait(timeout=20)
        except subprocess.TimeoutExpired:
            status = signal_state(beat.pid)
            beat.send_signal(signal.SIGABRT)
            try:
                beat.wait(timeout=10)
            except subprocess.TimeoutExpired:
                beat.kill()
                beat.wait()
            stuck.append(f"beat {beat.pid} did not stop within 20 s of SIGTERM ({status}); its log:\n"
                         f"{log.read_text(errors='replace')[-6000:]}")
    if stuck:
        raise AssertionError("\n".join(stuck))


def _beat_setting(tmp_path: Path) -> tuple[redis.Redis, dict[str, str]]:
    """The beats' Redis database (emptied) and their environment: a sync every 10 s."""
    client = redis.Redis.from_url(BEAT_REDIS)
    client.flushdb()
    config = tmp_path / "leadscore.yaml"
    config.write_text("schedules: {sync_seconds: 10, writeback_seconds: 3600}\n")
    return client, dict(os.environ, LEADSCORE_BROKER_URL=BEAT_REDIS, LEADSCORE_CONFIG_FILE=str(config),
                        LEADSCORE_VAR_DIR=str(tmp_path))


@pytest.mark.slow
def test_two_beats_schedule_each_tick_once(tmp_path: Path) -> None:
    client, env = _beat_setting(tmp_path)
    logs = [tmp_path / f"beat-{i}.log" for i in range(2)]
    beats = [_start_beat(env, tmp_path / f"beat-{i}", logs[i]) for i in range(2)]

    def sent() -> list[int]:
        return [log.read_text().count("Sending due task sync-all-connections") for log in logs]

    def queued() -> list[dict[str, Any]]:
        messages = [json.loads(raw) for raw in client.lrange("minute", 0, -1)]
        return [m for m in messages if m["headers"]["task"] == "leadscore.sync.all"]

    try:
        # Both up, then two more ticks sent (10 s apart): the standby beat tried for the lock every
        # 5 s meanwhile. Polled, not slept: a slow start on a busy machine only makes it wait longer.
        _wait_until(lambda: all("beat: Starting..." in log.read_text() for log in logs), 90, "both beats to start")
        before = max(sent())
        _wait_until(lambda: max(sent()) >= before + 2, 90, "two ticks after both beats started")
        # Beat logs "Sending due task" before it publishes: stopping it at once lost the last message
        # (CI: 2 logged, 1 queued). Wait until every logged send has reached the queue.
        _wait_until(lambda: len(queued()) >= sum(sent()), 30, "the logged sends to reach the queue")
    finally:
        _stop_beats(beats, logs)
    syncs = queued()
    sent_by_beat = sorted(sent())
    # Exactly one beat sent anything; the other stood by. Without the lock both send (measured: 2 + 2).
    assert sent_by_beat[0] == 0 and sent_by_beat[1] >= 2, sent_by_beat
    assert len(syncs) == sent_by_beat[1]
    client.flushdb()


@pytest.mark.slow
def test_a_standby_beat_sharing_the_schedule_file_takes_over(tmp_path: Path) -> None:
    """Two `leadscore beat`s on one host share ``var/celerybeat-schedule``: the standby must not
    touch the file while the holder writes it, and must take over when the holder stops (it
    crashed with "UnpicklingError: pickle data was truncated" when it opened the file at start)."""
    client, env = _beat_setting(tmp_path)
    schedule = tmp_path / "celerybeat-schedule"
    logs = [tmp_path / f"beat-{i}.log" for i in range(2)]
    beats = [_start_beat(env, schedule, logs[0])]
    acquired = "beat: acquired the scheduler lock; scheduling"
    try:
        _wait_until(lambda: logs[0].read_text().count("Sending due task sync-all-connections") >= 1, 90,
                    "the first beat to schedule")
        beats.append(_start_beat(env, schedule, logs[1]))
        # The standby is up and the holder has written the file since (ticks 10 s apart).
        _wait_until(lambda: "beat: Starting..." in logs[1].read_text(), 90, "the standby to start")
        sent_before = logs[0].read_text().count("Sending due task sync-all-connections")
        _wait_until(lambda: logs[0].read_text().count("Sending due task sync-all-connections") >= sent_before + 1,
                    60, "the holder to write the schedule again")
        assert acquired not in logs[1].read_text()
        # The standby says once why it sends nothing, naming the holder as an admin finds it.
        said = (f"beat: on standby: the beat on {socket.gethostname()} (pid {beats[0].pid}) holds the scheduler "
                "lock; this beat takes over within 30s of it stopping")
        assert logs[1].read_text().count(said) == 1, logs[1].read_text()[-3000:]
        _stop_beats(beats[:1], logs[:1])
        sent = "Sending due task sync-all-connections"
        _wait_until(lambda: sent in logs[1].read_text() or beats[1].poll() is not None, 90, "the standby to take over")
        standby = logs[1].read_text()
        assert beats[1].poll() is None, standby[-3000:]
        assert acquired in standby and "Sending due task sync-all-connections" in standby
        assert "Traceback" not in standby and "CRITICAL" not in standby and "Error" not in standby, standby[-3000:]
    finally:
        _stop_beats(beats, logs)  # the standby may not have started
        client.flushdb()
