"""`leadscore demo` end to end, as a user runs it: a subprocess, the embedded default, JSON out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_the_whole_loop_and_writes_the_json_contract(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    env["LEADSCORE_VAR_DIR"] = str(tmp_path / "var")
    out = tmp_path / "demo.json"
    report = tmp_path / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo", "--leads", "3000", "--seed", "2", "--min-per-class", "150",
         "--json", str(out), "--report", str(report)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["leads"] > 2500 and summary["activities"] > summary["leads"]
    for crm in ("salesforce", "hubspot"):
        assert summary["sync"][crm]["records"] > 0
        assert summary["sync"][crm]["api_calls"] > 0
        assert summary["writeback"][crm]["records"] > 0
    # The demo's crmsim refuses like a real org (a validation rule on 2 % of Salesforce leads,
    # a deactivated rep, merged contacts): every failed write or action is a refusal the demo
    # expects and counts, none is "unexpected".
    sf, hs = summary["writeback"]["salesforce"], summary["writeback"]["hubspot"]
    refused = summary["refused"]
    assert "unexpected" not in refused, refused
    assert refused.get("validation_rule", 0) > 0 and sf["failed"] > 0
    assert sf["failed"] + hs["failed"] <= sum(refused.values())
    # Salesforce packs 1,000 records per Composite call, HubSpot 100 per batch (both API maxima).
    assert sf["api_calls"] <= -(-(sf["records"] + sf["failed"]) // 1000) + 1
    assert hs["api_calls"] <= -(-(hs["records"] + hs["failed"]) // 100) + 1
    model = summary["model"]
    assert 0.5 < model["test_auc"] <= 1.0
    assert model["oracle_auc"] is not None and model["test_auc"] <= model["oracle_auc"] + 0.02
    assert set(summary["tiers"]) == {"A", "B", "C", "D"}
    assert sum(t["leads"] for t in summary["tiers"].values()) > 0
    assert summary["tiers"]["A"]["conversion_rate"] > summary["tiers"]["D"]["conversion_rate"]
    assert set(summary["routing"]) >= {"assigned", "nurtured", "paused"}
    assert "leadscore demo" in result.stdout
    assert report.read_text().lstrip().lower().startswith("<!doctype html")
    assert (tmp_path / "var" / "demo" / "leadscore.db").exists()
    assert not (tmp_path / "var" / "leadscore.db").exists()  # the demo keeps to its own database
