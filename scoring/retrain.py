"""Retraining: a challenger trained on recent data, compared with the champion, promoted by rule.

:func:`retrain_if_due` trains when ``schedules.retrain_days`` have passed since the last training
(champion or challenger, on the CRM clock) or when the latest monitor report is an alert newer
than that training (at most every :data:`ALERT_COOLDOWN_DAYS` days while an alert persists; an
alert-triggered challenger learns from the last :attr:`TrainingConfig.alert_window_days` only: the world changed).
Under a drift alert the window also starts no earlier than the alert's onset (:func:`alert_onset`:
the first day of the live drift cohort when the current streak of drift alerts began): leads from
before the change describe a world that is gone. Until enough leads since then have outcomes, no
challenger is trained (the decision says so). A challenger trained under that boundary records it
(``params["data_since"]``) and, once promoted, keeps it for scheduled retrainings until their
window has moved past it.
Data: labelled examples (point in time, as for ``leadscore train``) whose
lead arrived in the last ``window_days`` before a *held-out* period; the held-out period is the
last ``holdout_days`` of labelled leads, later than anything the challenger saw. Champion and
challenger are scored on the same held-out examples.

The promotion rule (a paired bootstrap over held-out leads) is in :mod:`scoring.promotion`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.app_config import MonitoringConfig, ScheduleConfig, TrainingConfig
from scoring import registry
from scoring.audit import InsufficientDataError
from scoring.champions import LiveLeads, read_live_leads, ready_for_live
from scoring.compare import (
    MIN_HOLDOUT_POSITIVES,
    paired_bootstrap,
    segment_versus_global,
)
from scoring.dataset import (
    LEAD_ID_COLUMN,
    SNAPSHOT_COLUMN,
    SNAPSHOT_OFFSETS_DAYS,
    SPLIT_COLUMN,
    TARGET,
    label_examples,
)
from scoring.features import (
    build_feature_frame,
    feature_spec_for,
    load_activities_frame,
    load_leads_frame,
)
from scoring.monitor import ALERT, data_clock, ensure_reference, latest_report, parse_time, reports, trained_at
from scoring.promotion import (
    DATA_SINCE_KEY,
    Comparison,
    compare_on_holdout,
    data_since,
    promotion_bar,
    promotion_decision,
)
from scoring.reference import REFERENCE_KEY, build_reference, reference_rows
from scoring.training import FAMILIES, TrainedModel, train_and_compare
from store.models import ModelVersion, MonitorReport
from store.types import json_safe

log = logging.getLogger(__name__)

ALERT_COOLDOWN_DAYS = 3
DRIFT_ALERT_KINDS = frozenset({"psi_score", "psi_feature"})


def _drift_alerted(report: MonitorReport) -> bool:
    return any(a.get("level") == ALERT and a.get("kind") in DRIFT_ALERT_KINDS for a in report.alerts or [])


def alert_onset(session: Session, *, as_of: datetime) -> datetime | None:
    """When the changed world began, as the monitor saw it: the creation-time start of the live
    drift cohort of the first report in the current streak of reports with a drift alert (None when
    the latest report has none: a performance or freshness alert alone dates no change of the
    lead population)."""
    first: MonitorReport | None = None
    for report in reversed(reports(session, as_of=as_of)):
        if not _drift_alerted(report):
            break
        first = report
    if first is None:
        return None
    return parse_time(((first.metrics or {}).get("drift") or {}).get("cohort_start"))


@dataclass
class RetrainOutcome:
    """What :func:`retrain_if_due` decided and why."""

    due: bool
    reason: str
    as_of: datetime
    champion: str | None = None
    challenger: str | None = None
    promoted: bool = False
    decision: str = ""
    comparison: Comparison | None = None
    details: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON view: champion and challenger each with their metric on the same held-out leads."""
        c = self.comparison
        metric = c.metric if c is not None else "auc"

        def side(version: str | None, value: float | None) -> dict[str, Any]:
            finite = value if value is not None and math.isfinite(value) else None
            return {"version": version, metric: finite}

        return {
            "due": self.due, "reason": self.reason, "as_of": self.as_of.isoformat(), "dry_run": self.dry_run,
            "champion": side(self.champion, c.champion if c is not None else None),
            "challenger": side(self.challenger, c.challenger if c is not None else None),
            "promoted": self.promoted, "decision": self.decision,
            "comparison": c.to_dict() if c is not None else None, "details": json_safe(self.details),
        }


INPUTS_KEY = "retrain_inputs"  # a retrained version's training inputs (_inputs_key)


def _inputs_key(train_part: pd.DataFrame, holdout: pd.DataFrame, **settings: Any) -> str:
    """A digest of what a retraining learns from and is judged on: the examples' values (not only
    their count: the same window can hold changed leads) and the settings that shape the model."""
    digest = hashlib.sha256()
    for part in (train_part, holdout):
        digest.update(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes())
        digest.update(",".join(map(str, part.columns)).encode())
    digest.update(json.dumps(json_safe(settings), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).where(ModelVersion.segment.is_(None))))


def _examples(
    session: Session, *, as_of: datetime, horizon_days: int, created_from: datetime
) -> tuple[pd.DataFrame, Any]:
    """Labelled point-in-time examples of leads created since ``created_from`` (as in dataset.py,
    with every live lead counted for the buying committee)."""
    leads = load_leads_frame(session)
    created = pd.to_datetime(leads["crm_created_at"], utc=True)
    recent = leads[created >= pd.Timestamp(created_from)].reset_index(drop=True)
    examples, _excluded = label_examples(recent, as_of=as_of, horizon_days=horizon_days)
    if examples.empty:
        return examples, None
    activities = load_activities_frame(session, list(recent["id"]), before=as_of - timedelta(days=horizon_days))
    peers = leads.loc[~leads["is_deleted"].astype(bool), ["id", "company_key", "crm_created_at"]]
    features = build_feature_frame(examples, activities, examples[SNAPSHOT_COLUMN], company_peers=peers)
    spec = feature_spec_for(features)
    frame = features.copy()
    frame[TARGET] = examples[TARGET].to_numpy()
    frame[SNAPSHOT_COLUMN] = examples[SNAPSHOT_COLUMN].to_numpy()
    frame[SPLIT_COLUMN] = examples[SPLIT_COLUMN].to_numpy()
    frame[LEAD_ID_COLUMN] = examples["id"].to_numpy(dtype=np.int64)
    return frame, spec


def retrain_if_due(
    session: Session,
    *,
    as_of: datetime | None = None,
    training: TrainingConfig,
    schedules: ScheduleConfig,
    monitoring: MonitoringConfig,
    seed: int = 0,
    window_days: int | None = None,
    holdout_days: int | None = None,
    families: Sequence[str] = FAMILIES,
    catboost_iterations: int = 600,
    catboost_grid: Sequence[dict[str, Any]] | None = None,
    force: bool = False,
    dry_run: bool = False,
    alert_window_days: int | None = None,
    alert_cooldown_days: float = ALERT_COOLDOWN_DAYS,
    progress: Callable[[str], None] | None = None,
) -> RetrainOutcome:
    """Train a challenger when due, compare it with the champion on recent held-out leads, and
    promote it if the rule allows (see the module docstring). Flushes, never commits.

    ``monitoring`` is accepted so callers pass the whole config; the decision reads the latest
    monitor report, which ``run_monitor`` wrote with it. ``force`` trains even when not due.
    """
    say = progress or (lambda _m: None)
    # The YAML's training settings unless a caller (a test, a simulation) overrides them.
    window_days = window_days or training.window_days
    holdout_days = holdout_days or training.holdout_days
    alert_window_days = alert_window_days or training.alert_window_days
    as_of = as_of or data_clock(session) or datetime.now(UTC)  # the data's clock, not the machine's
    champion = registry.champion(session)
    if champion is None:
        return RetrainOutcome(False, "no champion yet: run `leadscore train` first", as_of)
    versions = _versions(session)
    last = max(trained_at(mv) for mv in versions)
    report = latest_report(session, as_of=as_of)
    age_days = (as_of - last).total_seconds() / 86_400
    # A persisting alert is re-reported every day: it may trigger a retraining every few days, not daily.
    alert_after_training = (report is not None and report.status == ALERT and report.as_of > last
                            and age_days >= alert_cooldown_days)
    if force:
        # `leadscore retrain` asks for it (the beat's task asks only when due): not "forced".
        reason = "asked for, not waiting for the schedule" if not dry_run else "asked for, a dry run"
    elif age_days >= schedules.retrain_days:
        reason = f"{age_days:.0f} days since the last training (retrain every {schedules.retrain_days})"
    elif alert_after_training:
        kinds = sorted({str(a.get("kind")) for a in (report.alerts if report else []) if a.get("level") == ALERT})
        reason = f"monitor alert ({', '.join(kinds)}) since the last training"
        # The world changed: learn from its most recent state only.
        window_days = min(window_days, alert_window_days)
    else:
        return RetrainOutcome(False, f"not due: last training {age_days:.1f} days ago, no new alert", as_of,
                              champion=champion.version)
    outcome = RetrainOutcome(True, reason, as_of, champion=champion.version, dry_run=dry_run)
    horizon = training.horizon_days
    latest_labelled = as_of - timedelta(days=horizon)  # a snapshot's label is known from here back
    holdout_end = latest_labelled
    holdout_start = holdout_end - timedelta(days=holdout_days)
    train_start = holdout_start - timedelta(days=window_days)
    # A regime boundary: under an alert, leads created before the monitor saw the change describe
    # a world that is gone; after a promotion under an alert the boundary stays with the champion
    # (until the window has moved past it), so scheduled retrains do not mix the old world back in.
    onset = alert_onset(session, as_of=as_of) if report is not None and report.status == ALERT else None
    boundaries = [b for b in (onset, data_since(champion)) if b is not None]
    since = max(boundaries) if boundaries else None
    if since is not None and since + timedelta(days=min(SNAPSHOT_OFFSETS_DAYS)) > train_start:
        train_start = since + timedelta(days=min(SNAPSHOT_OFFSETS_DAYS))  # split_at: a lead's first snapshot
        outcome.details["data_since"] = since.isoformat()
    else:
        since = None  # the window has moved past the boundary
    since_note = f" (leads created since {since:%Y-%m-%d}, when the change began)" if since is not None else ""
    if since is not None and train_start >= holdout_start:
        # The change is too recent: none of its leads has a known outcome before the held-out days.
        ready = train_start + (as_of - holdout_start)
        outcome.decision = (
            f"no challenger yet: the change began {since:%Y-%m-%d} and no lead created since then has a known "
            f"outcome outside the held-out days (outcomes are known {horizon} days after a lead's "
            f"{min(SNAPSHOT_OFFSETS_DAYS)}-day snapshot, and the last {holdout_days} days of those are held out): "
            f"the first can be trained on around {ready:%Y-%m-%d}"
        )
        outcome.details |= {"needed": {"positives": training.min_per_class, "negatives": training.min_per_class},
                            "trainable_from": ready.isoformat()}
        log.info("retrain skipped: %s", outcome.decision)
        return outcome
    say(f"retraining ({reason}): window {train_start:%Y-%m-%d}..{holdout_start:%Y-%m-%d}, "
        f"held out {holdout_start:%Y-%m-%d}..{holdout_end:%Y-%m-%d}")
    frame, spec = _examples(session, as_of=as_of, horizon_days=horizon, created_from=train_start - timedelta(days=1))
    if frame.empty or spec is None:
        outcome.decision = "no challenger: no labelled examples in the retraining window" + since_note
        return outcome
    split_at = pd.to_datetime(frame[SPLIT_COLUMN], utc=True)
    in_holdout = (split_at >= pd.Timestamp(holdout_start)).to_numpy()
    train_part = frame[~in_holdout & (split_at >= pd.Timestamp(train_start)).to_numpy()].reset_index(drop=True)
    holdout = frame[in_holdout].reset_index(drop=True)
    outcome.details |= {"train_examples": len(train_part), "train_positives": int(train_part[TARGET].sum()),
                       "holdout_examples": len(holdout), "holdout_positives": int(holdout[TARGET].sum())}
    inputs = _inputs_key(train_part, holdout, seed=seed, families=families, catboost_iterations=catboost_iterations,
                         catboost_grid=catboost_grid, training=training.model_dump())
    same = next((mv for mv in versions if (mv.params or {}).get(INPUTS_KEY) == inputs), None)
    if same is not None and not dry_run:
        # `leadscore retrain` twice on the same data: the same challenger again, registered twice.
        outcome.decision = (
            f"no new challenger: {same.version} ({same.status}) was trained on these same {len(train_part):,} "
            f"examples with the same settings; nothing new to learn until the data moves (the next sync)"
        )
        outcome.details["same_as"] = same.version
        log.info("retrain skipped: %s", outcome.decision)
        return outcome
    try:
        result = train_and_compare(
            train_part, target=TARGET, spec=spec, time_col=SPLIT_COLUMN, seed=seed,
            min_per_class=training.min_per_class, on_insufficient=training.on_insufficient, families=families,
            selection_metric=training.selection_metric, progress=say, catboost_iterations=catboost_iterations,
            catboost_grid=catboost_grid,
        )
    except InsufficientDataError as exc:
        outcome.decision = f"no challenger: {exc}" + since_note + _when_enough(exc, train_part, as_of)
        outcome.details["needed"] = {"positives": max(0, exc.minimum - exc.positives),
                                     "negatives": max(0, exc.minimum - exc.negatives)}
        log.info("retrain skipped: %s", exc)
        return outcome
    if dry_run:
        # Nothing is registered or promoted: the comparison is computed and reported only.
        comparison = compare_on_holdout(
            registry.load_model(champion), result.model, holdout, metric=training.selection_metric, seed=seed,
            holdout_start=holdout_start, holdout_end=holdout_end,
        )
        outcome.comparison = comparison
        outcome.challenger = f"(dry run: {result.selected}, not registered)"
        promote, why = promotion_decision(comparison, tolerance=training.promotion_tolerance,
                                          **promotion_bar(report, champion, since, len(train_part)))
        reason = why.split(": ", 1)[1] if ": " in why else why
        outcome.decision = ("dry run, nothing changed: would " + ("promote the challenger" if promote else
                                                                 "keep the champion") + f" — {reason}")
        _retrain_segments(session, outcome, train_part, holdout, spec, training, dry_run=True, seed=seed,
                          families=families, catboost_iterations=catboost_iterations, catboost_grid=catboost_grid,
                          say=say)
        return outcome
    snaps = train_part[SNAPSHOT_COLUMN]
    extra = {"as_of": as_of.isoformat(), "horizon_days": horizon, "snapshot_offsets_days": list(SNAPSHOT_OFFSETS_DAYS),
             "examples": len(train_part), "positives": int(train_part[TARGET].sum()), "retrain": True,
             "retrain_reason": reason, INPUTS_KEY: inputs}
    if since is not None:
        extra[DATA_SINCE_KEY] = since.isoformat()
    # The 1-99 score ranks against the challenger's own validation and test leads (scoring/reference.py).
    y_train = train_part[TARGET].astype(int).to_numpy()
    ref_rows = reference_rows(train_part, y_train, time_col=SPLIT_COLUMN, seed=seed)
    extra[REFERENCE_KEY] = build_reference(result.model, train_part.iloc[ref_rows], labels=y_train[ref_rows])
    live = read_live_leads(session, as_of)  # each new model readied for the leads it will score
    extra.update(ready_for_live(result.model, None, live))
    challenger = registry.register(
        session, result, train_window=(snaps.min().to_pydatetime(), snaps.max().to_pydatetime()),
        extra_params=extra, notes="challenger (evaluation pending)",
    )
    outcome.challenger = challenger.version
    comparison = compare_on_holdout(
        registry.load_model(champion), result.model, holdout, metric=training.selection_metric, seed=seed,
        holdout_start=holdout_start, holdout_end=holdout_end,
    )
    outcome.comparison = comparison
    promote, why = promotion_decision(comparison, tolerance=training.promotion_tolerance,
                                      **promotion_bar(report, champion, since, len(train_part)))
    outcome.decision = why
    challenger.notes = why
    challenger.params = {**(challenger.params or {}), "comparison": {**comparison.to_dict(),
                                                                     "champion_version": champion.version}}
    session.flush()
    if promote:
        registry.promote(session, challenger.version)
        outcome.promoted = True
        # Store the drift reference now, at training time, for the monitor.
        ensure_reference(session, challenger, as_of=as_of)
    log.info("retrain %s: %s", challenger.version, why)
    _retrain_segments(session, outcome, train_part, holdout, spec, training, dry_run=False, seed=seed,
                      families=families, catboost_iterations=catboost_iterations, catboost_grid=catboost_grid, say=say,
                      live=live)
    return outcome


def _retrain_segments(
    session: Session, outcome: RetrainOutcome, train_part: pd.DataFrame, holdout: pd.DataFrame, spec: Any,
    training: TrainingConfig, *, dry_run: bool, seed: int, families: Sequence[str], catboost_iterations: int,
    catboost_grid: Sequence[dict[str, Any]] | None, say: Callable[[str], None], live: LiveLeads | None = None,
) -> None:
    """Segment challengers (``training.segment_by``) on the same window, each judged on its
    segment's held-out leads: it becomes the segment's champion only if it beats the global
    champion there *and* the segment's current champion (promotion rule of a healthy champion);
    a current segment champion that no longer beats the global champion is retired, so the global
    model scores the segment. Decisions with their numbers go to ``outcome.details["segments"]``."""
    column = training.segment_by
    if not column or column not in train_part.columns:
        return
    global_mv = registry.champion(session)
    if global_mv is None:
        return
    global_model = registry.load_model(global_mv)
    decisions: dict[str, str] = {}
    outcome.details["segments"] = decisions
    values = train_part[column].astype("string")
    held_values = holdout[column].astype("string") if column in holdout.columns else None
    window = (pd.to_datetime(holdout[SPLIT_COLUMN], utc=True) if len(holdout) else pd.Series(dtype="object"))
    start = window.min().to_pydatetime() if len(window) else outcome.as_of
    end = window.max().to_pydatetime() if len(window) else outcome.as_of
    for value in sorted(v for v in values.dropna().unique()):
        name = registry.segment_name(column, str(value))
        part = train_part[(values == value).fillna(False).to_numpy()].reset_index(drop=True)
        held = holdout[(held_values == value).fillna(False).to_numpy()].reset_index(drop=True) \
            if held_values is not None else holdout.iloc[0:0]
        current = registry.champion(session, name)
        try:
            result = train_and_compare(
                part, target=TARGET, spec=spec.without([column]), time_col=SPLIT_COLUMN, seed=seed,
                min_per_class=training.min_segment_per_class, families=families,
                selection_metric=training.selection_metric, progress=say, catboost_iterations=catboost_iterations,
                catboost_grid=catboost_grid,
            )
        except InsufficientDataError as exc:
            decisions[name] = f"no segment challenger: {exc}; the global model scores it"
            if current is not None and not dry_run:
                _retire_if_beaten(session, current, global_model, held, training, seed, start, end, decisions, name)
            continue
        vs_global = compare_on_holdout(global_model, result.model, held, metric=training.selection_metric, seed=seed,
                                       holdout_start=start, holdout_end=end)
        beats_global, why_global = promotion_decision(vs_global, tolerance=training.promotion_tolerance,
                                                      champion_healthy=True)
        beats_current, why_current = True, ""
        if current is not None:
            vs_current = compare_on_holdout(registry.load_model(current), result.model, held,
                                            metric=training.selection_metric, seed=seed, holdout_start=start,
                                            holdout_end=end)
            beats_current, why_current = promotion_decision(vs_current, tolerance=training.promotion_tolerance,
                                                            champion_healthy=True)
        use = beats_global and beats_current
        text = (("segment challenger used" if use else "segment challenger not used")
                + f" — against the global champion: {why_global}"
                + (f"; against the segment's champion {current.version}: {why_current}" if current is not None else ""))
        if dry_run:
            decisions[name] = "dry run: " + text
            continue
        snaps = part[SNAPSHOT_COLUMN]
        smv = registry.register(
            session, result, segment=name, train_window=(snaps.min().to_pydatetime(), snaps.max().to_pydatetime()),
            extra_params={"segment_by": column, "segment_value": str(value), "examples": len(part), "retrain": True,
                          "as_of": outcome.as_of.isoformat(), "horizon_days": training.horizon_days,
                          "segment_comparison": vs_global.to_dict(), **ready_for_live(result.model, name, live)},
            notes=text,
        )
        decisions[name] = f"{smv.version}: {text}"
        if use:
            registry.promote(session, smv.version)
        elif current is not None:
            _retire_if_beaten(session, current, global_model, held, training, seed, start, end, decisions, name)


def _retire_if_beaten(session: Session, current: ModelVersion, global_model: TrainedModel, held: pd.DataFrame,
                      training: TrainingConfig, seed: int, start: datetime, end: datetime,
                      decisions: dict[str, str], name: str) -> None:
    """Retire a segment champion that no longer beats the global champion on its segment."""
    check = compare_on_holdout(global_model, registry.load_model(current), held, metric=training.selection_metric,
                               seed=seed, holdout_start=start, holdout_end=end)
    keeps, why = promotion_decision(check, tolerance=0.0, champion_healthy=True)
    if check.positives < MIN_HOLDOUT_POSITIVES or keeps:
        return
    current.status = registry.RETIRED
    current.notes = f"retired: no longer beats the global champion on its segment; {why.split('; ', 1)[-1]}"
    session.flush()
    decisions[name] += f"; {current.version} retired (the global model now scores the segment)"


def _when_enough(exc: InsufficientDataError, train_part: pd.DataFrame, as_of: datetime) -> str:
    """How many more labelled examples are needed and, from the last 90 days' rate, about when."""
    short = [(exc.minimum - n, name) for n, name in ((exc.positives, "converted"), (exc.negatives, "not converted"))
             if n < exc.minimum]
    if not short:
        return ""
    missing, name = max(short)
    text = f"; {missing} more {name} labelled examples needed"
    if train_part.empty:
        return text
    split_at = pd.to_datetime(train_part[SPLIT_COLUMN], utc=True)
    # The recent rate: the last 90 days of labelled leads, or all of them when they span less
    # (after a regime boundary only the days since the change count).
    span = min(90.0, max(1.0, (split_at.max() - split_at.min()).total_seconds() / 86_400))
    recent = split_at >= split_at.max() - pd.Timedelta(days=span)
    labels = train_part[TARGET].astype(int)
    gained = int((labels[recent] == 1).sum() if name == "converted" else (labels[recent] == 0).sum())
    if gained <= 0:
        return text + f" (none arrived in the last {span:.0f} days: no date can be estimated)"
    rate = gained / span
    days = missing / rate
    # The count, not a rate a day: a small org's "0.0 a day" read as none at all.
    return text + (f"; at the last {span:.0f} days' rate ({gained} {name} in {span:.0f} days) about {days:.0f} "
                   f"days, around {as_of + timedelta(days=days):%Y-%m-%d}")


__all__ = [
    "Comparison",
    "RetrainOutcome",
    "compare_on_holdout",
    "paired_bootstrap",
    "promotion_decision",
    "retrain_if_due",
    "segment_versus_global",
]
