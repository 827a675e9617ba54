"""Training runs from the store: the point-in-time training set, the families, segment models and
the registered version with its score reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from config.app_config import TrainingConfig
from config.errors import LeadscoreError
from scoring import registry
from scoring.champions import LiveLeads, read_live_leads, ready_for_live
from scoring.compare import segment_versus_global
from scoring.dataset import SPLIT_COLUMN, TARGET, build_training_set
from scoring.inputs import crm_now
from scoring.reference import REFERENCE_KEY, build_reference, reference_rows
from scoring.training import FAMILIES, TrainingResult, train_and_compare
from store.models import ModelVersion


@dataclass
class TrainOutcome:
    """A training run from the store: the result, its registered version, segment models."""

    result: TrainingResult
    model_version: ModelVersion
    promoted: bool
    examples: int
    positives: int
    as_of: datetime
    window: tuple[datetime | None, datetime | None]
    excluded: dict[str, int]
    segments: dict[str, ModelVersion] = field(default_factory=dict)
    skipped_segments: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (what ``leadscore train --json`` writes)."""
        mv = self.model_version
        return {
            "version": mv.version,
            "status": mv.status,
            "family": mv.family,
            "as_of": self.as_of.isoformat(),
            "train_window": [w.isoformat() if w else None for w in self.window],
            "examples": self.examples,
            "positives": self.positives,
            "excluded": self.excluded,
            "selected": self.result.selected,
            # Rows and converted leads per part of the split (what the test metrics rest on).
            "split": {k: v for k, v in self.result.split.items() if k.endswith(("_rows", "_positives"))},
            "metrics": {f: {part: {k: v for k, v in m.items() if isinstance(v, int | float)}
                            for part, m in parts.items()} for f, parts in self.result.metrics.items()},
            "audit": {"warnings": list(self.result.audit.warnings),
                      "leaky_features": list(self.result.audit.leaky_features),
                      "dropped": dict(self.result.audit.dropped)},  # feature -> why it was excluded
            "segments": {name: smv.version for name, smv in self.segments.items()},
            "skipped_segments": self.skipped_segments,
        }


def train_from_store(
    session: Session,
    *,
    as_of: datetime | None = None,
    config: TrainingConfig,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    promote_if_first: bool = True,
    families: Sequence[str] = FAMILIES,
    catboost_iterations: int = 600,
    training_options: Mapping[str, Any] | None = None,
) -> TrainOutcome:
    """Build the point-in-time training set, train and compare the families, register the result.

    The new version is a candidate, except the very first model (no champion yet), which becomes
    champion when ``promote_if_first``. With ``config.segment_by`` set, a model per segment value
    is trained where that segment has ``min_segment_per_class`` examples of each class; other
    segments are scored by the global model. ``training_options`` are passed on to
    ``train_and_compare`` (e.g. ``catboost_grid``, ``forest_trees``). Raises
    ``InsufficientDataError`` (a LeadscoreError) when there are too few labelled leads and
    ``on_insufficient`` is "refuse".
    """
    say = progress or (lambda _m: None)
    as_of = as_of or crm_now(session)
    say(f"building the training set as of {as_of:%Y-%m-%d %H:%M} UTC")
    tset = build_training_set(session, as_of=as_of, horizon_days=config.horizon_days)
    frame = tset.frame
    if frame.empty:
        raise LeadscoreError(
            f"no labelled leads yet: a lead needs {config.horizon_days} days after its snapshot before it can "
            "teach the model (sync more history or lower training.horizon_days)"
        )
    say(f"{len(frame)} examples, {tset.positives} converted, from {frame['lead_id'].nunique()} leads")
    result = train_and_compare(
        frame, target=TARGET, spec=tset.spec, time_col=SPLIT_COLUMN, seed=seed,
        min_per_class=config.min_per_class, on_insufficient=config.on_insufficient,
        families=families, selection_metric=config.selection_metric, progress=say,
        catboost_iterations=catboost_iterations,
        # Features here are built point in time by construction, so the audit's leak heuristics
        # (tuned for arbitrary CSVs) report but do not drop: at a low base rate they flag
        # ordinary firmographics whose levels convert rarely.
        drop_leaky=False,
        **dict(training_options or {}),
    )
    # The live leads' features, once: each new model is readied for the leads it will score.
    say("reading the live leads the new model will score")
    live = read_live_leads(session, as_of)
    extra = {
        "as_of": as_of.isoformat(), "horizon_days": config.horizon_days, "snapshot_offsets_days": list(tset.offsets),
        "examples": len(frame), "positives": tset.positives, "excluded": tset.excluded,
        REFERENCE_KEY: _reference_of(result, frame, seed=seed), **ready_for_live(result.model, None, live),
    }
    mv = registry.register(session, result, train_window=tset.window, extra_params=extra)
    promoted = False
    if promote_if_first and registry.champion(session) is None:
        registry.promote(session, mv.version)
        promoted = True
    outcome = TrainOutcome(
        result=result, model_version=mv, promoted=promoted, examples=len(frame), positives=tset.positives,
        as_of=as_of, window=tset.window, excluded=tset.excluded,
    )
    if config.segment_by:
        _train_segments(session, outcome, frame, tset.spec, config, seed=seed, families=families,
                        catboost_iterations=catboost_iterations, promote_if_first=promote_if_first, say=say,
                        options=dict(training_options or {}), live=live)
    return outcome


def _reference_of(result: TrainingResult, frame: pd.DataFrame, *, seed: int) -> dict[str, Any]:
    """The score reference of a freshly trained model: its validation and test leads."""
    y = frame[TARGET].astype(int).to_numpy()
    pos = reference_rows(frame, y, time_col=SPLIT_COLUMN, seed=seed)
    return build_reference(result.model, frame.iloc[pos], labels=y[pos])


def _train_segments(
    session: Session,
    outcome: TrainOutcome,
    frame: pd.DataFrame,
    spec: Any,
    config: TrainingConfig,
    *,
    seed: int,
    families: Sequence[str],
    catboost_iterations: int,
    promote_if_first: bool,
    say: Callable[[str], None],
    options: dict[str, Any],
    live: LiveLeads,
) -> None:
    column = str(config.segment_by)
    if column not in frame.columns:
        raise LeadscoreError(f"training.segment_by: {column!r} is not a feature (e.g. seniority, industry)")
    values = frame[column].astype("string")
    for value in sorted(v for v in values.dropna().unique()):
        name = registry.segment_name(column, str(value))
        part = frame[(values == value).fillna(False).to_numpy()]
        pos = int(part[TARGET].sum())
        neg = len(part) - pos
        if min(pos, neg) < config.min_segment_per_class:
            outcome.skipped_segments[name] = (
                f"{pos} converted / {neg} not: fewer than {config.min_segment_per_class} per class, "
                "the global model scores it"
            )
            say(f"segment {name}: too small, global model used")
            continue
        say(f"segment {name}: training on {len(part)} examples")
        result = train_and_compare(
            part, target=TARGET, spec=spec.without([column]), time_col=SPLIT_COLUMN, seed=seed,
            min_per_class=config.min_segment_per_class, families=families,
            selection_metric=config.selection_metric, progress=say, catboost_iterations=catboost_iterations,
            drop_leaky=False, **options,
        )
        snaps = part["snapshot_at"]
        # A segment model earns its place only by beating the global model on the segment's own
        # held-out leads; the decision and both numbers are recorded with it.
        test_from = (outcome.result.split or {}).get("test_from")
        verdict = segment_versus_global(
            outcome.result.model, result.model, part, metric=config.selection_metric,
            tolerance=config.promotion_tolerance, seed=seed,
            not_before=pd.Timestamp(test_from).to_pydatetime() if test_from else None,
        )
        say(f"segment {name}: {verdict['decision']}")
        smv = registry.register(
            session, result, segment=name, train_window=(snaps.min().to_pydatetime(), snaps.max().to_pydatetime()),
            extra_params={"segment_by": column, "segment_value": str(value), "examples": len(part),
                          "segment_comparison": verdict, REFERENCE_KEY: _reference_of(result, part, seed=seed),
                          **ready_for_live(result.model, name, live)},
            notes=verdict["decision"],
        )
        if not verdict["use_segment"]:
            outcome.skipped_segments[name] = verdict["decision"]
            continue
        if promote_if_first and registry.champion(session, name) is None:
            registry.promote(session, smv.version)
        outcome.segments[name] = smv
