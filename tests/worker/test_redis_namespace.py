"""Two installations on one Redis database (a staging and a production leadscore, say) share
nothing when each has its own ``LEADSCORE_REDIS_NAMESPACE``: one's workers never take the other's
tasks or answer its ``status``, and their locks (sync, beat) never block each other.

Real processes on a Redis database of this file's own (15). Without the namespace on every key
(Celery's ``global_keyprefix`` and leadscore's own keys) the green installation's status hears
the blue worker, and its ping is run by it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config.errors import ConfigError
from config.settings import get_settings, load_settings
from tests.conftest import REDIS_BASE_URL
from tests.services import with_db
from tests.worker.conftest import start_worker
from worker.beat import LOCK_NAME
from worker.locks import exclusive, is_held, lock_key

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = with_db(REDIS_BASE_URL, 15)


def _env(tmp_path: Path, namespace: str) -> dict[str, str]:
    env = dict(os.environ, LEADSCORE_BROKER_URL=REDIS_URL, LEADSCORE_RESULT_BACKEND=REDIS_URL,
               LEADSCORE_VAR_DIR=str(tmp_path / namespace),
               LEADSCORE_DATABASE_URL=f"sqlite:///{tmp_path / f'{namespace}.db'}",
               LEADSCORE_REDIS_NAMESPACE=namespace, COLUMNS="200")
    env.pop("LEADSCORE_CONFIG_FILE", None)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def _python(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


@pytest.fixture
def namespace(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Switch this process's namespace: ``use("blue")``."""

    def use(name: str) -> None:
        monkeypatch.setenv("LEADSCORE_REDIS_NAMESPACE", name)
        get_settings.cache_clear()

    yield use
    get_settings.cache_clear()


@pytest.mark.slow
def test_each_installation_hears_only_its_own_workers_and_tasks(tmp_path: Path) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    blue, green = _env(tmp_path, "blue"), _env(tmp_path, "green")
    for env in (blue, green):
        upgraded = _cli(env, "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
    worker = start_worker(blue, "minute")
    try:
        deadline = time.monotonic() + 90
        while "workers: 1 answering (minute@" not in (shown := _cli(blue, "status")).stdout:
            assert time.monotonic() < deadline, shown.stdout + shown.stderr
            time.sleep(1)
        # Green's status does not hear blue's worker, and says in which namespace it listened.
        green_status = _cli(green, "status")
        heard = green_status.stdout
        assert "workers: none answered within 1 s in Redis namespace 'green'" in heard, heard
        # A task green sends waits for a green worker; blue's worker, on the same Redis database
        # and the same queue name, never takes it. Blue's own ping is answered.
        sent = _python(green, "from worker.app import app; app.send_task('leadscore.ping', args=['green'], "
                              "queue='minute')")
        assert sent.returncode == 0, sent.stderr
        answered = _python(blue, "from worker.app import app; print(app.send_task('leadscore.ping', args=['blue'], "
                                 "queue='minute').get(timeout=60)['value'])")
        assert answered.returncode == 0 and answered.stdout.strip() == "blue", answered.stdout + answered.stderr
        assert "queues: minute 1 waiting" in _cli(green, "status").stdout
        assert "queues: minute 0 waiting" in _cli(blue, "status").stdout
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    # Every key either installation left is under its namespace, but for kombu 5.7's index of
    # expiring bindings, which its transport keeps unprefixed (bindings' deadlines, no tasks).
    keys = sorted(k.decode() for k in client.keys("*") if k != b"_kombu.binding_deadlines")
    assert keys and all(k.startswith(("blue:", "green:")) for k in keys), keys
    client.flushdb()


def test_locks_of_two_namespaces_are_apart(namespace: object) -> None:
    use = namespace
    assert callable(use)
    redis.Redis.from_url(REDIS_URL).flushdb()
    use("blue")
    blue_beat = lock_key(LOCK_NAME)
    with exclusive("sync:salesforce", redis_url=REDIS_URL, owner="test"):
        assert is_held("sync:salesforce", redis_url=REDIS_URL)
        use("green")
        assert lock_key(LOCK_NAME) != blue_beat and lock_key(LOCK_NAME).startswith("green:")
        assert not is_held("sync:salesforce", redis_url=REDIS_URL)
        with exclusive("sync:salesforce", redis_url=REDIS_URL, owner="test"):  # not busy: blue holds its own
            assert is_held("sync:salesforce", redis_url=REDIS_URL)
        use("blue")
    assert blue_beat == "blue:leadscore:lock:beat"
    use("")
    assert lock_key(LOCK_NAME) == "leadscore:lock:beat"  # no namespace: the keys of before


def test_a_namespace_with_a_colon_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADSCORE_REDIS_NAMESPACE", "prod:eu")
    with pytest.raises(ConfigError, match="LEADSCORE_REDIS_NAMESPACE: 'prod:eu' is not a namespace"):
        load_settings()
