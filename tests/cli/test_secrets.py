"""Configured secrets never reach the output or the logs.

A user configures a Salesforce client secret, a HubSpot token (one good, one the CRM refuses) and
the Flower password, then syncs, checks the config and asks for the status with ``--debug`` and
every logger at DEBUG. None of the secret values may appear on stdout, stderr, in any log record
or in the CLI's log file. The secrets travel as ``SecretStr`` to the client constructors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from crmsim.app import CRMSim
from store.migrate import upgrade
from tests.cli.support import leadscore_here

BAD_TOKEN = "pat-na1-refused-0123456789abcdef"  # noqa: S105 - a test value the CRM refuses
FLOWER_PASSWORD = "flower-pw-4c1d2e9b7a"  # noqa: S105 - a test value


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    sim = CRMSim(leads=150, seed=5, history_days=30, admin=False).start()
    try:
        yield sim
    finally:
        sim.stop()


def test_no_output_or_log_line_holds_a_configured_secret(sim: CRMSim, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    sf, hs = sim.info()["salesforce"], sim.info()["hubspot"]
    secrets = [sf["client_secret"], hs["access_token"], BAD_TOKEN, FLOWER_PASSWORD]
    assert all(len(s) >= 8 for s in secrets), "a short secret could appear by chance"
    config = {"connections": [
        {"name": "sf", "kind": "salesforce", "instance_url": sf["instance_url"], "domain": "crmsim.my",
         "client_id": sf["client_id"], "ca_bundle": sf["ca_bundle"], "login_via_instance": True,
         "client_secret_env": "LS_SECRET_SF"},
        {"name": "hs", "kind": "hubspot", "host": hs["host"], "access_token_env": "LS_SECRET_HS"},
        {"name": "hs-refused", "kind": "hubspot", "host": hs["host"], "access_token_env": "LS_SECRET_BAD",
         "enabled": False},
    ]}
    (tmp_path / "leadscore.yaml").write_text(yaml.safe_dump(config))
    url = f"sqlite:///{tmp_path / 'leadscore.db'}"
    upgrade(url)
    env = {"LEADSCORE_CONFIG_FILE": str(tmp_path / "leadscore.yaml"), "LEADSCORE_DATABASE_URL": url,
           "LEADSCORE_VAR_DIR": str(tmp_path / "var"), "LEADSCORE_FLOWER_BASIC_AUTH": f"admin:{FLOWER_PASSWORD}",
           "LS_SECRET_SF": sf["client_secret"], "LS_SECRET_HS": hs["access_token"], "LS_SECRET_BAD": BAD_TOKEN}
    # Every logger on at DEBUG, whatever an earlier test or library configured (a logging config
    # may have disabled or raised existing loggers, e.g. urllib3's).
    for logger in [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]:
        monkeypatch.setattr(logger, "disabled", False)
        monkeypatch.setattr(logger, "level", logging.NOTSET)
    caplog.set_level(logging.DEBUG)

    synced = leadscore_here("sync", "--debug", cwd=tmp_path, env=env)
    refused = leadscore_here("sync", "--connection", "hs-refused", "--debug", cwd=tmp_path, env=env)
    checked = leadscore_here("config", "check", "--debug", cwd=tmp_path, env=env)
    status = leadscore_here("status", "--debug", cwd=tmp_path, env=env)

    # The commands did their work (the check is about something): both CRMs synced, the refused
    # token failed on one line, the status shows the syncs, and the logs were on at DEBUG.
    assert synced.returncode == 0, synced.stderr[-2000:]
    assert "sf: " in synced.stdout and "hs: " in synced.stdout and "FAILED" not in synced.stdout
    assert refused.returncode == 1 and "hs-refused" in refused.stderr
    assert checked.returncode == 0 and "connection hs (hubspot)" in checked.stdout
    # hs-refused's last sync failed: status shows every sync, then exits 1 naming it.
    assert status.returncode == 1 and "succeeded" in status.stdout
    assert "status: 1 problem(s): sync hs-refused: last run failed" in status.stderr
    debug_records = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug_records, "no DEBUG record captured: the check would be about nothing"

    log_file = tmp_path / "var" / "log" / "leadscore-cli.log"
    texts = {
        "output": "".join(r.stdout + r.stderr for r in (synced, refused, checked, status)),
        "logs": "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        "log file": log_file.read_text() if log_file.exists() else "",
    }
    for where, text in texts.items():
        leaked = [s[:6] + "..." for s in secrets if s in text]
        assert leaked == [], f"secrets in the {where}: {leaked}"
