"""The ``sync`` command end to end (config file, env secrets, database from settings) and the same
sync on SQLite, the embedded demo's database."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine
from typer.testing import CliRunner

from config.errors import LeadscoreError
from config.settings import get_settings
from connectors.sync import sync_connection
from crmsim.app import CRMSim
from store.db import engine_for
from store.migrate import upgrade
from tests.connectors import expected
from tests.connectors.conftest import hubspot_config, salesforce_config
from worker.cli.sync import app


def test_sync_on_sqlite_equals_crmsim(small_sim: CRMSim, sqlite_engine: Engine) -> None:
    for conn, secrets, build in ((*salesforce_config(small_sim, "lite-sf"), expected.salesforce),
                                 (*hubspot_config(small_sim, "lite-hs"), expected.hubspot)):
        assert sync_connection(sqlite_engine, conn, secrets).status == "succeeded"
        small_sim.advance(2)
        assert sync_connection(sqlite_engine, conn, secrets).status == "succeeded"
        expected.assert_database_matches(sqlite_engine, conn.name, build(small_sim))


def test_cli_sync_reads_config_and_env(small_sim: CRMSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sf = small_sim.info()["salesforce"]
    hs = small_sim.info()["hubspot"]
    config = {"connections": [
        {"name": "cli-sf", "kind": "salesforce", "instance_url": sf["instance_url"], "domain": "crmsim.my",
         "client_id": sf["client_id"], "ca_bundle": sf["ca_bundle"], "login_via_instance": True,
         "client_secret_env": "LS_TEST_SF_SECRET"},
        {"name": "cli-hs", "kind": "hubspot", "host": hs["host"], "access_token_env": "LS_TEST_HS_TOKEN"},
    ]}
    config_file = tmp_path / "leadscore.yaml"
    config_file.write_text(yaml.safe_dump(config))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    monkeypatch.setenv("LEADSCORE_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("LEADSCORE_DATABASE_URL", url)
    monkeypatch.setenv("LS_TEST_SF_SECRET", sf["client_secret"])
    monkeypatch.delenv("LS_TEST_HS_TOKEN", raising=False)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        result = runner.invoke(app, ["--connection", "cli-sf"])
        assert result.exit_code == 0, result.output
        assert "sync summary" in result.output and "leads" in result.output
        # The look-up that places open leads at their Accounts reports its cost (calls and time).
        looked_up = re.search(r"cli-sf: accounts: \d+ leads looked up, .*? \d+ API calls in \d+\.\ds",
                              " ".join(result.output.split()))
        assert looked_up, result.output
        print(looked_up.group(0))
        expected.assert_database_matches(engine_for(url), "cli-sf", expected.salesforce(small_sim))
        # A secret variable the config names but the environment lacks: one clear error.
        result = runner.invoke(app, ["--connection", "cli-hs"])
        assert isinstance(result.exception, LeadscoreError)
        assert "cli-hs" in str(result.exception) and "LS_TEST_HS_TOKEN" in str(result.exception)
        monkeypatch.setenv("LS_TEST_HS_TOKEN", hs["access_token"])
        result = runner.invoke(app, ["--full"])
        assert result.exit_code == 0, result.output
        expected.assert_database_matches(engine_for(url), "cli-hs", expected.hubspot(small_sim))
    finally:
        get_settings.cache_clear()


def test_sync_says_which_records_it_read_but_did_not_store(small_sim: CRMSim, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Reps log calendar entries without a Type (a lunch, a meeting typed by hand): the sync
    # reads them and, as docs/sync.md says, stores only engagement. It printed only the
    # stream's record count, so an org whose meetings all lack a Type lost them silently.
    from simple_salesforce import Salesforce

    from connectors.salesforce.session import simulator_session

    sf = small_sim.info()["salesforce"]
    client = Salesforce(session_id=sf["session_id"], instance_url=sf["instance_url"], version="59.0",
                        session=simulator_session(sf["ca_bundle"], sf["instance_url"]))
    lead = client.query("SELECT Id FROM Lead WHERE IsConverted = false LIMIT 1")["records"][0]["Id"]
    when = small_sim.world.clock.now().strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    for subject, kind in (("Lunch", None), ("Coffee", None), ("Intro", "Other")):
        body = {"WhoId": lead, "Subject": subject, "StartDateTime": when, "DurationInMinutes": 30}
        client.Event.create(body if kind is None else {**body, "Type": kind})
    # A to-do a rep typed, and the hot-lead task leadscore's own routing created (its marker).
    for subject in ("Send the contract", "Call hot lead [leadscore #7]"):
        client.Task.create({"WhoId": lead, "Subject": subject, "Status": "Not Started"})
    config_file = tmp_path / "leadscore.yaml"
    config_file.write_text(yaml.safe_dump({"connections": [
        {"name": "cli-sf", "kind": "salesforce", "instance_url": sf["instance_url"], "domain": "crmsim.my",
         "client_id": sf["client_id"], "ca_bundle": sf["ca_bundle"], "login_via_instance": True,
         "client_secret_env": "LS_TEST_SF_SECRET"}]}))
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    monkeypatch.setenv("LEADSCORE_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("LEADSCORE_DATABASE_URL", url)
    monkeypatch.setenv("LS_TEST_SF_SECRET", sf["client_secret"])
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, [])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    events = sum(1 for r in small_sim.salesforce.store.records["Event"].values() if not r.deleted)
    assert re.search(rf"cli-sf events: 3 of {events} records read were not stored as activities "
                     r"\(Event without Type: 2; Event Type 'Other' is not Meeting, Webinar or Call: 1\)", out), out
    # The rep's to-do is named; leadscore's own routing task is a routine skip (it printed "Task
    # without Type" after every routing run), counted in --json only.
    tasks = sum(1 for r in small_sim.salesforce.store.records["Task"].values() if not r.deleted)
    assert re.search(rf"cli-sf tasks: 2 of {tasks} records read were not stored as activities "
                     r"\(Task without Type \(TaskSubtype 'Task'\): 1; and routine skips \(see --json\)\)", out), out
    # Members sent a campaign and never responding are the normal course: counted (--json), not printed.
    assert "cli-sf campaign_members:" not in out


def test_hubspot_events_of_types_not_scored_are_counted(small_sim: CRMSim, sqlite_engine: Engine) -> None:
    # The Events API returns every event type of the portal (custom behavioural events too); only
    # page visits, forms, downloads and campaign responses are scored.
    from crmsim.hubspot.store import Event

    store = small_sim.hubspot.store
    contact = next(str(r.id) for r in store.records["contacts"].values() if not r.archived)
    for n in range(2):
        store.add_event(Event(id=f"custom-{n}", event_type="pe1234_clicked_chat_widget",
                              occurred_at=small_sim.world.clock.now() - timedelta(hours=1), object_type="contact",
                              object_id=contact, properties={}))
    conn, secrets = hubspot_config(small_sim, "skip-hs")
    report = sync_connection(sqlite_engine, conn, secrets)
    assert report.status == "succeeded", report.error
    assert report.streams["events"].skipped_by_reason == {"event type 'pe1234_clicked_chat_widget' is not scored": 2}
    assert report.to_dict()["streams"]["events"]["skipped_by_reason"] == {
        "event type 'pe1234_clicked_chat_widget' is not scored": 2}
