"""Rep feedback fields are optional on Salesforce: an org that has not deployed them yet still syncs.

crmsim answers INVALID_FIELD for a SOQL column the org does not have, as Salesforce does; the sync must
drop the two optional feedback columns (once, with a warning) rather than fail every run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select

from connectors.salesforce.streams import SalesforceConnector
from connectors.sync import sync_connection
from crmsim.app import CRMSim
from store.db import unit_of_work
from store.models import Lead
from tests.connectors.conftest import salesforce_config


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    sim = CRMSim(leads=150, seed=4, history_days=60, admin=False).start()
    try:
        yield sim
    finally:
        sim.stop()


def test_org_without_feedback_fields_syncs_without_them(sim: CRMSim, committing_pg_engine: Engine,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    sim.salesforce.store.custom_fields_present = False
    conn, secrets = salesforce_config(sim, "nofeedback-sf")
    connector = SalesforceConnector(conn, secrets)
    with caplog.at_level(logging.WARNING, logger="connectors.salesforce.streams"):
        report = sync_connection(committing_pg_engine, conn, secrets, connector=connector)
    assert report.status == "succeeded", report.error
    assert connector.feedback_missing
    assert sum("rep feedback fields are not readable" in r.getMessage() for r in caplog.records) == 1
    with unit_of_work(committing_pg_engine) as session:
        synced = session.scalar(select(func.count()).select_from(Lead))
    assert synced == len(sim.salesforce.store.records["Lead"]) > 0


def test_org_with_feedback_fields_reads_them(sim: CRMSim, committing_pg_engine: Engine) -> None:
    conn, secrets = salesforce_config(sim, "feedback-sf")
    connector = SalesforceConnector(conn, secrets)
    report = sync_connection(committing_pg_engine, conn, secrets, connector=connector)
    assert report.status == "succeeded", report.error
    assert not connector.feedback_missing
    with unit_of_work(committing_pg_engine) as session:
        raws = session.scalars(select(Lead.raw)).all()
    assert raws and all("Lead_Score_Feedback__c" in (raw or {}) for raw in raws)
