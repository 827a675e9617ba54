"""crmsim's org profile (crmsim/strictness.py): spec parsing, and the HubSpot limits and index lag
as the real hubspot-api-client sees them over real sockets."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import hubspot
import pytest
from hubspot.crm.contacts import ApiException

from crmsim.faults import FaultPlan
from crmsim.hubspot import HubSpotServer
from crmsim.model import Owner, SimClock
from crmsim.strictness import Strictness, StrictnessSpecError, parse_strictness
from tests.crmsim.test_hubspot_server import make_person

START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
SEARCH = {"filterGroups": [], "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
          "limit": 10}


@pytest.fixture()
def server() -> Iterator[HubSpotServer]:
    clock = SimClock(START)
    hub = HubSpotServer(clock, seed=3)
    hub.faults.set_plan(FaultPlan())
    hub.store.put_owner(Owner("U1", "Ann Lee", "ann@vendor.example"))
    for i in range(20):
        hub.store.put_person(make_person(f"P{i:04d}", clock, company_key=None))
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def _client(hub: HubSpotServer) -> hubspot.Client:
    return hubspot.Client.create(access_token=hub.access_token, host=hub.base_url, base_url=hub.base_url)


def test_spec_parsing_defaults_and_errors() -> None:
    assert parse_strictness(None) == Strictness()
    assert parse_strictness("sf.validation_rule=0.05, hs.tie_order=id").tie_order == "id"
    for bad, words in (("tie_order=random", "not one of"), ("nope=1", "unknown"), ("sf.tie_order=id", "belong"),
                       ("validation_rule=2", "out of range"), ("burst=-1", "negative"), ("x", "key=value")):
        with pytest.raises(StrictnessSpecError, match=words):
            parse_strictness(bad)


def test_search_rate_answers_the_secondly_429(server: HubSpotServer) -> None:
    server.apply_strictness(Strictness(search_rate=2))
    api = _client(server).crm.contacts.search_api
    statuses = []
    for _ in range(4):
        try:
            api.do_search(SEARCH)
            statuses.append(200)
        except ApiException as exc:
            statuses.append(exc.status)
            body = json.loads(exc.body)
            assert body["policyName"] == "SECONDLY" and body["errorType"] == "RATE_LIMIT"
    assert statuses[:2] == [200, 200] and 429 in statuses[2:]
    # The portal's own limit, not a fault: counted apart from injected faults (none are planned).
    counts = server.call_counts()
    assert (counts["limited"], counts["injected"]) == (statuses.count(429), 0), counts
    time.sleep(1.05)
    api.do_search(SEARCH)  # the second has passed: allowed again


def test_burst_answers_ten_secondly_rolling_without_retry_after(server: HubSpotServer) -> None:
    server.apply_strictness(Strictness(burst=5, search_rate=0))
    api = _client(server).crm.contacts.basic_api
    for _ in range(5):
        api.get_page(limit=1)
    with pytest.raises(ApiException) as caught:
        api.get_page(limit=1)
    assert caught.value.status == 429
    assert json.loads(caught.value.body)["policyName"] == "TEN_SECONDLY_ROLLING"
    assert "Retry-After" not in (caught.value.headers or {})


def test_search_lag_hides_a_write_until_indexed(server: HubSpotServer) -> None:
    server.apply_strictness(Strictness(search_lag=0.5, search_rate=0, burst=0))
    client = _client(server)
    contact = client.crm.contacts.basic_api.get_page(limit=1).results[0]
    client.crm.contacts.basic_api.update(contact.id, {"properties": {"jobtitle": "Indexed later"}})
    body = {"filterGroups": [{"filters": [{"propertyName": "jobtitle", "operator": "EQ",
                                           "value": "Indexed later"}]}], "limit": 10}
    assert client.crm.contacts.search_api.do_search(body).total == 0
    time.sleep(0.6)
    assert [r.id for r in client.crm.contacts.search_api.do_search(body).results] == [contact.id]


def test_events_need_an_enterprise_hub(server: HubSpotServer) -> None:
    server.apply_strictness(Strictness(hub_tier="professional"))
    from hubspot.events.exceptions import ApiException as EventsApiException

    with pytest.raises(EventsApiException) as caught:
        _client(server).events.events_api.get_page(object_type="contact")
    assert caught.value.status == 403


def test_a_task_needs_hs_timestamp(server: HubSpotServer) -> None:
    from hubspot.crm.objects import ApiException as ObjectsApiException

    api = _client(server).crm.objects.basic_api
    with pytest.raises(ObjectsApiException) as caught:
        api.create("tasks", {"properties": {"hs_task_subject": "Call back"}})
    assert caught.value.status == 400
    assert json.loads(caught.value.body)["errors"][0]["context"]["propertyName"] == ["hs_timestamp"]
    created = api.create("tasks", {"properties": {"hs_task_subject": "Call back",
                                                  "hs_timestamp": "2025-03-02T09:00:00.000Z"}})
    assert created.properties["hs_task_subject"] == "Call back"
