"""crmsim's HubSpot server against the real hubspot-api-client 12.0.0 over real sockets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import hubspot
import pytest
import urllib3
from hubspot.crm.contacts import ApiException
from hubspot.crm.contacts.exceptions import NotFoundException, ServiceException, UnauthorizedException
from hubspot.crm.properties import ApiException as PropertiesApiException

from crmsim.faults import FaultPlan
from crmsim.hubspot import HubSpotServer
from crmsim.model import Activity, Campaign, Company, Owner, Person, SimClock

START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def make_person(key: str, clock: SimClock, **overrides: object) -> Person:
    fields: dict[str, object] = {
        "key": key,
        "crm": "hubspot",
        "company_key": "C1",
        "first_name": "Ada",
        "last_name": key,
        "email": f"{key.lower()}@acme.example",
        "title": "VP Engineering",
        "phone": None,
        "lead_source": "Web",
        "campaign_key": None,
        "status": "Open",
        "owner_key": "U1",
        "created_at": clock.now(),
    }
    fields.update(overrides)
    return Person(**fields)  # type: ignore[arg-type]


@pytest.fixture()
def world() -> Iterator[tuple[HubSpotServer, SimClock]]:
    clock = SimClock(START)
    server = HubSpotServer(clock, seed=7)
    server.faults.set_plan(FaultPlan(retry_after=0.01))
    store = server.store
    store.put_owner(Owner("U1", "Ann Lee", "ann@vendor.example"))
    store.put_owner(Owner("U2", "Bo Chan", "bo@vendor.example"))
    store.put_campaign(Campaign("K1", "Spring webinar", "Webinar"))
    store.put_company(Company("C1", "Acme Logistics", "acme.example", "Logistics", 420, 3.5e7, "US"))
    for i in range(250):
        store.put_person(make_person(f"P{i:04d}", clock))
        if i % 50 == 49:
            clock.advance(timedelta(minutes=5))
    server.start()
    try:
        yield server, clock
    finally:
        server.stop()


def client_for(server: HubSpotServer, token: str | None = None) -> hubspot.Client:
    return hubspot.Client.create(
        access_token=token or server.access_token, host=server.base_url, base_url=server.base_url
    )


def test_list_pages_through_every_contact_once(world: tuple[HubSpotServer, SimClock]) -> None:
    server, _ = world
    api = client_for(server).crm.contacts.basic_api
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = api.get_page(
            limit=100, after=after, properties=["email", "hubspot_owner_id"], associations=["companies"]
        )
        pages += 1
        seen.extend(r.id for r in page.results)
        if page.paging is None:
            break
        after = page.paging.next.after
    assert pages == 3
    assert len(seen) == 250 == len(set(seen))
    first = api.get_by_id(
        seen[0], properties=["email", "hubspot_owner_id", "lifecyclestage"], associations=["companies"]
    )
    assert first.properties["email"] == "p0000@acme.example"
    assert first.properties["hubspot_owner_id"] == server.store.owner_id("U1")
    assert first.properties["lifecyclestage"] == "lead"
    company_id = server.store.company_id("C1")
    assert {a.id for a in first.associations["companies"].results} == {company_id}
    assert server.call_counts()["GET contacts"] == 3


def test_list_limit_above_100_is_rejected(world: tuple[HubSpotServer, SimClock]) -> None:
    server, _ = world
    with pytest.raises(ApiException) as info:
        client_for(server).crm.contacts.basic_api.get_page(limit=101)
    assert info.value.status == 400
    assert json.loads(info.value.body)["category"] == "VALIDATION_ERROR"


def test_archived_records_only_with_archived_true(world: tuple[HubSpotServer, SimClock]) -> None:
    server, clock = world
    store = server.store
    store.delete_person("P0003")
    store.put_person(make_person("P0004", clock, merged_into="P0005"))
    api = client_for(server).crm.contacts.basic_api
    archived_ids = {store.crm_id("P0003"), store.crm_id("P0004")}
    live = api.get_page(limit=100)
    assert not archived_ids & {r.id for r in live.results}
    archived = api.get_page(limit=100, archived=True)
    assert {r.id for r in archived.results} == archived_ids
    assert all(r.archived and r.archived_at is not None for r in archived.results)
    with pytest.raises(NotFoundException):
        api.get_by_id(store.crm_id("P0003"))
    assert api.get_by_id(store.crm_id("P0003"), archived=True).archived is True
    survivor = api.get_by_id(store.crm_id("P0005"), properties=["hs_merged_object_ids"])
    assert survivor.properties["hs_merged_object_ids"] == store.crm_id("P0004")
    found = client_for(server).crm.contacts.search_api.do_search(
        public_object_search_request={
            "filterGroups": [
                {"filters": [{"propertyName": "hs_object_id", "operator": "IN", "values": sorted(archived_ids)}]}
            ]
        }
    )
    assert found.total == 0


def test_batch_update_partial_failure_is_207_with_errors(world: tuple[HubSpotServer, SimClock]) -> None:
    server, _ = world
    store = server.store
    store.delete_person("P0009")
    ok_id, bad_value_id, missing_prop_id = (store.crm_id(k) for k in ("P0001", "P0002", "P0006"))
    batch = client_for(server).crm.contacts.batch_api
    result = batch.update(
        {
            "inputs": [
                {"id": ok_id, "properties": {"hs_lead_status": "IN_PROGRESS"}},
                {"id": "999999999", "properties": {"hs_lead_status": "OPEN"}},
                {"id": store.crm_id("P0009"), "properties": {"hs_lead_status": "OPEN"}},
                {"id": bad_value_id, "properties": {"lifecyclestage": "not-a-stage"}},
                {"id": missing_prop_id, "properties": {"leadscore_score": "87"}},
            ]
        }
    )
    assert [r.id for r in result.results] == [ok_id]
    assert result.num_errors == 3
    by_category = {e.category: e for e in result.errors}
    assert set(by_category["OBJECT_NOT_FOUND"].context["ids"]) == {"999999999", store.crm_id("P0009")}
    codes = sorted((e.context["ids"][0], e.errors[0].code) for e in result.errors if e.category == "VALIDATION_ERROR")
    assert codes == sorted([(bad_value_id, "INVALID_OPTION"), (missing_prop_id, "PROPERTY_DOESNT_EXIST")])
    assert store.get("contacts", ok_id).props["hs_lead_status"] == "IN_PROGRESS"
    assert store.get("contacts", bad_value_id).props["lifecyclestage"] == "lead"

    all_ok = batch.update({"inputs": [{"id": ok_id, "properties": {"hs_lead_status": "CONNECTED"}}]})
    assert all_ok.errors is None if hasattr(all_ok, "errors") else True
    assert all_ok.status == "COMPLETE"

    server.faults.set_plan(FaultPlan(retry_after=0.01, record_fail=1.0))
    failed = batch.update({"inputs": [{"id": ok_id, "properties": {"hs_lead_status": "OPEN"}}]})
    assert failed.results == []
    assert failed.errors[0].category == "INTERNAL_ERROR"
    assert store.get("contacts", ok_id).props["hs_lead_status"] == "CONNECTED"

    with pytest.raises(ApiException) as info:
        batch.update({"inputs": [{"id": str(i), "properties": {"hs_lead_status": "OPEN"}} for i in range(101)]})
    assert info.value.status == 400


def test_score_properties_must_be_created_first(world: tuple[HubSpotServer, SimClock]) -> None:
    server, _ = world
    client = client_for(server)
    contact_id = server.store.crm_id("P0001")
    with pytest.raises(ApiException) as info:
        client.crm.contacts.basic_api.update(contact_id, {"properties": {"leadscore_score": "87"}})
    body = json.loads(info.value.body)
    assert info.value.status == 400
    assert body["category"] == "VALIDATION_ERROR"
    assert body["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    assert body["message"].startswith("Property values were not valid:")

    spec = {
        "name": "leadscore_score",
        "label": "Lead score",
        "type": "number",
        "fieldType": "number",
        "groupName": "contactinformation",
    }
    created = client.crm.properties.core_api.create("contacts", spec)
    assert created.name == "leadscore_score" and created.hubspot_defined is False
    with pytest.raises(PropertiesApiException) as conflict:
        client.crm.properties.core_api.create("contacts", spec)
    assert conflict.value.status == 409
    names = {p.name for p in client.crm.properties.core_api.get_all("contacts").results}
    assert {"leadscore_score", "email", "lastmodifieddate"} <= names

    updated = client.crm.contacts.basic_api.update(contact_id, {"properties": {"leadscore_score": "87.0"}})
    assert updated.properties["leadscore_score"] == "87"
    with pytest.raises(ApiException) as bad:
        client.crm.contacts.basic_api.update(contact_id, {"properties": {"leadscore_score": "high"}})
    assert bad.value.status == 400


def test_writes_stamp_only_on_change(world: tuple[HubSpotServer, SimClock]) -> None:
    server, clock = world
    store = server.store
    api = client_for(server).crm.contacts.basic_api
    contact_id = store.crm_id("P0010")
    before = store.get("contacts", contact_id).props["lastmodifieddate"]
    log_len = len(store.write_log)
    clock.advance(timedelta(hours=1))
    store.put_person(make_person("P0010", clock, created_at=START + timedelta(minutes=0)))
    api.update(contact_id, {"properties": {"lifecyclestage": "lead"}})
    assert len(store.write_log) == log_len
    assert store.get("contacts", contact_id).props["lastmodifieddate"] == before

    result = api.update(contact_id, {"properties": {"hs_lead_status": "IN_PROGRESS"}})
    stamp = clock.now()
    assert result.updated_at == stamp
    assert result.properties["lastmodifieddate"] == "2025-03-01T10:25:00.000Z"
    assert result.properties["hs_lastmodifieddate"] == result.properties["lastmodifieddate"]
    entry = store.write_log[-1]
    assert (entry.object_id, entry.changed, entry.source, entry.at) == (
        contact_id,
        {"hs_lead_status": "IN_PROGRESS"},
        "api",
        stamp,
    )
    assert len(store.write_log) == log_len + 1


def test_errors_map_to_client_exceptions(world: tuple[HubSpotServer, SimClock]) -> None:
    server, _ = world
    with pytest.raises(UnauthorizedException) as unauth:
        client_for(server, token="pat-na1-wrong").crm.contacts.basic_api.get_page()
    assert json.loads(unauth.value.body)["category"] == "INVALID_AUTHENTICATION"
    api = client_for(server).crm.contacts.basic_api
    with pytest.raises(NotFoundException):
        api.get_by_id("424242")
    server.faults.set_plan(FaultPlan(retry_after=0.01, rate_500=1.0))
    with pytest.raises(ServiceException):
        client_for(server).crm.contacts.search_api.do_search(public_object_search_request={"limit": 5})
    server.faults.set_plan(FaultPlan(retry_after=0.01, rate_503=1.0))
    with pytest.raises(ServiceException) as unavailable:
        api.get_page()
    assert unavailable.value.status == 503
    body = json.loads(unavailable.value.body)
    assert body["status"] == "error" and body["correlationId"]


def test_token_expiry_rotates_the_token(world: tuple[HubSpotServer, SimClock]) -> None:
    server, _ = world
    server.faults.set_plan(FaultPlan(retry_after=0.01, expire_after=2))
    old = server.access_token
    api = client_for(server).crm.contacts.basic_api
    api.get_page(limit=1)
    api.get_page(limit=1)
    with pytest.raises(UnauthorizedException) as info:
        api.get_page(limit=1)
    assert json.loads(info.value.body)["category"] == "EXPIRED_AUTHENTICATION"
    assert server.access_token != old
    with pytest.raises(UnauthorizedException):
        api.get_page(limit=1)
    refreshed = client_for(server).oauth.tokens_api.create(
        grant_type="refresh_token",
        refresh_token=server.refresh_token,
        client_id=server.client_id,
        client_secret=server.client_secret,
    )
    assert refreshed.access_token == server.access_token
    assert len(client_for(server, refreshed.access_token).crm.contacts.basic_api.get_page(limit=3).results) == 3


def test_429_get_retried_by_client_post_not(world: tuple[HubSpotServer, SimClock]) -> None:
    server, _ = world
    server.faults.set_plan(FaultPlan(retry_after=0.01, rate_429=1.0))
    client = client_for(server)
    with pytest.raises(ApiException) as info:
        client.crm.contacts.basic_api.get_page(limit=5)
    assert info.value.status == 429
    body = json.loads(info.value.body)
    assert (body["errorType"], body["policyName"]) == ("RATE_LIMIT", "TEN_SECONDLY_ROLLING")
    assert info.value.headers["Retry-After"] == "0"
    assert server.call_counts()["GET contacts"] == 4  # urllib3's default Retry(3) honours Retry-After
    with pytest.raises(ApiException):
        client.crm.contacts.search_api.do_search(public_object_search_request={"limit": 5})
    assert server.call_counts()["POST contacts/search"] == 1
    assert server.call_counts()["injected"] == 5  # each of them a 429 (GET /counts showed none for HubSpot)
    server.faults.set_plan(FaultPlan(retry_after=0.01, rate_429=1.0, no_retry_after=1.0))
    server.reset_counts()
    with pytest.raises(ApiException) as bare:
        client.crm.contacts.basic_api.get_page(limit=5)
    assert "Retry-After" not in bare.value.headers
    assert server.call_counts()["GET contacts"] == 1
    assert server.api_calls == 0


def test_daily_limit_answers_429_daily(world: tuple[HubSpotServer, SimClock]) -> None:
    server, _ = world
    server.faults.set_plan(FaultPlan(retry_after=0.01, daily_limit=2))
    search = client_for(server).crm.contacts.search_api
    search.do_search(public_object_search_request={"limit": 1})
    search.do_search(public_object_search_request={"limit": 1})
    with pytest.raises(ApiException) as info:
        search.do_search(public_object_search_request={"limit": 1})
    assert json.loads(info.value.body)["policyName"] == "DAILY"
    assert server.api_calls == 2


def test_dropped_connection_raises_in_client(world: tuple[HubSpotServer, SimClock]) -> None:
    server, _ = world
    server.faults.set_plan(FaultPlan(retry_after=0.01, drop=1.0))
    with pytest.raises(urllib3.exceptions.HTTPError):
        client_for(server).crm.contacts.search_api.do_search(public_object_search_request={"limit": 1})
    assert server.api_calls == 0


def test_raw_http_envelopes_and_headers(world: tuple[HubSpotServer, SimClock]) -> None:
    server, clock = world
    pool = urllib3.PoolManager()
    auth = {"Authorization": f"Bearer {server.access_token}", "Content-Type": "application/json"}
    bad = pool.request("POST", server.base_url + "/crm/v3/objects/contacts/search", body=b"{not json", headers=auth)
    assert bad.status == 400
    body = json.loads(bad.data)
    assert body["category"] == "VALIDATION_ERROR" and body["correlationId"] == bad.headers["X-HubSpot-Correlation-Id"]
    unknown = pool.request("GET", server.base_url + "/crm/v3/nothing/here", headers=auth)
    assert unknown.status == 404
    assert json.loads(unknown.data)["status"] == "error"
    ok = pool.request("GET", server.base_url + "/crm/v3/objects/contacts?limit=1", headers=auth)
    assert parsedate_to_datetime(ok.headers["Date"]) == clock.now()
    for name in ("Daily", "Daily-Remaining", "Interval-Milliseconds", "Max", "Remaining"):
        assert ok.headers[f"X-HubSpot-RateLimit-{name}"].isdigit()
    assert ok.headers["X-Request-Id"]
    missing_auth = pool.request("GET", server.base_url + "/crm/v3/objects/contacts")
    assert missing_auth.status == 401
    assert json.loads(missing_auth.data)["category"] == "INVALID_AUTHENTICATION"


def test_workflow_enrollment_through_api_request(world: tuple[HubSpotServer, SimClock]) -> None:
    server, _ = world
    client = client_for(server)
    response = client.api_request(
        {"method": "POST", "path": "/automation/v2/workflows/1001/enrollments/contacts/p0001@acme.example"}
    )
    assert response.status_code == 204
    assert server.store.enrollments[-1]["contactId"] == server.store.crm_id("P0001")
    unknown = client.api_request(
        {"method": "POST", "path": "/automation/v2/workflows/9/enrollments/contacts/p0001@acme.example"}
    )
    assert unknown.status_code == 404
    assert len(server.store.enrollments) == 1


def test_activities_project_to_engagements_and_events(world: tuple[HubSpotServer, SimClock]) -> None:
    server, clock = world
    store = server.store
    t = clock.now()
    kinds = [
        "email_send",
        "email_open",
        "email_click",
        "meeting",
        "webinar",
        "call",
        "web_visit",
        "form_submit",
        "content_download",
        "campaign_response",
    ]
    for n, kind in enumerate(kinds):
        store.put_activity(
            Activity(
                f"A{n}",
                "P0001",
                kind,
                t + timedelta(minutes=n),
                detail="/pricing" if kind == "web_visit" else None,
                campaign_key="K1",
            )
        )
    client = client_for(server)
    contact_id = store.crm_id("P0001")
    v4 = client.crm.associations.v4.basic_api
    email_ids = [r.to_object_id for r in v4.get_page("contacts", contact_id, "emails").results]
    emails = client.crm.objects.emails.batch_api.read(
        {"inputs": [{"id": i} for i in email_ids], "properties": ["hs_email_event_type", "hs_timestamp"]}
    )
    assert sorted(e.properties["hs_email_event_type"] for e in emails.results) == ["CLICK", "OPEN", "SENT"]
    meetings = client.crm.objects.meetings.search_api.do_search(
        public_object_search_request={
            "properties": ["hs_activity_type", "hs_meeting_title"],
            "sorts": [{"propertyName": "hs_timestamp", "direction": "ASCENDING"}],
        }
    )
    assert [m.properties["hs_activity_type"] for m in meetings.results] == ["Meeting", "Webinar"]
    calls = client.crm.objects.calls.basic_api.get_page(properties=["hs_call_duration"], associations=["contacts"])
    assert calls.results[0].associations["contacts"].results[0].id == contact_id
    events = client.events.events_api.get_page(
        object_type="contact", object_id=int(contact_id), occurred_after=t + timedelta(minutes=7), limit=2
    )
    assert [e.event_type for e in events.results] == ["e_submitted_form", "pe4200042_content_downloaded"]
    rest = client.events.events_api.get_page(
        object_type="contact",
        object_id=int(contact_id),
        occurred_after=t + timedelta(minutes=7),
        limit=2,
        after=events.paging.next.after,
    )
    assert [e.event_type for e in rest.results] == ["pe4200042_campaign_responded"]
    assert rest.results[0].properties["hs_campaign_name"] == "Spring webinar"
    visits = client.events.events_api.get_page(event_type="e_visited_page")
    assert visits.results[0].properties["hs_page_path"] == "/pricing"


def test_conversion_revealed_when_clock_passes_it(world: tuple[HubSpotServer, SimClock]) -> None:
    server, clock = world
    store = server.store
    converts = clock.now() + timedelta(days=2)
    store.put_person(make_person("P0020", clock, created_at=START, status="Converted", converted_at=converts))
    api = client_for(server).crm.contacts.basic_api
    contact_id = store.crm_id("P0020")
    props = ["lifecyclestage", "hs_lifecyclestage_opportunity_date"]
    assert api.get_by_id(contact_id, properties=props).properties["lifecyclestage"] == "salesqualifiedlead"
    clock.advance(timedelta(days=3))
    after = api.get_by_id(contact_id, properties=props)
    assert after.properties["lifecyclestage"] == "opportunity"
    assert after.properties["hs_lifecyclestage_opportunity_date"] == "2025-03-03T09:25:00.000Z"
    assert after.updated_at == clock.now()
