"""``crm setup`` against crmsim: Salesforce fields checked, HubSpot properties created, routing checked;
and the ``leadscore crm setup`` / ``leadscore writeback`` commands end to end (exit codes, output)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine

from connectors.setup import admin_instructions, crm_setup
from crmsim.app import CRMSim
from crmsim.faults import COUNT_SUMMARIES
from store.db import unit_of_work
from store.queries import connection_activity
from tests.connectors.test_writeback_support import (
    add_leads,
    app_config,
    hs_contact_ids,
    outbox_statuses,
    score,
    secrets_for,
    sf_lead_ids,
    start_sim,
)

REPO = Path(__file__).resolve().parents[2]
SCORE_PROPERTIES = ["leadscore_score", "leadscore_tier", "leadscore_reasons", "leadscore_model",
                    "leadscore_scored_at", "leadscore_likelihood", "leadscore_fit", "leadscore_engagement",
                    "leadscore_score_change", "leadscore_feedback", "leadscore_feedback_comment"]
LEAD_FIELDS = ["Lead_Score__c", "Lead_Tier__c", "Lead_Score_Reasons__c", "Lead_Score_Model__c", "Lead_Scored_At__c",
               "Lead_Conversion_Likelihood__c", "Lead_Fit_Score__c", "Lead_Engagement_Score__c",
               "Lead_Score_Change__c", "Lead_Score_Feedback__c", "Lead_Score_Feedback_Comment__c"]
ACCOUNT_FIELDS = ["Account_Lead_Score__c", "Account_Engaged_People__c"]
COMPANY_PROPERTIES = ["leadscore_account_score", "leadscore_engaged_people"]


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    sim = start_sim(leads=30, seed=17)
    yield sim
    sim.stop()


def test_salesforce_without_the_fields_tells_the_admin_what_to_create(sim: CRMSim) -> None:
    sim.salesforce.store.custom_fields_present = False
    [result] = crm_setup(app_config(sim), secrets_for(sim), connection="sf")
    assert not result.ok
    assert [s.name for s in result.missing] == LEAD_FIELDS + ACCOUNT_FIELDS
    assert {s.sobject for s in result.missing if s.name in ACCOUNT_FIELDS} == {"Account"}
    text = "\n".join(admin_instructions(result))
    assert "custom fields on Account (Setup → Object Manager → Account" in text
    assert "Account_Lead_Score__c" in text and "Number(2, 0)" in text and "Number(5, 0)" in text
    assert "Lead_Score__c" in text and "Number(3, 0)" in text
    assert "Lead_Score_Reasons__c" in text and "Text(255)" in text
    assert "Lead_Tier__c" in text and "A, B, C, D" in text
    assert "Lead_Conversion_Likelihood__c" in text and "Percent(3, 1)" in text
    assert "Lead_Score_Feedback__c" in text and "Too high, Too low, About right" in text
    assert result.summary() == "sf (salesforce): 13 custom fields missing on Account and Lead (an admin must add them)"

    sim.salesforce.store.custom_fields_present = True
    [again] = crm_setup(app_config(sim), secrets_for(sim), connection="sf")
    assert again.ok and again.present == LEAD_FIELDS + ACCOUNT_FIELDS and again.missing == []


def test_hubspot_properties_are_created_once(sim: CRMSim) -> None:
    store = sim.hubspot.store
    assert store.property_def("contacts", "leadscore_score") is None
    [result] = crm_setup(app_config(sim), secrets_for(sim), connection="hs")
    assert result.ok and result.created == SCORE_PROPERTIES + COMPANY_PROPERTIES
    account = store.property_def("companies", "leadscore_account_score")
    assert account is not None and account["type"] == "number" and account["groupName"] == "companyinformation"
    tier = store.property_def("contacts", "leadscore_tier")
    assert tier is not None and tier["type"] == "enumeration"
    assert [o["value"] for o in tier["options"]] == ["A", "B", "C", "D"]
    assert store.property_def("contacts", "leadscore_scored_at")["type"] == "datetime"  # type: ignore[index]
    feedback = store.property_def("contacts", "leadscore_feedback")
    assert feedback is not None and [o["value"] for o in feedback["options"]] == ["Too high", "Too low", "About right"]

    [again] = crm_setup(app_config(sim), secrets_for(sim), connection="hs")
    assert again.ok and again.created == [] and again.present == SCORE_PROPERTIES + COMPANY_PROPERTIES


def test_a_property_of_the_wrong_type_is_reported(sim: CRMSim) -> None:
    sim.hubspot.store.create_property("contacts", {"name": "leadscore_score", "label": "x", "type": "string",
                                                   "fieldType": "text", "groupName": "contactinformation"})
    [result] = crm_setup(app_config(sim), secrets_for(sim), connection="hs")
    assert not result.ok
    assert result.problems == ["contact property leadscore_score is of type string; leadscore needs number"]


def test_setup_refuses_routing_naming_a_missing_queue(sim: CRMSim) -> None:
    config = app_config(sim, [{"to": "A", "actions": [{"type": "assign_owner", "queue": "Tiger Team",
                                                       "connections": ["sf"]}]}])
    [result] = crm_setup(config, secrets_for(sim), connection="sf")
    # With what the org has (no name close to it: alphabetical), so the fix needs no look-up in Salesforce.
    assert result.problems == ["routing.0.actions.0.queue: no queue named 'Tiger Team' in connection sf "
                               "(its queues: 'Enterprise Queue', 'Nurture Queue', 'SDR Queue')"]


def _cli(sim: CRMSim, tmp_path: Path, db_url: str, *args: str, routing: list | None = None
         ) -> subprocess.CompletedProcess[str]:
    config_file = tmp_path / "leadscore.yaml"
    config_file.write_text(yaml.safe_dump(app_config(sim, routing).model_dump(by_alias=True, exclude_none=True)))
    info = sim.info()
    env = {**os.environ, "LEADSCORE_CONFIG_FILE": str(config_file), "LEADSCORE_DATABASE_URL": db_url,
           "LEADSCORE_TEST_SF_SESSION": info["salesforce"]["session_id"],
           "LEADSCORE_TEST_HS_TOKEN": info["hubspot"]["access_token"], "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_crm_setup_and_writeback(sim: CRMSim, tmp_path: Path, sqlite_engine: Engine) -> None:
    db_url = str(sqlite_engine.url)
    sim.salesforce.store.custom_fields_present = False
    sim.reset_counts()
    failed = _cli(sim, tmp_path, db_url, "crm", "setup")
    assert failed.returncode == 1
    assert "Lead_Scored_At__c" in failed.stdout and "Date/Time" in failed.stdout
    assert "crm setup incomplete: sf (salesforce): 13 custom fields missing on Account and Lead" in failed.stderr
    assert "Traceback" not in failed.stderr
    # HubSpot was set up in the same run even though Salesforce is blocked.
    assert sim.hubspot.store.property_def("contacts", "leadscore_tier") is not None

    sim.salesforce.store.custom_fields_present = True
    done = _cli(sim, tmp_path, db_url, "crm", "setup")
    assert done.returncode == 0, done.stderr
    assert "sf (salesforce): ready" in done.stdout and "hs (hubspot): ready" in done.stdout
    # Both runs' calls, the refused one's included, count against the day's budget.
    with unit_of_work(sqlite_engine) as session:
        setup_calls = {row["name"]: row["api_calls_today"]["setup"] for row in connection_activity(session)}
    received = {crm: sum(n for label, n in counts.items() if label not in COUNT_SUMMARIES)
                for crm, counts in sim.call_counts().items()}
    assert setup_calls == {"sf": received["salesforce"], "hs": received["hubspot"]}, (setup_calls, received)
    assert "not recorded" not in done.stdout

    # A store without a schema yet: setup runs, and says its calls were not recorded.
    empty = tmp_path / "empty.db"
    empty.touch()
    early = _cli(sim, tmp_path, f"sqlite:///{empty}", "crm", "setup")
    assert early.returncode == 0, early.stderr
    assert f"API calls are not recorded: the database sqlite:///{empty} has no leadscore schema yet (run: leadscore " \
        "db upgrade)" in early.stdout.replace("\n", " "), early.stdout

    leads = add_leads(sqlite_engine, "sf", sf_lead_ids(sim, 4)) | add_leads(sqlite_engine, "hs", hs_contact_ids(sim, 3))
    score(sqlite_engine, leads.values())
    written = _cli(sim, tmp_path, db_url, "writeback")
    assert written.returncode == 0, written.stderr
    assert outbox_statuses(sqlite_engine) == {"sent": 7}
    assert "sf (salesforce)" in written.stdout and "hs (hubspot)" in written.stdout

    nothing = _cli(sim, tmp_path, db_url, "writeback")
    assert nothing.returncode == 0 and "nothing to write" in nothing.stdout


def test_config_check_connect_checks_each_crm_and_creates_nothing(sim: CRMSim, tmp_path: Path,
                                                                  sqlite_engine: Engine) -> None:
    """An admin's misspelt queue passed `config check` and failed the first routing run: with
    --connect, the check asks each CRM what `crm setup` asks (fields, routing names), changes
    nothing, and says every problem in one line."""
    db_url = str(sqlite_engine.url)
    routing = [{"to": "A", "actions": [{"type": "assign_owner", "queue": "SDR Queu", "connections": ["sf"]}]}]
    offline = _cli(sim, tmp_path, db_url, "config", "check", routing=routing)
    assert offline.returncode == 0, offline.stderr  # without --connect no CRM is asked
    # What no configured connection can run is wrong whatever the CRMs hold: refused offline.
    campaign_on_hubspot = [{"to": "A", "actions": [{"type": "add_to_campaign", "campaign": "Webinar",
                                                    "connections": ["hs"]}]}]
    static = _cli(sim, tmp_path, db_url, "config", "check", routing=campaign_on_hubspot)
    assert static.returncode == 1 and static.stderr.strip().splitlines() == [
        "error: routing.0.actions.0.connections: add_to_campaign cannot run on hubspot connection 'hs'"], static.stderr
    sim.reset_counts()
    refused = _cli(sim, tmp_path, db_url, "config", "check", "--connect", routing=routing)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert "sf: routing.0.actions.0.queue: no queue named 'SDR Queu' in connection sf (its queues: 'SDR Queue'" \
        in line, line
    # Before `crm setup`, HubSpot lacks the score properties: named, and not created by the check.
    assert "hs: 11 contact properties missing (leadscore_score, ...): `leadscore crm setup` creates them" in line
    assert "hs: 2 company properties missing" in line
    # What was read and what answered is on stdout, before the one error line: the file, the
    # database and the broker (a failing check left them out), then each CRM that answered.
    assert refused.stdout.startswith("config: ") and "\ndatabase: " in refused.stdout, refused.stdout
    assert "connect: database answered; " in refused.stdout, refused.stdout
    assert "crm sf (salesforce): answered; 13 score fields present" in refused.stdout, refused.stdout
    assert "crm hs (hubspot): answered;" in refused.stdout, refused.stdout
    assert sim.hubspot.store.property_def("contacts", "leadscore_score") is None
    # Its calls count against the day's budget, as crm setup's do.
    with unit_of_work(sqlite_engine) as session:
        recorded = {row["name"]: row["api_calls_today"]["setup"] for row in connection_activity(session)}
    received = {crm: sum(n for label, n in counts.items() if label not in COUNT_SUMMARIES)
                for crm, counts in sim.call_counts().items()}
    assert recorded == {"sf": received["salesforce"], "hs": received["hubspot"]} and min(recorded.values()) > 0

    assert _cli(sim, tmp_path, db_url, "crm", "setup").returncode == 0
    routing[0]["actions"][0]["queue"] = "SDR Queue"
    fine = _cli(sim, tmp_path, db_url, "config", "check", "--connect", routing=routing)
    assert fine.returncode == 0, fine.stderr
    assert "crm sf (salesforce): answered; 13 score fields present, routing (1 rule) checked against it" \
        in fine.stdout, fine.stdout
    assert "crm hs (hubspot): answered; 13 score fields present" in fine.stdout, fine.stdout

    # Salesforce fields an admin has not created yet: counted, with where the list is.
    sim.salesforce.store.custom_fields_present = False
    lacking = _cli(sim, tmp_path, db_url, "config", "check", "--connect", routing=routing)
    assert lacking.returncode == 1 and lacking.stderr.strip().splitlines() == [
        "error: sf: 13 custom fields missing on Account and Lead (`leadscore crm setup` lists them)"], lacking.stderr
    assert "crm hs (hubspot): answered; 13 score fields present" in lacking.stdout, lacking.stdout
    sim.salesforce.store.custom_fields_present = True

    # A token the CRM refuses is a problem too (HubSpot checks no login of its own).
    config_file = tmp_path / "leadscore.yaml"
    env = {**os.environ, "LEADSCORE_CONFIG_FILE": str(config_file), "LEADSCORE_DATABASE_URL": db_url,
           "LEADSCORE_TEST_SF_SESSION": sim.info()["salesforce"]["session_id"],
           "LEADSCORE_TEST_HS_TOKEN": "pat-na1-not-a-token", "COLUMNS": "200"}
    bad = subprocess.run([sys.executable, "-m", "worker.cli", "config", "check", "--connect"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "error: connection hs: HubSpot authentication failed (INVALID_AUTHENTICATION)"], bad.stderr
