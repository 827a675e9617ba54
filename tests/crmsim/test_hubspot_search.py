"""crmsim HubSpot search: incremental reads with shared stamps, the 10,000-result cap, operators."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import hubspot
import pytest
from hubspot.crm.contacts import ApiException

from crmsim.faults import FaultPlan
from crmsim.hubspot import HubSpotServer
from crmsim.hubspot.schema import epoch_ms
from crmsim.model import Company, Owner, Person, SimClock

START = datetime(2025, 6, 1, tzinfo=UTC)
PER_STAMP = 3_000
STAMPS = 4  # 12,000 contacts: more than one query may page through


@pytest.fixture(scope="module")
def big() -> Iterator[tuple[HubSpotServer, list[datetime]]]:
    clock = SimClock(START)
    server = HubSpotServer(clock, seed=3)
    server.faults.set_plan(FaultPlan(retry_after=0.01))
    store = server.store
    store.put_owner(Owner("U1", "Ann Lee", "ann@vendor.example"))
    store.put_company(Company("C1", "Acme", "acme.example", "Retail", 80, 2e6, "DE"))
    stamps = []
    n = 0
    for s in range(STAMPS):
        stamps.append(clock.now())
        for _ in range(PER_STAMP):
            store.put_person(
                Person(
                    key=f"P{n:05d}",
                    crm="hubspot",
                    company_key="C1",
                    first_name="Kim",
                    last_name=f"N{n}",
                    email=f"k{n}@acme.example" if n % 10 else None,
                    title="Buyer",
                    phone=None,
                    lead_source=["Web", "Referral", "Paid Search"][n % 3],
                    campaign_key=None,
                    status=["Open", "Working"][n % 2],
                    owner_key="U1",
                    created_at=clock.now(),
                    employees=n % 700,
                )
            )
            n += 1
        clock.advance(timedelta(minutes=10 * (s + 1)))
    server.start()
    try:
        yield server, stamps
    finally:
        server.stop()


def search(server: HubSpotServer, body: dict[str, object]):  # noqa: ANN201 - the client's model type
    client = hubspot.Client.create(access_token=server.access_token, host=server.base_url, base_url=server.base_url)
    return client.crm.contacts.search_api.do_search(public_object_search_request=body)


def since(stamp: datetime, value: str | None = None) -> dict[str, object]:
    return {
        "filterGroups": [
            {
                "filters": [
                    {"propertyName": "lastmodifieddate", "operator": "GTE", "value": value or str(epoch_ms(stamp))}
                ]
            }
        ],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["lastmodifieddate"],
        "limit": 200,
    }


def test_incremental_search_with_shared_stamps_reads_each_record_once(
    big: tuple[HubSpotServer, list[datetime]],
) -> None:
    server, stamps = big
    body = since(stamps[2])
    evaluations = server.search_engine.evaluations
    ids: list[str] = []
    modified: list[str] = []
    after = None
    while True:
        page = search(server, {**body, "after": after} if after else body)
        assert page.total == 2 * PER_STAMP
        ids.extend(r.id for r in page.results)
        modified.extend(r.properties["lastmodifieddate"] for r in page.results)
        if page.paging is None:
            break
        after = page.paging.next.after
    assert len(ids) == len(set(ids)) == 2 * PER_STAMP
    assert modified == sorted(modified)
    assert set(modified) == {"2025-06-01T00:30:00.000Z", "2025-06-01T01:00:00.000Z"}
    assert server.search_engine.evaluations == evaluations + 1  # one evaluation served every page
    iso = search(server, since(stamps[2], value="2025-06-01T00:30:00Z"))
    assert iso.total == 2 * PER_STAMP


def test_paging_at_10000_results_is_a_400(big: tuple[HubSpotServer, list[datetime]]) -> None:
    server, stamps = big
    body = since(stamps[0])
    last_allowed = search(server, {**body, "after": "9800"})
    assert last_allowed.total == STAMPS * PER_STAMP
    assert len(last_allowed.results) == 200
    assert last_allowed.paging.next.after == "10000"
    with pytest.raises(ApiException) as info:
        search(server, {**body, "after": "10000"})
    assert info.value.status == 400
    assert json.loads(info.value.body)["category"] == "VALIDATION_ERROR"
    with pytest.raises(ApiException) as too_big:
        search(server, {**body, "limit": 201})
    assert too_big.value.status == 400


def test_filter_operators_and_or_groups(big: tuple[HubSpotServer, list[datetime]]) -> None:
    server, _ = big

    def total(*groups: list[dict[str, object]]) -> int:
        return int(search(server, {"filterGroups": [{"filters": g} for g in groups], "limit": 1}).total)

    everyone = STAMPS * PER_STAMP
    assert total([{"propertyName": "email", "operator": "NOT_HAS_PROPERTY"}]) == everyone // 10
    assert total([{"propertyName": "email", "operator": "HAS_PROPERTY"}]) == everyone - everyone // 10
    assert total([{"propertyName": "email", "operator": "EQ", "value": "K11@ACME.example"}]) == 1
    assert (
        total([{"propertyName": "hs_analytics_source", "operator": "IN", "values": ["REFERRALS", "PAID_SEARCH"]}])
        == everyone * 2 // 3
    )
    assert total([{"propertyName": "hs_lead_status", "operator": "NEQ", "value": "NEW"}]) == everyone // 2
    assert total([{"propertyName": "hs_lead_status", "operator": "NOT_IN", "values": ["NEW"]}]) == everyone // 2
    first = int(server.store.crm_id("P00000") or 0)
    assert (
        total(
            [{"propertyName": "hs_object_id", "operator": "BETWEEN", "value": str(first), "highValue": str(first + 9)}]
        )
        == 10
    )
    assert (
        total(
            [{"propertyName": "hs_object_id", "operator": "LT", "value": str(first + 5)}],
            [{"propertyName": "hs_object_id", "operator": "GTE", "value": str(first + 11_995)}],
        )
        == 10
    )
    descending = search(server, {"sorts": [{"propertyName": "hs_object_id", "direction": "DESCENDING"}], "limit": 2})
    assert [r.id for r in descending.results] == [str(first + 11_999), str(first + 11_998)]
    with pytest.raises(ApiException) as unknown:
        search(server, {"filterGroups": [{"filters": [{"propertyName": "nope", "operator": "EQ", "value": "1"}]}]})
    assert unknown.value.status == 400


def test_write_invalidates_cached_query(big: tuple[HubSpotServer, list[datetime]]) -> None:
    server, stamps = big
    body = since(stamps[3])
    before = search(server, body).total
    contact_id = server.store.crm_id("P00001")
    client = hubspot.Client.create(access_token=server.access_token, host=server.base_url, base_url=server.base_url)
    client.crm.contacts.basic_api.update(contact_id, {"properties": {"jobtitle": "Head of Buying"}})
    after = search(server, body)
    assert after.total == before + 1
    assert contact_id in {r.id for r in search(server, {**body, "after": str(before - 100)}).results}
