"""The YAML config is validated whole; each bad file fails with one line naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.app_config import load_config, parse_config
from config.errors import ConfigError

GOOD = """
connections:
  - name: sf-prod
    kind: salesforce
    instance_url: https://acme.my.salesforce.com
    client_secret_env: SF_SECRET
    field_map: {Budget__c: budget}
  - name: hubspot
    kind: hubspot
    access_token_env: HS_TOKEN
tiers: {mode: score, thresholds: {A: 85, B: 60, C: 30}}
routing:
  - to: A
    actions:
      - {type: assign_owner, queue: SDR Queue}
      - {type: create_task, subject: Call this hot lead, due_hours: 4}
  - to: D
    actions: [{type: pause_outreach}]
schedules: {sync_seconds: 60}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "leadscore.yaml"
    path.write_text(text)
    return path


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    sf = config.connection("sf-prod")
    assert sf.score_fields is not None and sf.score_fields.score == "Lead_Score__c"
    assert config.connection("hubspot").score_fields.score == "leadscore_score"  # type: ignore[union-attr]
    assert config.tiers.thresholds == {"A": 85, "B": 60, "C": 30}
    assert [a.type for a in config.routing[0].actions] == ["assign_owner", "create_task"]
    assert config.training.horizon_days == 90
    assert sf.bulk_threshold == 50_000  # Bulk API 2.0 first loads above 50,000 records per stream
    # A dumped config loads again (a HubSpot connection carries the default it ignores).
    assert parse_config(config.model_dump(), "dump").connection("hubspot").bulk_threshold == 50_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tiers: {thresholds: {A: 50, B: 60, C: 10}}", "tiers: thresholds must be ordered A > B > C"),
        ("tiers: {thresholds: {A: 90, B: 60, C: 10, E: 5}}", "tiers: unknown tier 'E'"),
        ("tiers: {thresholds: {A: 120, B: 60, C: 10}}", "tiers: scores run from 1 to 99: A=120 would leave tier A"),
        ("tiers: {thresholds: {A: 99.5, B: 60, C: 10}}", "A=99.5 would leave tier A empty"),
        ("tiers: {thresholds: {A: 90, B: 60, C: 0}}", "tiers: score thresholds must be within (0, 99]"),
        ("tiers: {mode: likelihood, thresholds: {A: 120, B: 60, C: 10}}", "likelihood thresholds must be within"),
        ("tiers: {mode: capacity, thresholds: {A: 50, B: 30, C: 30}}", "must leave room for D"),
        ("routing: [{to: E, actions: []}]", "routing.0.to: unknown tier 'E'"),
        ("routing: [{to: A, actions: [{type: create_task}]}]", "routing.0.actions.0: create_task needs 'subject'"),
        ("routing: [{to: A, actions: [{type: assign_owner}]}]", "assign_owner needs 'queue'"),
        ("routing: [{to: A, actions: [{type: teleport}]}]", "routing.0.actions.0.type"),
        ("connections: [{name: sf, kind: salesforce}]", "connections.0: instance_url is required"),
        ("connections: [{name: sf, kind: salesforce, instance_url: 'http://x'}]", "must start with https://"),
        ("connections: [{name: Bad Name, kind: hubspot}]", "connections.0.name"),
        ("connections: [{name: a, kind: hubspot}, {name: a, kind: hubspot}]", "duplicate connection name 'a'"),
        ("connections: [{name: a, kind: zoho}]", "connections.0.kind"),
        ("connections: [{name: sf, kind: salesforce, instance_url: 'https://x.my.salesforce.com', bulk_threshold: 0}]",
         "connections.0.bulk_threshold"),
        ("connections: [{name: a, kind: hubspot, bulk_threshold: 1000}]", "bulk_threshold is for salesforce"),
        ("schedules: {sync_seconds: 1}", "schedules.sync_seconds"),
        ("monitoring: {psi_warn: 0.3, psi_alert: 0.2}", "psi_warn must be below psi_alert"),
        ("bogus: 1", "bogus: unknown key (allowed here: connections, "),
        # A misspelt key names the nearest one the place in the file allows.
        ("trainig: {min_per_class: 20}", "trainig: unknown key (did you mean 'training'?)"),
        ("connections: [{name: hs, kind: hubspot, acess_token_env: T}]",
         "connections.0.acess_token_env: unknown key (did you mean 'access_token_env'?)"),
        ("routing: [{to: A, actions: [{type: create_task, subject: s, due_hour: 4}]}]",
         "routing.0.actions.0.due_hour: unknown key (did you mean 'due_hours'?)"),
        ("- just\n- a list", "the top level must be a mapping"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text_of_error = str(info.value)
    assert text_of_error.startswith(str(path))
    assert message in text_of_error
    assert "\n" not in text_of_error


def test_routing_to_unknown_connection_is_refused() -> None:
    data = {"connections": [{"name": "hs", "kind": "hubspot"}],
            "routing": [{"to": "A", "actions": [{"type": "pause_outreach", "connections": ["sf"]}]}]}
    with pytest.raises(ConfigError, match=r"routing.0.actions.0.connections: unknown connection 'sf'"):
        parse_config(data, "x.yaml")


def test_missing_and_invalid_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML at line 3"):
        load_config(write(tmp_path, "a: 1\nb: [unclosed\n"))
    # An unquoted value with ": " in it: the line names the spot and the parser's reason.
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, "routing:\n  - to: A\n    campaign: Nurture Track: Evaluators\n"))
    assert str(raised.value).endswith("not valid YAML at line 3, column 28: mapping values are not allowed here")


def test_no_config_file_gives_defaults() -> None:
    config = load_config(None)
    assert config.connections == []
    assert config.tiers.mode == "score"


def test_shipped_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "leadscore.example.yaml"
    config = load_config(example)
    assert {c.name for c in config.connections} == {"salesforce", "hubspot"}
    assert config.routing[0].to == "A"


def test_partial_score_fields_take_their_own_crm_defaults() -> None:
    data = {"connections": [
        {"name": "hs", "kind": "hubspot", "score_fields": {"score": "ml_score"}},
        {"name": "sf", "kind": "salesforce", "instance_url": "https://x.my.salesforce.com",
         "score_fields": {"score": "Score__c"}},
    ]}
    config = parse_config(data, "x.yaml")
    hs, sf = config.connection("hs").score_fields, config.connection("sf").score_fields
    assert hs is not None and (hs.score, hs.tier) == ("ml_score", "leadscore_tier")
    assert sf is not None and (sf.score, sf.tier) == ("Score__c", "Lead_Tier__c")
