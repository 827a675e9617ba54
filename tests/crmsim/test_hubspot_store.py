"""crmsim HubSpot store: the funnel projection, stamping rules, and the rest of the read API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import hubspot
import pytest
from hubspot.crm.associations.v4 import ApiException as AssociationsApiException

from crmsim.faults import FaultPlan
from crmsim.hubspot import HubSpotServer, HubSpotStore
from crmsim.model import Activity, Company, Owner, Person, Queue, SimClock

START = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


def person(key: str, clock: SimClock, **overrides: object) -> Person:
    fields: dict[str, object] = {
        "key": key,
        "crm": "hubspot",
        "company_key": "C1",
        "first_name": "Lu",
        "last_name": key,
        "email": f"{key.lower()}@beta.example",
        "title": "CFO",
        "phone": "+1 555 0100",
        "lead_source": "Paid Search",
        "campaign_key": None,
        "status": "Working",
        "owner_key": "U1",
        "created_at": clock.now(),
        "company_name": "Beta GmbH",
        "industry": "Retail",
        "employees": 75,
        "annual_revenue": 1250000.0,
        "country": "DE",
    }
    fields.update(overrides)
    return Person(**fields)  # type: ignore[arg-type]


@pytest.fixture()
def store() -> HubSpotStore:
    clock = SimClock(START)
    store = HubSpotStore(clock, seed=1)
    store.put_owner(Owner("U1", "Ann Lee", "ann@vendor.example"))
    store.put_queue(Queue("Q1", "SDR Queue"))
    store.put_company(Company("C1", "Beta GmbH", "beta.example", "Retail", 80, 2.0e6, "DE"))
    return store


def test_person_projection(store: HubSpotStore) -> None:
    store.put_person(person("P1", store.clock))
    rec = store.get("contacts", store.crm_id("P1") or "")
    props = rec.props
    assert props["numemployees"] == "50-100"
    assert props["annualrevenue"] == "1250000"
    assert props["hs_lead_status"] == "IN_PROGRESS"
    assert props["lifecyclestage"] == "lead"
    assert (props["hs_analytics_source"], props["hs_analytics_source_data_1"]) == ("PAID_SEARCH", "Paid Search")
    assert props["hubspot_owner_id"] == store.owner_id("U1")
    assert props["associatedcompanyid"] == store.company_id("C1")
    assert props["createdate"] == props["lastmodifieddate"] == "2025-01-06T08:00:00.000Z"
    assert list(store.associated("contacts", rec.id, "companies").values()) == [[1, 279]]
    company_id = int(store.company_id("C1") or 0)
    assert list(store.associated("companies", company_id, "contacts")) == [rec.id]
    assert store.teams and next(iter(store.teams.values()))["name"] == "SDR Queue"
    with pytest.raises(ValueError, match="salesforce"):
        store.put_person(person("P2", store.clock, crm="salesforce"))


def test_funnel_writes_log_once_per_change(store: HubSpotStore) -> None:
    store.put_person(person("P1", store.clock))
    contact_id = store.crm_id("P1")
    log_len = len(store.write_log)
    store.clock.advance(timedelta(hours=2))
    store.put_person(person("P1", store.clock, created_at=START))
    store.put_company(Company("C1", "Beta GmbH", "beta.example", "Retail", 80, 2.0e6, "DE"))
    assert len(store.write_log) == log_len
    store.put_person(person("P1", store.clock, created_at=START, title="CEO"))
    assert len(store.write_log) == log_len + 1
    entry = store.write_log[-1]
    assert (entry.object_id, entry.changed, entry.source) == (contact_id, {"jobtitle": "CEO"}, "funnel")
    created = next(e for e in store.write_log if e.object_id == contact_id)
    assert created.changed["jobtitle"] == "CFO"  # the insert entry keeps the values it was written with
    assert created.changed["lastmodifieddate"] == "2025-01-06T08:00:00.000Z"
    assert store.get("contacts", contact_id or "").props["lastmodifieddate"] == "2025-01-06T10:00:00.000Z"
    store.put_company(Company("C1", "Beta GmbH", "beta.example", "Retail", 95, 2.0e6, "DE"))
    company = store.get("companies", store.company_id("C1") or "")
    assert company.props["numberofemployees"] == "95"
    assert company.props["hs_lastmodifieddate"] == "2025-01-06T10:00:00.000Z"


def test_merge_waits_for_a_later_survivor(store: HubSpotStore) -> None:
    store.put_person(person("P1", store.clock, merged_into="P9"))
    loser = store.get("contacts", store.crm_id("P1") or "")
    assert not loser.archived
    store.put_person(person("P9", store.clock))
    survivor = store.get("contacts", store.crm_id("P9") or "")
    assert survivor.props["hs_merged_object_ids"] == str(loser.id)
    assert loser.archived


def test_activity_refs_and_unknown_person(store: HubSpotStore) -> None:
    store.put_person(person("P1", store.clock))
    store.put_activity(Activity("A1", "P1", "call", store.clock.now(), "Discovery"))
    store.put_activity(Activity("A2", "P1", "web_visit", store.clock.now(), "/pricing"))
    kind, call_id = store.activity_ref("A1") or ("", "")
    assert kind == "calls"
    assert store.get("calls", call_id).props["hs_call_title"] == "Discovery"
    assert (store.activity_ref("A2") or ("",))[0] == "events"
    store.put_activity(Activity("A2", "P1", "web_visit", store.clock.now(), "/pricing"))
    assert len(store.events) == 1
    with pytest.raises(ValueError, match="not in HubSpot"):
        store.put_activity(Activity("A3", "NOPE", "call", store.clock.now()))
    with pytest.raises(ValueError, match="unknown type"):
        store.put_activity(Activity("A4", "P1", "fax", store.clock.now()))


@pytest.fixture()
def server() -> Iterator[HubSpotServer]:
    clock = SimClock(START)
    server = HubSpotServer(clock, seed=2)
    server.faults.set_plan(FaultPlan(retry_after=0.01))
    store = server.store
    store.put_owner(Owner("U1", "Ann Lee", "ann@vendor.example"))
    store.put_owner(Owner("U2", "Bo Chan", "bo@vendor.example"))
    store.put_company(Company("C1", "Beta GmbH", "beta.example", "Retail", 80, 2.0e6, "DE"))
    store.put_company(Company("C2", "Gamma", "gamma.example", "Banking", 5000, 9.0e8, "FR"))
    for i in range(130):
        store.put_person(person(f"P{i}", clock))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_owners_companies_and_get_all(server: HubSpotServer) -> None:
    client = hubspot.Client.create(access_token=server.access_token, host=server.base_url, base_url=server.base_url)
    owners = client.crm.owners.owners_api.get_page()
    assert [(o.email, o.first_name) for o in owners.results] == [
        ("ann@vendor.example", "Ann"),
        ("bo@vendor.example", "Bo"),
    ]
    assert client.crm.owners.owners_api.get_page(email="bo@vendor.example").results[0].last_name == "Chan"
    everyone = client.crm.contacts.get_all(properties=["email"])
    assert len(everyone) == 130
    companies = client.crm.companies.search_api.do_search(
        public_object_search_request={
            "filterGroups": [{"filters": [{"propertyName": "numberofemployees", "operator": "GT", "value": "100"}]}],
            "properties": ["name", "domain", "hs_lastmodifieddate"],
        }
    )
    assert [c.properties["name"] for c in companies.results] == ["Gamma"]
    by_email = client.crm.contacts.basic_api.get_by_id("p7@beta.example", id_property="email")
    assert by_email.id == server.store.crm_id("P7")


def test_v4_associations_create_and_batch_read(server: HubSpotServer) -> None:
    client = hubspot.Client.create(access_token=server.access_token, host=server.base_url, base_url=server.base_url)
    store = server.store
    contact_id = store.crm_id("P3") or ""
    gamma = store.company_id("C2") or ""
    v4 = client.crm.associations.v4
    made = v4.basic_api.create(
        "contacts",
        contact_id,
        "companies",
        gamma,
        [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}],
    )
    assert (made.from_object_id, made.to_object_id, made.to_object_type_id) == (contact_id, gamma, "0-2")
    targets = {r.to_object_id for r in v4.basic_api.get_page("contacts", contact_id, "companies").results}
    assert targets == {store.company_id("C1"), gamma}
    read = v4.batch_api.get_page("contacts", "companies", {"inputs": [{"id": contact_id}, {"id": "777"}]})
    assert read.results[0].to[1].association_types[0].type_id == 279
    assert read.errors[0].context["ids"] == ["777"]
    with pytest.raises(AssociationsApiException) as bad:
        v4.basic_api.create(
            "contacts",
            contact_id,
            "companies",
            gamma,
            [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 5}],
        )
    assert bad.value.status == 400


def test_api_create_and_archive_round_trip(server: HubSpotServer) -> None:
    client = hubspot.Client.create(access_token=server.access_token, host=server.base_url, base_url=server.base_url)
    note = client.crm.objects.notes.basic_api.create(
        {
            "properties": {"hs_note_body": "Called, left voicemail", "hs_timestamp": "1736150400000"},
            "associations": [
                {
                    "to": {"id": server.store.crm_id("P1")},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}],
                }
            ],
        }
    )
    assert note.properties["hs_timestamp"] == "2025-01-06T08:00:00.000Z"
    assert list(server.store.associated("notes", int(note.id), "contacts")) == [int(server.store.crm_id("P1") or 0)]
    client.crm.objects.notes.basic_api.archive(note.id)
    listed = client.crm.objects.basic_api.get_page("notes", archived=True)
    assert [n.id for n in listed.results] == [note.id]
    assert server.call_counts()["DELETE notes/{id}"] == 1


def test_properties_with_history(server: HubSpotServer) -> None:
    client = hubspot.Client.create(access_token=server.access_token, host=server.base_url, base_url=server.base_url)
    contact_id = server.store.crm_id("P5") or ""
    server.clock.advance(timedelta(days=1))
    client.crm.contacts.basic_api.update(contact_id, {"properties": {"hs_lead_status": "CONNECTED"}})
    got = client.crm.contacts.basic_api.get_by_id(contact_id, properties_with_history=["hs_lead_status"])
    history = got.properties_with_history["hs_lead_status"]
    assert [(h.value, h.source_type) for h in history] == [("CONNECTED", "INTEGRATION"), ("IN_PROGRESS", "CRM_UI")]
    assert history[0].timestamp == server.clock.now()
    batch = client.crm.contacts.batch_api.read(
        {"inputs": [{"id": contact_id}], "propertiesWithHistory": ["hs_lead_status"]}
    )
    assert len(batch.results[0].properties_with_history["hs_lead_status"]) == 2
    page = client.crm.contacts.basic_api.get_page(limit=50, properties_with_history=["hs_lead_status"])
    assert len(page.results) == 50 and page.results[0].properties_with_history["hs_lead_status"]
