"""A console on a store with nothing in it yet: every page answers and says what is missing."""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from config.app_config import AppConfig
from web.app import create_app
from web.auth import Authenticator, parse_users


@pytest.mark.parametrize(("path", "says"), [
    ("/", "No champion model yet"),
    ("/", "No connection has synced yet"),
    ("/tiers", "No policy stored yet"),
    ("/tiers/preview?A=80&B=60&C=35", "0 of 0 current leads would change tier"),
    ("/tiers/preview?A=80&B=60&C=35", "no champion model yet"),
    ("/tiers/suggest?value=100&cost=1", "no champion model yet"),
    ("/model", "No champion model yet"),
    ("/monitor", "No monitor report yet"),
    ("/leads?q=x", "No lead matches"),
    ("/sync", "No stream has synced yet"),
    ("/workers", "workers: none needed (no broker configured: tasks run in the command that starts them)"),
])
def test_every_page_names_what_is_missing(sqlite_engine: Engine, path: str, says: str) -> None:
    app = create_app(Authenticator(parse_users("ann:pw:viewer")), engine_factory=lambda: sqlite_engine,
                     config=AppConfig(), broker_url=None)
    with TestClient(app) as client:
        response = client.get(path, auth=("ann", "pw"))
    assert response.status_code == 200 and says in response.text


def test_api_on_an_empty_store(sqlite_engine: Engine) -> None:
    app = create_app(Authenticator(parse_users("ann:pw:viewer")), engine_factory=lambda: sqlite_engine,
                     config=AppConfig(), broker_url=None)
    with TestClient(app) as client:
        health = client.get("/api/health", auth=("ann", "pw")).json()
        preview = client.get("/api/tiers/preview?A=80&B=60&C=35", auth=("ann", "pw")).json()
        lead = client.get("/api/leads/00Q1", auth=("ann", "pw"))
    assert health == {"status": "ok", "database": "ok", "champion": None, "leads": 0, "current_scores": 0,
                      "open_leads": 0, "open_scored": 0}
    assert preview["current_leads"] == 0 and preview["routing_actions"]["total"] == 0
    assert preview["recent"]["note"].startswith("no champion model yet")
    assert lead.status_code == 404 and "no lead with CRM id" in lead.json()["error"]


def test_a_down_broker_is_one_problem_on_the_console(sqlite_engine: Engine) -> None:
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    app = create_app(Authenticator(parse_users("ann:pw:viewer")), engine_factory=lambda: sqlite_engine,
                     config=AppConfig(), broker_url=f"redis://127.0.0.1:{port}/0")
    with TestClient(app) as client:
        overview = client.get("/", auth=("ann", "pw"))
        card = client.get("/workers", auth=("ann", "pw"))
        api = client.get("/api/workers", auth=("ann", "pw")).json()
    # The overview fetches the card after it is shown (a broadcast waits for answers).
    assert 'hx-get="/workers"' in overview.text
    assert api["broker"] is True and api["error"] and api["workers"] == {}
    assert api["problems"] == [f"broker unreachable: {api['error']}"]
    assert f'<li class="alert">broker unreachable: {api["error"]}</li>' in card.text
    assert "liveness-ok" not in card.text
