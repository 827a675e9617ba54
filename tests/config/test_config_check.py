"""`config check` catches what would crash later, and worker/beat refuse to start with the same line.

Each case is a mistake people make; each runs the real CLI as a subprocess: `leadscore config
check` exits 1 with one line naming the key, and `leadscore worker` / `leadscore beat` exit 1
with that same line before Celery starts (no traceback anywhere).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GOOD_BROKER = "redis://127.0.0.1:6379/15"


def run(args: list[str], env: dict[str, str], *, module: str = "worker.cli") -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=full,
                          cwd=REPO, timeout=120)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# (case id, YAML text or None, extra environment, what the line must name)
CASES: list[tuple[str, str | None, dict[str, str], list[str]]] = [
    ("cron-words", "schedules: {monitor_cron: every day at 3}\n", {},
     ["schedules.monitor_cron", "not a cron expression"]),
    ("cron-range", "schedules: {monitor_cron: '61 3 * * *'}\n", {},
     ["schedules.monitor_cron", "not a valid cron expression"]),
    ("broker-port", None, {"LEADSCORE_BROKER_URL": "redis://127.0.0.1:63x79/0"},
     ["LEADSCORE_BROKER_URL", "invalid port"]),
    ("broker-scheme", None, {"LEADSCORE_BROKER_URL": "redsi://127.0.0.1:6379/0"},
     ["LEADSCORE_BROKER_URL", "unknown broker scheme"]),
    ("ca-missing", "connections:\n- {name: hs, kind: hubspot, access_token_env: T, ca_bundle: /nonexistent/ca.pem}\n",
     {}, ["connections.0.ca_bundle", "does not exist"]),
    ("ca-not-pem", "connections:\n- {name: hs, kind: hubspot, access_token_env: T, ca_bundle: @CA@}\n",
     {}, ["connections.0.ca_bundle", "not a PEM certificate file"]),
    ("hubspot-host", "connections:\n- {name: hs, kind: hubspot, access_token_env: T, host: 'api.hubapi.com'}\n",
     {}, ["connections.0.host", "is not a URL"]),
    ("webhook", "monitoring: {webhook_url: 'hooks.slack.com/services/x'}\n", {},
     ["monitoring.webhook_url", "is not a URL"]),
    ("duplicate-key", "tiers:\n  mode: score\ntiers:\n  mode: capacity\n", {},
     ["line 3", "duplicate key 'tiers'"]),
    ("yaml-colon", "routing:\n  - to: A\n    campaign: Nurture Track: Evaluators\n", {},
     ["not valid YAML at line 3, column 28", "mapping values are not allowed here"]),
    ("latin-1", "connections:\n- {name: société, kind: hubspot}\n", {"ENCODING": "latin-1"},
     ["not UTF-8 text", "line 2"]),
    ("sqlite-folder", None, {"LEADSCORE_DATABASE_URL": "sqlite:////nonexistent/dir/x.db"},
     ["LEADSCORE_DATABASE_URL", "/nonexistent/dir", "does not exist"]),
    ("db-driver", None, {"LEADSCORE_DATABASE_URL": "postgresql+nosuchdriver://root@127.0.0.1/x"},
     ["LEADSCORE_DATABASE_URL", "unknown database driver"]),
]


@pytest.mark.parametrize(("yaml_text", "extra", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_config_check_and_worker_and_beat_refuse_with_one_line(
        tmp_path: Path, yaml_text: str | None, extra: dict[str, str], expected: list[str]) -> None:
    env = {"LEADSCORE_VAR_DIR": str(tmp_path / "var"), "LEADSCORE_BROKER_URL": GOOD_BROKER}
    extra = dict(extra)
    encoding = extra.pop("ENCODING", "utf-8")
    env.update(extra)
    if yaml_text is not None:
        bad_ca = tmp_path / "ca.pem"
        bad_ca.write_text("this is not a certificate\n")
        config = tmp_path / "leadscore.yaml"
        config.write_bytes(yaml_text.replace("@CA@", str(bad_ca)).encode(encoding))
        env["LEADSCORE_CONFIG_FILE"] = str(config)

    line = one_line(run(["config", "check"], env))
    for fragment in expected:
        assert fragment in line, line
    assert one_line(run(["worker"], env)) == line
    assert one_line(run(["beat"], env)) == line


def test_celery_started_directly_refuses_with_the_same_line(tmp_path: Path) -> None:
    config = tmp_path / "leadscore.yaml"
    config.write_text("schedules: {monitor_cron: every day at 3}\n")
    env = {"LEADSCORE_VAR_DIR": str(tmp_path / "var"), "LEADSCORE_BROKER_URL": GOOD_BROKER,
           "LEADSCORE_CONFIG_FILE": str(config)}
    expected = one_line(run(["config", "check"], env))
    direct = run(["-A", "worker.app", "beat"], env, module="celery")
    assert one_line(direct) == expected


@pytest.mark.parametrize("problem", ["wrong-port", "missing-database", "missing-role"])
@pytest.mark.parametrize("command", [["db", "upgrade"], ["score"], ["train"], ["sync"], ["status"]])
def test_unreachable_database_is_one_line_in_every_command(tmp_path: Path, problem: str,
                                                           command: list[str]) -> None:
    url = {
        "wrong-port": f"postgresql+psycopg://root@127.0.0.1:{closed_port()}/postgres",
        "missing-database": "postgresql+psycopg://root@127.0.0.1:5432/leadscore_no_such_database",
        "missing-role": "postgresql+psycopg://no_such_role@127.0.0.1:5432/postgres",
    }[problem]
    config = tmp_path / "leadscore.yaml"
    # sync needs a connection to get as far as the database; nothing listens at its host.
    config.write_text(f"connections:\n- {{name: hs, kind: hubspot, host: 'http://127.0.0.1:{closed_port()}', "
                      "access_token_env: LEADSCORE_TEST_TOKEN}\n")
    env = {"LEADSCORE_VAR_DIR": str(tmp_path / "var"), "LEADSCORE_DATABASE_URL": url,
           "LEADSCORE_CONFIG_FILE": str(config), "LEADSCORE_TEST_TOKEN": "x"}
    line = one_line(run(command, env))
    assert "database unreachable" in line, line
    assert {"wrong-port": "Connection refused", "missing-database": "does not exist",
            "missing-role": "does not exist"}[problem] in line


def test_connect_tries_database_and_broker(tmp_path: Path) -> None:
    env = {"LEADSCORE_VAR_DIR": str(tmp_path / "var")}
    fresh = run(["config", "check", "--connect"], {**env, "LEADSCORE_BROKER_URL": GOOD_BROKER})
    assert fresh.returncode == 0, fresh.stderr
    said = " ".join(fresh.stdout.split())  # the terminal width may wrap the line
    assert "connect: SQLite file not created yet (leadscore db upgrade creates it); broker answered" in said
    # The YAML's tiers (built-in defaults here) in words, and what they are for.
    assert ("tiers: score: A >= 95, B >= 80, C >= 50 (the first tier policy only; `leadscore tiers show` "
            "prints the active one)") in said
    assert not (tmp_path / "var" / "leadscore.db").exists()  # --connect creates no empty database
    assert run(["db", "upgrade"], env).returncode == 0
    ok = run(["config", "check", "--connect"], {**env, "LEADSCORE_BROKER_URL": GOOD_BROKER})
    assert ok.returncode == 0, ok.stderr
    assert "connect: database answered; broker answered" in " ".join(ok.stdout.split())
    broker = f"redis://127.0.0.1:{closed_port()}/0"
    bad = one_line(run(["config", "check", "--connect"], {**env, "LEADSCORE_BROKER_URL": broker}))
    assert "broker unreachable" in bad and broker in bad
    database = f"postgresql+psycopg://root@127.0.0.1:{closed_port()}/postgres"
    bad = one_line(run(["config", "check", "--connect"], {**env, "LEADSCORE_DATABASE_URL": database}))
    assert "database unreachable" in bad
    # Without --connect the same settings pass: parsing alone cannot know the port is closed.
    assert run(["config", "check"], {**env, "LEADSCORE_DATABASE_URL": database}).returncode == 0
