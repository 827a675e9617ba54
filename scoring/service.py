"""Online scoring: train from the store, score leads whose inputs changed, record outbox writes.

Two numbers per lead, each with one meaning: the *score* (1-99) is the lead's rank among the
champion's reference leads (:mod:`scoring.reference`): a score of 90 outranks 90 % of them. The
*likelihood* is the calibrated probability of converting within the training horizon, in
percent. Fit and engagement (1-99) rank the two parts of the model's contributions the same way
(:mod:`scoring.subscores`). Scores age: a lead is rescored when one of its activity windows
moves past an event, even with no new activity (``next_aging_at``).

Both entry points run inside the caller's transaction and never commit: the Celery task or CLI
command that calls them owns the unit of work. Score rows and their outbox rows are written in
the same flush, so the CRM write exists if and only if the score does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from config.app_config import TierConfig, TrainingConfig
from config.errors import LeadscoreError
from scoring import registry
from scoring.audit import DataError
from scoring.dataset import SPLIT_COLUMN, TARGET, build_training_set
from scoring.features import (
    WINDOWS_DAYS,
    align_to_spec,
    build_feature_frame,
    load_activities_frame,
    load_company_peers,
    load_leads_frame,
)
from scoring.hooks import TierChangeHook
from scoring.reasons import explain, join_reasons, reason_strings, typical_values
from scoring.reference import REFERENCE_KEY, build_reference, rank, reference_rows, stored_reference
from scoring.subscores import split_contributions
from scoring.tiers import active_policy, current_scores, find_active_policy, likelihood_percent, tiers_for
from scoring.training import FAMILIES, TrainingResult, train_and_compare
from store.models import Activity, Lead, LeadLifecycle, LeadScore, ModelVersion, Outbox, SyncRun

logger = logging.getLogger(__name__)

OUTBOX_KIND = "score_fields"
_IN_CHUNK = 1000
CHANGE_DAYS = 7  # the trend field: score change over this many days of the data's clock
# "Typical leads" for reasons are the live ones a rep sees: this many, evenly spread over the
# live leads, measured once per model and week of the data's clock (per process: what most leads
# look like moves slowly); fewer live leads than MIN use the model's reference leads instead.
LIVE_SAMPLE = 2000
LIVE_SAMPLE_MIN = 200
LIVE_TYPICAL_DAYS = 7
_live_typical_cache: dict[tuple[str, str], tuple[datetime, dict[str, Any] | None]] = {}

Progress = Callable[[str, int, int], None]


class NoChampionError(LeadscoreError):
    """Scoring was asked for before any model was trained."""


def crm_now(session: Session) -> datetime:
    """The CRM's clock: the latest ``server_time`` of a succeeded sync, else the current UTC time."""
    latest = session.scalar(select(func.max(SyncRun.server_time)).where(SyncRun.status == "succeeded"))
    if latest is None:
        return datetime.now(UTC)
    return latest if latest.tzinfo is not None else latest.replace(tzinfo=UTC)


def payload_hash(payload: dict[str, Any]) -> str:
    """sha256 of the payload's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def outbox_payload(
    score: int,
    tier: str,
    reasons: Sequence[str],
    model: str,
    scored_at: datetime,
    *,
    likelihood: float | None = None,
    fit: int | None = None,
    engagement: int | None = None,
    score_change: int | None = None,
) -> dict[str, Any]:
    """The CRM-neutral score write: the connectors map these keys to their configured fields.

    Keys left None are not written (a re-tier of an old score has no sub-scores to send).
    """
    payload: dict[str, Any] = {
        "score": int(score),
        "tier": tier,
        "reasons": join_reasons(list(reasons)),
        "model": model,
        "scored_at": scored_at.astimezone(UTC).isoformat(timespec="seconds"),
    }
    extra = {"likelihood": likelihood, "fit": fit, "engagement": engagement, "score_change": score_change}
    payload.update({k: v for k, v in extra.items() if v is not None})
    return payload


def _chunks(ids: Sequence[int], size: int = _IN_CHUNK) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


# ------------------------------------------------------------------------------------ training


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
            "metrics": {f: {part: {k: v for k, v in m.items() if isinstance(v, int | float)}
                            for part, m in parts.items()} for f, parts in self.result.metrics.items()},
            "audit": {"warnings": list(self.result.audit.warnings),
                      "leaky_features": list(self.result.audit.leaky_features)},
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
    extra = {
        "as_of": as_of.isoformat(), "horizon_days": config.horizon_days, "snapshot_offsets_days": list(tset.offsets),
        "examples": len(frame), "positives": tset.positives, "excluded": tset.excluded,
        REFERENCE_KEY: _reference_of(result, frame, seed=seed),
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
                        options=dict(training_options or {}))
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
        from scoring.compare import segment_versus_global

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
                          "segment_comparison": verdict, REFERENCE_KEY: _reference_of(result, part, seed=seed)},
            notes=verdict["decision"],
        )
        if not verdict["use_segment"]:
            outcome.skipped_segments[name] = verdict["decision"]
            continue
        if promote_if_first and registry.champion(session, name) is None:
            registry.promote(session, smv.version)
        outcome.segments[name] = smv


# ------------------------------------------------------------------------------------- scoring


@dataclass
class NewScore:
    """A score about to be written for one lead."""

    lead_id: int
    probability: float
    score: int
    tier: str
    reasons: list[str]
    model_version_id: int | None
    model_version: str
    inputs_hash: str | None
    fit_score: int | None = None
    engagement_score: int | None = None
    as_of: datetime | None = None
    next_aging_at: datetime | None = None


@dataclass
class WriteStats:
    scores: int = 0
    outbox: int = 0
    superseded: int = 0
    tier_changes: int = 0


@dataclass
class ScoreSummary:
    """What a scoring run did."""

    as_of: datetime
    model_version: str
    considered: int = 0
    scored: int = 0
    unchanged: int = 0
    outbox_rows: int = 0
    superseded: int = 0
    tier_changes: int = 0
    tiers: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    routing_planned: dict[str, int] = field(default_factory=dict)  # by action type (scoring.pipeline)

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(), "model": self.model_version, "considered": self.considered,
            "scored": self.scored, "unchanged": self.unchanged, "outbox_rows": self.outbox_rows,
            "superseded": self.superseded, "tier_changes": self.tier_changes, "tiers": self.tiers,
            "routing_planned": dict(self.routing_planned), "seconds": round(self.seconds, 3),
        }


def stale_lead_ids(
    session: Session,
    model_version_ids: Sequence[int],
    *,
    lead_ids: Sequence[int] | None = None,
    as_of: datetime | None = None,
) -> list[int]:
    """Open leads (see ``LeadLifecycle``) whose inputs changed since their current score, in id order.

    Stale: no current score; scored by a model that is no longer a champion; ``inputs_hash``
    differs from the one scored; the lead's inputs changed after the score; an activity of the
    lead arrived (was synced) after the score; with ``as_of``, the score has aged (an activity
    window or the 7-day change baseline moved: ``next_aging_at <= as_of``).
    """
    current = aliased(LeadScore)
    newer_activity = exists().where(Activity.lead_id == Lead.id, Activity.synced_at > current.scored_at)
    aged = [current.next_aging_at <= as_of] if as_of is not None else []
    stmt = (
        select(Lead.id)
        .outerjoin(current, (current.lead_id == Lead.id) & current.is_current.is_(True))
        .where(Lead.lifecycle == LeadLifecycle.open)
        .where(
            or_(
                current.id.is_(None),
                current.model_version_id.is_(None),
                current.model_version_id.not_in(list(model_version_ids)),
                Lead.inputs_hash.is_distinct_from(current.inputs_hash),
                Lead.inputs_changed_at > current.scored_at,
                newer_activity,
                *aged,
            )
        )
        .order_by(Lead.id)
    )
    if lead_ids is None:
        return list(session.scalars(stmt))
    out: list[int] = []
    for chunk in _chunks(sorted({int(i) for i in lead_ids})):
        out.extend(session.scalars(stmt.where(Lead.id.in_(chunk))))
    return sorted(out)


def live_lead_ids(session: Session, lead_ids: Sequence[int] | None = None) -> list[int]:
    """Open leads (all, or those of ``lead_ids``), in id order: converted, closed, deleted and merged
    leads are never scored anew (their last score stays as history)."""
    stmt = select(Lead.id).where(Lead.lifecycle == LeadLifecycle.open).order_by(Lead.id)
    if lead_ids is None:
        return list(session.scalars(stmt))
    out: list[int] = []
    for chunk in _chunks(sorted({int(i) for i in lead_ids})):
        out.extend(session.scalars(stmt.where(Lead.id.in_(chunk))))
    return sorted(out)


@dataclass
class _Models:
    global_mv: ModelVersion
    segment_by: str | None
    by_segment: dict[str, ModelVersion]

    @property
    def ids(self) -> list[int]:
        return [self.global_mv.id, *(mv.id for mv in self.by_segment.values())]

    def groups(self, frame: pd.DataFrame) -> list[tuple[ModelVersion, np.ndarray]]:
        """(model version, boolean row mask) covering every row exactly once."""
        n = len(frame)
        if not self.segment_by or self.segment_by not in frame.columns or not self.by_segment:
            return [(self.global_mv, np.ones(n, dtype=bool))]
        values = frame[self.segment_by].astype("string").fillna("").to_numpy(dtype=object)
        taken = np.zeros(n, dtype=bool)
        out: list[tuple[ModelVersion, np.ndarray]] = []
        for value, mv in self.by_segment.items():
            mask = values == value
            if mask.any():
                out.append((mv, mask))
                taken |= mask
        if (~taken).any():
            out.append((self.global_mv, ~taken))
        return out


def _champions(session: Session) -> _Models:
    global_mv = registry.champion(session)
    if global_mv is None:
        raise NoChampionError("no champion model yet: run `leadscore train` first")
    segs = registry.segment_champions(session)
    segment_by: str | None = None
    by_value: dict[str, ModelVersion] = {}
    for name, mv in segs.items():
        feature, _, value = name.partition("=")
        if segment_by is None:
            segment_by = feature
        if feature == segment_by:  # one segmentation at a time: the first configured wins
            by_value[value] = mv
    return _Models(global_mv=global_mv, segment_by=segment_by, by_segment=by_value)


def _features(session: Session, ids: Sequence[int], as_of: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    leads, frame, _ = _batch_inputs(session, ids, as_of)
    return leads, frame


def _batch_inputs(
    session: Session, ids: Sequence[int], as_of: datetime
) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, datetime]]:
    """Leads, their features at ``as_of`` and when each lead's features next age."""
    leads = load_leads_frame(session, ids)
    activities = load_activities_frame(session, ids, before=as_of)
    keys = [k for k in leads["company_key"].dropna().unique().tolist()]
    peers = load_company_peers(session, keys, before=as_of)
    frame = build_feature_frame(leads, activities, as_of, company_peers=peers)
    return leads, frame, next_aging(activities, as_of)


def next_aging(activities: pd.DataFrame, as_of: datetime) -> dict[int, datetime]:
    """Per lead, the first moment after ``as_of`` at which one of its activities leaves a feature
    window (7, 30 or 90 days): its features, and so its score, change then without new activity."""
    if activities.empty:
        return {}
    at_ns = pd.to_datetime(activities["occurred_at"], utc=True).astype("int64").to_numpy()
    now_ns = int(as_of.timestamp() * 1e9)
    never = np.iinfo(np.int64).max
    edges = np.full(len(at_ns), never, dtype="int64")
    for w in WINDOWS_DAYS:
        edge = at_ns + np.int64(w * 86_400 * 10**9)
        edges = np.where((edge > now_ns) & (edge < edges), edge, edges)
    keep = edges < never
    if not keep.any():
        return {}
    firsts = pd.Series(edges[keep]).groupby(activities["lead_id"].to_numpy()[keep]).min()
    return {int(k): datetime.fromtimestamp(int(v) / 1e9, UTC) for k, v in firsts.items()}


def _predict(models: _Models, frame: pd.DataFrame) -> tuple[np.ndarray, list[ModelVersion | None]]:
    probs = np.zeros(len(frame))
    used: list[ModelVersion | None] = [None] * len(frame)
    for mv, mask in models.groups(frame):
        model = registry.load_model(mv)
        probs[mask] = model.predict_proba(align_to_spec(frame.loc[mask], model.spec))
        for i in np.flatnonzero(mask):
            used[i] = mv
    return probs, used


def ensure_score_reference(session: Session, mv: ModelVersion) -> Mapping[str, Any]:
    """The version's reference, building (and storing) it from the store if it has none.

    Rebuilt the way training built it: the point-in-time training set as of the version's
    ``as_of`` (or the CRM's clock), the same time-ordered split, validation + test rows; a segment
    model keeps its segment's rows.
    """
    ref = stored_reference(mv)
    if ref is not None:
        return ref
    params = dict(mv.params or {})
    as_of_text = params.get("as_of")
    as_of = datetime.fromisoformat(as_of_text) if isinstance(as_of_text, str) else crm_now(session)
    horizon = int(params.get("horizon_days") or 90)
    frame = build_training_set(session, as_of=as_of, horizon_days=horizon).frame.reset_index(drop=True)
    if mv.segment and "=" in mv.segment:
        feature, _, value = mv.segment.partition("=")
        if feature in frame.columns:
            frame = frame[(frame[feature].astype("string") == value).fillna(False).to_numpy()].reset_index(drop=True)
    model = registry.load_model(mv)
    built: dict[str, Any]
    if len(frame) == 0:
        built = {"n": 0, "probability": [], "fit": [], "engagement": [], "typical": {}}
    else:
        y = frame[TARGET].astype(int).to_numpy()
        try:
            pos = reference_rows(frame, y, time_col=SPLIT_COLUMN, seed=0)
        except DataError as exc:  # a split that cannot be made (one class): every row is the reference
            logger.info("reference of %s: split failed (%s); using every labelled row", mv.version, exc)
            pos = np.arange(len(frame))
        built = build_reference(model, frame.iloc[pos], labels=y[pos])
    params[REFERENCE_KEY] = built
    mv.params = params  # a new dict, so the JSON column is seen as changed
    session.flush()
    logger.info("built the score reference of %s from %d leads", mv.version, built["n"])
    return built


def live_typical(session: Session, mv: ModelVersion, as_of: datetime) -> dict[str, Any] | None:
    """What the live leads scored by ``mv`` look like at ``as_of`` (reasons compare with them and
    leave out sentences most of them would get); None with fewer than LIVE_SAMPLE_MIN live leads.
    """
    key = (str(session.get_bind().engine.url), mv.version)  # one process may serve several databases (tests)
    cached = _live_typical_cache.get(key)
    if cached is not None and abs(as_of - cached[0]) < timedelta(days=LIVE_TYPICAL_DAYS):
        return cached[1]
    ids = live_lead_ids(session)
    if len(ids) < LIVE_SAMPLE_MIN:
        return None
    if len(ids) > LIVE_SAMPLE:
        ids = [ids[i] for i in np.linspace(0, len(ids) - 1, LIVE_SAMPLE).round().astype(int)]
    _, frame = _features(session, ids, as_of)
    if mv.segment and "=" in mv.segment:
        feature, _, value = mv.segment.partition("=")
        if feature in frame.columns:
            frame = frame[(frame[feature].astype("string") == value).fillna(False).to_numpy()]
    typical: dict[str, Any] | None = None
    if len(frame) >= LIVE_SAMPLE_MIN:
        model = registry.load_model(mv)
        typical = typical_values(align_to_spec(frame, model.spec))
    if len(_live_typical_cache) > 64:
        _live_typical_cache.clear()
    _live_typical_cache[key] = (as_of, typical)
    return typical


def score_leads(
    session: Session,
    *,
    as_of: datetime | None = None,
    all: bool = False,  # noqa: A002 - the CLI's --all
    lead_ids: Sequence[int] | None = None,
    batch_size: int = 2000,
    progress: Progress | None = None,
    tier_change_hook: TierChangeHook | None = None,
    tier_default: TierConfig | None = None,
) -> ScoreSummary:
    """Score the leads whose inputs changed (every live lead with ``all``), in bounded batches.

    ``as_of`` None uses the CRM's clock (:func:`crm_now`). ``lead_ids`` restricts the run to those
    leads. ``tier_default`` seeds the first tier policy when none exists (default: the YAML
    config's ``tiers``). Each rescored lead gets a new current ``LeadScore`` with reasons; when its score, tier
    or reasons changed, an ``Outbox`` row ("score_fields") replaces any still-pending one; when
    its tier changed (or it had no score), ``tier_change_hook(session, lead, previous, current)``
    is called in the same transaction. ``progress(stage, done, total)`` reports per batch.
    Raises :class:`NoChampionError` before any model exists.
    """
    started = time.perf_counter()
    as_of = as_of or crm_now(session)
    models = _champions(session)
    policy = find_active_policy(session) or active_policy(session, tier_default or _configured_tiers())
    ids = live_lead_ids(session, lead_ids) if all else stale_lead_ids(
        session, models.ids, lead_ids=lead_ids, as_of=as_of)
    considered = len(live_lead_ids(session, lead_ids)) if lead_ids is not None else None
    summary = ScoreSummary(as_of=as_of, model_version=models.global_mv.version)
    summary.considered = considered if considered is not None else _live_count(session)
    summary.unchanged = summary.considered - len(ids)
    total = len(ids)
    batches = _chunks(ids, max(1, batch_size))

    reference: np.ndarray | None = None
    if policy.mode == "capacity" and total:
        # Capacity tiers cut the distribution of all current scores, which this run changes:
        # a first pass computes the new probabilities so the cut-offs include them.
        new_probs: list[np.ndarray] = []
        for n, batch in enumerate(batches, 1):
            _, frame = _features(session, batch, as_of)
            new_probs.append(_predict(models, frame)[0])
            if progress:
                progress("ranking", min(n * batch_size, total), total)
        rescored = set(ids)
        existing = current_scores(session)
        others = existing.loc[~existing["lead_id"].isin(rescored), "probability"].to_numpy()
        reference = np.concatenate([others, *new_probs])

    for n, batch in enumerate(batches, 1):
        leads, frame, aging = _batch_inputs(session, batch, as_of)
        probs, used = _predict(models, frame)
        size = len(frame)
        scores = np.zeros(size, dtype="int64")
        fits = np.zeros(size, dtype="int64")
        engagements = np.zeros(size, dtype="int64")
        texts: list[list[str]] = [[] for _ in batch]
        for mv, mask in models.groups(frame):
            model = registry.load_model(mv)
            ref = ensure_score_reference(session, mv)
            part = align_to_spec(frame.loc[mask], model.spec)
            contributions = model.contributions(part)
            fit, engagement = split_contributions(contributions)
            rows_of = np.flatnonzero(mask)
            scores[rows_of] = rank(probs[rows_of], ref["probability"])
            fits[rows_of] = rank(fit, ref["fit"])
            engagements[rows_of] = rank(engagement, ref["engagement"])
            typical = live_typical(session, mv, as_of) or ref.get("typical")
            reasons = explain(contributions, part, typical=typical)
            for pos, r in zip(rows_of.tolist(), reasons, strict=True):
                texts[pos] = reason_strings(r)
        tiers = tiers_for(policy, probs, scores=scores, reference=reference)
        hashes = leads["inputs_hash"].tolist()
        rows = []
        for i, lead_id in enumerate(leads["id"].tolist()):
            mv = used[i] or models.global_mv
            rows.append(NewScore(
                lead_id=int(lead_id), probability=float(probs[i]), score=int(scores[i]), tier=tiers[i],
                reasons=texts[i], model_version_id=mv.id, model_version=mv.version, inputs_hash=hashes[i],
                fit_score=int(fits[i]), engagement_score=int(engagements[i]), as_of=as_of,
                next_aging_at=aging.get(int(lead_id)),
            ))
        stats = write_scores(session, rows, policy_id=policy.id, tier_change_hook=tier_change_hook)
        # A challenger in shadow scores the same leads; stored only, never written to the CRM.
        from scoring.shadow import score_in_shadow

        score_in_shadow(session, frame, leads["id"].tolist(), as_of)
        summary.scored += stats.scores
        summary.outbox_rows += stats.outbox
        summary.superseded += stats.superseded
        summary.tier_changes += stats.tier_changes
        for t in tiers:
            summary.tiers[t] = summary.tiers.get(t, 0) + 1
        if progress:
            progress("scoring", min(n * batch_size, total), total)
    summary.seconds = time.perf_counter() - started
    return summary


def _configured_tiers() -> TierConfig:
    """The YAML config's ``tiers`` (used only to create the first policy version)."""
    from config.app_config import load_config
    from config.settings import get_settings

    return load_config(get_settings().config_file).tiers


def _live_count(session: Session) -> int:
    return int(session.scalar(select(func.count(Lead.id)).where(Lead.lifecycle == LeadLifecycle.open)) or 0)


@dataclass(frozen=True)
class _Previous:
    id: int
    score: int
    tier: str
    reasons: list[str]
    probability: float
    fit_score: int | None
    engagement_score: int | None
    score_change: int | None


def _fields(score: int, tier: str, reasons: Sequence[str], probability: float, fit: int | None,
            engagement: int | None, change: int | None) -> tuple[Any, ...]:
    """What the CRM shows of a score: a write is needed only when this differs."""
    likelihood = float(likelihood_percent(np.array([probability]))[0])
    return (score, tier, list(reasons), likelihood, fit, engagement, change)


def _change_baselines(
    session: Session, ids: Sequence[int], as_of: datetime
) -> tuple[dict[int, int], dict[int, datetime]]:
    """Per lead: the score to measure the 7-day change against, and when that baseline moves.

    The baseline is the lead's latest score with ``as_of`` at least :data:`CHANGE_DAYS` before
    ``as_of``; a lead first scored within those days is measured against its first score. The
    baseline moves when the next later score turns 7 days old.
    """
    cutoff = as_of - timedelta(days=CHANGE_DAYS)
    base: dict[int, int] = {}
    moves: dict[int, datetime] = {}
    for chunk in _chunks(ids):
        latest_old = (
            select(LeadScore.lead_id, func.max(LeadScore.id).label("sid"))
            .where(LeadScore.lead_id.in_(chunk), LeadScore.as_of <= cutoff)
            .group_by(LeadScore.lead_id)
            .subquery()
        )
        for lead_id, score in session.execute(
            select(LeadScore.lead_id, LeadScore.score).join(latest_old, LeadScore.id == latest_old.c.sid)
        ):
            base[lead_id] = score
        missing = [i for i in chunk if i not in base]
        if missing:
            first = (
                select(LeadScore.lead_id, func.min(LeadScore.id).label("sid"))
                .where(LeadScore.lead_id.in_(missing))
                .group_by(LeadScore.lead_id)
                .subquery()
            )
            for lead_id, score in session.execute(
                select(LeadScore.lead_id, LeadScore.score).join(first, LeadScore.id == first.c.sid)
            ):
                base[lead_id] = score
        for lead_id, when in session.execute(
            select(LeadScore.lead_id, func.min(LeadScore.as_of))
            .where(LeadScore.lead_id.in_(chunk), LeadScore.as_of > cutoff)
            .group_by(LeadScore.lead_id)
        ):
            if when is not None:
                when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
                moves[lead_id] = when + timedelta(days=CHANGE_DAYS)
    return base, moves


def write_scores(
    session: Session,
    rows: Sequence[NewScore],
    *,
    policy_id: int | None,
    tier_change_hook: TierChangeHook | None = None,
    scored_at: datetime | None = None,
) -> WriteStats:
    """Record new current scores, their outbox rows and tier-change hooks (no commit).

    The previous current row of each lead is marked not current before the new one is inserted
    (the partial unique index allows one current row per lead). An outbox row is written only
    when score, tier or reasons differ from the previous score; it supersedes the lead's pending
    outbox rows. Bulk statements (not one ORM object per row) keep a 2,000-lead batch fast.
    Used by scoring and by re-tiering. Rows of leads that are not open (converted, closed,
    deleted, merged) are dropped: those leads keep their current score.
    """
    stats = WriteStats()
    if not rows:
        return stats
    when = scored_at or datetime.now(UTC)
    ids = [r.lead_id for r in rows]
    previous: dict[int, _Previous] = {}
    lead_refs: dict[int, tuple[int, str]] = {}
    not_open: set[int] = set()
    for chunk in _chunks(ids):
        for sid, lead_id, score, tier, reasons, prob, fit, eng, change in session.execute(
            select(LeadScore.id, LeadScore.lead_id, LeadScore.score, LeadScore.tier, LeadScore.reasons,
                   LeadScore.probability, LeadScore.fit_score, LeadScore.engagement_score,
                   LeadScore.score_change).where(
                LeadScore.lead_id.in_(chunk), LeadScore.is_current.is_(True)
            )
        ):
            previous[lead_id] = _Previous(sid, score, tier, list(reasons or []), float(prob), fit, eng, change)
        for lead_id, conn_id, crm_id, state in session.execute(
            select(Lead.id, Lead.connection_id, Lead.crm_id, Lead.lifecycle).where(Lead.id.in_(chunk))
        ):
            lead_refs[lead_id] = (conn_id, crm_id)
            if state != LeadLifecycle.open:
                not_open.add(lead_id)
    if not_open:
        # Only open leads get new scores, writes and routing (re-tiering included); the others
        # keep their current score as history.
        rows = [r for r in rows if r.lead_id not in not_open]
        previous = {k: v for k, v in previous.items() if k not in not_open}
        if not rows:
            return stats
    # The 7-day change needs each row's data clock: rows without one are measured at ``when``.
    clock = {r.lead_id: (r.as_of or when) for r in rows}
    baselines: dict[int, int] = {}
    baseline_moves: dict[int, datetime] = {}
    for as_of in sorted(set(clock.values())):
        group = [i for i, t in clock.items() if t == as_of]
        base, moves = _change_baselines(session, group, as_of)
        baselines.update(base)
        baseline_moves.update(moves)
    changes = {r.lead_id: (r.score - baselines[r.lead_id]) if r.lead_id in baselines else 0 for r in rows}
    # Old current rows stop being current before the new ones exist (one current row per lead).
    # "evaluate" keeps LeadScore objects already loaded in this session in step.
    for chunk in _chunks([p.id for p in previous.values()]):
        session.execute(
            update(LeadScore).where(LeadScore.id.in_(chunk)).values(is_current=False),
            execution_options={"synchronize_session": "evaluate"},
        )
    new_ids: dict[int, int] = {}
    values = []
    for r in rows:
        aging = r.next_aging_at
        if changes[r.lead_id] != 0:
            # A non-zero change goes stale when its baseline moves: rescore the lead then.
            move = baseline_moves.get(r.lead_id, clock[r.lead_id] + timedelta(days=CHANGE_DAYS))
            aging = move if aging is None else min(aging, move)
        values.append({
            "lead_id": r.lead_id, "model_version_id": r.model_version_id, "tier_policy_id": policy_id,
            "probability": r.probability, "score": r.score, "tier": r.tier, "reasons": list(r.reasons),
            "inputs_hash": r.inputs_hash, "is_current": True, "scored_at": when,
            "fit_score": r.fit_score, "engagement_score": r.engagement_score, "score_change": changes[r.lead_id],
            "as_of": clock[r.lead_id], "next_aging_at": aging,
        })
    for start in range(0, len(values), _IN_CHUNK):
        part = values[start : start + _IN_CHUNK]
        returned = session.execute(
            insert(LeadScore).returning(LeadScore.id, LeadScore.lead_id, sort_by_parameter_order=True), part
        )
        new_ids.update({lead_id: sid for sid, lead_id in returned})
    stats.scores = len(values)

    def shown(r: NewScore) -> tuple[Any, ...]:
        return _fields(r.score, r.tier, r.reasons, r.probability, r.fit_score, r.engagement_score,
                       changes[r.lead_id])

    changed = [
        r for r in rows
        if (p := previous.get(r.lead_id)) is None
        or _fields(p.score, p.tier, p.reasons, p.probability, p.fit_score, p.engagement_score,
                   p.score_change) != shown(r)
    ]
    tier_changed = [r.lead_id for r in rows if (p := previous.get(r.lead_id)) is None or p.tier != r.tier]
    for chunk in _chunks([r.lead_id for r in changed]):
        result = session.execute(
            update(Outbox)
            .where(Outbox.lead_id.in_(chunk), Outbox.status == "pending", Outbox.kind == OUTBOX_KIND)
            .values(status="superseded"),
            execution_options={"synchronize_session": "evaluate"},
        )
        stats.superseded += int(getattr(result, "rowcount", 0) or 0)
    outbox_rows = []
    for r in changed:
        payload = outbox_payload(
            r.score, r.tier, r.reasons, r.model_version, when,
            likelihood=float(likelihood_percent(np.array([r.probability]))[0]), fit=r.fit_score,
            engagement=r.engagement_score, score_change=changes[r.lead_id],
        )
        conn_id, crm_id = lead_refs[r.lead_id]
        outbox_rows.append({
            "connection_id": conn_id, "lead_id": r.lead_id, "crm_id": crm_id, "kind": OUTBOX_KIND,
            "payload": payload, "payload_hash": payload_hash(payload), "status": "pending", "attempts": 0,
            "lead_score_id": new_ids[r.lead_id], "created_at": when, "next_attempt_at": when,
        })
    for start in range(0, len(outbox_rows), _IN_CHUNK):
        session.execute(insert(Outbox), outbox_rows[start : start + _IN_CHUNK])
    stats.outbox = len(outbox_rows)
    stats.tier_changes = len(tier_changed)
    if tier_change_hook is not None and tier_changed:
        # The hook gets ORM objects: the lead, its previous score (None for a first score) and
        # the new current score, all in this transaction.
        score_ids = [new_ids[i] for i in tier_changed] + [previous[i].id for i in tier_changed if i in previous]
        scores: dict[int, LeadScore] = {}
        leads: dict[int, Lead] = {}
        for chunk in _chunks(score_ids):
            scores.update({s.id: s for s in session.scalars(select(LeadScore).where(LeadScore.id.in_(chunk)))})
        for chunk in _chunks(tier_changed):
            leads.update({lead.id: lead for lead in session.scalars(select(Lead).where(Lead.id.in_(chunk)))})
        for lead_id in tier_changed:
            before = scores[previous[lead_id].id] if lead_id in previous else None
            tier_change_hook(session, leads[lead_id], before, scores[new_ids[lead_id]])
    return stats


# ------------------------------------------------------------------------------------- explain


def find_lead(session: Session, ref: str) -> Lead:
    """A lead by CRM id (any connection) or, failing that, by internal id."""
    matches = list(session.scalars(select(Lead).where(Lead.crm_id == ref)))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise LeadscoreError(f"CRM id {ref!r} exists in {len(matches)} connections; use the internal id")
    if ref.isdigit():
        lead = session.get(Lead, int(ref))
        if lead is not None:
            return lead
    raise LeadscoreError(f"no lead with CRM id or internal id {ref!r}")


def _score_view(row: LeadScore, version: str | None) -> dict[str, Any]:
    return {
        "score": row.score,
        "likelihood": float(likelihood_percent(np.array([row.probability]))[0]),
        "probability": round(row.probability, 4),
        "fit": row.fit_score,
        "engagement": row.engagement_score,
        "score_change": row.score_change,
        "tier": row.tier,
        "reasons": list(row.reasons or []),
        "model": version,
        "scored_at": row.scored_at.isoformat(),
        "as_of": row.as_of.isoformat() if row.as_of else None,
    }


def explain_lead(session: Session, ref: str, *, history: bool = False) -> dict[str, Any]:
    """A lead's current score, likelihood, fit, engagement, change, tier, reasons and model (for
    ``leadscore explain``); with ``history`` also every score of the lead, oldest first."""
    lead = find_lead(session, ref)
    current = session.scalar(select(LeadScore).where(LeadScore.lead_id == lead.id, LeadScore.is_current.is_(True)))
    if current is None:
        raise LeadscoreError(f"lead {ref} has no score yet: run `leadscore score`")
    versions = dict(session.execute(select(ModelVersion.id, ModelVersion.version)).tuples().all())
    name = " ".join(p for p in (lead.first_name, lead.last_name) if p) or None
    out: dict[str, Any] = {
        "lead_id": lead.id,
        "crm_id": lead.crm_id,
        "name": name,
        "company": lead.company,
        "title": lead.title,
        **_score_view(current, versions.get(current.model_version_id or -1)),
        "deleted": lead.is_deleted,
    }
    if history:
        rows = session.scalars(
            select(LeadScore).where(LeadScore.lead_id == lead.id).order_by(LeadScore.scored_at, LeadScore.id)
        )
        out["history"] = [_score_view(r, versions.get(r.model_version_id or -1)) for r in rows]
    return out
