"""A CRM whose TLS certificate is not trusted: one line that says so, and no retries.

crmsim serves Salesforce over HTTPS with its own CA. Verified against other CAs (the public ones)
it fails as a real org behind a TLS-intercepting proxy, or with the wrong ``ca_bundle``, does:
the error names the certificate problem and the address, and is not retried (it cannot pass
before the bundle changes).
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest
import requests
import yaml
from sqlalchemy import Engine, select

from connectors.errors import CRMError, FatalCRMError, RetriableCRMError
from connectors.salesforce.client import map_salesforce_error
from connectors.sync import sync_connection
from crmsim.app import CRMSim
from store.db import engine_for, unit_of_work
from store.migrate import upgrade
from store.models import SyncRun
from tests.cli.support import leadscore_here
from tests.connectors.test_writeback_support import secrets_for, sf_conn, start_sim


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    sim = start_sim(leads=20, seed=4)
    yield sim
    sim.stop()


def test_an_untrusted_certificate_is_named_and_not_retried(sim: CRMSim, tmp_path: Path) -> None:
    info = sim.info()["salesforce"]
    address = info["instance_url"].rstrip("/")
    with pytest.raises(requests.exceptions.SSLError) as raised:
        requests.get(f"{address}/services/data", timeout=10)  # system trust only, as without ca_bundle
    mapped = map_salesforce_error(raised.value)
    assert isinstance(mapped, FatalCRMError) and not isinstance(mapped, RetriableCRMError)
    assert mapped.code == "CERTIFICATE_VERIFY_FAILED"
    assert "TLS certificate verify failed: unable to get local issuer certificate" in str(mapped)
    assert f"(at {address})" in str(mapped)

    # The same through `leadscore sync`, as an admin who gave the wrong ca_bundle meets it.
    # A bundle that does not hold crmsim's CA (the public CAs): the wrong bundle given.
    conn = {**sf_conn(sim).model_dump(mode="json", exclude_none=True), "ca_bundle": certifi.where()}
    (tmp_path / "leadscore.yaml").write_text(yaml.safe_dump({"connections": [conn]}), encoding="utf-8")
    url = f"sqlite:///{(tmp_path / 'leadscore.db').as_posix()}"
    upgrade(url)
    env = {"LEADSCORE_CONFIG_FILE": str(tmp_path / "leadscore.yaml"), "LEADSCORE_DATABASE_URL": url,
           "LEADSCORE_VAR_DIR": str(tmp_path / "var"), "LEADSCORE_TEST_SF_SESSION": info["session_id"]}
    synced = leadscore_here("sync", cwd=tmp_path, env=env)
    assert synced.returncode == 1 and "Traceback" not in synced.stderr
    assert "TLS certificate verify failed: unable to get local issuer certificate" in synced.stderr, synced.stderr
    assert "retrying cannot help" in synced.stderr
    with unit_of_work(engine_for(url)) as session:
        errors = set(session.scalars(select(SyncRun.error)))
    assert errors and all("TLS certificate verify failed" in (e or "") for e in errors), errors


def test_a_refused_connection_names_its_address_without_urllib3s_deprecated_pool() -> None:
    # urllib3 2 warns that NewConnectionError.pool goes away (use .conn): errors read only .conn.
    from urllib3.connection import HTTPConnection
    from urllib3.exceptions import NewConnectionError

    from connectors.errors import address_of

    refused = NewConnectionError(HTTPConnection("crm.example", 8443), "Connection refused")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert address_of(refused) == " (at crm.example:8443)"


def test_a_ca_bundle_gone_since_the_config_was_read_is_one_line_not_a_traceback(sim: CRMSim, tmp_path: Path,
                                                                                 sqlite_engine: Engine) -> None:
    """A worker reads its configuration once and runs for weeks; the ``ca_bundle`` file can go
    meanwhile (crmsim removes its CA when stopped). requests then raises a bare OSError, which an
    admin trial saw as a traceback every minute in the worker's log and a raw error in `status`:
    it is the connection's one line now, and not retried."""
    bundle = tmp_path / "ca.pem"
    shutil.copyfile(sim.info()["salesforce"]["ca_bundle"], bundle)
    conn = sf_conn(sim).model_copy(update={"ca_bundle": str(bundle)})  # read while the file existed
    bundle.unlink()

    with pytest.raises(OSError, match="Could not find a suitable TLS CA certificate bundle") as raised:
        requests.get(sim.info()["salesforce"]["instance_url"], verify=str(bundle), timeout=10)
    expected = (f"Salesforce connection failed: the CA bundle {bundle} does not exist (restore it or change the "
                "connection's ca_bundle: retrying cannot help)")
    mapped = map_salesforce_error(raised.value)
    assert isinstance(mapped, FatalCRMError) and not isinstance(mapped, RetriableCRMError)
    assert str(mapped) == expected

    with contextlib.suppress(CRMError):
        sync_connection(sqlite_engine, conn, secrets_for(sim)["sf"])
    with unit_of_work(sqlite_engine) as session:
        errors = set(session.scalars(select(SyncRun.error)))
    assert errors == {expected}, errors
