"""crmsim's Bulk API 2.0 query jobs through simple-salesforce's own Bulk 2.0 client, and the
(SystemModstamp, Id) index behind keyset queries (same rows as a full scan, writes included)."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

from crmsim.salesforce.selection import StampIndex, select_values
from crmsim.salesforce.server import SalesforceServer
from crmsim.salesforce.soql import compile_query
from crmsim.salesforce.testing import credentials_client, person, seeded_server


@pytest.fixture(scope="module")
def server() -> Iterator[SalesforceServer]:
    srv = seeded_server(25)
    srv.clock.advance(timedelta(minutes=1))
    srv.store.delete_person("P000024")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sf(server: SalesforceServer) -> Salesforce:
    return credentials_client(server)


def _jobs(sf: Salesforce) -> Any:
    return sf.bulk2.Lead._client


def test_query_job_pages_csv_with_locators(server: SalesforceServer, sf: Salesforce) -> None:
    server.reset_counts()
    pages = list(sf.bulk2.Lead.query_all("SELECT Id, IsDeleted, AnnualRevenue, NumberOfEmployees, CreatedDate, "
                                         "Owner.Name FROM Lead", max_records=10, wait=0.001))
    assert len(pages) == 3  # 25 leads (one deleted: queryAll) in pages of 10
    rows = [row for page in pages for row in csv.DictReader(io.StringIO(page))]
    assert len(rows) == 25 and len({r["Id"] for r in rows}) == 25
    assert pages[0].splitlines()[0] == '"Id","IsDeleted","AnnualRevenue","NumberOfEmployees","CreatedDate","Owner.Name"'
    first = rows[0]
    assert (first["IsDeleted"], first["AnnualRevenue"], first["NumberOfEmployees"]) == ("false", "5000000.0", "120")
    assert first["CreatedDate"] == "2024-05-01T10:00:00.000Z" and first["Owner.Name"] == "Ann Owner"
    assert sum(r["IsDeleted"] == "true" for r in rows) == 1
    counts = server.call_counts()
    # Created once, polled until JobComplete (the first poll finds it InProgress), three pages.
    assert counts["POST jobs/query"] == 1 and counts["GET jobs/query/{id}"] == 2
    assert counts["GET jobs/query/{id}/results"] == 3


def test_job_states_headers_and_results_before_completion(server: SalesforceServer, sf: Salesforce) -> None:
    jobs = _jobs(sf)
    job = jobs.create_job("query", "SELECT Id FROM Lead", line_ending="CRLF")
    assert job["state"] == "UploadComplete" and job["jobType"] == "V2Query" and job["lineEnding"] == "CRLF"
    with pytest.raises(SalesforceMalformedRequest) as early:
        jobs.get_query_results(job["id"])
    assert early.value.content[0]["errorCode"] == "API_ERROR"
    assert jobs.get_job(job["id"], True)["state"] == "InProgress"
    done = jobs.get_job(job["id"], True)
    assert done["state"] == "JobComplete" and done["numberRecordsProcessed"] == 24  # query: not the deleted one
    page = jobs.get_query_results(job["id"], max_records=20)
    assert page["number_of_records"] == 20 and page["locator"]
    assert page["records"].count("\r\n") == 21  # header + 20 rows, CRLF as asked
    rest = jobs.get_query_results(job["id"], locator=page["locator"], max_records=20)
    assert rest["number_of_records"] == 4 and rest["locator"] == ""  # "null" on the last page
    response = sf.session.get(f"{sf.bulk2_url}query/{job['id']}/results", params={"maxRecords": 30},
                              headers={"Authorization": f"Bearer {sf.session_id}"})
    assert response.headers["Sforce-Locator"] == "null" and response.headers["Sforce-NumberOfRecords"] == "24"
    assert response.headers["Content-Type"].startswith("text/csv")


@pytest.mark.parametrize(("soql", "code"), [
    ("SELECT COUNT() FROM Lead", "API_ERROR"),
    ("SELECT Id FROM Lead LIMIT 5 OFFSET 2", "API_ERROR"),
    ("SELECT Id, (SELECT Id FROM Tasks) FROM Lead", "API_ERROR"),
    ("SELECT Nope FROM Lead", "INVALID_FIELD"),
    ("SELECT Id FROM Leed", "INVALID_TYPE"),
    ("SELECT Id FROM Lead WHERE", "MALFORMED_QUERY"),
])
def test_refused_queries(sf: Salesforce, soql: str, code: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as refused:
        _jobs(sf).create_job("query", soql)
    assert refused.value.status == 400 and refused.value.content[0]["errorCode"] == code


def test_unknown_job_abort_and_delete(sf: Salesforce) -> None:
    jobs = _jobs(sf)
    with pytest.raises(SalesforceResourceNotFound):
        jobs.get_job("750000000000000AAA", True)
    job = jobs.create_job("query", "SELECT Id FROM Lead")
    assert jobs.abort_job(job["id"], True)["state"] == "Aborted"
    with pytest.raises(SalesforceMalformedRequest):
        jobs.get_query_results(job["id"])  # an aborted job has no results
    response = sf.session.delete(f"{sf.bulk2_url}query/{job['id']}",
                                 headers={"Authorization": f"Bearer {sf.session_id}"})
    assert response.status_code == 204
    with pytest.raises(SalesforceResourceNotFound):
        jobs.get_job(job["id"], True)


def test_failed_jobs_from_the_fault_plan(server: SalesforceServer, sf: Salesforce) -> None:
    server.faults.plan.bulk_job_fail = 1.0
    try:
        jobs = _jobs(sf)
        job = jobs.create_job("queryAll", "SELECT Id FROM Lead")
        jobs.get_job(job["id"], True)
        failed = jobs.get_job(job["id"], True)
        assert failed["state"] == "Failed" and failed["errorMessage"]
    finally:
        server.faults.plan.bulk_job_fail = 0.0


def _scan(server: SalesforceServer, soql: str) -> list[str]:
    """The rows of ``soql`` by a plain scan of every record (the reference for the index)."""
    store = server.store
    compiled = compile_query(soql, store.fields, lambda record_id: None)
    compiled.stamp_range, compiled.keyset_order = (None, None), False
    return [v["Id"] for v in select_values(compiled, store.records["Lead"], StampIndex(), include_deleted=True)]


def test_stamp_index_selects_what_a_scan_selects_through_writes() -> None:
    srv = seeded_server(300)
    try:
        rng = random.Random(5)
        store = srv.store
        for _ in range(6):
            srv.clock.advance(timedelta(seconds=rng.choice([0, 1, 30])))
            for i in rng.sample(range(300), 40):
                store.put_person(person(i, title=f"T{rng.random()}"))
            with store.atomic() as rollback:  # writes undone again: the index must follow
                store.put_person(person(rng.randrange(300), title="rolled back"))
                rollback()
            stamps = sorted({r.values["SystemModstamp"] for r in store.records["Lead"].values()})
            pivot = rng.choice(stamps).strftime("%Y-%m-%dT%H:%M:%SZ")
            after = sorted(store.records["Lead"])[rng.randrange(300)]
            for soql in (
                f"SELECT Id FROM Lead WHERE (SystemModstamp > {pivot} OR (SystemModstamp = {pivot} AND "
                f"Id > '{after}')) ORDER BY SystemModstamp ASC, Id ASC LIMIT 37",
                f"SELECT Id FROM Lead WHERE SystemModstamp >= {pivot} AND Title != null ORDER BY Id DESC",
                f"SELECT Id FROM Lead WHERE SystemModstamp < {pivot} ORDER BY SystemModstamp, Id",
                f"SELECT Id FROM Lead WHERE SystemModstamp = {pivot} OR Title = 'VP Sales'",
            ):
                with store.lock:
                    compiled = compile_query(soql, store.fields, lambda record_id: None)
                    indexed = [v["Id"] for v in select_values(compiled, store.records["Lead"], store.stamp_index,
                                                              include_deleted=True)]
                    assert indexed == _scan(srv, soql), soql
    finally:
        srv.stop()
