"""A CRM that hangs (takes the request, never answers) costs two read timeouts, not eight.

crmsim's ``hang`` fault holds a request without an answer, as a hung org or portal does; the
connection's ``read_timeout_s`` fires first. Counted by crmsim itself: a call is tried twice, then
the CRM counts as unresponsive in this process and its calls fail at once, sending nothing, until
the cool-down ends. Each client path is covered: simple-salesforce (whose calls mostly name no
timeout), hubspot-api-client's generated APIs and the raw ``api_request`` path (which has no
timeout option at all).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine

from connectors.errors import CRMTimeoutError
from connectors.hubspot.client import make_hubspot
from connectors.hubspot.routing import hubspot_raw
from connectors.retry import RetryPolicy, forget_unresponsive, unresponsive
from connectors.salesforce.client import make_salesforce
from crmsim.app import CRMSim
from crmsim.faults import COUNT_SUMMARIES, FaultPlan
from tests.connectors.conftest import hubspot_config, salesforce_config
from tests.connectors.test_writeback_support import hs_conn, sf_conn

REPO = Path(__file__).resolve().parents[2]
HANG = FaultPlan(hang=1.0, hang_s=3.0)
# Short waits between tries; a cool-down long enough to outlast the test unless it ends it.
POLICY = RetryPolicy(initial_wait=0.01, max_wait=0.05, unresponsive_seconds=600.0)


def _requests(sim: CRMSim, crm: str) -> int:
    """Requests crmsim received (less the counts of faults and rate limits among them)."""
    return sum(n for label, n in sim.call_counts()[crm].items() if label not in COUNT_SUMMARIES)


def test_salesforce_hung_call_tried_twice_then_refused_here_until_the_cool_down_ends(small_sim: CRMSim) -> None:
    sim = small_sim
    conn, secrets = salesforce_config(sim, "sf", read_timeout_s=0.4)
    client = make_salesforce(conn, secrets, policy=POLICY)
    sim.salesforce.faults.set_plan(HANG)
    before = _requests(sim, "salesforce")
    # describe() names no timeout: simple-salesforce would wait for the answer forever.
    with pytest.raises(CRMTimeoutError) as hung:
        client.request(lambda sf: sf.Lead.describe())
    assert _requests(sim, "salesforce") - before == 2
    assert client.api_calls == 1 + 2  # the login, then two sent and unanswered
    message = str(hung.value)
    assert message.startswith(f"Salesforce did not answer within 0.4 s (at {conn.instance_url}) (2 tries); "
                              "calls to it resume at "), message
    assert message.endswith(" UTC")

    # Another client of the connection in this process (a write-back, a routing run): refused
    # at once, without a request, naming when the CRM stopped answering.
    with pytest.raises(CRMTimeoutError) as refused:
        make_salesforce(conn, secrets, policy=POLICY).request(lambda sf: sf.query("SELECT Id FROM Lead LIMIT 1"))
    assert refused.value.code == "UNRESPONSIVE"
    assert "not called: Salesforce did not answer within 0.4 s" in str(refused.value)
    assert _requests(sim, "salesforce") - before == 2

    # Another connection's calls are its own: a second org is not refused for this one.
    assert unresponsive("salesforce:sf") is not None and unresponsive("salesforce:other") is None

    # The CRM answers again; once the cool-down ends (here: forgotten), calls go out.
    sim.salesforce.faults.set_plan(FaultPlan())
    forget_unresponsive()
    assert client.request(lambda sf: sf.query("SELECT COUNT() FROM Lead"))["totalSize"] > 0


def test_the_cool_down_ends_by_itself(small_sim: CRMSim) -> None:
    sim = small_sim
    conn, secrets = salesforce_config(sim, "sf", read_timeout_s=0.3)
    client = make_salesforce(conn, secrets, policy=RetryPolicy(initial_wait=0.01, unresponsive_seconds=0.5))
    sim.salesforce.faults.set_plan(HANG)
    with pytest.raises(CRMTimeoutError):
        client.request(lambda sf: sf.query("SELECT COUNT() FROM Lead"))
    sim.salesforce.faults.set_plan(FaultPlan())
    with pytest.raises(CRMTimeoutError, match="not called"):
        client.request(lambda sf: sf.query("SELECT COUNT() FROM Lead"))
    time.sleep(0.6)
    assert client.request(lambda sf: sf.query("SELECT COUNT() FROM Lead"))["totalSize"] > 0


def test_hubspot_hung_generated_and_raw_calls_time_out(small_sim: CRMSim) -> None:
    sim = small_sim
    conn, secrets = hubspot_config(sim, "hs", read_timeout_s=0.4)
    client = make_hubspot(conn, secrets, policy=POLICY)
    sim.hubspot.faults.set_plan(HANG)
    before = _requests(sim, "hubspot")
    with pytest.raises(CRMTimeoutError, match=r"^HubSpot did not answer within 0.4 s .*\(2 tries\)"):
        client.request(lambda c: c.api("properties.core").get_all(
            "contacts", _preload_content=False, _request_timeout=c.timeout))
    assert _requests(sim, "hubspot") - before == 2 and client.api_calls == 2

    # The raw path (owners, workflows: hubspot-api-client's api_request has no timeout option).
    forget_unresponsive()
    with pytest.raises(CRMTimeoutError, match=r"^HubSpot did not answer within 0.4 s"):
        client.request(lambda c: hubspot_raw(c, "GET", "/crm/v3/owners/", {"limit": 100}))
    assert _requests(sim, "hubspot") - before == 4
    sim.hubspot.faults.set_plan(FaultPlan())
    forget_unresponsive()
    owners = client.request(lambda c: hubspot_raw(c, "GET", "/crm/v3/owners/", {"limit": 100}))
    assert owners["results"]


@pytest.mark.parametrize("hung", ["salesforce", "hubspot"])
def test_sync_with_one_crm_hung_syncs_the_other_and_says_why(hung: str, small_sim: CRMSim,
                                                             committing_pg_engine: Engine, tmp_path: Path) -> None:
    """`leadscore sync` as an admin runs it while one CRM hangs: the other synced, the hung one
    failed with one line naming the timeout, two requests to it in all (not 8 per call)."""
    sim = small_sim
    names = {"salesforce": "Salesforce", "hubspot": "HubSpot"}
    connections = {"salesforce": sf_conn(sim, "salesforce").model_dump(exclude_none=True, exclude={"score_fields"}),
                   "hubspot": hs_conn(sim, "hubspot").model_dump(exclude_none=True, exclude={"score_fields"})}
    connections[hung]["read_timeout_s"] = 0.5
    config_path = tmp_path / "leadscore.yaml"
    config_path.write_text(yaml.safe_dump({"connections": list(connections.values())}))
    info = sim.info()
    env = dict(os.environ, LEADSCORE_DATABASE_URL=committing_pg_engine.url.render_as_string(hide_password=False),
               LEADSCORE_CONFIG_FILE=str(config_path), LEADSCORE_VAR_DIR=str(tmp_path / "var"),
               LEADSCORE_TEST_SF_SESSION=info["salesforce"]["session_id"],
               LEADSCORE_TEST_HS_TOKEN=info["hubspot"]["access_token"])
    env.pop("LEADSCORE_BROKER_URL", None)
    (sim.salesforce if hung == "salesforce" else sim.hubspot).faults.set_plan(HANG)
    before = _requests(sim, hung)
    out = tmp_path / "sync.json"
    result = subprocess.run([sys.executable, "-m", "worker.cli", "sync", "--json", str(out)], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=240)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"sync failed for 1 of 2 connection(s): {hung} ({names[hung]} did not answer within 0.5 s" \
        in result.stderr, result.stderr
    document = json.loads(out.read_text())["connections"]
    other = "hubspot" if hung == "salesforce" else "salesforce"
    assert document[other]["error"] is None and document[other]["records"] > 0
    assert "(2 tries); calls to it resume at" in document[hung]["error"]
    assert _requests(sim, hung) - before == 2
