"""`leadscore web` as revops use it: the real command, headless Chromium, a scored world on PostgreSQL.

Signs in through the form, opens every page (at 1280 px and at a phone's 390 px), moves tier
thresholds and watches the live preview follow the JSON API, saves as an editor (the new policy is
active in the store with the editor's name), and is refused as a viewer. Screenshots go to
``$LEADSCORE_CONSOLE_SCREENSHOTS`` when set (docs/img is refreshed that way), else to a temp folder.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scoring.tiers import find_active_policy
from store.db import unit_of_work
from tests.web.browser import Browser
from tests.web.conftest import AUTH_ENV, DB_PASSWORD, SECRET_KEY, USERS, World

PAGES = [("/", "Overview"), ("/tiers", "Tiers"), ("/model", "Model"), ("/monitor", "Monitor"),
         ("/leads", "Leads"), ("/sync", "Sync")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    env.update(LEADSCORE_DATABASE_URL=world.url, LEADSCORE_WEB_AUTH=AUTH_ENV, LEADSCORE_WEB_SECRET_KEY=SECRET_KEY,
               LEADSCORE_VAR_DIR=str(tmp_path_factory.mktemp("var")), LEADSCORE_CONFIG_FILE=str(world.config_file))
    log = tmp_path_factory.mktemp("web") / "web.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from worker.cli import main; main()", "web", "--port",
                                 str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/api/health", auth=("bob", USERS["bob"][0]), timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"leadscore web did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        # Bound to loopback by default (no --host given).
        assert f"on http://127.0.0.1:{port}/" in log.read_text()
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert DB_PASSWORD not in log.read_text() and USERS["alice"][0] not in log.read_text()


@pytest.fixture
def browser(chromium: str) -> Iterator[Browser]:
    # tests/conftest.py's chromium: skipped with the install command when absent, a failure in CI.
    b = Browser(binary=chromium)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("LEADSCORE_CONSOLE_SCREENSHOTS")
    return Path(target) if target else tmp_path_factory.mktemp("screenshots")


def _sign_in(b: Browser, base: str, user: str, path: str = "/") -> None:
    b.open(base + path)
    b.wait_for("document.querySelector('#login')", "the sign-in form")
    b.eval(f"document.querySelector('#username').value = {json.dumps(user)};"
           f"document.querySelector('#password').value = {json.dumps(USERS[user][0])}; true")
    b.click_and_wait("#login button[type=submit]", path)
    assert b.text("#who") == f"{user} ({USERS[user][1]})"


def _set_thresholds(b: Browser, values: dict[str, str]) -> None:
    # Lower tiers first, so every intermediate state is a valid policy (A > B > C).
    for tier in sorted(values, reverse=True):
        b.eval(f"var i = document.querySelector('#threshold-{tier}'); i.value = {json.dumps(values[tier])};"
               "i.dispatchEvent(new Event('input', {bubbles: true})); true")


def _preview_leads(b: Browser) -> dict[str, int]:
    raw = b.eval("Array.from(document.querySelectorAll('#preview-table tr[data-tier]')).map("
                 "r => [r.dataset.tier, r.querySelector('.leads').innerText])")
    return {t: int(n) for t, n in raw}


def test_revops_walk_through_the_console(server: str, browser: Browser, world: World, shots: Path) -> None:
    b = browser
    anonymous = httpx.get(server + "/tiers", headers={"Accept": "text/html"})
    assert anonymous.status_code == 401
    _sign_in(b, server, "alice", "/tiers")

    # Every page, from the navigation bar, readable at 1280 px and on a phone (no sideways page scroll).
    for path, title in PAGES:
        b.click_and_wait(f"header nav a[href='{path}']", path)
        assert b.text("h1").startswith(title)
        assert "Internal Server Error" not in b.text("body")
        name = title.lower()
        b.screenshot(shots / f"console-{name}.png")
        b.screenshot(shots / f"console-{name}-phone.png", width=390, mobile=True)
        assert b.eval("document.documentElement.scrollWidth <= window.innerWidth + 1"), f"{path} overflows a phone"
        b.viewport(1280, 900)
    b.open(server + "/model")
    assert b.eval("document.querySelectorAll('svg.plot').length") >= 2

    # Tiers: the live preview follows the thresholds and equals the JSON API for them.
    b.open(server + "/tiers")
    b.wait_for("document.querySelector('#preview-table')", "the first preview")
    before = _preview_leads(b)
    new = {"A": "20", "B": "10", "C": "5"}
    api = httpx.get(server + "/api/tiers/preview", params=new, auth=("alice", USERS["alice"][0])).json()
    expected = {t: api["tiers"][t]["leads"] for t in "ABCD"}
    assert expected != before, "pick thresholds that move leads"
    _set_thresholds(b, new)
    b.wait_for(f"(function(){{var r = Array.from(document.querySelectorAll('#preview-table tr[data-tier]'));"
               f"return JSON.stringify(r.map(x => [x.dataset.tier, +x.querySelector('.leads').innerText])) === "
               f"{json.dumps(json.dumps([[t, expected[t]] for t in 'ABCD'], separators=(',', ':')))}}})()",
               "the preview to show the new thresholds' counts")
    assert b.text("#routing-preview") == (f"{api['routing_actions']['total']} actions for "
                                          f"{api['routing_actions']['leads']} leads:")
    b.eval("document.querySelector('#suggest').click(); true")
    b.wait_for("document.querySelector('#suggest-table')", "the cost-based suggestion")
    b.screenshot(shots / "console-tiers-preview.png")

    # Save as the editor: a confirmation page, then the policy is active with alice's name.
    b.click_and_wait("#save", "/tiers")
    assert "Confirm" in b.text("h1")
    b.screenshot(shots / "console-tiers-confirm.png")
    b.click_and_wait("#confirm", "saved=")
    assert "is active" in b.text("#saved")
    with unit_of_work(world.engine) as session:
        active = find_active_policy(session)
        assert active is not None and active.created_by == "alice"
        assert dict(active.thresholds) == {"A": 20.0, "B": 10.0, "C": 5.0}
        saved_id = active.id

    # A lead's story, found by its CRM id.
    b.open(server + "/leads")
    b.eval(f"document.querySelector('#q').value = {json.dumps(world.routed_crm_id)}; true")
    b.click_and_wait("#search-form button", "q=")
    b.click_and_wait("#results a[href^='/leads/id:']", "/leads/id:")
    assert world.routing_ref in b.text("#routing") and b.eval("document.querySelectorAll('svg.plot').length") == 1
    b.screenshot(shots / "console-lead.png")
    b.screenshot(shots / "console-lead-phone.png", width=390, mobile=True)
    b.viewport(1280, 900)

    # The viewer: no save button, and a forged save is refused; the store keeps alice's policy.
    b.click_and_wait("header form[action='/logout'] button", "/")
    _sign_in(b, server, "bob", "/tiers")
    assert b.eval("document.querySelector('#save') === null")
    status = b.eval("fetch('/tiers', {method: 'POST', body: new URLSearchParams({csrf: "
                    "document.querySelector('input[name=csrf]').value, mode: 'score', A: '50', B: '30', C: '10', "
                    "confirm: 'yes'})}).then(r => r.status)")
    assert status == 403
    with unit_of_work(world.engine) as session:
        active = find_active_policy(session)
        assert active is not None and active.id == saved_id and active.created_by == "alice"
