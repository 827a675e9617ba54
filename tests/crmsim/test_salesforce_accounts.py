"""The simulated org's Account through the real client: describe, SOQL, Collections errors, conversion."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from crmsim.model import Company
from crmsim.salesforce.accounts import website
from crmsim.salesforce.server import SalesforceServer
from crmsim.salesforce.testing import direct_client, person, seeded_server


def _company(i: int) -> Company:
    return Company(key=f"C{i:04d}", name=f"Company {i}", domain=f"company{i}.example", industry="Technology",
                   employees=120, annual_revenue=5_000_000.0, country="US")


@pytest.fixture(scope="module")
def server() -> Iterator[SalesforceServer]:
    srv = seeded_server(0)
    with srv.store.lock:
        for i in range(5):
            srv.store.put_company(_company(i))
        for i in range(10):
            srv.store.put_person(person(i, company_key=f"C{i % 5:04d}"))
    yield srv
    srv.stop()


@pytest.fixture()
def sf(server: SalesforceServer) -> Salesforce:
    return direct_client(server)


def _account(server: SalesforceServer, i: int) -> str:
    account_id = server.store.id_for("company", f"C{i:04d}")
    assert account_id is not None and account_id.startswith("001")
    return account_id


def test_describe_and_query_accounts(server: SalesforceServer, sf: Salesforce) -> None:
    fields = {f["name"]: f for f in sf.Account.describe()["fields"]}
    assert fields["Website"]["type"] == "url" and fields["Website"]["length"] == 255
    assert fields["Name"]["nillable"] is False and fields["Name"]["length"] == 255
    assert fields["Account_Lead_Score__c"]["type"] == "double" and fields["Account_Lead_Score__c"]["precision"] == 2
    assert fields["Account_Engaged_People__c"]["custom"] is True
    found = sf.query("SELECT Id, Name, Website FROM Account WHERE Name IN ('Company 1', 'Company 3') ORDER BY Name")
    assert [r["Name"] for r in found["records"]] == ["Company 1", "Company 3"]
    assert found["records"][0]["Website"] == website(_company(1))
    assert found["records"][0]["Id"] == _account(server, 1)
    like = sf.query("SELECT Id FROM Account WHERE Website LIKE '%company2.example%'")
    assert [r["Id"] for r in like["records"]] == [_account(server, 2)]


def test_collections_update_accounts_with_per_record_errors(server: SalesforceServer, sf: Salesforce) -> None:
    good, other = _account(server, 0), _account(server, 4)
    lead_id = server.store.crm_id("P000001")
    records = [
        {"attributes": {"type": "Account"}, "id": good, "Account_Lead_Score__c": 87, "Account_Engaged_People__c": 3},
        {"attributes": {"type": "Account"}, "id": other, "Account_Lead_Score__c": 100},
        {"attributes": {"type": "Account"}, "id": other, "Bogus__c": 1},
        {"attributes": {"type": "Account"}, "id": lead_id, "Account_Lead_Score__c": 5},
        {"attributes": {"type": "Account"}, "id": other, "Website": "x" * 256},
    ]
    result = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records})
    codes = [r["errors"][0]["statusCode"] if not r["success"] else "ok" for r in result]
    assert codes == ["ok", "NUMBER_OUTSIDE_VALID_RANGE", "INVALID_FIELD", "MALFORMED_ID", "STRING_TOO_LONG"]
    row = sf.Account.get(good)
    assert row["Account_Lead_Score__c"] == 87.0 and row["Account_Engaged_People__c"] == 3.0
    assert sf.Account.get(other)["Account_Lead_Score__c"] is None


def test_account_fields_exist_only_once_created(server: SalesforceServer, sf: Salesforce) -> None:
    server.store.custom_fields_present = False
    try:
        names = {f["name"] for f in sf.Account.describe()["fields"]}
        assert "Account_Lead_Score__c" not in names and "Name" in names
        with pytest.raises(SalesforceMalformedRequest) as info:
            sf.Account.update(_account(server, 1), {"Account_Lead_Score__c": 40})
        assert info.value.content[0]["errorCode"] == "INVALID_FIELD"
        with pytest.raises(SalesforceMalformedRequest) as query:
            sf.query("SELECT Id, Account_Lead_Score__c FROM Account")
        assert query.value.content[0]["errorCode"] == "INVALID_FIELD"
    finally:
        server.store.custom_fields_present = True


def test_required_name_and_conversion_links_the_contact_to_the_account(server: SalesforceServer,
                                                                       sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Account.create({"Website": "acme.example"})
    assert info.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    lead_id = server.store.crm_id("P000007")
    assert lead_id is not None
    server.store.convert_lead(lead_id)
    lead = sf.Lead.get(lead_id)
    contact = sf.Contact.get(lead["ConvertedContactId"])
    assert contact["AccountId"] == _account(server, 2) == lead["ConvertedAccountId"]
    rows = sf.query(f"SELECT AccountId, Account.Name FROM Contact WHERE Email = '{lead['Email']}'")["records"]
    assert rows[0]["Account"]["Name"] == "Company 2"
