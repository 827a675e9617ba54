"""`leadscore writeback` when HubSpot lacks leadscore's properties (`crm setup` never ran), as an
admin meets it: every write refused in one call per batch, a line saying what to run, and the
commands it names bring the scores into the CRM (read back from crmsim's store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from crmsim.app import CRMSim
from store.db import engine_for
from store.migrate import upgrade
from tests.cli.support import leadscore_here
from tests.connectors.test_writeback_support import add_leads, hs_conn, hs_contact_ids, score, start_sim


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    sim = start_sim(leads=80, seed=5)  # HubSpot without the leadscore_* properties
    yield sim
    sim.stop()


def test_missing_properties_refused_in_one_call_then_sent_after_setup(sim: CRMSim, tmp_path: Path) -> None:
    config = {"connections": [hs_conn(sim).model_dump(mode="json", exclude_none=True)]}
    (tmp_path / "leadscore.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    url = f"sqlite:///{(tmp_path / 'leadscore.db').as_posix()}"
    upgrade(url)
    env = {"LEADSCORE_CONFIG_FILE": str(tmp_path / "leadscore.yaml"), "LEADSCORE_DATABASE_URL": url,
           "LEADSCORE_TEST_HS_TOKEN": sim.info()["hubspot"]["access_token"]}
    ids = hs_contact_ids(sim)[:20]
    leads = add_leads(engine_for(url), "hs", ids)
    score(engine_for(url), leads.values(), score_value=87, tier="A")
    before = sim.call_counts()["hubspot"].get("POST contacts/batch/update", 0)

    refused = leadscore_here("writeback", cwd=tmp_path, env=env)

    # A set-up step to do, not the org's normal refusals: exit 1 with one line saying so.
    assert refused.returncode == 1, refused.stdout + refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last == (f"error: the CRM refused {len(ids)} writes for a cause to fix ({len(ids)} × "
                    "PROPERTY_DOESNT_EXIST): see the lines above, then `leadscore writeback --retry-failed`"), last
    assert f"failed: {len(ids)} × PROPERTY_DOESNT_EXIST" in refused.stdout
    hint = ("the CRM has no such field or property (or leadscore's user cannot see it): run `leadscore crm setup`, "
            "then `leadscore writeback --retry-failed --reason PROPERTY_DOESNT_EXIST`")
    assert hint in " ".join(refused.stdout.split()), refused.stdout
    assert sim.call_counts()["hubspot"].get("POST contacts/batch/update", 0) - before == 1

    setup = leadscore_here("crm", "setup", cwd=tmp_path, env=env)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    again = leadscore_here("writeback", "--retry-failed", "--reason", "PROPERTY_DOESNT_EXIST", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"requeued {len(ids)} failed writes" in again.stdout
    contacts = sim.hubspot.store.records["contacts"]
    assert {contacts[int(i)].props.get("leadscore_score") for i in ids} == {"87"}
    assert {contacts[int(i)].props.get("leadscore_tier") for i in ids} == {"A"}
