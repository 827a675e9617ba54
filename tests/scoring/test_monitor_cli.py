"""``leadscore report / monitor / models`` through the real CLI on a SQLite store."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from config.settings import get_settings
from scoring.registry import RegistryError
from store.db import make_engine
from store.models import Activity, Lead, LeadScore, ModelVersion, MonitorReport
from tests.scoring.test_monitor import trained_store_copy
from worker.cli import app
from worker.runtime import reset_runtime

runner = CliRunner()


@pytest.fixture(scope="module")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_store_copy(tmp_path_factory, "cli")


@pytest.fixture
def store(store_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the trained store as the configured database."""
    path = tmp_path / "leadscore.db"
    shutil.copy(store_template, path)
    monkeypatch.setenv("LEADSCORE_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.delenv("LEADSCORE_CONFIG_FILE", raising=False)
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def _versions(path: Path) -> dict[str, str]:
    engine = make_engine(f"sqlite:///{path}")
    with Session(bind=engine) as s:
        out = {mv.version: mv.status for mv in s.scalars(select(ModelVersion))}
    engine.dispose()
    return out


def test_models_list_says_test_aucs_do_not_compare_across_versions(store: Path) -> None:
    alone = runner.invoke(app, ["models", "list"])
    assert alone.exit_code == 0 and "do not compare across rows" not in alone.output, alone.output
    engine = make_engine(f"sqlite:///{store}")
    with Session(bind=engine) as s, s.begin():
        mv = s.scalars(select(ModelVersion)).one()
        s.add(ModelVersion(version=f"{mv.version}-b", family=mv.family, status="candidate", artifact=mv.artifact,
                           params=mv.params, metrics=mv.metrics, features=mv.features, card=mv.card,
                           train_start=mv.train_start, train_end=mv.train_end))
    engine.dispose()
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert ("test AUCs are each measured on the version's own test leads, so they do not compare across rows; "
            "`leadscore retrain` compares two versions on the same held-out leads") in " ".join(listed.output.split())


def test_models_shadow_says_when_a_version_already_runs_in_shadow(store: Path) -> None:
    engine = make_engine(f"sqlite:///{store}")
    with Session(bind=engine) as s, s.begin():
        mv = s.scalars(select(ModelVersion)).one()
        challenger = f"{mv.version}-c"
        s.add(ModelVersion(version=challenger, family=mv.family, status="candidate", artifact=mv.artifact,
                           params=mv.params, metrics=mv.metrics, features=mv.features, card=mv.card))
    engine.dispose()
    first = runner.invoke(app, ["models", "shadow", challenger])
    assert first.exit_code == 0 and f"{challenger} runs in shadow from the next scoring run" in first.output
    again = runner.invoke(app, ["models", "shadow", challenger])
    assert again.exit_code == 0 and again.output.strip() == f"{challenger} already runs in shadow: nothing changed"


def test_models_list_monitor_and_report(store: Path, tmp_path: Path) -> None:
    (version,) = _versions(store)
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert version in listed.output and "champion" in listed.output
    # A retraining decision's note is longer than a list's line: the list shows its first clause,
    # whole words only, and says where the rest is.
    note = ("kept as candidate: does not beat the champion by more than the required margin 0.005 (the "
            "champion raised no monitor alert, so the full bar applies); auc 0.8647 vs champion 0.8681 on "
            "773 held-out leads (improvement -0.0034, 90% CI -0.0106..+0.0034)")
    engine = make_engine(f"sqlite:///{store}")
    with Session(bind=engine) as s, s.begin():
        s.scalars(select(ModelVersion)).one().notes = note
    engine.dispose()
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    line = next(ln for ln in listed.output.splitlines() if ln.startswith(version))
    assert line.endswith("kept as candidate: does not beat the champion by more than the required margin 0.005 …"), line
    assert "`leadscore models show VERSION` has all of it" in listed.output
    # Promoted by hand later: the list says so before the evaluation's "kept as candidate".
    engine = make_engine(f"sqlite:///{store}")
    with Session(bind=engine) as s, s.begin():
        mv = s.scalars(select(ModelVersion)).one()
        mv.params = {**(mv.params or {}), "promotions": [{"action": "promote", "by": "alice",
                                                          "at": "2025-12-20T09:15:00+00:00"}]}
    engine.dispose()
    line = next(ln for ln in runner.invoke(app, ["models", "list"]).output.splitlines() if ln.startswith(version))
    assert "by hand: promote by alice at 2025-12-20 09:15 UTC; at evaluation: kept as candidate: does not" in line

    out = tmp_path / "monitor.json"
    monitored = runner.invoke(app, ["monitor", "--json", str(out)])
    assert monitored.exit_code == 0, monitored.output
    assert monitored.output.startswith("monitor as of ")
    body = json.loads(out.read_text(encoding="utf-8"))
    # No --as-of: the windows are cut on the data's clock (the newest synced modification), which
    # in this store is days 0..360 of 2025, not the machine's clock: drift and tier conversion
    # both measure real leads.
    assert body["clock"]["source"] == "newest synced modification"
    engine = make_engine(f"sqlite:///{store}")
    with Session(bind=engine) as s:
        newest = max(s.scalar(select(func.max(Lead.crm_modified_at))),
                     s.scalar(select(func.max(Activity.crm_modified_at))))
    engine.dispose()
    assert body["as_of"][:19] == newest.isoformat()[:19], (body["as_of"], newest)
    # This store's leads stop arriving at day 360 while conversions go on: the week the drift
    # cohort needs holds no lead, and the monitor says so with the counts instead of "ok".
    assert body["drift"]["leads"] == 0 and body["drift"]["status"] == "not enough data", body["drift"]
    assert "drift: not enough data (0 leads created" in monitored.output
    # ... and that waiting for a wider window will not help: the window is at its longest.
    assert "(the longest window, 28 days; seen at" in monitored.output
    assert body["tier_conversion"]["leads"] > 0 and body["tier_conversion"]["reconstructed"] > 0, body
    assert f"on {body['tier_conversion']['leads']:,} elapsed leads" in monitored.output

    # An explicit CRM time inside the stream of new leads: drift measured on them.
    at = runner.invoke(app, ["monitor", "--as-of", "2026-11-08", "--json", str(out)])
    assert at.exit_code == 0, at.output
    body = json.loads(out.read_text(encoding="utf-8"))
    assert body["clock"]["source"] == "--as-of" and body["as_of"].startswith("2026-11-08")
    assert body["drift"]["leads"] >= 100 and body["drift"]["status"] in ("ok", "warn", "alert"), body["drift"]
    assert f"drift: {body['drift']['status']} on {body['drift']['leads']:,} leads" in at.output

    bad = runner.invoke(app, ["monitor", "--as-of", "yesterday"])
    assert bad.exit_code == 2 and "ISO date" in bad.output
    # A year typed wrong (2030 for 2026) is after the data and the machine's clock: refused, and
    # no report is written (it would have read as the latest in status, report and the console).
    engine = make_engine(f"sqlite:///{store}")
    with Session(bind=engine) as s:
        reports_before = s.scalar(select(func.count(MonitorReport.id)))
    future = runner.invoke(app, ["monitor", "--as-of", "2030-07-01"])
    assert future.exit_code == 2 and "2030-07-01 is after both the newest synced data" in future.output, \
        future.output
    with Session(bind=engine) as s:
        assert s.scalar(select(func.count(MonitorReport.id))) == reports_before
    engine.dispose()

    html = tmp_path / "out" / "health.html"
    reported = runner.invoke(app, ["report", "--html", str(html)])
    assert reported.exit_code == 0, reported.output
    assert html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert f"champion: {version}" in reported.output


def test_promote_unknown_version_and_rollback_without_history_are_user_errors(store: Path) -> None:
    unknown = runner.invoke(app, ["models", "promote", "m-nope"])
    assert isinstance(unknown.exception, RegistryError)
    assert "unknown model version" in str(unknown.exception)
    nothing = runner.invoke(app, ["models", "rollback"])
    assert isinstance(nothing.exception, RegistryError)


def test_promote_then_rollback_by_hand(store: Path) -> None:
    from datetime import timedelta

    from config.app_config import MonitoringConfig, ScheduleConfig, TrainingConfig
    from scoring.retrain import retrain_if_due
    from tests.scoring.test_monitor import TRAIN_DAY, as_of_day

    engine = make_engine(f"sqlite:///{store}")
    with Session(bind=engine, expire_on_commit=False) as s:
        outcome = retrain_if_due(s, as_of=as_of_day(TRAIN_DAY) + timedelta(days=12),
                                 training=TrainingConfig(horizon_days=60, min_per_class=30),
                                 schedules=ScheduleConfig(), monitoring=MonitoringConfig(), force=True,
                                 families=("catboost",), catboost_iterations=60,
                                 catboost_grid=({"depth": 4, "learning_rate": 0.1},))
        s.commit()
    engine.dispose()
    assert outcome.challenger is not None
    (first,) = [v for v, status in _versions(store).items() if status == "champion"]
    promoted = runner.invoke(app, ["models", "promote", outcome.challenger])
    assert promoted.exit_code == 0, promoted.output
    assert _versions(store)[outcome.challenger] == "champion"
    # Its card says who made it champion: retraining's own decision (kept as candidate) is from before.
    shown = runner.invoke(app, ["models", "show", outcome.challenger])
    assert shown.exit_code == 0, shown.output
    assert re.search(r"Status: champion\n\nChanged by hand: promote by cli at \d{4}-\d\d-\d\d \d\d:\d\d UTC "
                     r"\(the notes above and retraining's decision below are from its evaluation\)", shown.output), \
        shown.output
    rolled = runner.invoke(app, ["models", "rollback"])
    assert rolled.exit_code == 0, rolled.output
    assert first in rolled.output
    statuses = _versions(store)
    assert statuses[first] == "champion" and statuses[outcome.challenger] == "retired"
    # Promoting the champion again changes nothing (it rescored every lead and said "now the champion").
    engine = make_engine(f"sqlite:///{store}")
    with Session(bind=engine) as s:
        scores_before = s.scalar(select(func.count(LeadScore.id)))
        promotions_before = (s.scalars(select(ModelVersion).where(ModelVersion.version == first)).one().params
                             or {}).get("promotions")
    again = runner.invoke(app, ["models", "promote", first])
    assert again.exit_code == 0, again.output
    assert f"{first} is already the champion: nothing changed" in again.output
    assert "now the champion" not in again.output and "rescored" not in again.output
    with Session(bind=engine) as s:
        assert s.scalar(select(func.count(LeadScore.id))) == scores_before
        assert (s.scalars(select(ModelVersion).where(ModelVersion.version == first)).one().params
                or {}).get("promotions") == promotions_before
    engine.dispose()


def test_retrain_dry_run_compares_on_the_same_leads_and_changes_nothing(store: Path) -> None:
    from config.app_config import MonitoringConfig, ScheduleConfig, TrainingConfig
    from scoring.retrain import retrain_if_due

    before = _versions(store)
    engine = make_engine(f"sqlite:///{store}")
    with Session(bind=engine, expire_on_commit=False) as s:
        outcome = retrain_if_due(s, training=TrainingConfig(horizon_days=60, min_per_class=30),
                                 schedules=ScheduleConfig(), monitoring=MonitoringConfig(), force=True, dry_run=True,
                                 families=("catboost",), catboost_iterations=60,
                                 catboost_grid=({"depth": 4, "learning_rate": 0.1},))
        s.commit()
    engine.dispose()
    body = json.loads(json.dumps(outcome.to_dict()))
    assert body["dry_run"] is True and body["promoted"] is False
    comparison = body["comparison"]
    assert comparison["leads"] > 0 and comparison["positives"] > 0
    # Both AUCs measured on the same held-out leads, named in the JSON contract's shape.
    assert body["champion"]["auc"] == pytest.approx(comparison["champion"])
    assert body["challenger"]["auc"] == pytest.approx(comparison["challenger"])
    assert 0.5 < body["champion"]["auc"] < 1 and 0.5 < body["challenger"]["auc"] < 1
    assert body["decision"].startswith("dry run, nothing changed: would ")
    assert body["reason"] == "asked for, a dry run"  # it read "forced" when nothing was forced
    assert _versions(store) == before  # nothing registered, nothing promoted


def test_retrain_with_too_little_data_says_how_much_more_and_about_when(store: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "leadscore.yaml"
    config.write_text("training:\n  horizon_days: 60\n  min_per_class: 5000\n  window_days: 200\n", encoding="utf-8")
    monkeypatch.setenv("LEADSCORE_CONFIG_FILE", str(config))
    get_settings.cache_clear()
    out = tmp_path / "retrain.json"
    result = runner.invoke(app, ["retrain", "--json", str(out)])
    assert result.exit_code == 0, result.output
    body = json.loads(out.read_text(encoding="utf-8"))
    assert body["challenger"]["version"] is None and body["promoted"] is False
    needed = body["details"]["needed"]["positives"]
    assert needed == 5000 - body["details"]["train_positives"] > 0
    assert f"{needed} more converted labelled examples needed" in result.output
    # The rate as counted ("0.0 a day" read as none), and the days it gives.
    said = re.search(r"at the last (\d+) days' rate \((\d+) converted in \1 days\) about (\d+) days, around 20",
                     " ".join(result.output.split()))
    assert said is not None, result.output
    span, gained, days = (int(g) for g in said.groups())
    assert gained > 0 and abs(days - needed * span / gained) <= 1, said.group(0)

    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  window_days: 3\n", encoding="utf-8")
    monkeypatch.setenv("LEADSCORE_CONFIG_FILE", str(bad))
    get_settings.cache_clear()
    refused = runner.invoke(app, ["retrain"])
    assert refused.exit_code != 0
    assert "training.window_days" in str(refused.exception) or "training.window_days" in refused.output


def test_models_show_prints_the_card_with_importance_and_tier_cutoffs(store: Path) -> None:
    (version,) = _versions(store)
    shown = runner.invoke(app, ["models", "show", version])
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert text.startswith(f"# Lead scoring model {version}") and "Status: champion" in text
    assert "## Metrics" in text and "## Calibration" in text  # the stored card: every family, calibration
    importance = text.split("## Feature importance")[1].split("##")[0]
    rows = [line for line in importance.splitlines() if line.startswith("| ") and "%" in line]
    assert 1 <= len(rows) <= 15
    # What reps see: two windows of one concept read apart ("meetings, last 7 days" vs "..., last
    # 30 days"), in the reasons' words (the card said "high-intent page visits" for both windows
    # where reasons say "pricing/demo page visits").
    seen = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in rows}
    windowed = {f: label for f, label in seen.items() if re.search(r"_\d+d$", f)}
    assert windowed, seen
    for feature, label in windowed.items():
        days = feature.rsplit("_", 1)[1].removesuffix("d")
        assert label.endswith(f", last {days} days"), (feature, label)
    assert len(set(windowed.values())) == len(windowed), windowed
    assert "high-intent" not in importance
    # The audit section names each excluded feature once: in its table, not again as a finding.
    audit = text.split("## Data audit")[1].split("## Metrics")[0]
    excluded = [line.split("|")[1].strip() for line in audit.splitlines() if line.startswith("| ")][2:]
    assert excluded, audit
    for feature in excluded:
        assert not [line for line in audit.splitlines() if line.startswith(f"- {feature}:")], audit
    cutoffs = text.split("## Precision and recall at the tier cut-offs")[1]
    recalls = [float(line.split("|")[5]) for line in cutoffs.splitlines() if line.startswith(("| A ", "| B ", "| C "))]
    assert len(recalls) == 3 and recalls == sorted(recalls) and 0 <= recalls[0] <= recalls[-1] <= 1
    # The cut-offs tier the reference leads as the monitor's tier norms do (ranked against the score
    # reference, as live scoring ranks): a crmsim trial's card had 10 leads in A, the monitor 5.
    from scoring.monitor import active_tier_policy, data_clock, ensure_reference
    from scoring.monitoring.tier_conversion import tier_norms

    engine = make_engine(f"sqlite:///{store}")
    with Session(bind=engine) as s:  # the reference the first `models show` stored, as the monitor reads it
        mv = s.scalars(select(ModelVersion).where(ModelVersion.version == version)).one()
        norms = tier_norms(s, ensure_reference(s, mv, as_of=data_clock(s)), active_tier_policy(s))
    engine.dispose()
    again = runner.invoke(app, ["models", "show", version]).output
    again = again.split("## Precision and recall at the tier cut-offs")[1]
    down_to = {line.split("|")[1].strip(): int(line.split("|")[2]) for line in again.splitlines()
               if line.startswith(("| A ", "| B ", "| C "))}
    in_norms = {t: sum(int((norms.get(u) or {}).get("leads", 0)) for u in "ABC"[: i + 1]) for i, t in enumerate("ABC")}
    assert down_to == in_norms and sum(int(r["leads"]) for r in norms.values()) > in_norms["C"] > 0, (down_to, norms)
    assert "Lift by score decile (reference leads" in text
    # Why its figures differ from the Metrics section's test ones: said on the card itself.
    assert "scored as they looked 7 days after they were created" in " ".join(text.split())
    unknown = runner.invoke(app, ["models", "show", "m-nope"])
    assert unknown.exit_code != 0 and "unknown model version" in str(unknown.exception)
    # Without a version: the champion's card (the README's `leadscore models show`).
    champions = runner.invoke(app, ["models", "show"])
    assert champions.exit_code == 0, champions.output
    assert champions.output.startswith(f"# Lead scoring model {version}") and "Status: champion" in champions.output


def test_shadow_then_promote_shows_the_live_comparison(store: Path) -> None:
    from scoring import registry
    from tests.factories import synthetic_training

    result, tset = synthetic_training()
    engine = make_engine(f"sqlite:///{store}")
    with Session(bind=engine, expire_on_commit=False) as s:
        candidate = registry.register(s, result, train_window=tset.window).version
        s.commit()
    engine.dispose()
    shadowed = runner.invoke(app, ["models", "shadow", candidate])
    assert shadowed.exit_code == 0, shadowed.output
    assert _versions(store)[candidate] == "shadow"
    listed = runner.invoke(app, ["models", "list"])
    assert "shadow" in listed.output
    # No scoring ran since: promote says there is no live evidence yet, in numbers.
    promoted = runner.invoke(app, ["models", "promote", candidate])
    assert promoted.exit_code == 0, promoted.output
    assert f"live comparison in shadow: shadow {candidate}: not enough data" in promoted.output
    assert _versions(store)[candidate] == "champion"


def test_status_labels_each_monitor_finding_with_its_level(store: Path) -> None:
    reset_runtime()
    monitored = runner.invoke(app, ["monitor"])
    assert monitored.exit_code == 0, monitored.output
    shown = runner.invoke(app, ["status"])
    assert shown.exit_code == 0, shown.output
    # The store never synced: the monitor warns about it; status must not call a warning an alert.
    # (the factory numbers connections per test session: conn-1 alone, conn-N after other tests)
    assert re.search(r"^  warn: connection conn-\d+ has never synced successfully$", shown.output, re.M), shown.output
    assert "alert: connection conn-" not in shown.output
    # Nothing was ever routed: said, with why, not left out as if all were well.
    assert "routing: no action planned yet (no routing rules configured" in shown.output, shown.output


def test_monitor_and_report_print_the_same_findings_notes_and_what_to_do_once(
    store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What revops reads after `leadscore monitor` and later `leadscore report`: every measure, the
    notes no measure line says (the console shows them too), each alert with what to do, and each
    alert once (not again as a log line on the same terminal)."""
    out = tmp_path / "monitor.json"
    with caplog.at_level("WARNING"):
        monitored = runner.invoke(app, ["monitor", "--as-of", "2026-11-08", "--json", str(out)])
    assert monitored.exit_code == 0, monitored.output
    body = json.loads(out.read_text(encoding="utf-8"))
    alerts, notes = body["alerts"], body["metrics"]["notes"]
    assert alerts and any(a.get("action") for a in alerts), alerts  # something to check below
    for alert in alerts:
        assert monitored.output.count(f"{alert['level']}: {alert['message']}") == 1, monitored.output
        if alert.get("action"):
            assert f"what to do: {alert['action']}" in monitored.output
    assert not [r for r in caplog.records if r.getMessage().startswith("monitor ")], caplog.text
    printed = [line.strip() for line in monitored.output.splitlines()]
    assert notes
    for note in notes:
        # Each note printed as a note, unless a measure line already gives its reason.
        reason = note.partition(": ")[2]
        assert f"note: {note}" in printed or any(reason and reason in line and not line.startswith("note:")
                                                 for line in printed), (note, printed)

    reported = runner.invoke(app, ["report"])
    assert reported.exit_code == 0, reported.output
    # `report` reads the latest report back: the same lines, header aside.
    assert monitored.output.splitlines()[1:] == reported.output.splitlines()[2:], reported.output


def test_status_says_which_routing_actions_failed_and_why(store: Path) -> None:
    """After the demo the console showed "routing failed 6" and `status` nothing: four of them were
    tier-A "call within 4 hours" tasks the CRM refused (the lead's owner is inactive), hot leads
    nobody was told to call."""
    from store.models import LeadScore, RoutingAction

    engine = make_engine(f"sqlite:///{store}")
    with Session(bind=engine) as s:
        score = s.scalars(select(LeadScore).where(LeadScore.is_current.is_(True)).limit(1)).first()
        if score is None:
            lead = s.scalars(select(Lead).limit(1)).one()
            mv = s.scalars(select(ModelVersion).limit(1)).one()
            score = LeadScore(lead_id=lead.id, model_version_id=mv.id, probability=0.6, score=95, tier="A",
                              scored_at=datetime(2026, 6, 25, tzinfo=UTC), is_current=True)
            s.add(score)
            s.flush()
        lead = s.get(Lead, score.lead_id)
        assert lead is not None
        common = {"lead_id": lead.id, "lead_score_id": score.id, "connection_id": lead.connection_id, "to_tier": "A"}
        s.add_all([
            RoutingAction(**common, action="create_task", status="failed",
                          error="INACTIVE_OWNER_OR_USER: operation performed with inactive user as owner of task"),
            RoutingAction(**common, action="add_to_campaign", status="done"),
            RoutingAction(**common, action="assign_owner", status="failed", error="HTTP 500: boom"),
        ])
        s.commit()
    engine.dispose()
    reset_runtime()
    shown = runner.invoke(app, ["status"])
    assert shown.exit_code == 0, shown.output
    assert "routing: done 1, failed 2 (assign_owner 1: HTTP 500 1; create_task 1: inactive_owner 1)" in shown.output, \
        shown.output
