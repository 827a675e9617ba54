"""One Salesforce login per process and org, not one per client: a partitioned sync's units,
write-back and routing each build a client, and each used to ask crmsim's OAuth endpoint for a
token (19 of 40 requests in a worker trial). Counted by crmsim itself."""

from __future__ import annotations

import dataclasses

import pytest

from connectors.salesforce.client import cached_token, forget_tokens, make_salesforce
from crmsim.app import CRMSim
from crmsim.faults import FaultPlan
from tests.connectors.conftest import salesforce_config

TOKEN = "POST oauth2/token"


def _count(sim: CRMSim, label: str) -> int:
    return sim.call_counts()["salesforce"].get(label, 0)


def test_clients_of_one_process_share_a_token_and_replace_it_once_expired(small_sim: CRMSim) -> None:
    sim = small_sim
    conn, secrets = salesforce_config(sim, "sf")
    first = make_salesforce(conn, secrets)
    assert _count(sim, TOKEN) == 1 and first.api_calls == 1
    second = make_salesforce(conn, secrets)
    assert second.api_calls == 0  # no request: the process's token
    total = second.request(lambda sf: sf.query("SELECT COUNT() FROM Lead"))["totalSize"]
    assert total > 0
    assert _count(sim, TOKEN) == 1

    # The org expires the token: the next client built on it gets a 401, logs in once, retries,
    # and leaves the new token for the clients after it.
    sim.salesforce.faults.set_plan(FaultPlan(expire_after=1))
    second.request(lambda sf: sf.query("SELECT COUNT() FROM Lead"))  # the token's last good call
    sim.salesforce.faults.set_plan(FaultPlan())
    third = make_salesforce(conn, secrets)
    assert third.request(lambda sf: sf.query("SELECT COUNT() FROM Lead"))["totalSize"] == total
    assert third.api_calls == 3  # the refused call, the login, the call again
    assert _count(sim, TOKEN) == 2
    assert cached_token(conn, secrets.client_secret.get_secret_value())[0] == sim.salesforce.session_id  # type: ignore[union-attr,index]
    fourth = make_salesforce(conn, secrets)
    assert fourth.request(lambda sf: sf.query("SELECT COUNT() FROM Lead"))["totalSize"] == total
    assert fourth.api_calls == 1 and _count(sim, TOKEN) == 2


def test_another_secret_or_a_forgotten_token_logs_in(small_sim: CRMSim) -> None:
    sim = small_sim
    conn, secrets = salesforce_config(sim, "sf")
    make_salesforce(conn, secrets)
    assert _count(sim, TOKEN) == 1
    # A rotated secret never reuses the token got with the old one (crmsim refuses the wrong one).
    other = dataclasses.replace(secrets, client_secret="not-the-secret")
    with pytest.raises(Exception, match="invalid_client|login failed"):
        make_salesforce(conn, other)
    assert _count(sim, TOKEN) == 2
    forget_tokens()
    make_salesforce(conn, secrets)
    assert _count(sim, TOKEN) == 3
