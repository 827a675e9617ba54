"""Account fields end to end against crmsim: sync links leads to accounts, scoring refreshes the
accounts, the drain writes them; read back through simple-salesforce and hubspot-api-client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from hubspot import HubSpot
from sqlalchemy import Engine, select

from connectors.accounts import website_domain
from connectors.setup import crm_setup
from connectors.sync import sync_connection
from connectors.writeback import drain_outbox
from crmsim.app import CRMSim
from crmsim.model import Company
from crmsim.salesforce.testing import direct_client, person
from scoring.accounts import refresh_accounts
from scoring.reference import REFERENCE_KEY
from scoring.service import NewScore, write_scores
from store.db import unit_of_work
from store.models import ACCOUNT_OUTBOX_KIND, Account, Lead, LeadAccount, LeadLifecycle, ModelVersion, Outbox
from tests.connectors.test_writeback_support import app_config, secrets_for, start_sim

REFERENCE = np.sort(np.random.default_rng(0).beta(1, 9, 2000))  # a 10 % base rate population


def _company(key: str, name: str) -> Company:
    return Company(key=key, name=name, domain=f"{key.lower()}.example", industry="Technology", employees=300,
                   annual_revenue=2e7, country="US")


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    sim = start_sim(leads=20, seed=23)
    now = sim.world.clock.now()
    for crm, store in (("salesforce", sim.salesforce.store), ("hubspot", sim.hubspot.store)):
        prefix = "S" if crm == "salesforce" else "H"
        # One hot lead at "Hot", five warm ones at "Warm" (in both CRMs).
        for key, name, people in ((f"CX{prefix}1", f"Hot {crm} Ltd", 1), (f"CX{prefix}2", f"Warm {crm} Inc", 5)):
            company = _company(key, name)
            store.put_company(company)
            for n in range(people):
                p = person(0, key=f"PX{prefix}{key[-1]}{n}", crm=crm, company_key=key, company_name=name,
                           email=f"rep{n}@{company.domain}", created_at=now - timedelta(days=2), owner_key=None,
                           first_name=f"{name.split()[0]}{n}")
                store.put_person(p)
    yield sim
    sim.stop()


def _champion(engine: Engine) -> None:
    ref = {"n": len(REFERENCE), "probability": REFERENCE.tolist(), "fit": REFERENCE.tolist(),
           "engagement": REFERENCE.tolist(), "typical": {}}
    with unit_of_work(engine) as session:
        session.add(ModelVersion(version="catboost-test", status="champion", family="catboost", artifact=b"",
                                 params={REFERENCE_KEY: ref}))


def _score_all(engine: Engine, probability_of: dict[str, tuple[float, int]]) -> dict[str, Any]:
    """Score every open lead (the given (probability, engagement) by company name, else cold) and
    refresh the accounts, in one transaction as scoring does."""
    with unit_of_work(engine) as session:
        mv = session.scalar(select(ModelVersion))
        assert mv is not None
        rows = []
        for lead in session.scalars(select(Lead).where(Lead.lifecycle == "open").order_by(Lead.id)):
            p, engagement = next((v for name, v in probability_of.items() if name == lead.company), (0.02, 20))
            rows.append(NewScore(lead_id=lead.id, probability=p, score=int(p * 100) or 1, tier="A", reasons=[],
                                 model_version_id=mv.id, inputs_hash=lead.inputs_hash,
                                 fit_score=50, engagement_score=engagement))
        write_scores(session, rows, policy_id=None)
        return refresh_accounts(session).to_dict()


def test_account_fields_reach_both_crms_and_an_unchanged_rescore_writes_nothing(
        sim: CRMSim, sqlite_engine: Engine) -> None:
    config = app_config(sim)
    secrets = secrets_for(sim)
    assert all(r.ok for r in crm_setup(config, secrets)), "crm setup creates the HubSpot company properties"
    for conn in config.connections:
        report = sync_connection(sqlite_engine, conn, secrets[conn.name])
        assert report.accounts is not None and report.accounts["linked"] > 0, report.accounts
    with unit_of_work(sqlite_engine) as session:
        how = dict(session.execute(select(LeadAccount.matched_by, LeadAccount.lead_id)).all())
        assert {"name", "association"} <= set(how), how
    _champion(sqlite_engine)
    hot_warm = {"Hot salesforce Ltd": (0.6, 95), "Warm salesforce Inc": (0.2, 60),
                "Hot hubspot Ltd": (0.6, 95), "Warm hubspot Inc": (0.2, 60)}
    first = _score_all(sqlite_engine, hot_warm)
    assert first["changed"] == first["considered"] > 4
    report = drain_outbox(sqlite_engine, config, secrets)
    assert report.accounts_written == first["changed"] and not report.errors
    accounts = report.accounts_by_crm()
    assert accounts["salesforce"]["api_calls"] == 1 and accounts["hubspot"]["api_calls"] == 1

    sf = direct_client(sim.salesforce)
    rows = {r["Name"]: r for r in sf.query_all(
        "SELECT Id, Name, Account_Lead_Score__c, Account_Engaged_People__c FROM Account "
        "WHERE Account_Lead_Score__c != null")["records"]}
    hot, warm = rows["Hot salesforce Ltd"], rows["Warm salesforce Inc"]
    assert hot["Account_Engaged_People__c"] == 1.0 and warm["Account_Engaged_People__c"] == 5.0
    # 1 - 0.8^5 = 0.67 > 0.6: five warm leads make an account at least as hot as one hot lead.
    assert warm["Account_Lead_Score__c"] >= hot["Account_Lead_Score__c"] >= 95
    cold = [r for name, r in rows.items() if name not in hot_warm]
    assert cold and max(r["Account_Lead_Score__c"] for r in cold) < 80

    hs = HubSpot(access_token=sim.info()["hubspot"]["access_token"], host=sim.info()["hubspot"]["host"])
    ids = [sim.hubspot.store.company_id("CXH1"), sim.hubspot.store.company_id("CXH2")]
    read = hs.crm.companies.batch_api.read(
        {"inputs": [{"id": i} for i in ids], "properties": ["name", "leadscore_account_score",
                                                            "leadscore_engaged_people"]})
    props = {r.properties["name"]: r.properties for r in read.results}
    assert props["Hot hubspot Ltd"]["leadscore_engaged_people"] == "1"
    assert props["Warm hubspot Inc"]["leadscore_engaged_people"] == "5"
    assert int(props["Warm hubspot Inc"]["leadscore_account_score"]) >= int(
        props["Hot hubspot Ltd"]["leadscore_account_score"]) >= 95

    # The same scores again: no account changes, nothing queued, nothing written.
    again = _score_all(sqlite_engine, hot_warm)
    assert again["changed"] == 0 and again["considered"] == first["considered"]
    quiet = drain_outbox(sqlite_engine, config, secrets)
    assert quiet.accounts_written == 0 and quiet.accounts == {}

    # One warm lead cools down: only its account is rewritten (engaged people 5 -> 4).
    with unit_of_work(sqlite_engine) as session:
        cooled = session.scalar(select(Lead).where(Lead.company == "Warm salesforce Inc").order_by(Lead.id))
        assert cooled is not None
        cooled.company = "Warm salesforce Inc (cooled)"
    changed = _score_all(sqlite_engine, {**hot_warm, "Warm salesforce Inc (cooled)": (0.02, 20)})
    assert changed["changed"] == 1
    assert drain_outbox(sqlite_engine, config, secrets).accounts_written == 1
    assert sf.Account.get(warm["Id"])["Account_Engaged_People__c"] == 4.0
    with unit_of_work(sqlite_engine) as session:
        statuses = session.execute(select(Outbox.status).where(Outbox.kind == ACCOUNT_OUTBOX_KIND)).scalars().all()
        assert set(statuses) == {"sent"} and len(statuses) == first["changed"] + 1
        stored = session.scalar(select(Account).where(Account.crm_id == warm["Id"]))
        assert stored is not None and stored.engaged_people == 4 and stored.open_leads == 5

    # The hot lead closes (as a sync marks it): its account has no open lead left and is cleared once.
    with unit_of_work(sqlite_engine) as session:
        closed = session.scalar(select(Lead).where(Lead.company == "Hot salesforce Ltd"))
        assert closed is not None
        closed.lifecycle = LeadLifecycle.closed
    cleared = _score_all(sqlite_engine, hot_warm)
    assert (cleared["changed"], cleared["cleared"]) == (1, 1)
    assert drain_outbox(sqlite_engine, config, secrets).accounts_written == 1
    assert sf.Account.get(hot["Id"])["Account_Lead_Score__c"] is None
    assert _score_all(sqlite_engine, hot_warm)["changed"] == 0


def test_website_domain_reads_the_shapes_admins_type() -> None:
    shapes = ["acme.com", "www.acme.com", "https://www.acme.com/", "http://acme.com", "HTTPS://WWW.ACME.COM/about",
              "www2.acme.com"]
    assert {website_domain(s) for s in shapes} == {"acme.com"}
    assert website_domain("") is None and website_domain("localhost") is None and website_domain(None) is None


def test_leads_are_placed_by_website_domain_or_contact_email_when_no_name_matches(
        sim: CRMSim, sqlite_engine: Engine) -> None:
    store = sim.salesforce.store
    company = _company("CXC1", "Contact Holdings")
    store.put_company(company)
    converted = person(0, key="PXC00", crm="salesforce", company_key="CXC1", company_name="Contact Holdings",
                       email="ann@gmail.com", created_at=sim.world.clock.now() - timedelta(days=3), owner_key=None)
    store.put_person(converted)
    lead_id = store.crm_id("PXC00")
    assert lead_id is not None
    store.convert_lead(lead_id)  # a Contact with AccountId = the company's Account
    # The same person comes back as a new lead typed with a company name no Account has.
    store.put_person(replace(converted, key="PXC01", company_name="CH"))
    # A colleague typed the company differently but writes from its domain (the Account's Website).
    store.put_person(replace(converted, key="PXC02", company_name="Contact Hldgs", email="bob@cxc1.example"))
    conn = next(c for c in app_config(sim).connections if c.kind == "salesforce")
    report = sync_connection(sqlite_engine, conn, secrets_for(sim)[conn.name])
    assert report.accounts is not None
    assert report.accounts["by_method"].get("contact") == 1 and report.accounts["by_method"].get("domain") == 1
    with unit_of_work(sqlite_engine) as session:
        rows = dict(session.execute(select(Lead.crm_id, LeadAccount.matched_by).join(Account)
                                    .join(Lead, Lead.id == LeadAccount.lead_id)
                                    .where(Account.crm_id == store.id_for("company", "CXC1"))).all())
    assert rows == {store.crm_id("PXC01"): "contact", store.crm_id("PXC02"): "domain"}
