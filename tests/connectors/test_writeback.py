"""Write-back against crmsim through the real clients: values, API call counts, dedupe, failures."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from connectors.hubspot.writeback import BATCH_SIZE as HS_BATCH
from connectors.routing import execute_routing, plan_routing
from connectors.salesforce.writeback import BATCH_SIZE as SF_BATCH
from connectors.writeback import WritebackPolicy, drain_outbox, requeue_failed
from crmsim.app import CRMSim
from scoring.service import outbox_payload, payload_hash
from store.db import unit_of_work
from store.models import Lead, LeadScore, Outbox
from tests.connectors.test_writeback_support import (
    SCORED_AT,
    add_leads,
    app_config,
    ensure_connections,
    hs_api_writes,
    hs_contact_ids,
    outbox_statuses,
    running_sim,
    score,
    secrets_for,
    sf_api_writes,
    sf_lead_ids,
    start_sim,
)

FAST = WritebackPolicy(max_attempts=10, base_delay=timedelta(0))


@pytest.fixture(scope="module")
def big_sim() -> Iterator[CRMSim]:
    yield from running_sim(2600, 3)


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    yield from running_sim(200, 5)


def _write_calls(sim: CRMSim) -> tuple[int, int]:
    counts = sim.call_counts()
    return counts["salesforce"].get("POST composite", 0), counts["hubspot"].get("POST contacts/batch/update", 0)


def test_every_field_lands_with_the_minimum_number_of_calls(big_sim: CRMSim, sqlite_engine: Engine) -> None:
    sf_ids = sf_lead_ids(big_sim, 1201)
    hs_ids = hs_contact_ids(big_sim, 201)
    assert len(sf_ids) == 1201 and len(hs_ids) == 201
    sf_leads = add_leads(sqlite_engine, "sf", sf_ids)
    hs_leads = add_leads(sqlite_engine, "hs", hs_ids)
    reasons = ["Visited pricing 3 times in 7 days", "VP-level title"]
    score(sqlite_engine, sf_leads.values(), score_value=91, tier="A", reasons=reasons, model="catboost-2026-03")
    score(sqlite_engine, hs_leads.values(), score_value=42, tier="C", reasons=reasons, model="catboost-2026-03")
    config = app_config(big_sim)
    big_sim.reset_counts()

    report = drain_outbox(sqlite_engine, config, secrets_for(big_sim))

    sf_calls, hs_calls = _write_calls(big_sim)
    assert sf_calls == math.ceil(1201 / SF_BATCH) == 2
    assert hs_calls == math.ceil(201 / HS_BATCH) == 3
    by_crm = report.by_crm()
    assert by_crm["salesforce"] == {"records": 1201, "api_calls": 2, "write_calls": 2, "retry_calls": 0, "failed": 0}
    assert by_crm["hubspot"]["records"] == 201 and by_crm["hubspot"]["write_calls"] == 3
    assert outbox_statuses(sqlite_engine) == {"sent": 1402}
    # Every value is in the CRM, in the CRM's own types and formats.
    store = big_sim.salesforce.store
    for crm_id in sf_ids:
        values = store.get(crm_id).values  # type: ignore[union-attr]
        assert values["Lead_Score__c"] == 91
        assert values["Lead_Tier__c"] == "A"
        assert values["Lead_Score_Reasons__c"] == "Visited pricing 3 times in 7 days; VP-level title"
        assert values["Lead_Score_Model__c"] == "catboost-2026-03"
        assert values["Lead_Scored_At__c"] == SCORED_AT
    contacts = big_sim.hubspot.store.records["contacts"]
    for crm_id in hs_ids:
        props = contacts[int(crm_id)].props
        assert props["leadscore_score"] == "42"
        assert props["leadscore_tier"] == "C"
        assert props["leadscore_reasons"] == "Visited pricing 3 times in 7 days; VP-level title"
        assert props["leadscore_model"] == "catboost-2026-03"
        assert props["leadscore_scored_at"] == "2026-03-02T09:30:15.000Z"
    assert set(sf_api_writes(big_sim).values()) == {1}
    assert len(sf_api_writes(big_sim)) == 1201
    assert len(hs_api_writes(big_sim)) == 201

    # A second run has nothing due: no client, no call.
    big_sim.reset_counts()
    again = drain_outbox(sqlite_engine, config, secrets_for(big_sim))
    assert again.records_written == 0
    assert big_sim.call_counts()["total"] == {"salesforce": 0, "hubspot": 0}


def test_partial_failures_and_throttling_end_sent_once_or_failed(sim: CRMSim, sqlite_engine: Engine) -> None:
    sf_ids = sf_lead_ids(sim, 80)
    hs_ids = hs_contact_ids(sim, 80)
    assert len(sf_ids) == len(hs_ids) == 80
    sf_leads = add_leads(sqlite_engine, "sf", sf_ids)
    hs_leads = add_leads(sqlite_engine, "hs", hs_ids)
    score(sqlite_engine, list(sf_leads.values()) + list(hs_leads.values()), score_value=77, tier="B")
    sim.set_faults("record_fail=0.25,sf.rate_503=0.3,hs.rate_429=0.3,drop=0.1", seed=11)
    sim.reset_counts()

    report = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim), policy=FAST)

    sim.set_faults(None)
    injected = sim.salesforce.injected_counts()
    assert injected.get("record_fail", 0) > 0 and injected.get("503", 0) > 0
    assert outbox_statuses(sqlite_engine) == {"sent": 160}
    # One write per lead in the CRM, however many times a record or a call was retried.
    assert sf_api_writes(sim) == {crm_id: 1 for crm_id in sf_ids}
    assert hs_api_writes(sim) == {crm_id: 1 for crm_id in hs_ids}
    sf = report.connections["sf"]
    hs = report.connections["hs"]
    assert sf.write_calls == 1 and hs.write_calls == 1
    assert sf.retry_calls > 0 and hs.retry_calls > 0
    assert sf.retried_records > 0 and hs.retried_records > 0
    # The accounting matches what the CRMs received, dropped connections included.
    sf_calls, hs_calls = _write_calls(sim)
    assert sf.api_calls == sf_calls
    assert hs.api_calls == hs_calls
    with unit_of_work(sqlite_engine) as session:
        attempts = session.scalars(select(Outbox.attempts)).all()
    assert max(attempts) > 1


def test_permanent_failures_are_marked_with_the_crm_reason(sim: CRMSim, sqlite_engine: Engine) -> None:
    sf_ids = sf_lead_ids(sim, 5)
    hs_ids = hs_contact_ids(sim, 4)
    sf_leads = add_leads(sqlite_engine, "sf", sf_ids)
    hs_leads = add_leads(sqlite_engine, "hs", hs_ids)
    sim.salesforce.store.api_delete("Lead", sf_ids[0])
    sim.hubspot.store.api_archive("contacts", hs_ids[0])
    score(sqlite_engine, [sf_leads[i] for i in sf_ids[:3]] + [hs_leads[i] for i in hs_ids[:3]], tier="A")
    score(sqlite_engine, [sf_leads[sf_ids[3]], hs_leads[hs_ids[3]]], tier="E")  # not a picklist/option value

    report = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim))

    assert report.connections["sf"].failed_by_reason == {
        "ENTITY_IS_DELETED": 1, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": 1}
    assert report.connections["hs"].failed_by_reason == {"OBJECT_NOT_FOUND": 1, "INVALID_OPTION": 1}
    assert report.records_written == 4
    with unit_of_work(sqlite_engine) as session:
        rows = session.scalars(select(Outbox).where(Outbox.status == "failed"))
        failed = {row.crm_id: str(row.last_error) for row in rows}
    assert failed[sf_ids[0]].startswith("ENTITY_IS_DELETED: ")
    assert failed[hs_ids[0]].startswith("OBJECT_NOT_FOUND: ")
    assert "E" in failed[sf_ids[3]]


def test_missing_fields_fail_every_record_with_the_field_error(sim: CRMSim, sqlite_engine: Engine) -> None:
    sim.salesforce.store.custom_fields_present = False
    fresh = start_sim(leads=40, seed=9)  # HubSpot without the leadscore_* properties
    try:
        sf_leads = add_leads(sqlite_engine, "sf", sf_lead_ids(sim, 3))
        score(sqlite_engine, sf_leads.values())
        report = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim))
        assert report.connections["sf"].failed_by_reason == {"INVALID_FIELD": 3}
        # The admin creates the fields: a rescore queues nothing (the values did not change), the
        # refused writes are requeued and sent; a reason filter that matches none requeues none.
        sim.salesforce.store.custom_fields_present = True
        with unit_of_work(sqlite_engine) as session:
            assert requeue_failed(session, reason="ENTITY_IS_DELETED") == {}
            assert requeue_failed(session, reason="INVALID_FIELD") == {"sf": 3}
        again = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim))
        assert again.connections["sf"].records_written == 3 and again.connections["sf"].failed == 0
        written = {crm_id: sim.salesforce.store.get(crm_id).values.get("Lead_Score__c")  # type: ignore[union-attr]
                   for crm_id in sf_leads}
        assert len(written) == 3 and all(v is not None for v in written.values()), written
        with unit_of_work(sqlite_engine) as session:
            assert requeue_failed(session) == {}  # nothing failed is left

        hs_leads = add_leads(sqlite_engine, "hs", hs_contact_ids(fresh, 6))
        assert len(hs_leads) == 6
        score(sqlite_engine, hs_leads.values())
        report = drain_outbox(sqlite_engine, app_config(fresh), secrets_for(fresh))
        assert report.connections["hs"].failed_by_reason == {"PROPERTY_DOESNT_EXIST": 6}
        # One refused call: a missing property is every record's, not halved down to single
        # records (11 calls for these 6 before).
        assert _write_calls(fresh)[1] == 1 and report.connections["hs"].write_calls == 1
    finally:
        fresh.stop()


def test_unchanged_and_superseded_rows_are_never_sent(sim: CRMSim, sqlite_engine: Engine) -> None:
    sf_ids = sf_lead_ids(sim, 3)
    leads = add_leads(sqlite_engine, "sf", sf_ids)
    score(sqlite_engine, leads.values(), score_value=60, tier="B")
    first = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim))
    assert first.records_written == 3
    # The same values again (e.g. a rescore that changed nothing visible): no call at all.
    score(sqlite_engine, leads.values(), score_value=60, tier="B")
    # Lead 0 has a newer pending row too (two pending rows of one lead): only the newest is sent.
    payload = outbox_payload(95, "A", ["Booked a meeting"], "catboost-v2", SCORED_AT)
    with unit_of_work(sqlite_engine) as session:
        session.add(Outbox(connection_id=ensure_connections(sqlite_engine)["sf"], lead_id=leads[sf_ids[0]],
                           crm_id=sf_ids[0], kind="score_fields", payload=payload,
                           payload_hash=payload_hash(payload), status="pending", next_attempt_at=SCORED_AT))
    sim.reset_counts()

    report = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim))

    entry = report.connections["sf"]
    assert entry.records_written == 1
    assert entry.unchanged_skipped == 2
    assert entry.superseded == 1
    assert _write_calls(sim)[0] == 1
    assert sim.salesforce.store.get(sf_ids[0]).values["Lead_Score__c"] == 95  # type: ignore[union-attr]
    assert sf_api_writes(sim) == {sf_ids[0]: 2, sf_ids[1]: 1, sf_ids[2]: 1}


def test_limit_and_connection_bound_the_run(sim: CRMSim, sqlite_engine: Engine) -> None:
    sf_leads = add_leads(sqlite_engine, "sf", sf_lead_ids(sim, 5))
    hs_leads = add_leads(sqlite_engine, "hs", hs_contact_ids(sim, 5))
    score(sqlite_engine, list(sf_leads.values()) + list(hs_leads.values()))
    seen: list[tuple[str, int, int]] = []

    report = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim), connection="hs", limit=3,
                          progress=lambda name, done, total: seen.append((name, done, total)))

    assert report.records_written == 3
    assert list(report.connections) == ["hs"]
    assert report.connections["hs"].pending_left == 2
    assert seen == [("hs", 3, 5)]
    assert outbox_statuses(sqlite_engine) == {"sent": 3, "pending": 7}


def test_retries_back_off_and_give_up(sim: CRMSim, sqlite_engine: Engine) -> None:
    leads = add_leads(sqlite_engine, "sf", sf_lead_ids(sim, 2))
    score(sqlite_engine, leads.values())
    sim.set_faults("sf.record_fail=1.0")
    policy = WritebackPolicy(max_attempts=2, base_delay=timedelta(minutes=5))
    try:
        first = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim), policy=policy)
        assert first.connections["sf"].retried_records == 2
        with unit_of_work(sqlite_engine) as session:
            rows = session.scalars(select(Outbox)).all()
            assert all(r.status == "pending" and r.attempts == 1 for r in rows)
            due = min(r.next_attempt_at for r in rows)
        # Not due yet: nothing is sent.
        assert drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim), policy=policy).connections == {}
        later = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim), policy=policy,
                             now=lambda: due + timedelta(seconds=1))
    finally:
        sim.set_faults(None)
    assert later.connections["sf"].failed_by_reason == {"UNABLE_TO_LOCK_ROW (gave up after 2 attempts)": 2}
    assert outbox_statuses(sqlite_engine) == {"failed": 2}


@pytest.fixture
def pg_writeback_engine() -> Iterator[Engine]:
    """A migrated PostgreSQL database of its own: the drain commits, so no shared rollback fixture."""
    import os

    import psycopg

    from store.db import make_engine
    from store.migrate import upgrade
    from tests.conftest import PG_ADMIN_DSN, _pg_url

    name = f"leadscore_writeback_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    try:
        upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_tier_changed_and_changed_back_before_the_drain_writes_nothing(sim: CRMSim, sqlite_engine: Engine) -> None:
    """Revops set a threshold and set it back before the write-back: the lead's newest pending row
    shows the values the CRM already has, only its time of scoring is later. Nothing to write (it
    was written, `written 1`, when the hash covered ``scored_at``)."""
    sf_ids = sf_lead_ids(sim, 2)
    leads = add_leads(sqlite_engine, "sf", sf_ids)
    score(sqlite_engine, leads.values(), score_value=60, tier="B")
    assert drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim)).records_written == 2
    score(sqlite_engine, leads.values(), score_value=60, tier="A", when=SCORED_AT + timedelta(minutes=5))
    score(sqlite_engine, leads.values(), score_value=60, tier="B", when=SCORED_AT + timedelta(minutes=6))
    sim.reset_counts()
    again = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim))
    assert again.records_written == 0 and again.connections["sf"].unchanged_skipped == 2
    assert _write_calls(sim)[0] == 0
    # A real change after that still goes out, with its own time.
    score(sqlite_engine, leads.values(), score_value=61, tier="B", when=SCORED_AT + timedelta(minutes=7))
    assert drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim)).records_written == 2


def test_drain_on_postgresql(sim: CRMSim, pg_writeback_engine: Engine) -> None:
    sf_ids = sf_lead_ids(sim, 30)
    hs_ids = hs_contact_ids(sim, 30)
    leads = add_leads(pg_writeback_engine, "sf", sf_ids) | add_leads(pg_writeback_engine, "hs", hs_ids)
    routed = app_config(sim, [{"to": "D", "actions": [{"type": "pause_outreach"}]}])
    hook = plan_routing(routed)
    score(pg_writeback_engine, leads.values(), score_value=12, tier="D", hook=hook)
    # Routing on PostgreSQL: planned once (a re-run of the hook inserts nothing), run once.
    with unit_of_work(pg_writeback_engine) as session:
        for lead_id in leads.values():
            lead = session.get(Lead, lead_id)
            current = session.scalar(select(LeadScore).where(LeadScore.lead_id == lead_id,
                                                             LeadScore.is_current.is_(True)))
            assert lead is not None and current is not None
            hook(session, lead, None, current)
    sim.set_faults("record_fail=0.3", seed=5)
    try:
        report = drain_outbox(pg_writeback_engine, app_config(sim), secrets_for(sim), policy=FAST)
    finally:
        sim.set_faults(None)
    assert report.records_written == 60
    assert outbox_statuses(pg_writeback_engine) == {"sent": 60}
    assert sf_api_writes(sim) == {crm_id: 1 for crm_id in sf_ids}
    assert hs_api_writes(sim) == {crm_id: 1 for crm_id in hs_ids}
    # Re-scored with the same values: skipped as unchanged, nothing sent.
    score(pg_writeback_engine, leads.values(), score_value=12, tier="D")
    again = drain_outbox(pg_writeback_engine, app_config(sim), secrets_for(sim))
    assert again.records_written == 0
    assert again.connections["sf"].unchanged_skipped == 30 and again.connections["hs"].unchanged_skipped == 30
    routing = execute_routing(pg_writeback_engine, routed, secrets_for(sim))
    assert routing.done == {"pause_outreach": 60}
    assert {sim.salesforce.store.get(i).values["Status"] for i in sf_ids} == {"Nurturing"}  # type: ignore[union-attr]


def test_a_partial_field_mapping_keeps_the_crms_own_defaults() -> None:
    from config.app_config import parse_config
    from connectors.writeback import score_field_names

    config = parse_config({"connections": [
        {"name": "hs", "kind": "hubspot", "score_fields": {"score": "predicted_score"}},
        {"name": "sf", "kind": "salesforce", "instance_url": "https://x.invalid",
         "score_fields": {"tier": "Grade__c"}},
    ]}, "cfg.yaml")
    hs = score_field_names(config.connection("hs"))
    sf = score_field_names(config.connection("sf"))
    assert (hs.score, hs.tier, hs.scored_at) == ("predicted_score", "leadscore_tier", "leadscore_scored_at")
    assert (sf.score, sf.tier) == ("Lead_Score__c", "Grade__c")


def test_a_scoring_runs_rows_are_rendered_when_claimed_and_land_as_the_score_says(
    sim: CRMSim, sqlite_engine: Engine,
) -> None:
    """Scoring's own write path (``write_scores``) queues each changed lead's row without its
    payload; the drain renders it from the score row when it claims it, keeps it with the row, and
    compares it with the last one sent: the CRM shows the score row's values, an unchanged rescore
    writes nothing, and a tier changed and changed back before the drain writes nothing either."""
    from scoring.score_writes import NewScore, write_scores
    from scoring.tiers import likelihood_percent
    from store.models import ModelVersion

    sf_ids, hs_ids = sf_lead_ids(sim, 3), hs_contact_ids(sim, 2)
    leads = add_leads(sqlite_engine, "sf", sf_ids) | add_leads(sqlite_engine, "hs", hs_ids)
    with unit_of_work(sqlite_engine) as session:
        mv = ModelVersion(version="catboost-20261205-1", status="champion", family="catboost", artifact=b"")
        session.add(mv)
        session.flush()
        mv_id = mv.id

    def scored(tier: str, score_value: int, at: timedelta) -> None:
        with unit_of_work(sqlite_engine) as session:
            write_scores(session, [
                NewScore(lead_id=lead_id, probability=score_value / 400, score=score_value, tier=tier,
                         reasons=["+ Engagement: Visited pricing 3 times in 7 days", f"- Fit: lead {n}"],
                         model_version_id=mv_id, inputs_hash=f"h{n}",
                         fit_score=40 + n, engagement_score=80, as_of=SCORED_AT + at)
                for n, lead_id in enumerate(leads.values())], policy_id=None, scored_at=SCORED_AT + at)

    scored("A", 91, timedelta(0))
    with unit_of_work(sqlite_engine) as session:
        queued = list(session.scalars(select(Outbox)))
        assert len(queued) == 5 and all(r.payload is None and r.payload_hash is None for r in queued)

    assert drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim)).records_written == 5

    with unit_of_work(sqlite_engine) as session:
        for row in session.scalars(select(Outbox)):
            current = session.get(LeadScore, row.lead_score_id)
            assert row.status == "sent" and current is not None
            expected = outbox_payload(91, "A", current.reasons, "catboost-20261205-1", current.scored_at,
                                      likelihood=float(likelihood_percent(current.probability)),
                                      fit=current.fit_score, engagement=80)
            assert row.payload == expected and row.payload_hash == payload_hash(expected)
    rep = sim.salesforce.store.get(sf_ids[1]).values  # type: ignore[union-attr]
    assert (rep["Lead_Score__c"], rep["Lead_Tier__c"]) == (91, "A")
    assert rep["Lead_Score_Reasons__c"] == "+ Engagement: Visited pricing 3 times in 7 days; - Fit: lead 1"
    assert rep["Lead_Fit_Score__c"] == 41 and rep["Lead_Score_Model__c"] == "catboost-20261205-1"
    hs = sim.hubspot.store.records["contacts"][int(hs_ids[0])].props
    assert (hs["leadscore_score"], hs["leadscore_tier"]) == ("91", "A")

    # A day later the same score, now with its change against the first (0, no longer blank): sent.
    scored("A", 91, timedelta(days=1))
    assert drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim)).records_written == 5
    # Then B and back to A before any drain: the B row is superseded, the A row equals what was sent.
    scored("B", 70, timedelta(days=1, hours=1))
    scored("A", 91, timedelta(days=1, hours=2))
    sim.reset_counts()
    again = drain_outbox(sqlite_engine, app_config(sim), secrets_for(sim))
    assert again.records_written == 0 and _write_calls(sim) == (0, 0)
    assert again.connections["sf"].unchanged_skipped == 3 and again.connections["hs"].unchanged_skipped == 2
