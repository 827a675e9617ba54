"""The CLI contract: help lists the command groups; errors are one line with the right exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=120)


def test_help_lists_the_command_groups() -> None:
    result = run("--help")
    assert result.returncode == 0
    for name in ("demo", "db", "crmsim", "sync", "train", "score", "writeback", "evaluate", "tiers",
                 "explain", "report"):
        assert name in result.stdout


def test_config_check_reads_the_yaml(tmp_path: Path) -> None:
    path = tmp_path / "leadscore.yaml"
    path.write_text("connections: [{name: hs, kind: hubspot, access_token_env: LS_TEST_HS_TOKEN}]\n"
                    "tiers: {thresholds: {A: 90, B: 70, C: 40}}\n")
    result = run("config", "check", env={"LEADSCORE_CONFIG_FILE": str(path), "LS_TEST_HS_TOKEN": "pat-na1-x"})
    assert result.returncode == 0, result.stderr
    assert "connection hs (hubspot), credentials from LS_TEST_HS_TOKEN (set)" in result.stdout
    path.write_text("tiers: {thresholds: {A: 10, B: 70, C: 40}}\n")
    result = run("config", "check", env={"LEADSCORE_CONFIG_FILE": str(path)})
    assert result.returncode == 1
    assert f"{path}: tiers: thresholds must be ordered" in result.stderr


def test_config_check_refuses_connections_that_cannot_log_in(tmp_path: Path) -> None:
    # Every sync of such a connection would fail: config check names each in one line first
    # (a disabled one is fine).
    connections = [
        ("{name: hs, kind: hubspot, access_token_env: LS_TEST_UNSET}",
         "connection 'hs': environment variable LS_TEST_UNSET (access_token_env) is not set"),
        ("{name: hs2, kind: hubspot}", "connection 'hs2': HubSpot needs access_token_env"),
        ("{name: sf, kind: salesforce, instance_url: 'https://acme.my.salesforce.com', client_id: c, "
         "client_secret_env: LS_TEST_SET}", "connection 'sf': OAuth client credentials need 'domain'"),
        ("{name: sf2, kind: salesforce, instance_url: 'https://acme.my.salesforce.com'}",
         "connection 'sf2': set client_id + client_secret_env + domain, or session_id_env"),
    ]
    path = tmp_path / "leadscore.yaml"
    path.write_text("connections:\n" + "".join(f"- {c}\n" for c, _ in connections))
    env = {"LEADSCORE_CONFIG_FILE": str(path), "LS_TEST_SET": "secret-value"}
    full = {**{k: v for k, v in os.environ.items() if k != "LS_TEST_UNSET"}, **env}
    result = subprocess.run([sys.executable, "-m", "worker.cli", "config", "check"], capture_output=True,
                            text=True, env=full, cwd=REPO, timeout=120)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for _c, fragment in connections:
        assert fragment in result.stderr, result.stderr
    assert "secret-value" not in result.stderr + result.stdout
    path.write_text("connections:\n" + "".join(f"- {c[:-1]}, enabled: false}}\n" for c, _ in connections))
    result = run("config", "check", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(" disabled") == len(connections), result.stdout


@pytest.mark.parametrize("broker", [False, True])
def test_status_with_a_broken_config_shows_the_store_then_the_configs_line(tmp_path: Path, broker: bool,
                                                                           request: pytest.FixtureRequest) -> None:
    # The YAML is broken, so worker and beat refuse to start: status is what the admin runs then.
    # With a broker too (production): an admin trial saw only the config's line there, since
    # asking the workers loaded leadscore's Celery app, which refuses a broken YAML file.
    env = {"LEADSCORE_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}", "LEADSCORE_VAR_DIR": str(tmp_path / "var")}
    if broker:
        url = request.getfixturevalue("redis_url")
        env.update({"LEADSCORE_BROKER_URL": url, "LEADSCORE_RESULT_BACKEND": url,
                    "LEADSCORE_REDIS_NAMESPACE": f"t{uuid.uuid4().hex[:10]}"})
    assert run("db", "upgrade", env=env).returncode == 0
    bad = tmp_path / "leadscore.yaml"
    bad.write_text("tiers:\n  mode: score\ntiers:\n  mode: capacity\n")
    result = run("status", env={**env, "LEADSCORE_CONFIG_FILE": str(bad)})
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "sync: no sync has run yet" in result.stdout and "outbox: empty" in result.stdout
    if broker:
        assert "workers: none answered" in " ".join(result.stdout.split()), result.stdout
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}: line 3: duplicate key 'tiers' (YAML would silently keep only the last one) "
        "(worker and beat refuse to start until it is fixed)"], result.stderr


def test_unknown_command_is_usage_error() -> None:
    result = run("frobnicate")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_db_upgrade_creates_sqlite_schema(tmp_path: Path) -> None:
    result = run("db", "upgrade", env={"LEADSCORE_VAR_DIR": str(tmp_path / "var")})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "leadscore.db").exists()
    # The newest migration, whichever it is now: the file holds the head revision and says so.
    from alembic.script import ScriptDirectory

    from store.migrate import alembic_config, current_revision

    url = f"sqlite:///{tmp_path / 'var' / 'leadscore.db'}"
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None and current_revision(url) == head
    assert f"database at revision {head}" in " ".join(result.stdout.split())


def test_db_upgrade_on_postgresql(pg_database: str) -> None:
    result = run("db", "upgrade", env={"LEADSCORE_DATABASE_URL": pg_database})
    assert result.returncode == 0, result.stderr
    assert run("db", "current", env={"LEADSCORE_DATABASE_URL": pg_database}).stdout.strip() != ""


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"LEADSCORE_DATABASE_URL": "oracle://x"}, "LEADSCORE_DATABASE_URL"),
        ({"LEADSCORE_CONFIG_FILE": "/nonexistent/leadscore.yaml"}, "config file not found"),
    ],
)
def test_bad_configuration_is_one_line_exit_1(tmp_path: Path, env: dict[str, str], fragment: str) -> None:
    env = {"LEADSCORE_VAR_DIR": str(tmp_path / "var"), **env}
    result = run("config", "check", env=env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
