"""Online scoring: train from the store, score leads whose inputs changed, record outbox writes.

Scores are ``round(100 × calibrated probability)`` clipped to 0-100: a score of 12 means about
a 12 % chance of converting within the training horizon. With a 10 % base rate most scores are
low; that is honest, and the tier policy decides where A/B/C/D are cut.

Both entry points run inside the caller's transaction and never commit: the Celery task or CLI
command that calls them owns the unit of work. Score rows and their outbox rows are written in
the same flush, so the CRM write exists if and only if the score does.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from config.app_config import TierConfig, TrainingConfig
from config.errors import LeadscoreError
from scoring import registry
from scoring.dataset import SPLIT_COLUMN, TARGET, build_training_set
from scoring.features import (
    align_to_spec,
    build_feature_frame,
    load_activities_frame,
    load_company_peers,
    load_leads_frame,
)
from scoring.hooks import TierChangeHook
from scoring.reasons import explain, join_reasons, reason_strings
from scoring.tiers import active_policy, current_scores, find_active_policy, probability_to_score, tiers_for
from scoring.training import FAMILIES, TrainingResult, train_and_compare
from store.models import Activity, Lead, LeadLifecycle, LeadScore, ModelVersion, Outbox, SyncRun

OUTBOX_KIND = "score_fields"
_IN_CHUNK = 1000

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


def outbox_payload(score: int, tier: str, reasons: Sequence[str], model: str, scored_at: datetime) -> dict[str, Any]:
    """The CRM-neutral score write: the connectors map these keys to their configured fields."""
    return {
        "score": int(score),
        "tier": tier,
        "reasons": join_reasons(list(reasons)),
        "model": model,
        "scored_at": scored_at.astimezone(UTC).isoformat(timespec="seconds"),
    }


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
                          "segment_comparison": verdict},
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
    session: Session, model_version_ids: Sequence[int], *, lead_ids: Sequence[int] | None = None
) -> list[int]:
    """Open leads (see ``LeadLifecycle``) whose inputs changed since their current score, in id order.

    Stale: no current score; scored by a model that is no longer a champion; ``inputs_hash``
    differs from the one scored; the lead's inputs changed after the score; an activity of the
    lead arrived (was synced) after the score.
    """
    current = aliased(LeadScore)
    newer_activity = exists().where(Activity.lead_id == Lead.id, Activity.synced_at > current.scored_at)
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
    leads = load_leads_frame(session, ids)
    activities = load_activities_frame(session, ids, before=as_of)
    keys = [k for k in leads["company_key"].dropna().unique().tolist()]
    peers = load_company_peers(session, keys, before=as_of)
    frame = build_feature_frame(leads, activities, as_of, company_peers=peers)
    return leads, frame


def _predict(models: _Models, frame: pd.DataFrame) -> tuple[np.ndarray, list[ModelVersion | None]]:
    probs = np.zeros(len(frame))
    used: list[ModelVersion | None] = [None] * len(frame)
    for mv, mask in models.groups(frame):
        model = registry.load_model(mv)
        probs[mask] = model.predict_proba(align_to_spec(frame.loc[mask], model.spec))
        for i in np.flatnonzero(mask):
            used[i] = mv
    return probs, used


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
    ids = live_lead_ids(session, lead_ids) if all else stale_lead_ids(session, models.ids, lead_ids=lead_ids)
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
        leads, frame = _features(session, batch, as_of)
        probs, used = _predict(models, frame)
        scores = probability_to_score(probs)
        tiers = tiers_for(policy, probs, reference=reference)
        texts: list[list[str]] = [[] for _ in batch]
        for mv, mask in models.groups(frame):
            model = registry.load_model(mv)
            part = align_to_spec(frame.loc[mask], model.spec)
            reasons = explain(model.contributions(part), part)
            for pos, r in zip(np.flatnonzero(mask).tolist(), reasons, strict=True):
                texts[pos] = reason_strings(r)
        hashes = leads["inputs_hash"].tolist()
        rows = []
        for i, lead_id in enumerate(leads["id"].tolist()):
            mv = used[i] or models.global_mv
            rows.append(NewScore(
                lead_id=int(lead_id), probability=float(probs[i]), score=int(scores[i]), tier=tiers[i],
                reasons=texts[i], model_version_id=mv.id, model_version=mv.version, inputs_hash=hashes[i],
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
        for sid, lead_id, score, tier, reasons in session.execute(
            select(LeadScore.id, LeadScore.lead_id, LeadScore.score, LeadScore.tier, LeadScore.reasons).where(
                LeadScore.lead_id.in_(chunk), LeadScore.is_current.is_(True)
            )
        ):
            previous[lead_id] = _Previous(sid, score, tier, list(reasons or []))
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
    # Old current rows stop being current before the new ones exist (one current row per lead).
    # "evaluate" keeps LeadScore objects already loaded in this session in step.
    for chunk in _chunks([p.id for p in previous.values()]):
        session.execute(
            update(LeadScore).where(LeadScore.id.in_(chunk)).values(is_current=False),
            execution_options={"synchronize_session": "evaluate"},
        )
    new_ids: dict[int, int] = {}
    values = [
        {
            "lead_id": r.lead_id, "model_version_id": r.model_version_id, "tier_policy_id": policy_id,
            "probability": r.probability, "score": r.score, "tier": r.tier, "reasons": list(r.reasons),
            "inputs_hash": r.inputs_hash, "is_current": True, "scored_at": when,
        }
        for r in rows
    ]
    for start in range(0, len(values), _IN_CHUNK):
        part = values[start : start + _IN_CHUNK]
        returned = session.execute(
            insert(LeadScore).returning(LeadScore.id, LeadScore.lead_id, sort_by_parameter_order=True), part
        )
        new_ids.update({lead_id: sid for sid, lead_id in returned})
    stats.scores = len(values)

    changed = [
        r for r in rows
        if (p := previous.get(r.lead_id)) is None or (p.score, p.tier, p.reasons) != (r.score, r.tier, list(r.reasons))
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
        payload = outbox_payload(r.score, r.tier, r.reasons, r.model_version, when)
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


def explain_lead(session: Session, ref: str) -> dict[str, Any]:
    """A lead's current score, tier, reasons and model (for ``leadscore explain``)."""
    lead = find_lead(session, ref)
    current = session.scalar(select(LeadScore).where(LeadScore.lead_id == lead.id, LeadScore.is_current.is_(True)))
    if current is None:
        raise LeadscoreError(f"lead {ref} has no score yet: run `leadscore score`")
    mv = session.get(ModelVersion, current.model_version_id) if current.model_version_id else None
    name = " ".join(p for p in (lead.first_name, lead.last_name) if p) or None
    return {
        "lead_id": lead.id,
        "crm_id": lead.crm_id,
        "name": name,
        "company": lead.company,
        "title": lead.title,
        "score": current.score,
        "probability": round(current.probability, 4),
        "tier": current.tier,
        "reasons": list(current.reasons or []),
        "model": mv.version if mv else None,
        "scored_at": current.scored_at.isoformat(),
        "deleted": lead.is_deleted,
    }
