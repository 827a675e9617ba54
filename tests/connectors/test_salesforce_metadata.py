"""`crm setup --salesforce-metadata DIR`: DX source that parses and names every configured field."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from config.app_config import SalesforceFields
from config.settings import get_settings
from connectors.salesforce.metadata import FEEDBACK_VALUES, METADATA_NS
from worker.cli.writeback import app

NS = {"md": METADATA_NS}


def _config(tmp_path: Path, score_fields: dict[str, str] | None = None) -> Path:
    conn: dict[str, object] = {"name": "org", "kind": "salesforce", "instance_url": "https://acme.my.salesforce.com"}
    if score_fields:
        conn["score_fields"] = score_fields
    path = tmp_path / "leadscore.yaml"
    path.write_text(yaml.safe_dump({"connections": [conn]}), encoding="utf-8")
    return path


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: Path, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("LEADSCORE_CONFIG_FILE", str(config))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["crm", "setup", *args])
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output + (str(result.exception) if result.exception else "")


def test_metadata_parses_and_names_every_configured_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renamed = {"score": "Acme_Score__c", "feedback": "Acme_Feedback__c"}
    out = tmp_path / "dx"
    code, output = _run(tmp_path, monkeypatch, _config(tmp_path, renamed), "--salesforce-metadata", str(out))
    assert code == 0, output
    assert "sf project deploy start" in output
    project = json.loads((out / "sfdx-project.json").read_text())
    assert project["packageDirectories"][0]["path"] == "force-app"

    fields = SalesforceFields(**renamed)
    expected_lead = {fields.score, fields.likelihood, fields.fit, fields.engagement, fields.score_change, fields.tier,
                     fields.reasons, fields.model, fields.scored_at, fields.feedback, fields.feedback_comment}
    expected_account = {fields.account_score, fields.account_engaged_people}
    assert "Acme_Score__c" in expected_lead and "Lead_Score__c" not in expected_lead
    base = out / "force-app" / "main" / "default"
    parsed: dict[str, ET.Element] = {}
    for sobject, names in (("Lead", expected_lead), ("Account", expected_account)):
        files = sorted((base / "objects" / sobject / "fields").glob("*.field-meta.xml"))
        assert {f.name.removesuffix(".field-meta.xml") for f in files} == names
        for f in files:
            root = ET.parse(f).getroot()  # noqa: S314 - a file this test just wrote
            assert root.tag == f"{{{METADATA_NS}}}CustomField"
            assert root.findtext("md:fullName", namespaces=NS) == f.name.removesuffix(".field-meta.xml")
            assert root.findtext("md:label", namespaces=NS)
            parsed[f"{sobject}.{root.findtext('md:fullName', namespaces=NS)}"] = root

    def values(name: str) -> list[str]:
        root = parsed[name]
        assert root.findtext("md:type", namespaces=NS) == "Picklist"
        assert root.findtext("md:valueSet/md:restricted", namespaces=NS) == "true"
        return [v.findtext("md:fullName", namespaces=NS) or ""
                for v in root.findall("md:valueSet/md:valueSetDefinition/md:value", NS)]

    assert values("Lead.Acme_Feedback__c") == list(FEEDBACK_VALUES) == ["Too high", "Too low", "About right"]
    assert values(f"Lead.{fields.tier}") == ["A", "B", "C", "D"]
    score = parsed["Lead.Acme_Score__c"]
    assert (score.findtext("md:type", namespaces=NS), score.findtext("md:precision", namespaces=NS)) == ("Number", "3")
    likelihood = parsed[f"Lead.{fields.likelihood}"]
    assert likelihood.findtext("md:type", namespaces=NS) == "Percent"
    assert parsed[f"Lead.{fields.reasons}"].findtext("md:length", namespaces=NS) == "255"

    perm = ET.parse(base / "permissionsets" / "Leadscore_Integration.permissionset-meta.xml").getroot()  # noqa: S314
    assert perm.tag == f"{{{METADATA_NS}}}PermissionSet" and perm.findtext("md:label", namespaces=NS)
    granted = {p.findtext("md:field", namespaces=NS): (p.findtext("md:editable", namespaces=NS),
                                                      p.findtext("md:readable", namespaces=NS))
               for p in perm.findall("md:fieldPermissions", NS)}
    assert set(granted) == set(parsed) and all(v == ("true", "true") for v in granted.values())
    objects = {p.findtext("md:object", namespaces=NS): p.findtext("md:allowEdit", namespaces=NS)
               for p in perm.findall("md:objectPermissions", NS)}
    assert objects == {"Lead": "true", "Account": "true", "Contact": "false"}


def test_metadata_for_a_hubspot_connection_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "leadscore.yaml"
    config.write_text(yaml.safe_dump({"connections": [{"name": "hs", "kind": "hubspot"}]}), encoding="utf-8")
    code, output = _run(tmp_path, monkeypatch, config, "--salesforce-metadata", str(tmp_path / "x"),
                        "--connection", "hs")
    assert code == 1 and "needs a Salesforce one" in output
    assert not (tmp_path / "x").exists()
