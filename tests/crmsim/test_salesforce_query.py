"""Reading through the real simple-salesforce client: paging, keyset cursors, windows, deletes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from simple_salesforce import Salesforce

from crmsim.salesforce.server import SalesforceServer
from crmsim.salesforce.store import encode_datetime
from crmsim.salesforce.testing import T0, direct_client, person, seeded_server

N = 10_000


@pytest.fixture(scope="module")
def server() -> Iterator[SalesforceServer]:
    srv = seeded_server(N)
    # 3,000 leads get a later stamp (frozen clock: they all share it), 5 are deleted later still.
    srv.clock.advance(timedelta(minutes=5))
    for i in range(3000):
        srv.store.put_person(person(i, title="CTO"))
    srv.clock.advance(timedelta(minutes=5))
    for i in range(N - 5, N):
        srv.store.delete_person(f"P{i:06d}")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sf(server: SalesforceServer) -> Salesforce:
    return direct_client(server)


def test_query_all_iter_pages_through_every_lead_once(server: SalesforceServer, sf: Salesforce) -> None:
    server.reset_counts()
    ids = [r["Id"] for r in sf.query_all_iter("SELECT Id, Email, SystemModstamp FROM Lead")]
    assert len(ids) == N - 5
    assert len(set(ids)) == len(ids)
    expected = {server.store.crm_id(f"P{i:06d}") for i in range(N - 5)}
    assert set(ids) == expected
    counts = server.call_counts()
    assert counts["GET query"] == 1
    assert counts["GET query/next"] == (N - 5 - 1) // 2000
    assert server.api_calls == 1 + counts["GET query/next"]


def test_first_page_shape_and_encodings(sf: Salesforce) -> None:
    page = sf.query("SELECT Id, SystemModstamp, CreatedDate, NumberOfEmployees, AnnualRevenue, IsConverted, "
                    "ConvertedDate, Lead_Score__c FROM Lead ORDER BY Id LIMIT 3")
    assert page["totalSize"] == 3 and page["done"] is True and "nextRecordsUrl" not in page
    record = page["records"][0]
    assert record["attributes"]["type"] == "Lead"
    assert record["attributes"]["url"] == f"/services/data/v59.0/sobjects/Lead/{record['Id']}"
    assert record["CreatedDate"] == "2024-05-01T10:00:00.000+0000"
    assert record["SystemModstamp"] == "2024-05-01T10:05:00.000+0000"
    assert record["NumberOfEmployees"] == 120 and record["AnnualRevenue"] == 5_000_000.0
    assert record["IsConverted"] is False and record["ConvertedDate"] is None and record["Lead_Score__c"] is None
    assert len(record["Id"]) == 18 and record["Id"].startswith("00Q")


def test_batch_size_header_changes_page_size(sf: Salesforce) -> None:
    page = sf.query("SELECT Id FROM Lead", headers={"Sforce-Query-Options": "batchSize=200"})
    assert len(page["records"]) == 200 and page["totalSize"] == N - 5
    assert page["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    assert page["nextRecordsUrl"].endswith("-200")


def test_keyset_cursor_survives_thousands_of_shared_stamps(server: SalesforceServer, sf: Salesforce) -> None:
    stamp, last_id = "2000-01-01T00:00:00.000+00:00", ""
    seen: list[str] = []
    pages = 0
    while True:
        soql = ("SELECT Id, SystemModstamp FROM Lead WHERE SystemModstamp > {ts} OR "
                "(SystemModstamp = {ts} AND Id > '{id}') ORDER BY SystemModstamp, Id LIMIT 2000")
        rows = sf.query(soql.format(ts=stamp, id=last_id))["records"]
        if not rows:
            break
        pages += 1
        seen.extend(r["Id"] for r in rows)
        stamp = rows[-1]["SystemModstamp"].replace("+0000", "Z")
        last_id = rows[-1]["Id"]
    assert len(seen) == len(set(seen)) == N - 5
    assert pages == 5


def test_inclusive_window_counts(sf: Salesforce) -> None:
    start = encode_datetime(T0 + timedelta(minutes=5)).replace("+0000", "+00:00")
    end = encode_datetime(T0 + timedelta(minutes=10)).replace("+0000", "Z")
    both = sf.query(f"SELECT COUNT() FROM Lead WHERE SystemModstamp >= {start} AND SystemModstamp < {end}")
    assert both["totalSize"] == 3000  # the re-titled leads share the +5 min stamp
    before = sf.query(f"SELECT COUNT() FROM Lead WHERE SystemModstamp < {start}")
    assert before["totalSize"] == N - 5 - 3000
    later = sf.query(f"SELECT COUNT() FROM Lead WHERE SystemModstamp >= {end}")
    assert later["totalSize"] == 0  # the five deleted ones are only visible to queryAll
    later_all = sf.query_all(f"SELECT Id FROM Lead WHERE SystemModstamp >= {end}", include_deleted=True)
    assert later_all["totalSize"] == 5
    # SOQL ignores the fraction of a second (stamps are whole seconds): .001 after the stamp still
    # matches it.
    after = "2024-05-01T10:05:00.001Z"
    assert sf.query(f"SELECT COUNT() FROM Lead WHERE SystemModstamp >= {after}")["totalSize"] == 3000


def test_query_hides_deleted_and_query_all_shows_them(sf: Salesforce) -> None:
    soql = "SELECT Id, IsDeleted FROM Lead WHERE IsDeleted = true"
    assert sf.query(soql)["totalSize"] == 0
    deleted = sf.query_all(soql, include_deleted=True)["records"]
    assert len(deleted) == 5 and all(r["IsDeleted"] is True for r in deleted)
    assert sf.query_all("SELECT Id FROM Lead", include_deleted=True)["totalSize"] == N


def test_query_locator_unknown_is_rejected(server: SalesforceServer, sf: Salesforce) -> None:
    session = sf.session
    response = session.get(f"{server.instance_url}/services/data/v59.0/query/01gXX0000000000AAA-2000",
                           headers={"Authorization": f"Bearer {server.session_id}"})
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_every_response_has_simulated_date_and_limit_info(server: SalesforceServer) -> None:
    session = requests.Session()
    session.trust_env = False
    session.verify = server.ca_bundle
    ok = session.get(f"{server.instance_url}/services/data/v59.0/limits/",
                     headers={"Authorization": f"Bearer {server.session_id}"})
    assert ok.status_code == 200
    assert ok.headers["Date"] == "Wed, 01 May 2024 10:10:00 GMT"
    assert ok.headers["Sforce-Limit-Info"].startswith("api-usage=")
    assert ok.json()["DailyApiRequests"]["Max"] == 1_000_000
    bad = session.get(f"{server.instance_url}/services/data/v59.0/limits/")
    assert bad.status_code == 401
    assert bad.headers["Date"] == "Wed, 01 May 2024 10:10:00 GMT"
    assert "Sforce-Limit-Info" in bad.headers


def test_deleted_and_updated_replication_endpoints(sf: Salesforce) -> None:
    start, end = T0, T0 + timedelta(hours=1)
    deleted = sf.Lead.deleted(start, end)
    assert len(deleted["deletedRecords"]) == 5
    assert {r["deletedDate"] for r in deleted["deletedRecords"]} == {"2024-05-01T10:10:00.000+0000"}
    updated = sf.Lead.updated(T0 + timedelta(minutes=5), end)
    assert len(updated["ids"]) == 3000


def test_parallel_clients_each_page_consistently(server: SalesforceServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def read_all(_: int) -> int:
        client = direct_client(server)
        return len({r["Id"] for r in client.query_all_iter("SELECT Id FROM Lead WHERE Title = 'CTO'")})

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(read_all, range(4))) == [3000] * 4


def test_queues_users_and_campaigns_are_queryable(server: SalesforceServer, sf: Salesforce) -> None:
    queues = sf.query("SELECT Id, Name, DeveloperName FROM Group WHERE Type = 'Queue'")["records"]
    assert [(q["Name"], q["DeveloperName"]) for q in queues] == [("SDR Queue", "SDR_Queue")]
    assert queues[0]["Id"] == server.store.id_for("queue", "Q01")
    users = sf.query("SELECT Id, Username, Email FROM User WHERE IsActive = true ORDER BY Username")["records"]
    assert [u["Email"] for u in users] == ["ann@acme.example", "integration@acme.example"]
    campaigns = sf.query("SELECT Id, Name FROM Campaign")["records"]
    assert [c["Name"] for c in campaigns] == ["Spring Webinar"]
