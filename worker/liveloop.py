"""The live loop, for end-to-end tests and the freshness benchmark.

crmsim plays the CRMs; a real Celery worker and beat run against Redis and a database; nothing
is driven by hand after :meth:`LiveLoop.bootstrap`. :meth:`LiveLoop.add_intent` changes a lead in
the CRM (new high-intent activity) and :meth:`LiveLoop.wait_for_new_score` watches the CRM until
leadscore's new score for that lead is there.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from config.app_config import load_config
from connectors.base import ConnectionSecrets
from connectors.setup import admin_instructions, crm_setup
from connectors.sync import sync_connection
from connectors.writeback import drain_outbox
from crmsim.model import Activity
from scoring.service import score_leads, train_from_store
from scoring.training import FAMILIES
from store.db import make_engine, unit_of_work
from store.migrate import upgrade
from worker.processes import kill_tree, start_beat, start_worker, stop

SECRET_ENV = {"salesforce": "LEADSCORE_LIVE_SALESFORCE_CLIENT_SECRET", "hubspot": "LEADSCORE_LIVE_HUBSPOT_TOKEN"}


@dataclass
class ScoreSeen:
    score: float | None
    scored_at: str | None
    writes: int  # our score writes for this lead since the change (each carries a new scored-at)


@dataclass
class LiveLoop:
    """Owns a crmsim, a config file, an environment for the processes, and the processes."""

    sim: Any
    database_url: str
    broker_url: str
    workdir: Path
    sync_seconds: int = 10
    min_per_class: int = 100
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        info = self.sim.info()
        sf, hs = info["salesforce"], info["hubspot"]
        config = {
            "connections": [
                {"name": "salesforce", "kind": "salesforce", "instance_url": sf["instance_url"],
                 "domain": "crmsim.my", "client_id": sf["client_id"], "client_secret_env": SECRET_ENV["salesforce"],
                 "ca_bundle": sf["ca_bundle"], "login_via_instance": True},
                {"name": "hubspot", "kind": "hubspot", "host": hs["host"], "access_token_env": SECRET_ENV["hubspot"]},
            ],
            "tiers": {"mode": "capacity", "thresholds": {"A": 5, "B": 15, "C": 30}},
            "routing": [{"to": "A", "actions": [{"type": "create_task", "subject": "Hot lead: call now",
                                                   "due_hours": 4}]}],
            "schedules": {"sync_seconds": self.sync_seconds, "writeback_seconds": self.sync_seconds},
            "training": {"min_per_class": self.min_per_class},
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "leadscore.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.env = dict(os.environ)
        self.env.update({
            "LEADSCORE_DATABASE_URL": self.database_url,
            "LEADSCORE_BROKER_URL": self.broker_url,
            "LEADSCORE_RESULT_BACKEND": self.broker_url,
            "LEADSCORE_CONFIG_FILE": str(self.config_path),
            "LEADSCORE_VAR_DIR": str(self.workdir),
            SECRET_ENV["salesforce"]: sf["client_secret"],
            SECRET_ENV["hubspot"]: hs["access_token"],
        })

    # -- set-up ------------------------------------------------------------------------------------

    def bootstrap(self, *, families: Sequence[str] = FAMILIES,
                  training_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Migrate, set the CRMs up, then sync, train, score and write back once, in this process (as
        an admin would with the CLI before starting beat). Returns the training summary.

        ``families`` and ``training_options`` go to the training (a test of the loop needs one model,
        not the comparison of all families)."""
        config = load_config(self.config_path)
        upgrade(self.database_url)
        engine = make_engine(self.database_url)
        secrets = {c.name: ConnectionSecrets.from_env(c, self.env) for c in config.connections}
        try:
            # `leadscore crm setup`: without the HubSpot score properties every write-back batch is
            # refused and split down to single records (thousands of calls against the burst limit).
            for result in crm_setup(config, secrets, engine=engine):
                if not result.ok:
                    raise RuntimeError("crm setup failed: " + "; ".join(admin_instructions(result)))
            for conn in config.connections:
                sync_connection(engine, conn, secrets[conn.name])
            with unit_of_work(engine) as session:
                trained = train_from_store(session, config=config.training, catboost_iterations=200,
                                           families=families, training_options=training_options).to_dict()
            with unit_of_work(engine) as session:
                score_leads(session, all=True)
            drain_outbox(engine, config, secrets)
        finally:
            engine.dispose()
        return trained

    def start(self, *, beat: bool = True) -> None:
        self.processes["worker"] = start_worker(self.env, self.workdir / "worker.log")
        if beat:
            self.processes["beat"] = start_beat(self.env, self.workdir / "beat.log", self.workdir / "beat-schedule")

    def kill_worker(self) -> None:
        """SIGKILL the worker (and its pool children): no warm shutdown, no acks."""
        kill_tree(self.processes.pop("worker"))

    def restart_worker(self) -> None:
        self.processes["worker"] = start_worker(self.env, self.workdir / "worker.log")

    def close(self) -> None:
        for proc in self.processes.values():
            stop(proc)
        self.processes.clear()

    # -- changes and observations -----------------------------------------------------------------

    def open_salesforce_leads(self, count: int, *, max_age_days: int = 30) -> list[tuple[str, str]]:
        """(person key, Salesforce id) of recent, open, undeleted leads, newest first."""
        store = self.sim.salesforce.store
        now = self.sim.world.clock.now()
        out: list[tuple[str, str]] = []
        people = sorted(self.sim.world.people.values(), key=lambda p: p.created_at, reverse=True)
        for person in people:
            if person.crm != "salesforce" or person.deleted or person.converted_at is not None:
                continue
            if person.created_at < now - timedelta(days=max_age_days):
                break
            crm_id = store.crm_id(person.key)
            if crm_id and self._field(crm_id, "Lead_Score__c") is not None:
                out.append((person.key, crm_id))
            if len(out) >= count:
                break
        return out

    def add_intent(self, person_key: str, *, pricing_visits: int = 5, meetings: int = 1) -> datetime:
        """New high-intent activity on a lead, dated an hour ago in CRM time; returns CRM now."""
        now: datetime = self.sim.world.clock.now()
        when = now - timedelta(hours=1)
        store = self.sim.salesforce.store
        stamp = f"{time.monotonic_ns()}"
        for i in range(pricing_visits):
            store.put_activity(Activity(key=f"LIVE-{person_key}-{stamp}-p{i}", person_key=person_key,
                                        type="web_visit", occurred_at=when + timedelta(minutes=i), detail="/pricing"))
        for i in range(meetings):
            store.put_activity(Activity(key=f"LIVE-{person_key}-{stamp}-m{i}", person_key=person_key,
                                        type="meeting", occurred_at=when + timedelta(minutes=30 + i),
                                        detail="Demo call"))
        return now

    def _field(self, crm_id: str, name: str) -> Any:
        record = self.sim.salesforce.store.get(crm_id)
        if record is None:
            return None
        return record.values.get(name)

    def seen(self, crm_id: str, since_index: int) -> ScoreSeen:
        writes = 0
        for entry in list(self.sim.salesforce.store.write_log)[since_index:]:
            if entry["id"] == crm_id and entry["source"] == "api" and "Lead_Scored_At__c" in entry["fields"]:
                writes += 1
        return ScoreSeen(score=self._field(crm_id, "Lead_Score__c"), scored_at=self._field(crm_id, "Lead_Scored_At__c"),
                         writes=writes)

    def write_log_position(self) -> int:
        return len(self.sim.salesforce.store.write_log)

    def wait_for_new_score(self, crm_id: str, previous_scored_at: str | None, *, timeout: float) -> float | None:
        """Seconds until the lead's ``Lead_Scored_At__c`` changed in the CRM, or None on timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self._field(crm_id, "Lead_Scored_At__c") != previous_scored_at:
                return time.monotonic() - started
            time.sleep(0.25)
        return None
