"""`leadscore status` says whether workers answer, the beat schedules and each queue has a consumer,
and exits 1 when one of them is missing: measured with real processes, never assumed.

A Redis database of its own (10): other tests' workers and beats must not answer for ours.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from config.app_config import AppConfig
from store.db import make_engine
from tests.conftest import REDIS_BASE_URL
from tests.services import with_db
from tests.worker.conftest import start_worker
from web.app import create_app
from web.auth import Authenticator, parse_users
from worker.beat import LOCK_NAME
from worker.liveness import HELD_AFTER_SECONDS, Liveness, measure, still_unacked
from worker.locks import lock_key

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = with_db(REDIS_BASE_URL, 10)


def _status(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", "status"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def _wait_for(check: Callable[[], subprocess.CompletedProcess[str] | None], timeout: float, what: str
              ) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


def _store_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a store upgraded in ``tmp_path`` on this test's Redis database, without
    a YAML config, and wide lines (status lines are long)."""
    env = dict(os.environ, LEADSCORE_BROKER_URL=REDIS_URL, LEADSCORE_RESULT_BACKEND=REDIS_URL,
               LEADSCORE_VAR_DIR=str(tmp_path / "var"), LEADSCORE_DATABASE_URL=f"sqlite:///{tmp_path / 'st.db'}",
               COLUMNS="300")
    env.pop("LEADSCORE_CONFIG_FILE", None)
    upgrade = subprocess.run([sys.executable, "-m", "worker.cli", "db", "upgrade"], capture_output=True, text=True,
                             env=env, cwd=REPO, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    return env


@pytest.fixture
def empty_redis_db() -> Iterator[redis.Redis]:
    """This test's Redis database, empty before it and left empty after it: the task it queues on
    the long queue (where no worker listens) must not wait there for the next test or user."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.mark.slow
def test_status_measures_workers_beat_and_queues(tmp_path: Path, empty_redis_db: redis.Redis) -> None:
    env = _store_env(tmp_path)

    nobody = subprocess.run([sys.executable, "-m", "worker.cli", "status", "--json", str(tmp_path / "status.json")],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    # Nothing runs the loop: said line by line, and in the exit status; the JSON, written before
    # that exit, holds the same problems.
    assert nobody.returncode == 1, nobody.stdout + nobody.stderr
    written = json.loads((tmp_path / "status.json").read_text())
    assert len(written["problems"]) == 2 and written["problems"][0].startswith("no worker answered"), written
    assert written["workers"]["workers"] == {} and written["workers"]["beat"] is None, written["workers"]
    assert "workers: none answered within 1 s" in nobody.stdout
    assert "beat: not running (no beat holds the scheduler lock)" in nobody.stdout
    assert "queues: minute 0 waiting, long 0 waiting" in nobody.stdout
    assert "status: 2 problem(s): no worker answered" in nobody.stderr and "Traceback" not in nobody.stderr
    # A beat of the leadscore before this one (token beat:PID:ID) still holding the lock during an
    # upgrade is named by its pid, not as "another beat" (an admin would look for a second one).
    empty_redis_db.set(lock_key(LOCK_NAME), "beat:17346:3d10c0ffee", px=30_000)
    upgrading = _status(env)
    assert "beat: scheduling (the beat with pid 17346 holds the scheduler lock)" in upgrading.stdout, upgrading.stdout
    empty_redis_db.delete(lock_key(LOCK_NAME))

    # A task waiting on the long queue, where no worker will listen.
    sent = subprocess.run([sys.executable, "-c", "from worker.app import app; "
                           "app.send_task('leadscore.train.retrain', queue='long')"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert sent.returncode == 0, sent.stderr
    worker = start_worker(env, "minute")
    with (tmp_path / "beat.log").open("wb") as log:
        beat = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.app", "beat", "-l", "info",
                                 "-s", str(tmp_path / "beat-schedule")], env=env, cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        def both_up() -> subprocess.CompletedProcess[str] | None:
            shown = _status(env)
            up = "workers: 1 answering (minute@" in shown.stdout and "beat: scheduling" in shown.stdout
            return shown if up else None

        running = _wait_for(both_up, 90, "the worker to answer and the beat to take its lock")
        # The console's overview card measures the same way and says the same (an admin or revops
        # lead looking there instead of at a terminal).
        console = create_app(Authenticator(parse_users("ann:pw:viewer")), config=AppConfig(), broker_url=REDIS_URL,
                             engine_factory=lambda: make_engine(env["LEADSCORE_DATABASE_URL"]))
        with TestClient(console) as client:
            api = client.get("/api/workers", auth=("ann", "pw")).json()
            card = client.get("/workers", auth=("ann", "pw")).text
    finally:
        for process in (worker, beat):
            process.terminate()
        for process in (worker, beat):
            process.wait(timeout=30)
    # A beat stopped with SIGTERM gives its lock back at once (a standby beat takes over now, not
    # 30 s later) and says nothing alarming about it (it used to warn "lock not released").
    assert not empty_redis_db.exists(lock_key(LOCK_NAME))
    beat_log = (tmp_path / "beat.log").read_text(errors="replace")
    assert "beat: acquired the scheduler lock" in beat_log and "not released" not in beat_log, beat_log[-2000:]
    # The worker consumes minute only: the long queue's task waits for a consumer that does not exist.
    assert running.returncode == 1, running.stdout + running.stderr
    # The beat named as an admin finds it: its host and process id.
    said = f"beat: scheduling (the beat on {socket.gethostname()} (pid {beat.pid}) holds the scheduler lock)"
    assert said in running.stdout, running.stdout
    # (at least ours: the beat may have sent long work of its own meanwhile)
    assert re.search(r"queues: minute \d+ waiting, long [1-9]\d* waiting", running.stdout), running.stdout
    assert re.search(r"status: 1 problem\(s\): no worker consumes the long queue \([1-9]\d* task\(s\) waiting\)$",
                     running.stderr.strip()), running.stderr
    assert list(api["workers"]) == [h for h in api["workers"] if h.startswith("minute@")] and len(api["workers"]) == 1
    assert api["beat"] and api["beat"].startswith("beat:")
    assert len(api["problems"]) == 1 and api["problems"][0].startswith("no worker consumes the long queue (")
    for line in api["lines"]:
        assert f"<li>{line}</li>" in card
        if not line.startswith("queues:"):  # (the beat may have sent work since status counted)
            assert line.split(" (")[0] in running.stdout  # the status command's lines, measured again
    assert f'<li class="alert">{api["problems"][0]}</li>' in card


def _measured(until: Callable[[Liveness], bool], timeout: float, what: str) -> Liveness:
    deadline = time.monotonic() + timeout
    while True:
        alive = measure(REDIS_URL)
        if until(alive):
            return alive
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {alive}")
        time.sleep(0.5)


@pytest.mark.slow
def test_a_task_taken_by_a_killed_worker_is_shown_until_redis_hands_it_back(
    tmp_path: Path, empty_redis_db: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """acks_late leaves a killed worker's task in Redis's ``unacked`` hash, in no queue, for the
    visibility timeout (60 min): status used to read "0 waiting" and all well meanwhile."""
    env = _store_env(tmp_path)
    worker = start_worker(env, "minute")
    try:
        # A task the worker takes and keeps unacknowledged (counting down to its run in an hour).
        sent = subprocess.run([sys.executable, "-c", "from worker.app import app; "
                               "print(app.send_task('leadscore.ping', queue='minute', countdown=3600).id)"],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
        assert sent.returncode == 0, sent.stderr
        task_id = sent.stdout.strip()
        _measured(lambda a: len(a.workers) == 1 and bool(empty_redis_db.zcard("unacked_index")), 90,
                  "the worker to take the task")
        taken = time.time()
        # Measured here at once (the status command waits HELD_AFTER_SECONDS for a new delivery
        # to reach its worker's registry). Held by a worker that answers: nothing wrong.
        monkeypatch.setattr("worker.liveness.HELD_AFTER_SECONDS", 0.0)
        holding = measure(REDIS_URL)
        assert len(holding.workers) == 1 and holding.held == [], holding
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        gone = _measured(lambda a: not a.workers, 30, "the killed worker to stop answering")
        assert [(t.name, t.task_id) for t in gone.held] == [("leadscore.ping", task_id)]
        returns = gone.held[0].returns_at.timestamp()
        assert abs(returns - (taken + 3600)) < 15  # delivery + the visibility timeout
        # (A worker started now would not hold it either: it answers query_task for it as the live one
        # above did, without it.)
        time.sleep(max(0.0, taken + HELD_AFTER_SECONDS + 0.5 - time.time()))
        shown = _status(env)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
    at = gone.held[0].returns_at
    assert f"held: 1 task (leadscore.ping) taken by a worker that no longer answers: in no queue until Redis " \
           f"hands it back (visibility timeout), the first at {at:%Y-%m-%d %H:%M} UTC" in shown.stdout, shown.stdout
    assert shown.returncode == 1
    assert "1 task taken by a worker that no longer answers" in shown.stderr, shown.stderr
    # Acknowledged after the broker was read (a worker that finished it just then): not held. A
    # trial's status called a task the live worker had just finished "taken by a worker that no
    # longer answers"; the candidates are read again after the workers answer.
    assert still_unacked(empty_redis_db, gone.held) == gone.held and gone.held[0].tag
    empty_redis_db.hdel("unacked", gone.held[0].tag)
    assert still_unacked(empty_redis_db, gone.held) == []


@pytest.mark.slow
def test_a_retry_counting_down_in_a_live_worker_is_not_held(
    tmp_path: Path, empty_redis_db: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task retried with a countdown is a new message of the same id. When the attempt that
    sent it finishes after the worker took it, Celery's registry of requests by id drops the
    waiting retry, so ``query_task`` no longer finds it, while the worker's timer still holds it
    (``inspect scheduled``). A trial's `status` exited 1 during a CRM fault episode: "1 task taken
    by a worker that no longer answers ... send it again", of a HubSpot sync retrying in 180 s."""
    from celery import Celery

    from config.settings import get_settings
    from worker.queues import transport_options

    env = _store_env(tmp_path)
    worker = start_worker(env, "minute")
    send = ("import sys; from worker.app import app; "
            "r = app.send_task('leadscore.ping', queue='minute', task_id=sys.argv[1], countdown=int(sys.argv[2])); "
            "r.get(timeout=60) if sys.argv[2] == '0' else None")
    task_id = f"retry-{os.getpid()}-{time.monotonic_ns()}"
    asking = Celery("test-liveness", broker=REDIS_URL, set_as_current=False)
    asking.conf.update(broker_transport_options=transport_options(get_settings()))
    try:
        # The retry: counting down an hour in the worker, unacknowledged in Redis.
        first = subprocess.run([sys.executable, "-c", send, task_id, "3600"], capture_output=True, text=True,
                               env=env, cwd=REPO, timeout=60)
        assert first.returncode == 0, first.stderr
        _measured(lambda a: len(a.workers) == 1 and bool(empty_redis_db.zcard("unacked_index")), 90,
                  "the worker to take the retry")
        # The attempt that sent it (the same id) finishing after that.
        attempt = subprocess.run([sys.executable, "-c", send, task_id, "0"], capture_output=True, text=True,
                                 env=env, cwd=REPO, timeout=90)
        assert attempt.returncode == 0, attempt.stderr
        inspect = asking.control.inspect(timeout=2.0, limit=1)
        deadline = time.monotonic() + 10  # (the attempt's result is stored a moment before its request ends)
        while any((inspect.query_task([task_id]) or {}).values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any((inspect.query_task([task_id]) or {}).values())  # lost there
        assert [e["request"]["id"] for tasks in (inspect.scheduled() or {}).values() for e in tasks] == [task_id]
        monkeypatch.setattr("worker.liveness.HELD_AFTER_SECONDS", 0.0)
        alive = measure(REDIS_URL)
        assert len(alive.workers) == 1 and alive.held == [], alive
        assert not [p for p in alive.problems() if "no longer answers" in p], alive.problems()
    finally:
        asking.close()
        worker.kill()
        worker.wait(timeout=30)


@pytest.mark.parametrize("scheme", ["redis://127.0.0.1:{port}/0", "amqp://guest:guest@127.0.0.1:{port}//"])
def test_a_down_broker_is_one_problem_not_a_wait(scheme: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    started = time.monotonic()
    down = measure(scheme.format(port=port))
    assert time.monotonic() - started < 15  # (it was an endless retry on a broker other than Redis)
    assert down.error is not None and down.workers == {}
    assert down.problems() == [f"broker unreachable: {down.error}"]
    assert down.lines() == [f"workers: cannot tell (broker unreachable: {down.error})"]


def test_without_a_broker_nothing_is_missing_and_another_broker_says_what_it_cannot_tell() -> None:
    assert measure(None).problems() == []
    assert measure(None).lines() == [
        "workers: none needed (no broker configured: tasks run in the command that starts them)"]
    # The beat's lock and the queue lists live in Redis: with another broker they are unknown, not missing.
    other = Liveness(broker=True, redis=False, workers={"w@h": ["minute"]})
    assert other.problems() == ["no worker consumes the long queue"]
    assert other.lines()[1:] == ["beat: cannot tell (measured on a Redis broker only)",
                                 "queues: cannot tell (measured on a Redis broker only)"]


def test_status_says_once_that_a_dead_workers_sync_run_was_closed(tmp_path: Path, empty_redis_db: redis.Redis) -> None:
    """A sync run a killed worker left "running" (its lock gone) is marked failed by `status`, which
    says so in its own line; the worker's log warning is not printed beside it (a trial saw both)."""
    from datetime import UTC, datetime

    from sqlalchemy.orm import Session

    from store.models import SyncRun
    from tests.factories import make_connection

    env = _store_env(tmp_path)
    engine = make_engine(env["LEADSCORE_DATABASE_URL"])
    with Session(engine) as session:
        hs = make_connection(session, "hs", kind="hubspot")
        session.add(SyncRun(connection_id=hs.id, stream="contacts", status="running", started_at=datetime.now(UTC)))
        session.commit()
    engine.dispose()
    shown = _status(env)
    assert shown.stdout.count("hs: 1 sync run(s) left running by a dead worker marked failed") == 1, shown.stdout
    assert "left running by a dead worker" not in shown.stderr and "WARNING" not in shown.stderr, shown.stderr
