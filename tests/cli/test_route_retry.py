"""`leadscore route` when the CRM refuses tasks for leads of a rep who left, as an admin meets it:
the refusal counted with the command that sends them again, `status` saying why, and once the rep
is reactivated in the CRM, `route --retry-failed --reason inactive_owner` creating the tasks
(read back from crmsim's store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from crmsim.app import CRMSim
from store.db import engine_for
from store.migrate import upgrade
from tests.cli.support import leadscore_here
from tests.connectors.test_writeback_support import (
    add_leads,
    score,
    sf_active_lead_ids,
    sf_conn,
    sf_set_owners,
    start_sim,
)

ROUTING = [{"to": "A", "actions": [{"type": "create_task", "subject": "Call hot lead"}]}]


@pytest.fixture
def sim() -> Iterator[CRMSim]:
    sim = start_sim(leads=80, seed=9)
    yield sim
    sim.stop()


def _tasks(sim: CRMSim, crm_ids: list[str]) -> list[tuple[str, str]]:
    """leadscore's tasks of these leads: (lead, owner), one entry per task."""
    return sorted((r.values["WhoId"], r.values["OwnerId"]) for r in sim.salesforce.store.records["Task"].values()
                  if r.values["WhoId"] in crm_ids and "[leadscore #" in (r.values["Subject"] or ""))


def test_tasks_refused_for_a_rep_who_left_are_sent_after_the_rep_is_back(sim: CRMSim, tmp_path: Path) -> None:
    from connectors.routing import plan_routing
    from tests.connectors.test_writeback_support import app_config

    conn = sf_conn(sim).model_dump(mode="json", exclude_none=True)
    (tmp_path / "leadscore.yaml").write_text(yaml.safe_dump({"connections": [conn], "routing": ROUTING},
                                                            sort_keys=False), encoding="utf-8")
    url = f"sqlite:///{(tmp_path / 'leadscore.db').as_posix()}"
    upgrade(url)
    env = {"LEADSCORE_CONFIG_FILE": str(tmp_path / "leadscore.yaml"), "LEADSCORE_DATABASE_URL": url,
           "LEADSCORE_TEST_SF_SESSION": sim.info()["salesforce"]["session_id"]}
    left = sim.inactive_owner_ids[0]
    ids = sf_active_lead_ids(sim, 4)
    sf_set_owners(sim, {i: left for i in ids[:3]})
    leads = add_leads(engine_for(url), "sf", ids, owners={i: left for i in ids[:3]})
    score(engine_for(url), leads.values(), tier="A", hook=plan_routing(app_config(sim, ROUTING)))

    refused = leadscore_here("route", cwd=tmp_path, env=env)

    assert refused.returncode == 0, refused.stdout + refused.stderr
    said = " ".join(refused.stdout.split())
    # The CRM's code, with the word `status` groups it under and `--reason` takes.
    assert "failed: 3 × INACTIVE_OWNER_OR_USER (inactive_owner)" in said, refused.stdout
    assert ("once the cause is fixed in the CRM, `leadscore route --retry-failed --reason inactive_owner` "
            "sends them again") in said, refused.stdout
    assert [lead for lead, _owner in _tasks(sim, ids)] == [ids[3]]
    status = leadscore_here("status", cwd=tmp_path, env=env)
    assert "failed 3 (create_task 3: inactive_owner 3)" in " ".join(status.stdout.split()), status.stdout

    # --reason alone is refused; a reason nothing failed for requeues nothing and says so.
    alone = leadscore_here("route", "--reason", "inactive_owner", cwd=tmp_path, env=env)
    assert alone.returncode == 2 and "--reason goes with --retry-failed" in alone.stderr, alone.stderr
    other = leadscore_here("route", "--retry-failed", "--reason", "validation_rule", cwd=tmp_path, env=env)
    assert "no failed routing actions refused for validation_rule to requeue" in other.stdout, other.stdout

    sim.salesforce.store.set_user_active(left)  # the admin reactivates the rep in Setup
    again = leadscore_here("route", "--retry-failed", "--reason", "inactive_owner", cwd=tmp_path, env=env)

    assert again.returncode == 0, again.stdout + again.stderr
    assert "requeued 3 failed routing actions refused for inactive_owner: sf 3" in again.stdout, again.stdout
    assert "failed:" not in again.stdout, again.stdout
    tasks = _tasks(sim, ids)  # one task per lead, the refused ones owned by the rep who is back
    assert [lead for lead, _owner in tasks] == sorted(ids), tasks
    assert all(owner == left for lead, owner in tasks if lead in ids[:3]), tasks
    status = leadscore_here("status", cwd=tmp_path, env=env)
    assert "routing: done 4" in " ".join(status.stdout.split()), status.stdout
