"""The throwaway PostgreSQL and Redis of tests/services.py: real servers, gone when their session ends.

Each test runs a separate Python process that starts its own pair (as a fresh machine's test session
would), so the servers of the session running these tests are never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import signal_state
from tests.services import DEFAULT_PG, answers, with_db

REPO = Path(__file__).resolve().parents[1]

# Starts the services, proves both are the real thing, prints what it started, then waits or exits.
CHILD = """
import faulthandler, json, signal, sys, time
import psycopg, redis
# A child that does not stop tells where it is: SIGUSR1 prints every thread's stack on stderr.
faulthandler.register(signal.SIGUSR1, all_threads=True)
from tests import services
pg, rd = services.ensure_services()
with psycopg.connect(pg, autocommit=True) as conn:
    version = conn.execute("SHOW server_version_num").fetchone()[0]
    conn.execute("CREATE DATABASE probe")
info = redis.Redis.from_url(rd).info("server")
print(json.dumps({"pg": pg, "redis": rd, "pg_version": int(version), "redis_version": info["redis_version"],
                  "pids": [p.pid for p in services._running.procs], "dir": str(services._running.tmpdir)}),
      flush=True)
if sys.argv[1] == "wait":
    # Short sleeps: a handler runs at the next wake-up even if another thread took the signal.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.2)
"""


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LEADSCORE_TEST_PG_ADMIN", "LEADSCORE_TEST_REDIS")}
    env["LEADSCORE_TEST_SERVICES"] = "embedded"
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent, the killed child, no longer reaps it).
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


def _wait_gone(pids: list[int], seconds: float = 20.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def test_throwaway_servers_are_real_and_stopped_at_exit() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD, "exit"], cwd=REPO, env=_child_env(), capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["pg"] != DEFAULT_PG and info["pg_version"] >= 160000
    assert info["redis_version"].split(".")[0].isdigit()
    assert len(info["pids"]) == 2
    assert _wait_gone(info["pids"]) == []
    assert not Path(info["dir"]).exists()
    assert not answers(info["pg"]) and not answers(info["redis"])


def test_a_killed_session_takes_its_servers_with_it() -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, "wait"], cwd=REPO, env=_child_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else ""
        info = json.loads(line)
        assert answers(info["pg"]) and answers(info["redis"])
        child.send_signal(signal.SIGKILL)  # no atexit, no signal handler: only the parent-death signal
        child.wait(timeout=30)
        assert _wait_gone(info["pids"]) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _terminal_signals() -> None:
    """In the child before it runs: SIGHUP and SIGTERM as a terminal's session has them, default
    and unblocked (a parent that ignores or blocks one would pass that on; CI once saw a child
    sleep through SIGHUP without running its handler)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP, signal.SIGTERM})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminated_session_stops_its_servers_and_removes_their_folder(sig: signal.Signals) -> None:
    # A session run under nohup ignores SIGHUP, and so would the child: give it the default a terminal has.
    child = subprocess.Popen([sys.executable, "-c", CHILD, "wait"], cwd=REPO, env=_child_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_terminal_signals)
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        child.send_signal(sig)
        try:
            # Stopping waits up to 20 s per server (PostgreSQL's shutdown checkpoint on a busy disk).
            code = child.wait(timeout=90)
        except subprocess.TimeoutExpired:
            status = signal_state(child.pid)
            child.send_signal(signal.SIGUSR1)
            time.sleep(2)
            child.kill()
            _out, err = child.communicate(timeout=30)
            raise AssertionError(f"the child did not stop on {sig.name} in 90 s ({status}); its stacks:\n"
                                 f"{err[-6000:]}") from None
        assert code == -sig
        assert _wait_gone(info["pids"]) == []
        assert not Path(info["dir"]).exists()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_with_db_replaces_only_the_database() -> None:
    assert with_db("redis://127.0.0.1:6379/0", 12) == "redis://127.0.0.1:6379/12"
    assert with_db("redis://:secret@cache:6380", 13) == "redis://:secret@cache:6380/13"
