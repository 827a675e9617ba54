"""Online scoring on SQLite and PostgreSQL: training from the store, change detection, score rows,
outbox rows, tier-change hook, model behaviour, explain and the CLI."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from config.app_config import TrainingConfig
from config.errors import LeadscoreError
from scoring import registry
from scoring.features import build_feature_frame, load_activities_frame, load_leads_frame
from scoring.reasons import join_reasons
from scoring.score_writes import render_queued
from scoring.service import (
    NoChampionError,
    crm_now,
    explain_lead,
    score_leads,
    train_from_store,
)
from store.models import Lead, LeadLifecycle, LeadScore, ModelVersion, Outbox, SyncRun, TierPolicy
from tests.factories import (
    BASE_TIME,
    FAST_TRAINING,
    make_activity,
    make_connection,
    make_lead,
    synthetic_population,
    synthetic_training,
)

AS_OF = BASE_TIME + timedelta(days=500)


def _champion(session: Session) -> registry.ModelVersion:
    result, tset = synthetic_training()
    return registry.register(session, result, train_window=tset.window, status="champion")


def _current(session: Session) -> dict[int, LeadScore]:
    return {s.lead_id: s for s in session.scalars(select(LeadScore).where(LeadScore.is_current.is_(True)))}


def test_train_from_store_registers_and_makes_the_first_model_champion(any_session: Session) -> None:
    synthetic_population(any_session, leads=700, seed=4)
    config = TrainingConfig(min_per_class=50)
    first = train_from_store(any_session, as_of=AS_OF, config=config, **FAST_TRAINING)
    assert first.promoted and first.model_version.status == "champion"
    assert first.examples > 600 and 0 < first.positives < first.examples  # one snapshot per lead
    assert first.model_version.params["horizon_days"] == 90
    assert first.to_dict()["metrics"]["catboost"]["test"]["auc"] > 0.55
    second = train_from_store(any_session, as_of=AS_OF, config=config, **FAST_TRAINING)
    assert not second.promoted and second.model_version.status == "candidate"
    assert registry.champion(any_session).id == first.model_version.id  # type: ignore[union-attr]


def test_train_refuses_with_too_few_labelled_leads(sqlite_session: Session) -> None:
    synthetic_population(sqlite_session, leads=60, seed=4)
    with pytest.raises(LeadscoreError, match="not enough labelled leads"):
        train_from_store(sqlite_session, as_of=AS_OF, config=TrainingConfig(min_per_class=500), **FAST_TRAINING)
    with pytest.raises(LeadscoreError, match="no labelled leads yet"):
        train_from_store(sqlite_session, as_of=BASE_TIME, config=TrainingConfig(), **FAST_TRAINING)


def test_score_writes_current_rows_outbox_and_calls_the_hook(any_session: Session) -> None:
    conn = synthetic_population(any_session, leads=300, seed=5)
    mv = _champion(any_session)
    deleted = any_session.scalars(select(Lead).where(Lead.connection_id == conn.id).limit(1)).one()
    deleted.is_deleted = True
    deleted.lifecycle = LeadLifecycle.deleted
    any_session.flush()
    # Only open leads are scored: converted and closed (and deleted) ones are left alone.
    others = any_session.scalars(select(Lead).where(Lead.connection_id == conn.id, Lead.id != deleted.id)
                                 .order_by(Lead.id).limit(7)).all()
    for n, lead in enumerate(others):
        lead.lifecycle = LeadLifecycle.converted if n % 2 else LeadLifecycle.closed
    any_session.flush()
    open_ids = set(any_session.scalars(select(Lead.id).where(Lead.lifecycle == LeadLifecycle.open)))
    assert len(open_ids) == 292
    calls: list[tuple[int, str | None, str]] = []

    def hook(session: Session, lead: Lead, previous: LeadScore | None, current: LeadScore) -> None:
        calls.append((lead.id, previous.tier if previous else None, current.tier))

    summary = score_leads(any_session, as_of=AS_OF, tier_change_hook=hook, batch_size=128)
    assert (summary.considered, summary.scored, summary.unchanged) == (len(open_ids), len(open_ids), 0)
    current = _current(any_session)
    assert set(current) == open_ids and deleted.id not in current
    assert len(calls) == len(open_ids) and all(prev is None for _, prev, _ in calls)
    # The score is the rank among the champion's reference leads (built and stored on first use).
    reference = mv.params["score_reference"]
    assert reference["n"] > 0 and len(reference["probability"]) == min(reference["n"], 5000)
    some = max(current.values(), key=lambda s: len(s.reasons))
    ref = np.asarray(reference["probability"])
    share = (np.sum(ref < some.probability) + 0.5 * np.sum(ref == some.probability)) / len(ref)
    assert some.score == int(np.clip(np.rint(100 * share), 1, 99))
    assert all(1 <= s.score <= 99 and 1 <= (s.fit_score or 0) <= 99 and 1 <= (s.engagement_score or 0) <= 99
               for s in current.values())
    assert some.model_version_id == mv.id and some.tier in "ABCD" and some.reasons
    # A first score has no 7-day change to show: none stored, none written (blank in the CRM).
    assert some.score_change is None and some.as_of == AS_OF
    outbox = any_session.scalars(select(Outbox).where(Outbox.lead_id == some.lead_id)).one()
    assert outbox.status == "pending" and outbox.kind == "score_fields" and outbox.lead_score_id == some.id
    # Queued without its payload (the score row holds every value); the drain renders it on claim.
    assert outbox.payload is None and outbox.payload_hash is None
    assert render_queued(any_session, [outbox]) == 1 and outbox.payload is not None
    assert set(outbox.payload) == {"score", "tier", "reasons", "model", "scored_at", "likelihood", "fit",
                                   "engagement"}
    assert outbox.payload["likelihood"] == round(100 * some.probability, 1)
    assert (outbox.payload["fit"], outbox.payload["engagement"]) == (some.fit_score, some.engagement_score)
    assert outbox.payload["score"] == some.score and outbox.payload["model"] == mv.version
    assert outbox.payload["reasons"] == "; ".join(some.reasons) and len(outbox.payload["reasons"]) <= 255
    assert datetime.fromisoformat(outbox.payload["scored_at"]).tzinfo is not None
    # The hash covers what the CRM shows: every value but the time of scoring.
    shown = {k: v for k, v in outbox.payload.items() if k != "scored_at"}
    canonical = json.dumps(shown, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert outbox.payload_hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert outbox.crm_id == any_session.get(Lead, some.lead_id).crm_id  # type: ignore[union-attr]

    # Nothing changed: nothing is rescored.
    again = score_leads(any_session, as_of=AS_OF, tier_change_hook=hook)
    assert (again.scored, again.unchanged, again.outbox_rows) == (0, len(open_ids), 0)


def test_only_changed_leads_are_rescored(any_session: Session) -> None:
    synthetic_population(any_session, leads=120, seed=6)
    _champion(any_session)
    score_leads(any_session, as_of=AS_OF)
    before = _current(any_session)
    ids = sorted(before)
    hot, edited = any_session.get(Lead, ids[0]), any_session.get(Lead, ids[1])
    assert hot is not None and edited is not None
    # New high-intent activity arrives for one lead; another lead's fields change.
    for d in range(6):
        make_activity(any_session, hot, "web_visit", AS_OF - timedelta(days=1, hours=d), "/pricing")
    make_activity(any_session, hot, "meeting", AS_OF - timedelta(days=2))
    edited.title = "Chief Technology Officer"
    edited.inputs_hash = "changed"
    any_session.flush()
    summary = score_leads(any_session, as_of=AS_OF)
    assert summary.scored == 2 and summary.unchanged == 118
    after = _current(any_session)
    assert {i for i in ids if after[i].id != before[i].id} == {hot.id, edited.id}
    assert after[hot.id].score >= before[hot.id].score
    assert any("pricing" in r for r in after[hot.id].reasons if r.startswith("+"))
    # One current row per lead; history kept; the older pending write is superseded.
    rows = any_session.scalars(select(LeadScore).where(LeadScore.lead_id == hot.id)).all()
    assert len(rows) == 2 and sum(r.is_current for r in rows) == 1
    statuses = sorted(o.status for o in any_session.scalars(select(Outbox).where(Outbox.lead_id == hot.id)))
    assert statuses == ["pending", "superseded"]

    # --all rescores every lead; unchanged scores queue no CRM write.
    full = score_leads(any_session, as_of=AS_OF, all=True)
    assert full.scored == 120 and full.outbox_rows == 0
    # A new champion makes every lead stale.
    newer = _champion(any_session)
    assert score_leads(any_session, as_of=AS_OF, lead_ids=ids[:10]).scored == 10
    assert {s.model_version_id for s in _current(any_session).values() if s.lead_id in ids[:10]} == {newer.id}


def test_segment_champion_scores_its_segment_and_the_global_model_the_rest(any_session: Session) -> None:
    synthetic_population(any_session, leads=120, seed=13)
    result, tset = synthetic_training()
    glob = registry.register(any_session, result, train_window=tset.window, status="champion")
    seg = registry.register(any_session, result, train_window=tset.window, segment="seniority=VP", status="champion")
    score_leads(any_session, as_of=AS_OF)
    titles = {lead.id: lead.title for lead in any_session.scalars(select(Lead))}
    used = {s.lead_id: s.model_version_id for s in _current(any_session).values()}
    assert {used[i] for i, t in titles.items() if t == "VP Engineering"} == {seg.id}
    assert {used[i] for i, t in titles.items() if t != "VP Engineering"} == {glob.id}


def test_scoring_without_a_champion_fails_clearly(sqlite_session: Session) -> None:
    synthetic_population(sqlite_session, leads=5)
    with pytest.raises(NoChampionError, match="leadscore train"):
        score_leads(sqlite_session, as_of=AS_OF)


def test_crm_clock_comes_from_the_last_succeeded_sync(sqlite_session: Session) -> None:
    conn = make_connection(sqlite_session)
    before = datetime.now(UTC)
    assert crm_now(sqlite_session) >= before
    when = datetime(2026, 3, 1, 12, tzinfo=UTC)
    sqlite_session.add_all([
        SyncRun(connection_id=conn.id, stream="leads", status="succeeded", server_time=when),
        SyncRun(connection_id=conn.id, stream="leads", status="failed", server_time=when + timedelta(days=9)),
    ])
    sqlite_session.flush()
    assert crm_now(sqlite_session) == when


def _frame_at(session: Session, at: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    leads = load_leads_frame(session)
    return leads, load_activities_frame(session, None, before=at)


def test_more_high_intent_engagement_does_not_lower_scores(sqlite_session: Session) -> None:
    synthetic_population(sqlite_session, leads=60, seed=7)
    result, _ = synthetic_training()
    at = BASE_TIME + timedelta(days=370)
    leads, acts = _frame_at(sqlite_session, at)
    base = result.model.predict_proba(build_feature_frame(leads, acts, at))
    extra = pd.DataFrame(
        {
            "lead_id": np.repeat(leads["id"].to_numpy(), 4),
            "type": ["web_visit"] * (4 * len(leads)),
            "occurred_at": [pd.Timestamp(at - timedelta(days=2))] * (4 * len(leads)),
            "detail": ["/pricing"] * (4 * len(leads)),
        }
    )
    more = result.model.predict_proba(build_feature_frame(leads, pd.concat([acts, extra]), at))
    assert np.mean(more >= base - 1e-9) >= 0.9
    assert more.mean() > base.mean()


def test_score_is_invariant_to_first_name(sqlite_session: Session) -> None:
    synthetic_population(sqlite_session, leads=40, seed=8)
    result, _ = synthetic_training()
    at = BASE_TIME + timedelta(days=370)
    leads, acts = _frame_at(sqlite_session, at)
    renamed = leads.assign(first_name=["Priya", "José", "Wei", "Olusegun"] * 10)
    np.testing.assert_array_equal(
        result.model.predict_proba(build_feature_frame(leads, acts, at)),
        result.model.predict_proba(build_feature_frame(renamed, acts, at)),
    )


def test_explain_by_crm_id_or_internal_id(any_session: Session) -> None:
    synthetic_population(any_session, leads=20, seed=9)
    mv = _champion(any_session)
    score_leads(any_session, as_of=AS_OF)
    lead = any_session.scalars(select(Lead).order_by(Lead.id).limit(1)).one()
    by_crm = explain_lead(any_session, lead.crm_id)
    assert by_crm == explain_lead(any_session, str(lead.id))
    assert by_crm["model"] == mv.version and by_crm["tier"] in "ABCD"
    assert 1 <= by_crm["score"] <= 99 and abs(by_crm["likelihood"] - 100 * by_crm["probability"]) <= 0.06
    with pytest.raises(LeadscoreError, match="no lead"):
        explain_lead(any_session, "00Qnope")


# ----------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from config.settings import get_settings
    from store.db import make_engine
    from store.models import Base

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "leadscore.yaml"
    config.write_text("training:\n  min_per_class: 50\n", encoding="utf-8")
    monkeypatch.setenv("LEADSCORE_DATABASE_URL", url)
    monkeypatch.setenv("LEADSCORE_CONFIG_FILE", str(config))
    get_settings.cache_clear()
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()
    get_settings.cache_clear()


def test_cli_score_explain_and_tiers(cli_env: Any, tmp_path: Path) -> None:
    from worker.cli.scoring import app

    with Session(cli_env) as session:
        synthetic_population(session, leads=150, seed=10)
        _champion(session)
        crm_id = session.scalars(select(Lead.crm_id).order_by(Lead.id).limit(1)).one()
        session.commit()
    runner = CliRunner()
    out = tmp_path / "score.json"
    result = runner.invoke(app, ["score", "--json", str(out)])
    assert result.exit_code == 0, result.output
    scored = json.loads(out.read_text())
    assert scored["scored"] == 150 and sum(scored["tiers"].values()) == 150
    # The tiers printed are those of every scored lead (a user read "12 tier changes; new tiers A: 6,
    # B: 8, C: 29, D: 9" as the tiers of the 12).
    tiers = ", ".join(f"{t}: {scored['tiers'].get(t, 0)}" for t in "ABCD")
    assert f"tiers of the 150 scored: {tiers}" in " ".join(result.output.split())
    result = runner.invoke(app, ["explain", crm_id])
    assert result.exit_code == 0 and "tier" in result.output and crm_id in result.output
    # With no sync the data clock is this machine's: one time. A score on the CRM's data of another
    # clock names both (a trial read this machine's time beside the history's data clock).
    assert "on the CRM's data" not in result.output
    with Session(cli_env) as session:
        row = session.scalars(select(LeadScore).join(Lead, Lead.id == LeadScore.lead_id).where(
            Lead.crm_id == crm_id, LeadScore.is_current.is_(True))).one()
        row.as_of = row.scored_at - timedelta(days=30)
        said = f"scored {row.scored_at:%Y-%m-%d %H:%M} UTC on the CRM's data as of {row.as_of:%Y-%m-%d %H:%M} UTC"
        session.commit()
    result = runner.invoke(app, ["explain", crm_id])
    assert said in " ".join(result.output.split()), result.output
    assert runner.invoke(app, ["tiers", "show"]).exit_code == 0
    preview_json = tmp_path / "preview.json"
    result = runner.invoke(app, ["tiers", "preview", "--capacity", "A=10%", "B=20%", "C=30%", "--json",
                                 str(preview_json)])
    assert result.exit_code == 0, result.output
    # The shares follow each other: B is the next 20 % after A, not the top 20 %.
    assert "capacity: A top 10%, B next 20%, C next 30%" in " ".join(result.output.split())
    preview_data = json.loads(preview_json.read_text())
    shown, cuts = preview_data["tiers"], preview_data["score_cutoffs"]
    assert "score cut-offs: " + ", ".join(f"{t} >= {v}" for t, v in cuts.items()) in result.output
    result = runner.invoke(app, ["tiers", "set", "--capacity", "A=10%", "B=20%", "C=30%"])
    assert result.exit_code == 0, result.output
    with Session(cli_env) as session:
        counts = {t: c for t, c in session.execute(
            select(LeadScore.tier, func.count()).where(LeadScore.is_current.is_(True)).group_by(LeadScore.tier)
        ).all()}
        tiered = session.execute(select(LeadScore.score, LeadScore.tier).where(LeadScore.is_current.is_(True))).all()
    assert {t: shown[t]["leads"] for t in "ABCD"} == {t: counts.get(t, 0) for t in "ABCD"}
    # The printed cut-offs are what `set` applied: each lead's tier follows from its score alone.
    for score, tier in tiered:
        expected = next((t for t in "ABC" if t in cuts and score >= cuts[t]), "D")
        assert tier == expected, (score, tier, cuts)
    # A lead the new policy re-tiered: its history names the row for what it is.
    with Session(cli_env) as session:
        retiered = session.scalar(select(Lead.crm_id).join(LeadScore, LeadScore.lead_id == Lead.id)
                                  .join(TierPolicy, TierPolicy.id == LeadScore.tier_policy_id)
                                  .where(LeadScore.is_current.is_(True), TierPolicy.version == 2).limit(1))
    assert retiered is not None
    result = runner.invoke(app, ["explain", retiered, "--history"])
    assert result.exit_code == 0 and "(re-tiered under tier policy v2)" in result.output, result.output
    # Without thresholds: the active policy's preview (a new admin's `tiers preview` was a usage
    # error), the same as giving its thresholds; a mode without thresholds stays a usage error.
    active_json = tmp_path / "active.json"
    result = runner.invoke(app, ["tiers", "preview", "--json", str(active_json)])
    assert result.exit_code == 0, result.output
    assert "the active policy (version 2); give thresholds to preview others" in result.output
    active = json.loads(active_json.read_text())
    assert (active["mode"], active["thresholds"]) == ("capacity", {"A": 10.0, "B": 20.0, "C": 30.0})
    assert {t: active["tiers"][t]["leads"] for t in "ABCD"} == {t: shown[t]["leads"] for t in "ABCD"}
    assert active["changes"] == 0  # the policy in force changes no tier
    assert runner.invoke(app, ["tiers", "preview", "--capacity"]).exit_code == 2
    result = runner.invoke(app, ["explain", "no-such-lead"])
    assert isinstance(result.exception, LeadscoreError)


def test_cli_train_registers_the_first_champion(cli_env: Any, tmp_path: Path) -> None:
    from worker.cli.scoring import app

    runner = CliRunner()
    result = runner.invoke(app, ["train"])
    assert isinstance(result.exception, LeadscoreError)  # an empty store: nothing labelled yet
    with Session(cli_env) as session:
        synthetic_population(session, leads=400, seed=12, start=datetime.now(UTC) - timedelta(days=400))
        session.commit()
    # A --json path that cannot be written: refused before training (a trial's `train --json DIR`
    # registered a model, then failed; a rerun registered another).
    for bad in (tmp_path, tmp_path / "train.json" / "x.json"):
        (tmp_path / "train.json").unlink(missing_ok=True)
        if bad != tmp_path:
            (tmp_path / "train.json").write_text("a file", encoding="utf-8")
        refused = runner.invoke(app, ["train", "--json", str(bad)])
        assert refused.exit_code == 2, refused.output
        with Session(cli_env) as session:
            assert session.scalar(select(func.count(ModelVersion.id))) == 0
    (tmp_path / "train.json").unlink()
    out = tmp_path / "train.json"
    result = runner.invoke(app, ["train", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["status"] == "champion" and data["version"] in result.output
    assert data["metrics"][data["selected"]]["test"]["auc"] > 0.5
    assert set(data["metrics"]) == {"catboost", "logistic_regression", "random_forest"}


def test_cli_evaluate_writes_the_contract_json(tmp_path: Path) -> None:
    from worker.cli.scoring import app

    rng = np.random.default_rng(0)
    n = 400
    engagement = rng.gamma(2.0, 2.0, n)
    df = pd.DataFrame({
        "Lead Number": np.arange(n), "engagement": engagement,
        "source": rng.choice(["web", "ads", "event"], n),
        "converted": (rng.random(n) < 1 / (1 + np.exp(-(engagement - 4)))).astype(int),
    })
    csv = tmp_path / "leads.csv"
    df.to_csv(csv, index=False)
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["evaluate", "--csv", str(csv), "--target", "converted", "--exclude",
                                      "Lead Number", "--min-per-class", "50", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data) >= {"dataset", "audit", "models", "selected"}
    assert "Lead Number" in data["dataset"]["excluded"]
    assert data["models"][data["selected"]]["test"]["auc"] > 0.6


def test_a_lead_without_an_inputs_hash_is_stored_without_one_and_not_rescored(any_session: Session) -> None:
    # Leads synced before inputs were hashed have none, beside leads that have one: their score
    # rows must say so (NULL, where pandas reads NaN), or every later run would find the lead
    # changed and rescore it.
    synthetic_population(any_session, leads=60, seed=8)
    _champion(any_session)
    hashed = any_session.scalars(select(Lead).order_by(Lead.id).limit(1)).one()
    hashed.inputs_hash = "h1"
    any_session.flush()
    first = score_leads(any_session, as_of=AS_OF)
    assert first.scored == 60
    stored = dict(any_session.execute(select(LeadScore.lead_id, LeadScore.inputs_hash)
                                      .where(LeadScore.is_current.is_(True))).tuples().all())
    assert len(stored) == 60 and stored.pop(hashed.id) == "h1" and set(stored.values()) == {None}
    again = score_leads(any_session, as_of=AS_OF)
    assert again.scored == 0 and again.unchanged == 60


def test_explain_marks_the_reasons_the_crm_field_cannot_hold(cli_env: Any) -> None:
    # A user trial: `explain` listed five reasons, the CRM field held four (whole reasons within 255
    # characters), and nothing said which one the rep does not see.
    from worker.cli.scoring import app

    reasons = [f"+ Engagement: {n} website visits in the last 30 days and a long tail of words to fill the field"
               for n in (5, 4, 3)] + ["- Fit: Free-mail address", "- Fit: No colleagues became leads"]
    with Session(cli_env) as session:
        lead = make_lead(session, make_connection(session))
        session.add(LeadScore(lead_id=lead.id, probability=0.3, score=80, tier="A", reasons=reasons, is_current=True))
        session.commit()
        crm_id = lead.crm_id
    # The field holds the first plus, the first minus, the second plus and the short last minus;
    # the third plus no longer fits (crm_reason_indices).
    held = join_reasons(reasons).split("; ")
    assert held == [reasons[0], reasons[1], reasons[3], reasons[4]]
    result = CliRunner().invoke(app, ["explain", crm_id])
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    for reason in reasons:
        shown = next(line for line in lines if line.startswith(reason))
        assert shown.endswith("(not in the CRM field: it holds 255 characters)") == (reason not in held), shown
