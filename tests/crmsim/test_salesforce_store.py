"""Funnel projection onto Salesforce records (FunnelSink side of the store), without HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crmsim.model import ACTIVITY_TYPES, Activity, Campaign, Owner, SimClock
from crmsim.salesforce.store import (
    ACTIVITY_MAPPING,
    RecordError,
    SalesforceStore,
    UnknownEntity,
    ValidationRule,
    to18,
    well_formed_id,
)
from crmsim.salesforce.testing import T0, person


def _store(seed: int = 1) -> SalesforceStore:
    store = SalesforceStore(SimClock(T0), seed=seed)
    store.put_owner(Owner("U001", "Ann Owner", "ann@acme.example"))
    store.put_campaign(Campaign("K001", "Spring Webinar", "Webinar"))
    return store


def _values(store: SalesforceStore, record_id: str | None) -> dict:
    assert record_id is not None
    rec = store.get(record_id)
    assert rec is not None
    return rec.values


def test_ids_are_18_chars_deterministic_per_seed() -> None:
    a, b, c = _store(1), _store(1), _store(2)
    for store in (a, b, c):
        store.put_person(person(1))
    assert a.crm_id("P000001") == b.crm_id("P000001") != c.crm_id("P000001")
    lead_id = a.crm_id("P000001")
    assert lead_id is not None and len(lead_id) == 18 and lead_id.startswith("00Q") and well_formed_id(lead_id)
    assert to18(lead_id[:15]) == lead_id
    assert not well_formed_id(lead_id[:15] + "ZZZ")


def test_every_activity_type_maps_to_the_documented_object() -> None:
    store = _store()
    store.put_person(person(1))
    lead_id = store.crm_id("P000001")
    when = T0 + timedelta(hours=1, milliseconds=5, microseconds=900)
    assert set(ACTIVITY_MAPPING) == set(ACTIVITY_TYPES)
    for n, kind in enumerate(ACTIVITY_TYPES):
        store.put_activity(Activity(f"A{n}", "P000001", kind, when, detail="/pricing", campaign_key="K001"))
        values = _values(store, store.id_for("activity", f"A{n}"))
        sobject, subtype, type_, _label = ACTIVITY_MAPPING[kind]
        if sobject == "Task":
            assert values["WhoId"] == lead_id and values["TaskSubtype"] == subtype and values["Type"] == type_
            assert values["Status"] == "Completed" and values["Description"] == "/pricing"
            assert values["Subject"] == f"{type_}: /pricing"
            assert values["CreatedDate"] == datetime(2024, 5, 1, 11, 0, 0, tzinfo=UTC)  # whole seconds
        elif sobject == "Event":
            assert values["WhoId"] == lead_id and values["Type"] == type_
            assert values["StartDateTime"] == values["CreatedDate"]
        else:
            assert values["LeadId"] == lead_id and values["HasResponded"] is True
            assert values["Status"] == "Responded" and values["FirstRespondedDate"] == when.date()
    assert store.unmapped_activities == []


def test_campaign_membership_then_response_is_one_member() -> None:
    store = _store()
    store.put_person(person(1, campaign_key="K001"))
    assert len(store.records["CampaignMember"]) == 1
    member = next(iter(store.records["CampaignMember"].values()))
    assert member.values["Status"] == "Sent" and member.values["HasResponded"] is False
    store.put_activity(Activity("A1", "P000001", "campaign_response", T0, campaign_key="K001"))
    assert len(store.records["CampaignMember"]) == 1
    assert member.values["HasResponded"] is True and member.values["Status"] == "Responded"


def test_put_person_twice_writes_once_and_stamps_only_changes() -> None:
    store = _store()
    store.put_person(person(1))
    lead_id = store.crm_id("P000001")
    first = dict(_values(store, lead_id))
    store.clock.advance(timedelta(minutes=1))
    store.put_person(person(1))
    assert _values(store, lead_id)["SystemModstamp"] == first["SystemModstamp"]
    store.put_person(person(1, title="CEO"))
    changed = _values(store, lead_id)
    assert changed["SystemModstamp"] == T0 + timedelta(minutes=1) and changed["Title"] == "CEO"
    lead_writes = [w for w in store.write_log if w["id"] == lead_id]
    assert [w["fields"] for w in lead_writes][1:] == [["Title"]]


def test_conversion_is_visible_once_the_clock_passes_it() -> None:
    store = _store()
    later = T0 + timedelta(days=3)
    store.put_person(person(1, status="Converted", converted_at=later))
    values = _values(store, store.crm_id("P000001"))
    assert values["IsConverted"] is False and values["Status"] == "Qualified"
    store.clock.set(later)
    store.put_person(person(1, status="Converted", converted_at=later))
    values = _values(store, store.crm_id("P000001"))
    assert values["IsConverted"] is True and values["Status"] == "Closed - Converted"
    assert values["ConvertedDate"] == later.date()


def test_merge_deletes_loser_and_reparents_activities() -> None:
    store = _store()
    store.put_person(person(1))
    store.put_person(person(2))
    store.put_activity(Activity("A1", "P000002", "call", T0, detail="intro"))
    store.put_person(person(2, merged_into="P000001", deleted=True))
    loser = _values(store, store.crm_id("P000002"))
    assert loser["IsDeleted"] is True and loser["MasterRecordId"] == store.crm_id("P000001")
    assert _values(store, store.id_for("activity", "A1"))["WhoId"] == store.crm_id("P000001")


def test_delete_person_cascades_and_unknown_person_raises() -> None:
    store = _store()
    store.put_person(person(1))
    store.put_activity(Activity("A1", "P000001", "meeting", T0))
    store.delete_person("P000001")
    assert _values(store, store.crm_id("P000001"))["IsDeleted"] is True
    assert _values(store, store.id_for("activity", "A1"))["IsDeleted"] is True
    with pytest.raises(UnknownEntity):
        store.put_activity(Activity("A2", "P999999", "call", T0))
    with pytest.raises(ValueError, match="hubspot"):
        store.put_person(person(3, crm="hubspot"))


def test_data_quality_gaps_get_salesforce_placeholders() -> None:
    store = _store()
    store.put_person(person(1, last_name=None, company_name=None, owner_key="U404"))
    values = _values(store, store.crm_id("P000001"))
    assert values["LastName"] == "[not provided]" and values["Company"] == "[not provided]"
    assert values["OwnerId"] == store.default_user_id


def test_conversion_moves_tasks_and_events_to_a_new_contact() -> None:
    store = _store()
    store.put_person(person(1))
    lead_id = store.crm_id("P000001")
    store.put_activity(Activity("A1", "P000001", "call", T0 + timedelta(minutes=1)))
    store.put_activity(Activity("A2", "P000001", "meeting", T0 + timedelta(minutes=2)))
    task_id, event_id = store.id_for("activity", "A1"), store.id_for("activity", "A2")
    before = _values(store, task_id)["SystemModstamp"]
    store.clock.set(T0 + timedelta(days=1))
    store.put_person(person(1, status="Converted", converted_at=T0 + timedelta(hours=20)))
    lead = _values(store, lead_id)
    contact_id = lead["ConvertedContactId"]
    assert lead["IsConverted"] is True and contact_id.startswith("003")
    assert _values(store, contact_id)["LastName"] == "Last1"
    for moved in (task_id, event_id):
        assert _values(store, moved)["WhoId"] == contact_id
    assert _values(store, task_id)["SystemModstamp"] > before  # moved activities are stamped
    store.put_activity(Activity("A3", "P000001", "call", T0 + timedelta(days=1)))
    assert _values(store, store.id_for("activity", "A3"))["WhoId"] == contact_id  # later ones too


def test_validation_rules_run_on_inserts_as_on_updates() -> None:
    """Salesforce evaluates validation rules when a record is created, too: a rule on Task refuses
    a routing task's insert (crmsim ran rules on updates only)."""
    store = _store()
    store.put_person(person(1))
    lead_id = store.crm_id("P000001")
    store.validation_rules.append(ValidationRule("No_Tasks", "Task", "No tasks here.",
                                                 lambda v: v.get("WhoId") == lead_id))
    before = len(store.records["Task"])
    with pytest.raises(RecordError) as refused:
        store.api_create("Task", {"WhoId": lead_id, "Subject": "Call"})
    assert (refused.value.code, refused.value.message) == ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "No tasks here.")
    assert len(store.records["Task"]) == before
