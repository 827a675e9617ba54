"""Errors, auth and faults as the real simple-salesforce client sees them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors.salesforce.session import simulator_session
from crmsim.faults import FaultPlan
from crmsim.salesforce.server import SalesforceServer
from crmsim.salesforce.testing import credentials_client, direct_client, seeded_server


@pytest.fixture()
def server() -> Iterator[SalesforceServer]:
    srv = seeded_server(30)
    yield srv
    srv.stop()


def _raw(server: SalesforceServer) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = server.ca_bundle
    return session


def _auth(server: SalesforceServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.session_id}", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("setup", "call", "status", "code", "exception"),
    [
        (None, lambda sf: sf.query("SELEC Id FROM Lead"), 400, "MALFORMED_QUERY", SalesforceMalformedRequest),
        (None, lambda sf: sf.query("SELECT Id, Foo__c FROM Lead"), 400, "INVALID_FIELD",
         SalesforceMalformedRequest),
        (None, lambda sf: sf.query("SELECT Id FROM Account__x"), 400, "INVALID_TYPE", SalesforceMalformedRequest),
        (None, lambda sf: sf.query("SELECT Id FROM Lead WHERE SystemModstamp > '2024-01-01'"), 400,
         "INVALID_FIELD", SalesforceMalformedRequest),
        ("expire", lambda sf: sf.query("SELECT Id FROM Lead"), 401, "INVALID_SESSION_ID",
         SalesforceExpiredSession),
        ("limit", lambda sf: sf.query("SELECT Id FROM Lead"), 403, "REQUEST_LIMIT_EXCEEDED",
         SalesforceRefusedRequest),
        (None, lambda sf: sf.Lead.get("00Q000000000000AAA"), 404, "NOT_FOUND", SalesforceResourceNotFound),
        ("503", lambda sf: sf.query("SELECT Id FROM Lead"), 503, "SERVER_UNAVAILABLE", SalesforceGeneralError),
        ("429", lambda sf: sf.query("SELECT Id FROM Lead"), 503, "SERVER_UNAVAILABLE", SalesforceGeneralError),
        ("500", lambda sf: sf.query("SELECT Id FROM Lead"), 500, "UNKNOWN_EXCEPTION", SalesforceGeneralError),
    ],
)
def test_error_table_maps_to_client_exceptions(server: SalesforceServer, setup: str | None, call, status: int,
                                               code: str, exception: type[SalesforceError]) -> None:
    sf = direct_client(server)
    if setup == "expire":
        server.faults.set_plan(FaultPlan(expire_after=1))
        sf.query("SELECT Id FROM Lead LIMIT 1")  # the one call the session is good for
    elif setup == "limit":
        server.faults.set_plan(FaultPlan(daily_limit=server.api_calls))
    elif setup in ("503", "429", "500"):
        server.faults.set_plan(FaultPlan(**{f"rate_{setup}": 1.0}))
    with pytest.raises(exception) as info:
        call(sf)
    assert info.value.status == status
    assert info.value.content[0]["errorCode"] == code
    if setup in ("503", "429"):
        assert server.faults.injected[setup] == 1


def test_503_carries_retry_after_unless_told_not_to(server: SalesforceServer) -> None:
    url = f"{server.instance_url}/services/data/v59.0/limits"
    server.faults.set_plan(FaultPlan(rate_503=1.0, retry_after=0.25))
    response = _raw(server).get(url, headers=_auth(server))
    assert response.status_code == 503 and response.headers["Retry-After"] == "0.25"
    server.faults.set_plan(FaultPlan(rate_429=1.0, no_retry_after=1.0))
    response = _raw(server).get(url, headers=_auth(server))
    assert response.status_code == 503 and "Retry-After" not in response.headers


def test_dropped_connection_gets_no_response_and_changes_nothing(server: SalesforceServer) -> None:
    lead_id = server.store.crm_id("P000001")
    server.faults.set_plan(FaultPlan(drop=1.0))
    with pytest.raises(requests.ConnectionError):
        _raw(server).patch(f"{server.instance_url}/services/data/v59.0/sobjects/Lead/{lead_id}",
                           json={"Lead_Score__c": 50}, headers=_auth(server))
    server.faults.set_plan(FaultPlan())
    assert server.store.get(lead_id).values["Lead_Score__c"] is None  # type: ignore[union-attr]
    assert server.call_counts()["injected"] == 1


def test_client_credentials_relogin_after_injected_expiry(server: SalesforceServer) -> None:
    sf = credentials_client(server)
    first_token = server.session_id
    server.faults.set_plan(FaultPlan(expire_after=2))
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 30
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 30
    assert server.session_id != first_token  # rotated after the 2nd call
    # The client still holds the old token: 401 INVALID_SESSION_ID, re-login, retry succeeds.
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 30
    assert sf.session_id == server.session_id
    counts = server.call_counts()
    assert counts["POST oauth2/token"] == 2
    assert counts["GET query"] == 4
    assert server.injected_counts()["expire"] == 1


def test_direct_session_mode_raises_expired(server: SalesforceServer) -> None:
    sf = direct_client(server)
    server.faults.set_plan(FaultPlan(expire_after=1))
    sf.query("SELECT Id FROM Lead LIMIT 1")
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Lead LIMIT 1")


def test_oauth_bad_credentials_and_password_grant(server: SalesforceServer) -> None:
    session = simulator_session(server.ca_bundle, server.instance_url)
    with pytest.raises(SalesforceAuthenticationFailed) as info:
        Salesforce(consumer_key=server.client_id, consumer_secret="wrong", domain="acme.my", session=session)
    assert "invalid_client" in str(info.value)
    sf = Salesforce(username=server.username, password=server.password, consumer_key=server.client_id,
                    consumer_secret=server.client_secret, session=session)
    assert sf.sf_instance == server.instance_url.removeprefix("https://")
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 30
    with pytest.raises(SalesforceAuthenticationFailed):
        Salesforce(username=server.username, password="nope", consumer_key=server.client_id,
                   consumer_secret=server.client_secret, session=session)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("PATCH", "composite/sobjects", b"{not json", 400, "JSON_PARSER_ERROR"),
        ("POST", "sobjects/Lead/", b"[1, 2", 400, "JSON_PARSER_ERROR"),
        ("POST", "sobjects/Lead/", b"[1, 2]", 400, "JSON_PARSER_ERROR"),
        ("GET", "no/such/thing", None, 404, "NOT_FOUND"),
        ("GET", "sobjects/NoSuchObject/describe", None, 404, "NOT_FOUND"),
        ("PUT", "sobjects/Lead/", b"{}", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "query/", None, 400, "MALFORMED_QUERY"),
        ("PATCH", "composite/sobjects", b'{"records": 5}', 400, "JSON_PARSER_ERROR"),
        ("POST", "composite", b'{"compositeRequest": []}', 400, "LIMIT_EXCEEDED"),
    ],
)
def test_malformed_requests_get_salesforce_error_bodies(server: SalesforceServer, method: str, path: str,
                                                        body: bytes | None, status: int, code: str) -> None:
    response = _raw(server).request(method, f"{server.instance_url}/services/data/v59.0/{path}", data=body,
                                    headers=_auth(server))
    assert response.status_code == status
    payload = response.json()
    assert isinstance(payload, list) and payload[0]["errorCode"] == code
    assert response.headers["Content-Type"].startswith("application/json")


def test_garbage_paths_outside_the_api(server: SalesforceServer) -> None:
    session = _raw(server)
    for path in ("/", "/x%00y/../..", "/services/data/vX/query", "/services/Soap/u/59.0"):
        response = session.get(server.instance_url + path, headers=_auth(server))
        assert response.status_code == 404
        assert response.json()[0]["errorCode"] == "NOT_FOUND"
    # The connection is still usable afterwards (keep-alive, no hang).
    assert session.get(f"{server.instance_url}/services/data/", headers=_auth(server)).status_code == 200


def test_soap_password_login_and_relogin(server: SalesforceServer) -> None:
    session = simulator_session(server.ca_bundle, server.instance_url)
    with pytest.raises(SalesforceAuthenticationFailed) as info:
        Salesforce(username=server.username, password=server.password, security_token="wrong", session=session)
    assert info.value.code == "INVALID_LOGIN"
    sf = Salesforce(username=server.username, password=server.password, security_token=server.security_token,
                    session=session, version="59.0")
    assert sf.sf_instance == server.instance_url.removeprefix("https://")
    server.faults.set_plan(FaultPlan(expire_after=1))
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 30
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 30  # 401, SOAP re-login, retry
    assert server.call_counts()["POST soap/login"] == 3
