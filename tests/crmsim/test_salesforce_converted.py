"""Converted Leads refuse what real Salesforce refuses: updates and references (CANNOT_UPDATE_CONVERTED_LEAD).

Shapes as Salesforce answers them (help.salesforce.com 000384333; simple-salesforce issue #341):
single PATCH -> 400 ``[{"errorCode": "CANNOT_UPDATE_CONVERTED_LEAD", "message": "cannot reference
converted lead", "fields": []}]``; inside sObject Collections and Composite -> a per-record
``errors[].statusCode``. Orgs with "View and Edit Converted Leads" accept them (``converted_lead_edit``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

from crmsim.salesforce.server import SalesforceServer
from crmsim.salesforce.testing import T0, direct_client, person, seeded_server

CODE = "CANNOT_UPDATE_CONVERTED_LEAD"


@pytest.fixture()
def server() -> Iterator[SalesforceServer]:
    srv = seeded_server(20)
    # P000100 converted an hour ago; P000101 still open.
    srv.store.put_person(person(100, converted_at=T0 - timedelta(hours=1), status="Closed - Converted"))
    srv.store.put_person(person(101))
    yield srv
    srv.stop()


@pytest.fixture()
def sf(server: SalesforceServer) -> Salesforce:
    return direct_client(server)


def _ids(server: SalesforceServer) -> tuple[str, str]:
    converted, open_ = server.store.crm_id("P000100"), server.store.crm_id("P000101")
    assert converted is not None and open_ is not None
    return converted, open_


def test_single_patch_of_a_converted_lead_is_refused(server: SalesforceServer, sf: Salesforce) -> None:
    converted, open_ = _ids(server)
    assert sf.Lead.get(converted)["IsConverted"] is True
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.Lead.update(converted, {"Lead_Score__c": 90, "Lead_Tier__c": "A"})
    assert info.value.status == 400
    assert info.value.content == [{"errorCode": CODE, "message": "cannot reference converted lead", "fields": []}]
    assert sf.Lead.get(converted)["Lead_Score__c"] is None  # nothing written
    assert sf.Lead.update(open_, {"Lead_Score__c": 90}) == 204


def test_collections_and_composite_refuse_per_record(server: SalesforceServer, sf: Salesforce) -> None:
    converted, open_ = _ids(server)
    records = [{"attributes": {"type": "Lead"}, "id": lead, "Lead_Score__c": 70} for lead in (open_, converted)]
    results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records})
    assert [r["success"] for r in results] == [True, False]
    assert results[1]["errors"][0]["statusCode"] == CODE
    composite = sf.restful("composite", method="POST", json={"allOrNone": False, "compositeRequest": [{
        "method": "PATCH", "url": "/services/data/v59.0/composite/sobjects", "referenceId": "chunk0",
        "body": {"allOrNone": False, "records": [dict(r, Lead_Score__c=71) for r in records]}}]})
    body = composite["compositeResponse"][0]["body"]
    assert [r["success"] for r in body] == [True, False] and body[1]["errors"][0]["statusCode"] == CODE
    assert sf.Lead.get(open_)["Lead_Score__c"] == 71.0 and sf.Lead.get(converted)["Lead_Score__c"] is None


def test_task_and_campaign_member_cannot_reference_a_converted_lead(server: SalesforceServer,
                                                                    sf: Salesforce) -> None:
    converted, open_ = _ids(server)
    campaign_id = server.store.id_for("campaign", "K001")
    with pytest.raises(SalesforceMalformedRequest) as task:
        sf.Task.create({"WhoId": converted, "Subject": "Hot lead: call", "Status": "Not Started"})
    assert task.value.content[0]["errorCode"] == CODE
    with pytest.raises(SalesforceMalformedRequest) as member:
        sf.CampaignMember.create({"CampaignId": campaign_id, "LeadId": converted, "Status": "Sent"})
    assert member.value.content[0]["errorCode"] == CODE
    created = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Task"}, "WhoId": lead, "Subject": "Hot lead: call"} for lead in (open_, converted)]})
    assert [r["success"] for r in created] == [True, False] and created[1]["errors"][0]["statusCode"] == CODE
    assert sf.Task.create({"WhoId": open_, "Subject": "Hot lead: call"})["success"] is True


def test_view_and_edit_converted_leads_permission_allows_it(server: SalesforceServer, sf: Salesforce) -> None:
    converted, _ = _ids(server)
    server.store.converted_lead_edit = True
    assert sf.Lead.update(converted, {"Lead_Score__c": 90}) == 204
    assert sf.Task.create({"WhoId": converted, "Subject": "Follow up"})["success"] is True


def test_deleted_lead_answers_entity_is_deleted(server: SalesforceServer, sf: Salesforce) -> None:
    _, open_ = _ids(server)
    server.store.delete_person("P000101")
    with pytest.raises(SalesforceResourceNotFound) as info:
        sf.Lead.update(open_, {"Lead_Score__c": 1})
    assert info.value.content[0]["errorCode"] == "ENTITY_IS_DELETED"
    results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Lead"}, "id": open_, "Lead_Score__c": 2}]})
    assert results[0]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
