"""`leadscore status`, `leadscore report` and the console name the same latest monitor run and
date the model on the data's clock (revops compared them and found two answers each)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import select

from scoring.monitoring.clock import data_clock, trained_at
from scoring.monitoring.run import latest_report
from store.db import unit_of_work
from store.models import ModelStatus, ModelVersion
from tests.cli.support import leadscore_here
from tests.web.conftest import World


def test_status_names_the_latest_report_and_the_models_data_date(world: World, tmp_path: Path) -> None:
    env = {"LEADSCORE_DATABASE_URL": world.url, "LEADSCORE_CONFIG_FILE": str(world.config_file),
           "LEADSCORE_VAR_DIR": str(tmp_path / "var")}
    with unit_of_work(world.engine) as session:
        newest = data_clock(session)
        champion = session.scalars(select(ModelVersion).where(ModelVersion.status == ModelStatus.champion)).one()
        trained = trained_at(champion)
    assert newest is not None

    # A run as of a time after the newest data (the latest CRM time a monitor run may take: a
    # year typed wrong is refused): it stays the latest report after a plain run.
    later = datetime.combine(newest.date() + timedelta(days=1), time(0), tzinfo=UTC)  # the next day: another date
    ahead = leadscore_here("monitor", "--as-of", later.isoformat(), cwd=tmp_path, env=env)
    assert ahead.returncode == 0, ahead.stderr
    assert re.search(r"\((\d+ alerts?(, \d+ warnings?)?|\d+ warnings?)\)", ahead.stdout), ahead.stdout
    plain = leadscore_here("monitor", cwd=tmp_path, env=env)
    assert plain.returncode == 0 and "is after the newest" not in plain.stderr

    with unit_of_work(world.engine) as session:
        latest = latest_report(session)
        assert latest is not None
        shown = latest.as_of
    assert shown.replace(tzinfo=UTC) >= later > newest  # not the plain run's (the newest data's)
    status = leadscore_here("status", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    # Before: status took the last run (as of the newest data), report and console the later one.
    assert f"monitor: {latest.status} as of {shown:%Y-%m-%d}" in status.stdout
    assert f"trained as of {trained:%Y-%m-%d}" in status.stdout, status.stdout[-1500:]



def test_status_and_the_console_count_the_same_leads(world: World, tmp_path: Path) -> None:
    """`leadscore status` had no lead totals (an admin trial asked whether everything was scored);
    it and the console's overview count each connection's leads, open leads and scored ones alike."""
    from fastapi.testclient import TestClient

    from config.app_config import load_config
    from store.models import Connection, Lead, LeadLifecycle, LeadScore
    from tests.web.conftest import AUTH_ENV, SECRET_KEY, USERS
    from web.app import create_app
    from web.auth import Authenticator, parse_users

    with unit_of_work(world.engine) as session:
        conn = session.scalars(select(Connection)).one()
        leads = session.scalars(select(Lead).where(Lead.is_deleted.is_(False))).all()
        current = set(session.scalars(select(LeadScore.lead_id).where(LeadScore.is_current.is_(True))))
    open_ids = [lead.id for lead in leads if lead.lifecycle == LeadLifecycle.open]
    scored = sum(1 for i in open_ids if i in current)
    assert len(leads) == 400 and open_ids and scored == len(open_ids)  # the world scored every open lead

    env = {"LEADSCORE_DATABASE_URL": world.url, "LEADSCORE_CONFIG_FILE": str(world.config_file),
           "LEADSCORE_VAR_DIR": str(tmp_path / "var")}
    status = leadscore_here("status", cwd=tmp_path, env=env)
    assert f"leads: {conn.name} {len(leads):,} ({len(open_ids):,} open, {scored:,} of them scored)" in " ".join(
        status.stdout.split()), status.stdout
    assert "last sync (UTC)" in status.stdout  # the times are UTC: said, not guessed

    app = create_app(Authenticator(parse_users(AUTH_ENV), key=SECRET_KEY.encode()),
                     engine_factory=lambda: world.engine, config=load_config(world.config_file))
    with TestClient(app, base_url="http://127.0.0.1:8088") as client:
        page = client.get("/", auth=("bob", USERS["bob"][0])).text
    row = re.search(r"<td><b>" + re.escape(conn.name) + r"</b>.*?</tr>", page, re.S)
    assert row, page[:2000]
    cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(0))
    assert cells[:2] == [str(len(leads)), f"{len(open_ids)} / {scored}"], cells


def test_status_json_holds_what_the_text_shows(world: World, tmp_path: Path) -> None:
    """`status --json` for scripts and monitoring: the same numbers as the text, from the store."""
    import json

    from sqlalchemy import func

    from store.models import Connection, Outbox, RoutingAction

    env = {"LEADSCORE_DATABASE_URL": world.url, "LEADSCORE_CONFIG_FILE": str(world.config_file),
           "LEADSCORE_VAR_DIR": str(tmp_path / "var")}
    out = tmp_path / "status.json"
    status = leadscore_here("status", "--json", str(out), cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    data = json.loads(out.read_text())
    with unit_of_work(world.engine) as session:
        name = session.scalars(select(Connection.name)).one()
        outbox = {str(s): n for s, n in session.execute(select(Outbox.status, func.count()).group_by(Outbox.status))}
        routing = {str(s): n for s, n in session.execute(
            select(RoutingAction.status, func.count()).group_by(RoutingAction.status))}
        champion = session.scalars(select(ModelVersion).where(ModelVersion.status == ModelStatus.champion)).one()
        latest = latest_report(session)
    said = " ".join(status.stdout.split())
    totals = data["leads"][name]
    assert f"leads: {name} {totals['leads']:,} ({totals['open']:,} open, {totals['scored']:,} of them scored)" in said
    assert totals["leads"] == 400
    assert data["outbox"] == outbox and sum(outbox.values()) > 0
    assert data["routing"] == routing
    assert [m["version"] for m in data["models"]] == [champion.version] and champion.version in said
    assert latest is not None and data["monitor"]["status"] == latest.status
    assert f"monitor: {data['monitor']['status']} as of {data['monitor']['as_of'][:10]}" in said
    assert data["sync"] and all(row["connection"] == name for row in data["sync"])
    assert data["problems"] == [] and data["config_problem"] is None and "workers" in data
