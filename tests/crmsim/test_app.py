"""The orchestrator over real sockets: both APIs through their real clients, the admin endpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hubspot
import pytest
import requests
from simple_salesforce import Salesforce

from connectors.salesforce.session import simulator_session
from crmsim.app import CRMSim
from crmsim.faults import FaultSpecError


@pytest.fixture(scope="module")
def sim() -> Iterator[CRMSim]:
    with CRMSim(leads=500, seed=3, history_days=300) as running:
        yield running


def salesforce_client(info: dict[str, Any]) -> Salesforce:
    creds = info["salesforce"]
    return Salesforce(instance_url=creds["instance_url"], session_id=creds["session_id"],
                      session=simulator_session(creds["ca_bundle"], creds["instance_url"]))


def hubspot_client(info: dict[str, Any]) -> hubspot.HubSpot:
    return hubspot.HubSpot(access_token=info["hubspot"]["access_token"], host=info["hubspot"]["host"])


def all_hubspot_contacts(client: hubspot.HubSpot) -> list[Any]:
    contacts, after = [], None
    while True:
        page = client.crm.contacts.basic_api.get_page(limit=100, after=after, properties=["email"])
        contacts.extend(page.results)
        if page.paging is None or page.paging.next is None:
            return contacts
        after = page.paging.next.after


def admin(sim: CRMSim, method: str, path: str, **kwargs: Any) -> requests.Response:
    session = requests.Session()
    session.trust_env = False  # loopback: never through a proxy
    return session.request(method, f"{sim.admin_url}{path}", timeout=30, **kwargs)


def test_leads_appear_in_their_own_crm(sim: CRMSim) -> None:
    info = sim.info()
    truth = [row for row in sim.truth() if not row["deleted"]]
    leads = list(salesforce_client(info).query_all_iter("SELECT Id, Email FROM Lead"))
    contacts = all_hubspot_contacts(hubspot_client(info))
    sf_truth = {row["crm_id"] for row in truth if row["crm"] == "salesforce"}
    hs_truth = {row["crm_id"] for row in truth if row["crm"] == "hubspot"}
    assert sf_truth and hs_truth and None not in sf_truth | hs_truth
    assert {lead["Id"] for lead in leads} == sf_truth
    assert {contact.id for contact in contacts} == hs_truth
    # No person is in both CRMs.
    sf_emails = {lead["Email"] for lead in leads}
    assert not sf_emails & {contact.properties["email"] for contact in contacts} - {None}


def test_admin_endpoint_over_http(sim: CRMSim) -> None:
    assert admin(sim, "GET", "/health").json()["status"] == "ok"
    info = admin(sim, "GET", "/info").json()
    assert info["salesforce"]["instance_url"].startswith("https://127.0.0.1:")
    assert info["hubspot"]["host"].startswith("http://127.0.0.1:")
    before = admin(sim, "GET", "/truth").json()
    response = admin(sim, "POST", "/advance", json={"days": 10})
    assert response.status_code == 200
    summary = response.json()
    assert summary["new_leads"] > 0 and summary["new_activities"] > 0
    after = admin(sim, "GET", "/truth").json()
    assert len(after["people"]) == len(before["people"]) + summary["new_leads"]
    assert after["now"] > before["now"]
    # New leads are visible through the real clients right away.
    leads = list(salesforce_client(sim.info()).query_all_iter("SELECT Id FROM Lead"))
    live_sf = {row["crm_id"] for row in after["people"] if row["crm"] == "salesforce" and not row["deleted"]}
    assert {lead["Id"] for lead in leads} == live_sf


def test_counts_and_faults_over_http(sim: CRMSim) -> None:
    assert admin(sim, "POST", "/counts/reset").status_code == 200
    client = hubspot_client(sim.info())
    client.crm.contacts.basic_api.get_page(limit=10)
    counts = admin(sim, "GET", "/counts").json()
    assert counts["total"]["hubspot"] >= 1 and counts["total"]["salesforce"] == 0
    response = admin(sim, "POST", "/faults", json={"spec": "hs.rate_500=1", "seed": 1})
    assert response.status_code == 200
    assert response.json()["faults"]["hubspot"]["rate_500"] == 1.0
    assert response.json()["faults"]["salesforce"]["rate_500"] == 0.0
    with pytest.raises(hubspot.crm.contacts.ApiException) as failure:
        client.crm.contacts.basic_api.get_page(limit=10)
    assert failure.value.status == 500
    assert admin(sim, "POST", "/faults", json={"spec": None}).status_code == 200
    assert client.crm.contacts.basic_api.get_page(limit=10).results


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("POST", "/advance", {"days": "ten"}, 400),
    ("POST", "/advance", {"days": -1}, 400),
    ("POST", "/advance", {}, 400),
    ("POST", "/advance", [1, 2], 400),
    ("POST", "/faults", {"spec": "rate_429=2"}, 400),
    ("POST", "/faults", {"spec": "nonsense"}, 400),
    ("POST", "/faults", {"spec": "rate_429=0.1", "seed": "x"}, 400),
    ("GET", "/advance", None, 405),
    ("GET", "/nowhere", None, 404),
])
def test_admin_bad_input_is_a_json_error(sim: CRMSim, method: str, path: str, body: Any, status: int) -> None:
    response = admin(sim, method, path, json=body) if body is not None else admin(sim, method, path)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert "Traceback" not in response.text and response.json()["error"]


def test_admin_rejects_a_body_that_is_not_json(sim: CRMSim) -> None:
    response = admin(sim, "POST", "/advance", data=b"{days: 1",
                     headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "JSON" in response.json()["error"]


def test_bad_fault_spec_fails_before_start() -> None:
    with pytest.raises(FaultSpecError):
        CRMSim(leads=10, faults="rate_429=lots")


def test_faults_apply_after_history_and_stop_releases_ports() -> None:
    sim = CRMSim(leads=50, seed=1, history_days=60, faults="rate_500=1", admin=False).start()
    try:
        assert sim.world.truth()  # history was written despite the fault plan
        assert sim.admin_url is None
        with pytest.raises(hubspot.crm.contacts.ApiException) as failure:
            hubspot_client(sim.info()).crm.contacts.basic_api.get_page(limit=10)
        assert failure.value.status == 500
        url = sim.info()["hubspot"]["host"]
    finally:
        sim.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)


def test_cli_serve_rejects_a_bad_fault_spec_without_a_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from worker.cli.crmsim import app; app()", "serve", "--faults", "rate_429=x"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "rate_429" in result.stderr


def test_cli_serve_prints_and_writes_info(tmp_path: Any) -> None:
    info_path = tmp_path / "info.json"
    process = subprocess.Popen(
        [sys.executable, "-c", "from worker.cli.crmsim import app; app()", "serve", "--leads", "50",
         "--history-days", "60", "--info-json", str(info_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("wrote "):
                break
        output = "".join(lines)
        assert "Salesforce" in output and "access_token=" in output
        info = json.loads(info_path.read_text())
        # Every credential docs/crmsim.md says it prints, as the info file holds it.
        sf = info["salesforce"]
        for printed in (f"session_id={sf['session_id']}", f"client_secret={sf['client_secret']}",
                        f"username={sf['username']} password={sf['password']}", f"ca_bundle={sf['ca_bundle']}",
                        f"access_token={info['hubspot']['access_token']}"):
            assert printed in output, printed
        session = requests.Session()
        session.trust_env = False
        health = session.get(info["admin_url"] + "/health", timeout=10)
        assert health.json()["status"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_cli_serve_stopped_by_sigterm_cleans_up_and_a_killed_ones_folder_is_swept(tmp_path: Any) -> None:
    """`kill` of `crmsim serve` left its CA folder in /tmp (SIGTERM's default skips exit hooks);
    a SIGKILLed one can run no hook, so the next crmsim removes folders of processes gone."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    stale = tmp_path / f"crmsim-tls-{dead.pid}-abc"
    stale.mkdir()
    (stale / "crmsim-ca.pem").write_text("left by a killed crmsim")
    info_path = tmp_path / "info.json"
    process = subprocess.Popen(
        [sys.executable, "-c", "from worker.cli.crmsim import app; app()", "serve", "--leads", "50",
         "--history-days", "60", "--info-json", str(info_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("wrote "):
                break
        ca = Path(json.loads(info_path.read_text())["salesforce"]["ca_bundle"])
        assert ca.exists() and ca.parent.parent == tmp_path and ca.parent.name.startswith(f"crmsim-tls-{process.pid}-")
        assert not stale.exists()  # the dead process's folder, swept when this one made its own
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "stopping crmsim" in out and "Traceback" not in err
    assert not ca.parent.exists()
