"""Writes through the real client: sObjects, Collections, Composite, stamps and the write log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

from crmsim.faults import FaultPlan
from crmsim.salesforce.server import SalesforceServer
from crmsim.salesforce.store import AssignmentRule
from crmsim.salesforce.testing import direct_client, seeded_server

N = 1200


@pytest.fixture()
def server() -> Iterator[SalesforceServer]:
    srv = seeded_server(N)
    yield srv
    srv.stop()


@pytest.fixture()
def sf(server: SalesforceServer) -> Salesforce:
    return direct_client(server)


def _lead(server: SalesforceServer, i: int) -> str:
    lead_id = server.store.crm_id(f"P{i:06d}")
    assert lead_id is not None
    return lead_id


def _stamp(sf: Salesforce, lead_id: str) -> str:
    return sf.Lead.get(lead_id)["SystemModstamp"]


def test_every_update_bumps_the_stamps_even_when_nothing_changed(server: SalesforceServer, sf: Salesforce) -> None:
    lead_id = _lead(server, 3)
    before = _stamp(sf, lead_id)
    server.clock.advance(timedelta(seconds=90))
    assert sf.Lead.update(lead_id, {"Lead_Score__c": 87, "Lead_Tier__c": "A"}) == 204
    after = sf.Lead.get(lead_id)
    assert after["SystemModstamp"] == "2024-05-01T10:01:30.000+0000" != before
    assert after["LastModifiedDate"] == after["SystemModstamp"]
    assert after["Lead_Score__c"] == 87.0 and after["Lead_Tier__c"] == "A"
    server.clock.advance(timedelta(seconds=90))
    sf.Lead.update(lead_id, {"Lead_Score__c": 86.5})  # Number(3,0): rounded half up, so unchanged
    # An update DML bumps LastModifiedDate/SystemModstamp even when no value changed (Salesforce).
    assert _stamp(sf, lead_id) == "2024-05-01T10:03:00.000+0000"
    assert sf.Lead.get(lead_id)["LastModifiedDate"] == "2024-05-01T10:03:00.000+0000"
    api_writes = [w for w in server.store.write_log if w["source"] == "api"]
    assert [w["fields"] for w in api_writes] == [["Lead_Score__c", "Lead_Tier__c"], []]
    assert server.store.write_counts["noop"] >= 1


def test_single_record_validation_errors(server: SalesforceServer, sf: Salesforce) -> None:
    lead_id = _lead(server, 4)
    cases = [
        ({"OwnerId": "005000000000000AAA"}, "INVALID_CROSS_REFERENCE_KEY"),
        ({"Lead_Tier__c": "E"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ({"Lead_Score__c": 1000}, "NUMBER_OUTSIDE_VALID_RANGE"),
        ({"Lead_Score__c": "high"}, "JSON_PARSER_ERROR"),
        ({"Lead_Score_Reasons__c": "x" * 256}, "STRING_TOO_LONG"),
        ({"SystemModstamp": "2024-01-01T00:00:00Z"}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
        ({"Bogus__c": 1}, "INVALID_FIELD"),
    ]
    for body, code in cases:
        with pytest.raises(SalesforceMalformedRequest) as info:
            sf.Lead.update(lead_id, body)
        assert info.value.content[0]["errorCode"] == code, body
    queue_id = server.store.id_for("queue", "Q01")
    assert sf.Lead.update(lead_id, {"OwnerId": queue_id}) == 204
    assert sf.Lead.get(lead_id)["OwnerId"] == queue_id
    sf.Lead.delete(lead_id)
    with pytest.raises(SalesforceResourceNotFound) as deleted:
        sf.Lead.update(lead_id, {"Lead_Score__c": 1})
    assert deleted.value.content[0]["errorCode"] == "ENTITY_IS_DELETED"


def test_create_task_and_campaign_member(server: SalesforceServer, sf: Salesforce) -> None:
    lead_id = _lead(server, 5)
    campaign_id = server.store.id_for("campaign", "K001")
    created = sf.Task.create({"WhoId": lead_id, "Subject": "Call hot lead", "Priority": "High",
                              "Status": "Not Started", "ActivityDate": "2024-05-02"})
    assert created["success"] is True and created["id"].startswith("00T")
    task = sf.Task.get(created["id"])
    assert task["WhoId"] == lead_id and task["ActivityDate"] == "2024-05-02" and task["IsClosed"] is False
    member = sf.CampaignMember.create({"CampaignId": campaign_id, "LeadId": lead_id, "Status": "Sent"})
    assert member["id"].startswith("00v")
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.CampaignMember.create({"CampaignId": campaign_id, "LeadId": lead_id, "Status": "Sent"})
    assert info.value.content[0]["errorCode"] == "DUPLICATE_VALUE"
    with pytest.raises(SalesforceMalformedRequest) as missing:
        sf.Lead.create({"FirstName": "No", "Company": "Acme"})
    assert missing.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"


def test_auto_assign_rule_applies_unless_header_false(server: SalesforceServer, sf: Salesforce) -> None:
    queue_id = server.store.id_for("queue", "Q01")
    assert queue_id is not None
    server.store.assignment_rules.append(AssignmentRule("Lead_Score__c", 80, queue_id))
    hot, cold, opted_out = _lead(server, 6), _lead(server, 7), _lead(server, 8)
    sf.Lead.update(hot, {"Lead_Score__c": 91})
    sf.Lead.update(cold, {"Lead_Score__c": 40})
    sf.Lead.update(opted_out, {"Lead_Score__c": 95}, headers={"Sforce-Auto-Assign": "FALSE"})
    assert sf.Lead.get(hot)["OwnerId"] == queue_id
    assert sf.Lead.get(cold)["OwnerId"] != queue_id
    assert sf.Lead.get(opted_out)["OwnerId"] != queue_id
    assert server.auto_assign_headers == [None, None, "FALSE"]


def test_collections_partial_failure(server: SalesforceServer, sf: Salesforce) -> None:
    good, deleted = _lead(server, 10), _lead(server, 11)
    server.store.delete_person("P000011")
    records = [
        {"attributes": {"type": "Lead"}, "id": good, "Lead_Score__c": 55},
        {"attributes": {"type": "Lead"}, "id": deleted, "Lead_Score__c": 56},
        {"attributes": {"type": "Lead"}, "id": "001xx000003DGb2999", "Lead_Score__c": 57},
        {"attributes": {"type": "Lead"}, "id": "00Q" + good[3:14] + "9999", "Lead_Score__c": 58},
    ]
    results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records})
    assert results[0] == {"id": good, "success": True, "errors": []}
    assert [r["success"] for r in results] == [True, False, False, False]
    assert results[1]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    assert results[2]["errors"][0]["statusCode"] == "MALFORMED_ID"
    assert results[3]["errors"][0]["statusCode"] in ("MALFORMED_ID", "INVALID_CROSS_REFERENCE_KEY")
    assert sf.Lead.get(good)["Lead_Score__c"] == 55.0


def test_collections_all_or_none_rolls_back(server: SalesforceServer, sf: Salesforce) -> None:
    first, second = _lead(server, 12), _lead(server, 13)
    before = len(server.store.write_log)
    stamp = _stamp(sf, first)
    server.clock.advance(timedelta(seconds=1))
    results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Lead"}, "id": first, "Lead_Score__c": 70},
        {"attributes": {"type": "Lead"}, "id": second, "Lead_Tier__c": "Z"},
    ]})
    assert [r["success"] for r in results] == [False, False]
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[1]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert sf.Lead.get(first)["Lead_Score__c"] is None
    assert _stamp(sf, first) == stamp
    assert len(server.store.write_log) == before


def test_collections_limits_and_missing_custom_fields(server: SalesforceServer, sf: Salesforce) -> None:
    too_many = [{"attributes": {"type": "Lead"}, "id": _lead(server, 0), "Lead_Score__c": 1}] * 201
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": too_many})
    assert info.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    server.store.custom_fields_present = False
    results = sf.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Lead"}, "id": _lead(server, 1), "Lead_Score__c": 10}]})
    assert results[0]["errors"][0]["statusCode"] == "INVALID_FIELD"


def test_record_fail_fault_gives_retriable_lock_errors(server: SalesforceServer, sf: Salesforce) -> None:
    server.faults.set_plan(FaultPlan(record_fail=0.5), seed=3)
    records = [{"attributes": {"type": "Lead"}, "id": _lead(server, i), "Lead_Score__c": 20} for i in range(100)]
    results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records})
    failed = [r for r in results if not r["success"]]
    assert 20 < len(failed) < 80
    assert {r["errors"][0]["statusCode"] for r in failed} == {"UNABLE_TO_LOCK_ROW"}
    assert server.faults.injected["record_fail"] == len(failed)
    updated = sf.query("SELECT COUNT() FROM Lead WHERE Lead_Score__c = 20")["totalSize"]
    assert updated == 100 - len(failed)


def test_composite_of_five_collections_is_one_api_call(server: SalesforceServer, sf: Salesforce) -> None:
    server.reset_counts()
    subrequests = []
    for chunk in range(5):
        records = [{"attributes": {"type": "Lead"}, "id": _lead(server, chunk * 200 + i),
                    "Lead_Score__c": (chunk * 200 + i) % 100} for i in range(200)]
        subrequests.append({"method": "PATCH", "url": "/services/data/v59.0/composite/sobjects",
                            "referenceId": f"chunk{chunk}", "body": {"allOrNone": False, "records": records}})
    result = sf.restful("composite", method="POST", json={"allOrNone": False, "compositeRequest": subrequests})
    responses = result["compositeResponse"]
    assert [r["referenceId"] for r in responses] == [f"chunk{i}" for i in range(5)]
    assert all(r["httpStatusCode"] == 200 and len(r["body"]) == 200 for r in responses)
    assert all(item["success"] for r in responses for item in r["body"])
    assert server.api_calls == 1
    assert server.call_counts()["POST composite"] == 1
    assert sf.api_usage["api-usage"].used == 1
    scored = sf.query("SELECT COUNT() FROM Lead WHERE Lead_Score__c != null")["totalSize"]
    assert scored == 1000  # a score of 0 is a value, not null
    assert sf.query("SELECT COUNT() FROM Lead WHERE Lead_Score__c = null")["totalSize"] == N - 1000


def test_composite_rejects_six_heavy_subrequests_and_chains_references(server: SalesforceServer,
                                                                      sf: Salesforce) -> None:
    heavy = [{"method": "GET", "url": "/services/data/v59.0/query?q=SELECT+Id+FROM+Lead+LIMIT+1",
              "referenceId": f"q{i}"} for i in range(6)]
    with pytest.raises(SalesforceMalformedRequest):
        sf.restful("composite", method="POST", json={"compositeRequest": heavy})
    result = sf.restful("composite", method="POST", json={"allOrNone": True, "compositeRequest": [
        {"method": "GET", "url": "/services/data/v59.0/query?q=SELECT+Id+FROM+Lead+ORDER+BY+Id+LIMIT+1",
         "referenceId": "first"},
        {"method": "PATCH", "url": "/services/data/v59.0/sobjects/Lead/@{first.records[0].Id}",
         "referenceId": "score", "body": {"Lead_Score__c": 99}},
        {"method": "PATCH", "url": "/services/data/v59.0/sobjects/Lead/@{first.records[0].Id}",
         "referenceId": "bad", "body": {"Lead_Tier__c": "Q"}},
    ]})
    statuses = [r["httpStatusCode"] for r in result["compositeResponse"]]
    assert statuses == [400, 400, 400]
    assert result["compositeResponse"][0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert result["compositeResponse"][2]["body"][0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    first_id = sf.query("SELECT Id FROM Lead ORDER BY Id LIMIT 1")["records"][0]["Id"]
    assert sf.Lead.get(first_id)["Lead_Score__c"] is None  # rolled back


def test_describe_with_and_without_custom_fields(server: SalesforceServer, sf: Salesforce) -> None:
    fields = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    assert fields["Lead_Score__c"]["custom"] is True and fields["Lead_Score__c"]["type"] == "double"
    assert [p["value"] for p in fields["Lead_Tier__c"]["picklistValues"]] == ["A", "B", "C", "D"]
    assert fields["Lead_Score_Reasons__c"]["length"] == 255 and fields["Id"]["updateable"] is False
    server.store.custom_fields_present = False
    names = {f["name"] for f in sf.Lead.describe()["fields"]}
    assert not {n for n in names if n.endswith("__c")}
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query("SELECT Id, Lead_Score__c FROM Lead")
    assert "No such column 'Lead_Score__c' on entity 'Lead'" in info.value.content[0]["message"]
    with pytest.raises(SalesforceMalformedRequest):
        sf.Lead.update(_lead(server, 0), {"Lead_Score__c": 10})
    assert {o["name"] for o in sf.describe()["sobjects"]} >= {"Lead", "Task", "Event", "CampaignMember"}


def test_collections_create_tasks_and_members(server: SalesforceServer, sf: Salesforce) -> None:
    campaign_id = server.store.id_for("campaign", "K001")
    lead_a, lead_b = _lead(server, 20), _lead(server, 21)
    records = [
        {"attributes": {"type": "Task"}, "WhoId": lead_a, "Subject": "Call hot lead", "Priority": "High"},
        {"attributes": {"type": "CampaignMember"}, "CampaignId": campaign_id, "LeadId": lead_a},
        {"attributes": {"type": "CampaignMember"}, "CampaignId": campaign_id, "LeadId": lead_a},
        {"attributes": {"type": "CampaignMember"}, "CampaignId": campaign_id, "LeadId": lead_b, "Status": "Responded"},
        {"attributes": {"type": "Task"}, "WhoId": "00Q000000000000AAA"},
    ]
    results = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": records})
    assert [r["success"] for r in results] == [True, True, False, True, False]
    assert results[0]["id"].startswith("00T") and results[1]["id"].startswith("00v")
    assert results[2]["errors"][0]["statusCode"] == "DUPLICATE_VALUE"
    assert results[4]["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    member = sf.CampaignMember.get(results[3]["id"])
    assert member["HasResponded"] is True and member["FirstRespondedDate"] == "2024-05-01"
    assert sf.Task.get(results[0]["id"])["OwnerId"] == server.store.default_user_id
    # All-or-none create leaves nothing behind, not even the membership.
    lead_c = _lead(server, 22)
    rolled = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": [
        {"attributes": {"type": "CampaignMember"}, "CampaignId": campaign_id, "LeadId": lead_c},
        {"attributes": {"type": "Task"}, "WhoId": lead_c, "Priority": "Urgent-ish" * 40},
    ]})
    assert [r["success"] for r in rolled] == [False, False]
    again = sf.CampaignMember.create({"CampaignId": campaign_id, "LeadId": lead_c})
    assert again["success"] is True
