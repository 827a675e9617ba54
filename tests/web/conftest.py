"""A small scored world on a fresh PostgreSQL database, shared by the console tests of one module.

Built from the test factories (a synthetic funnel, a registered champion, current scores, one
sync run with a cursor and a quarantined record, one routing action done in the CRM) instead of
the 3-minute demo: the same tables the demo fills, in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.conftest import fresh_database
from tests.factories import BASE_TIME, make_connection, synthetic_population, synthetic_training

AS_OF = BASE_TIME + timedelta(days=500)
USERS = {"alice": ("alice-pw-Xq93", "editor"), "bob": ("bob-pw-Zr71", "viewer")}
AUTH_ENV = ",".join(f"{name}:{pw}:{role}" for name, (pw, role) in USERS.items())
DB_PASSWORD = "dbpw-never-shown-4471"  # PostgreSQL trusts 127.0.0.1 here; the password only has to stay hidden
SECRET_KEY = "console-key-never-shown-0193"


CONNECTION = "acme-sf"
# Routing rules revops would configure: the console's save and preview must plan and count them
# exactly as `leadscore tiers set/preview` do.
CONFIG_YAML = f"""
connections:
  - name: {CONNECTION}
    kind: salesforce
    instance_url: https://127.0.0.1:9
routing:
  - to: A
    actions:
      - type: create_task
        subject: "Hot lead: call within 4 hours"
      - type: assign_owner
        queue: SDR Queue
  - to: D
    actions:
      - type: pause_outreach
"""


@dataclass
class World:
    url: str  # with DB_PASSWORD in it, as a production URL would carry one
    engine: Engine
    routed_crm_id: str
    routing_ref: str
    config_file: Path


def build_world(session: Session) -> tuple[str, str]:
    """Fill the store; returns (CRM id of a lead with a done routing action, its CRM reference)."""
    from scoring import registry
    from scoring.service import score_leads
    from store.models import Lead, LeadScore, QuarantinedRecord, RoutingAction, SyncCursor, SyncRun

    conn = synthetic_population(session, leads=400, seed=3, connection=make_connection(session, CONNECTION))
    result, tset = synthetic_training()
    registry.register(session, result, train_window=tset.window, status="champion")
    run = SyncRun(connection_id=conn.id, stream="leads", status="succeeded", started_at=AS_OF,
                  finished_at=AS_OF + timedelta(seconds=5), server_time=AS_OF, records=400, quarantined=1,
                  api_calls=3)
    session.add(run)
    session.flush()
    session.add(SyncCursor(connection_id=conn.id, stream="leads", cursor_ts=AS_OF - timedelta(minutes=1),
                           cursor_id="00Q000000000999", updated_at=AS_OF))
    session.add(QuarantinedRecord(connection_id=conn.id, stream="leads", crm_id="00QBROKEN0001",
                                  reason="CreatedDate 'yesterday' is not a timestamp", raw={}, sync_run_id=run.id,
                                  created_at=AS_OF))
    score_leads(session, as_of=AS_OF)
    lead = session.scalars(select(Lead).where(Lead.connection_id == conn.id).order_by(Lead.id).limit(1)).one()
    current = session.scalars(select(LeadScore).where(LeadScore.lead_id == lead.id,
                                                      LeadScore.is_current.is_(True))).one()
    session.add(RoutingAction(lead_id=lead.id, lead_score_id=current.id, connection_id=conn.id, from_tier=None,
                              to_tier=current.tier, action="create_task", params={"subject": "Call"},
                              status="done", crm_ref="00T000000000777", created_at=AS_OF, done_at=AS_OF))
    session.flush()
    from config.app_config import MonitoringConfig
    from scoring.monitor import run_monitor

    run_monitor(session, as_of=AS_OF, config=MonitoringConfig())
    return lead.crm_id, "00T000000000777"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from store.db import make_engine, unit_of_work
    from store.migrate import upgrade

    config_file = tmp_path_factory.mktemp("config") / "leadscore.yaml"
    config_file.write_text(CONFIG_YAML, encoding="utf-8")
    with fresh_database("web") as plain_url:
        url = plain_url.replace("://root@", f"://root:{DB_PASSWORD}@", 1)
        upgrade(url)
        engine = make_engine(url)
        try:
            with unit_of_work(engine) as session:
                crm_id, ref = build_world(session)
            yield World(url=url, engine=engine, routed_crm_id=crm_id, routing_ref=ref, config_file=config_file)
        finally:
            engine.dispose()
