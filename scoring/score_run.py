"""A scoring run: the leads whose inputs changed (or all), in batches, end to end.

Two numbers per lead, each with one meaning: the *score* (1-99) is the lead's rank among the
champion's reference leads (:mod:`scoring.reference`): a score of 90 outranks 90 % of them. The
*likelihood* is the calibrated probability of converting within the training horizon, in
percent. Fit and engagement (1-99) rank the two parts of the model's contributions the same way
(:mod:`scoring.subscores`). Scores age: a lead is rescored when one of its activity windows
moves past an event, even with no new activity (``next_aging_at``).

Both entry points run inside the caller's transaction and never commit: the Celery task or CLI
command that calls them owns the unit of work. Score rows and their outbox rows are written in
the same flush, so the CRM write exists if and only if the score does.

A run has two phases. First every batch is read: a reader thread runs a batch's queries while the
calling thread builds the features of the batch before (the database's work and the driver's
waits overlap that Python); consecutive batches are gathered into calls (:data:`SHAP_ROWS`: each
SHAP call costs a fixed part), each call's rows encoded once and predicted in the calling thread,
their SHAP values computed meanwhile in a model thread; the reader's last read, while the last
batch is built, is what the writes need of the database (each batch's prior scores, the CRM's
spellings, a capacity run's current scores: :class:`_Tail`). Then each batch is written in the
calling thread while a reasons thread ranks and explains the next one and renders its score rows.
The session is used by one thread at a time: the reader's during the reads (the calling thread
makes no query meanwhile), the calling thread's otherwise; the tier-change hook runs in the calling
thread; the other threads only compute. A failed write ends the run with its error.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.app_config import TierConfig, load_config
from config.collector import lean_collector
from config.errors import LeadscoreError
from config.settings import get_settings
from scoring import registry
from scoring.champions import (
    AlignedGroup,
    Champions,
    aligned_groups,
    ensure_score_reference,
    live_typical,
    load_champions,
    predict,
)
from scoring.features import crm_spellings
from scoring.hooks import TierChangeHook
from scoring.inputs import (
    StoredInputs,
    build_inputs,
    crm_now,
    id_chunks,
    lead_features,
    live_count,
    live_lead_ids,
    read_inputs,
    stale_lead_ids,
)
from scoring.model import PreparedRows
from scoring.reasons import Names, Rendered, explain_marked
from scoring.reference import rank
from scoring.score_writes import (
    NewScore,
    PriorScores,
    RenderedScores,
    apply_scores,
    read_prior,
    render_scores,
    retier_current,
)
from scoring.shadow import score_in_shadow
from scoring.subscores import split_contributions
from scoring.tiers import (
    Policy,
    PolicyLike,
    active_policy,
    assign_tiers,
    capacity_cutoffs,
    current_scores,
    find_active_policy,
    tiers_for,
)
from store.db import IDS_PER_STATEMENT, among
from store.models import Lead, ModelVersion, TierPolicy
from store.queries import connections_mid_sync
from store.types import Progress

# Leads per batch: each batch is read, written and explained as one, so a batch's pandas, SQL and
# numpy calls are paid per batch, not per lead. 5,000 (one id list per statement,
# store.db.IDS_PER_STATEMENT) used 20-30 % less CPU than 2,000 for the same rows (docs/scaling.md).
BATCH_SIZE = IDS_PER_STATEMENT


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
    # Capacity tiers: leads not rescored whose tier the run's new cut-offs moved (re-tiered, and
    # counted in outbox_rows and tier_changes too), so one score is one tier on every open lead.
    retiered: int = 0
    seconds: float = 0.0
    # Leads held back by connection name: a worker's sync of that connection is part-way through
    # (:func:`store.queries.connections_mid_sync`); the run after it finishes scores them.
    held: dict[str, int] = field(default_factory=dict)
    routing_planned: dict[str, int] = field(default_factory=dict)  # by action type (scoring.pipeline)
    routing_held: int = 0  # actions the routing's repeat guard held back (scoring.pipeline)
    accounts: dict[str, int] = field(default_factory=dict)  # account refresh (scoring.pipeline)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accounts": dict(self.accounts),
            "as_of": self.as_of.isoformat(), "model": self.model_version, "considered": self.considered,
            "scored": self.scored, "unchanged": self.unchanged, "outbox_rows": self.outbox_rows,
            "superseded": self.superseded, "tier_changes": self.tier_changes, "tiers": self.tiers,
            "retiered": self.retiered, "held": dict(self.held),
            "routing_planned": dict(self.routing_planned), "routing_held": self.routing_held,
            "seconds": round(self.seconds, 3),
        }

    def add(self, chunk: ScoreSummary) -> None:
        """Add what a chunk of this run did (scored, writes, tiers; not ``considered``/``seconds``)."""
        self.scored += chunk.scored
        self.outbox_rows += chunk.outbox_rows
        self.superseded += chunk.superseded
        self.tier_changes += chunk.tier_changes
        self.retiered += chunk.retiered
        for tier, n in chunk.tiers.items():
            self.tiers[tier] = self.tiers.get(tier, 0) + n
        for action, n in chunk.routing_planned.items():
            self.routing_planned[action] = self.routing_planned.get(action, 0) + n
        self.routing_held += chunk.routing_held


@dataclass
class ScoringPlan:
    """What a scoring run will score, decided once; chunks of it can then be scored anywhere.

    ``lead_ids``: the leads to score (id order). ``cutoffs``: in capacity mode, the tier cut-offs
    of this run (1-99 scores, cut on every current score plus this run's new scores), so chunks
    scored apart (parallel Celery tasks) tier exactly as one run would; None otherwise.
    ``model_ids``: the champions planned with. JSON-able (:meth:`to_dict`, :meth:`from_dict`) for a
    task queue.
    """

    as_of: datetime
    model_version: str
    model_ids: list[int]
    policy_id: int
    lead_ids: list[int]
    considered: int
    cutoffs: dict[str, float] | None = None
    held: dict[str, int] = field(default_factory=dict)  # leads held back, by connection (ScoreSummary.held)

    def chunks(self, size: int = BATCH_SIZE) -> list[list[int]]:
        """``lead_ids`` in consecutive chunks of at most ``size`` (id ranges, in order)."""
        return id_chunks(self.lead_ids, max(1, size))

    def summary(self) -> ScoreSummary:
        """An empty summary of this run (scoring chunks adds to it)."""
        held = sum(self.held.values())
        return ScoreSummary(as_of=self.as_of, model_version=self.model_version, considered=self.considered,
                            unchanged=self.considered - len(self.lead_ids) - held, held=dict(self.held))

    def to_dict(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "model_version": self.model_version,
                "model_ids": list(self.model_ids), "policy_id": self.policy_id, "lead_ids": list(self.lead_ids),
                "considered": self.considered, "held": dict(self.held),
                "score_cutoffs": dict(self.cutoffs) if self.cutoffs is not None else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoringPlan:
        if data.get("cutoffs") is not None and "score_cutoffs" not in data:
            # Cut on probabilities by a leadscore before capacity tiers followed the score: compared
            # with scores they would tier nearly every lead A.
            raise LeadscoreError("this scoring plan was made by an older leadscore (capacity cut-offs on "
                                 "probabilities): run the scoring again")
        cutoffs = data.get("score_cutoffs")
        return cls(as_of=datetime.fromisoformat(str(data["as_of"])), model_version=str(data["model_version"]),
                   model_ids=[int(i) for i in data["model_ids"]], policy_id=int(data["policy_id"]),
                   lead_ids=[int(i) for i in data["lead_ids"]], considered=int(data["considered"]),
                   cutoffs={str(k): float(v) for k, v in cutoffs.items()} if cutoffs is not None else None,
                   held={str(k): int(v) for k, v in (data.get("held") or {}).items()})


@lean_collector()
def plan_scoring(
    session: Session,
    *,
    as_of: datetime | None = None,
    all: bool = False,  # noqa: A002 - the CLI's --all
    lead_ids: Sequence[int] | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    tier_default: TierConfig | None = None,
) -> ScoringPlan:
    """Decide a scoring run: the leads whose inputs changed (every live lead with ``all``), as of
    ``as_of`` (None: the CRM's clock, :func:`crm_now`), restricted to ``lead_ids`` when given.

    Also makes sure what every chunk shares exists before chunks run: the active tier policy
    (``tier_default`` seeds the first one; default: the YAML config's ``tiers``) and each
    champion's score reference. In capacity mode it predicts and ranks the planned leads once
    (features, probabilities and 1-99 scores, no reasons) to fix the run's cut-offs. Raises :class:`NoChampionError`
    before any model exists.
    """
    plan, models, policy = _plan(session, as_of=as_of, all=all, lead_ids=lead_ids, tier_default=tier_default)
    if policy.mode == "capacity" and plan.lead_ids:
        refs = _run_refs(session, models)
        new_scores: list[np.ndarray] = []
        total = len(plan.lead_ids)
        for n, batch in enumerate(plan.chunks(batch_size), 1):
            _, frame = lead_features(session, batch, plan.as_of)
            probs, used = predict(models, frame)
            new_scores.append(_scores_of(probs, used, refs))
            if progress:
                progress("ranking", min(n * batch_size, total), total)
        plan.cutoffs = _run_cutoffs(session, policy, plan.lead_ids, new_scores)
    return plan


def _plan(
    session: Session,
    *,
    as_of: datetime | None,
    all: bool,  # noqa: A002 - the CLI's --all
    lead_ids: Sequence[int] | None,
    tier_default: TierConfig | None,
) -> tuple[ScoringPlan, Champions, TierPolicy]:
    """The plan without capacity cut-offs, the champions and the active policy."""
    as_of = as_of or crm_now(session)
    models = load_champions(session)
    policy = find_active_policy(session) or active_policy(session, tier_default or _configured_tiers())
    ids = live_lead_ids(session, lead_ids) if all else stale_lead_ids(
        session, models.ids, lead_ids=lead_ids, as_of=as_of)
    considered = len(live_lead_ids(session, lead_ids)) if lead_ids is not None else live_count(session)
    # Leads asked for by id are scored as asked; otherwise a connection a worker is syncing
    # part-way waits for the rest of its streams (a contact scored before its new meetings
    # arrive flips tier twice, and routes twice, within seconds).
    ids, held = (ids, {}) if lead_ids is not None else _hold_mid_sync(session, ids)
    if ids:  # built once here, not by chunks racing each other
        for mv in models.all():
            ensure_score_reference(session, mv)
    plan = ScoringPlan(as_of=as_of, model_version=models.global_mv.version, model_ids=models.ids,
                       policy_id=policy.id, lead_ids=ids, considered=considered, held=held)
    return plan, models, policy


def _hold_mid_sync(session: Session, ids: list[int]) -> tuple[list[int], dict[str, int]]:
    """``ids`` without the leads of connections a worker's sync is part-way through, and how many
    of each connection were held back."""
    syncing = connections_mid_sync(session) if ids else {}
    if not syncing:
        return ids, {}
    theirs: set[int] = set()
    held: dict[str, int] = {}
    for chunk in id_chunks(ids):  # only the planned leads: a syncing connection may hold 100,000
        for lead_id, conn_id in session.execute(select(Lead.id, Lead.connection_id).where(
                among(session, Lead.id, chunk), Lead.connection_id.in_(list(syncing)))):
            theirs.add(int(lead_id))
            held[syncing[conn_id]] = held.get(syncing[conn_id], 0) + 1
    return [i for i in ids if i not in theirs], held


def _run_cutoffs(
    session: Session, policy: PolicyLike, ids: Sequence[int], new_scores: Sequence[np.ndarray],
    existing: pd.DataFrame | None = None,
) -> dict[str, float]:
    """Capacity tiers cut the distribution of all current 1-99 scores, which this run changes: the
    cut-offs of the current scores of the leads not rescored plus the run's new scores.
    ``existing``: :func:`current_scores`, when already read."""
    if existing is None:
        existing = current_scores(session)
    others = existing.loc[~existing["lead_id"].isin(set(ids)), "score"].to_numpy(dtype="int64")
    return capacity_cutoffs(np.concatenate([others, *new_scores]), policy.thresholds)


def _scores_of(
    probs: np.ndarray, used: Sequence[ModelVersion | None], refs: Mapping[int, Mapping[str, Any]]
) -> np.ndarray:
    """1-99 scores of probabilities, each ranked against the reference of the model that gave it;
    0 where no model did. What a batch's score rows hold, and what capacity cut-offs cut."""
    scores = np.zeros(len(probs), dtype="int64")
    # Rows by the identity of their model (no ORM attribute read per row: a batch has one model
    # per segment at most).
    keys = np.fromiter(map(id, used), dtype="uint64", count=len(used))
    for mv in set(used):
        if mv is not None:
            rows = keys == id(mv)
            scores[rows] = rank(probs[rows], refs[mv.id]["probability"])
    return scores


def _run_refs(session: Session, models: Champions) -> dict[int, dict[str, Any]]:
    """Each model's score reference (:func:`ensure_score_reference`) with its sorted samples as
    arrays, made once per run (each rank would otherwise turn a JSON list into an array again)."""
    refs: dict[int, dict[str, Any]] = {}
    for mv in models.all():
        ref = dict(ensure_score_reference(session, mv))
        for key in ("probability", "fit", "engagement"):
            if key in ref:
                ref[key] = np.asarray(ref[key], dtype="float64")
        refs[mv.id] = ref
    return refs


@dataclass
class _Scored:
    """One batch of leads scored (probabilities, ranks, reasons) but not yet tiered or written."""

    lead_ids: list[int]
    hashes: list[str | None]
    probs: np.ndarray
    versions: list[ModelVersion]
    scores: np.ndarray
    fits: np.ndarray
    engagements: np.ndarray
    texts: list[list[str]]
    aging: dict[int, datetime]
    frame: pd.DataFrame  # the features, for the shadow challengers


@dataclass
class _Batch:
    """One batch read: per model, its rows (mask) and their aligned features; their predictions
    (set in the calling thread when the call gathering them starts) and contributions (SHAP,
    set by the model thread), one future of each per group."""

    inputs: tuple[pd.DataFrame, pd.DataFrame, dict[int, datetime]]
    used: list[ModelVersion | None]
    groups: list[AlignedGroup]
    predictions: list[Future[np.ndarray]]
    contributions: list[Future[pd.DataFrame]]
    prior: PriorScores | None = None  # its leads' current scores and states (:class:`_Tail`)
    _probs: np.ndarray | None = None
    _scores: np.ndarray | None = None

    @property
    def probs(self) -> np.ndarray:
        """The batch's probabilities (its call must have started: :meth:`_ShapCalls.flush`)."""
        if self._probs is None:
            probs = np.zeros(len(self.used))
            for (_mv, mask, _part), predicted in zip(self.groups, self.predictions, strict=True):
                if not predicted.done():
                    raise RuntimeError("a batch's probabilities were asked for before its call started")
                probs[mask] = predicted.result()
            self._probs = probs
        return self._probs

    def scores(self, refs: Mapping[int, Mapping[str, Any]]) -> np.ndarray:
        """The batch's 1-99 scores (:func:`_scores_of`; ``refs`` are the run's, the same on every
        call): ranked once, for the capacity cut-offs and for the score rows."""
        if self._scores is None:
            self._scores = _scores_of(self.probs, self.used, refs)
        return self._scores


SHAP_ROWS = 6000  # rows a SHAP call gathers (over consecutive batches) before it starts


def starts_call(gathered: int, calls_made: int, rows: int | None = None) -> bool:
    """Whether the batches gathered so far (``gathered`` rows) start a SHAP call now. The run's
    first call takes its first batch alone: the write phase waits for that batch's reasons, and a
    call gathering two batches would start (and end) a batch's read later. Later calls gather
    consecutive batches until they hold :data:`SHAP_ROWS` (``rows``) rows."""
    return gathered > 0 and (calls_made == 0 or gathered >= max(1, SHAP_ROWS if rows is None else rows))


_Gathered = tuple[ModelVersion, pd.DataFrame, Future[np.ndarray], Future[pd.DataFrame]]
_Call = tuple[PreparedRows, list[tuple[int, Future[pd.DataFrame]]]]  # rows, then each part's size and future


class _ShapCalls:
    """The batches' predictions and contributions, in calls of about :data:`SHAP_ROWS` rows per
    model, the first a batch alone (:func:`starts_call`): CatBoost's SHAP costs a fixed part per
    call (every tree's leaf values, ~0.09 s for the default model on 2 cores), so six 2,000-row
    calls cost twice one 12,000-row call. A call's rows are encoded once
    (:meth:`TrainedModel.prepare`), predicted in the calling thread when the call starts, and
    handed to the model thread for SHAP. Each batch gets one future of each per model group;
    :meth:`flush` starts what is gathered (a run calls it once every batch is read)."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool, self.rows = pool, max(1, SHAP_ROWS)
        self._gathered: list[_Gathered] = []
        self._count = 0
        self._calls = 0

    def add(self, groups: Sequence[AlignedGroup]) -> tuple[list[Future[np.ndarray]], list[Future[pd.DataFrame]]]:
        predictions: list[Future[np.ndarray]] = []
        contributions: list[Future[pd.DataFrame]] = []
        for mv, _mask, part in groups:
            predicted: Future[np.ndarray] = Future()
            explained: Future[pd.DataFrame] = Future()
            self._gathered.append((mv, part, predicted, explained))
            self._count += len(part)
            predictions.append(predicted)
            contributions.append(explained)
        if starts_call(self._count, self._calls, self.rows):
            self.flush()
        return predictions, contributions

    def flush(self) -> None:
        if self._gathered:
            gathered, self._gathered, self._count = self._gathered, [], 0
            self._calls += 1
            self.pool.submit(_contributions, _predicted(gathered))


def _predicted(gathered: Sequence[_Gathered]) -> list[_Call]:
    """In the calling thread: per model, its gathered rows encoded once and predicted (each part's
    probabilities set), ready for the model thread's SHAP."""
    by_model: dict[int, list[_Gathered]] = {}
    for item in gathered:
        by_model.setdefault(item[0].id, []).append(item)
    calls: list[_Call] = []
    for items in by_model.values():
        parts = [part for _, part, _, _ in items]
        rows = registry.load_model(items[0][0]).prepare(parts[0] if len(parts) == 1 else pd.concat(parts))
        probs = rows.proba()
        start = 0
        for _, part, predicted, _ in items:
            predicted.set_result(probs[start : start + len(part)])
            start += len(part)
        calls.append((rows, [(len(part), explained) for _, part, _, explained in items]))
    return calls


def _contributions(calls: Sequence[_Call]) -> None:
    """What the model thread computes: per model, the contributions of its gathered rows in one
    call (CatBoost's SHAP runs outside the GIL), handed back part by part. No session."""
    try:
        for rows, parts in calls:
            values = rows.contributions()
            start = 0
            for size, explained in parts:
                explained.set_result(values.iloc[start : start + size])
                start += size
    except BaseException as error:  # every batch waiting on this call learns why
        for _rows, parts in calls:
            for _size, explained in parts:
                if not explained.done():
                    explained.set_exception(error)
        raise


@contextmanager
def _model_thread(models: Champions) -> Iterator[ThreadPoolExecutor]:
    """One worker thread for the batches' contributions. The models are deserialised first, in this
    thread, so the worker never touches the session; on an error, queued calls are dropped."""
    for mv in models.all():
        registry.load_model(mv)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring-model")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _read_batch(models: Champions, shap: _ShapCalls, stored: StoredInputs, as_of: datetime) -> _Batch:
    """A batch's features built from what was read and aligned per model; their predictions and
    contributions come from the call that gathers them (``shap``). No session."""
    leads, frame, aging = build_inputs(stored, as_of)
    # Kept until the batch is written (a capacity run keeps every batch): of the leads, only
    # what the writes need, not their names, e-mails and custom fields.
    inputs = (leads[["id", "inputs_hash"]], frame, aging)
    groups = aligned_groups(models, frame)
    used: list[ModelVersion | None] = [None] * len(frame)
    for mv, mask, _part in groups:
        for i in np.flatnonzero(mask).tolist():
            used[i] = mv
    predictions, contributions = shap.add(groups)
    return _Batch(inputs=inputs, used=used, groups=groups, predictions=predictions, contributions=contributions)


_T = TypeVar("_T")
_Submit = Callable[[Callable[[], Any]], "Future[Any]"]


@contextmanager
def _reads(session: Session) -> Iterator[_Submit]:
    """``submit(read)``: a read of the store (no arguments) started now, its future returned.

    PostgreSQL: in a reader thread, so the calling thread builds one batch's features while the
    server reads the next (the server's work and the driver's waits run outside the GIL); the
    session is that thread's alone until the block ends, when any read in flight is waited for.
    SQLite: in the calling thread, when the read is asked for. Its database work runs in this
    process and the driver builds each row under the GIL, so a reader thread contended with the
    features being built: a run over the 12,000-lead bench store took 0.04-0.2 s longer with it
    (medians of six to eight alternating runs, docs/scaling.md "Forty-first session"); an
    in-memory store's connection refuses other threads anyway."""
    if session.get_bind().dialect.name == "sqlite":
        def read_here(read: Callable[[], _T]) -> Future[_T]:
            done: Future[_T] = Future()
            try:
                done.set_result(read())
            except BaseException as error:  # noqa: BLE001 - the waiter gets it, as from a thread
                done.set_exception(error)
            return done

        yield read_here
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring-reads") as reader:
        yield reader.submit


def _typicals(
    session: Session,
    models: Champions,
    as_of: datetime,
    batches: Sequence[_Batch],
    refs: Mapping[int, Mapping[str, Any]],
) -> dict[int, Any]:
    """What each model's reasons compare with: its live sample (cached for the run; taken from
    ``batches`` when they hold the whole sample, as a run over every live lead does, else read),
    or its reference's typical values with too few live leads."""
    known = _rows_of(batches) if batches else None
    return {mv.id: live_typical(session, mv, as_of, known) or refs[mv.id].get("typical") for mv in models.all()}


def _rows_of(batches: Sequence[_Batch]) -> Callable[[list[int]], pd.DataFrame | None]:
    """The feature rows of some leads out of read batches (None unless every lead is there and
    the batches' frames have the same columns and types, as one read of those leads would)."""

    def rows(ids: list[int]) -> pd.DataFrame | None:
        frames = [b.inputs[1] for b in batches]
        if any(not f.dtypes.equals(frames[0].dtypes) for f in frames[1:]):
            return None  # custom fields typed differently in different batches: read them again
        wanted = np.asarray(ids, dtype="int64")
        parts: list[pd.DataFrame] = []
        found: list[np.ndarray] = []
        for batch in batches:
            lead_ids = batch.inputs[0]["id"].to_numpy(dtype="int64")
            at = np.flatnonzero(np.isin(lead_ids, wanted))
            parts.append(batch.inputs[1].iloc[at])
            found.append(lead_ids[at])
        order = np.concatenate(found)
        if len(order) != len(set(ids)):
            return None
        return pd.concat(parts).iloc[np.argsort(order, kind="stable")].reset_index(drop=True)

    return rows


class _RunSentences:
    """The reasons' sentences of a run, kept per model across its batches (while its typical
    leads stay the same)."""

    def __init__(self) -> None:
        self._by_model: dict[int, tuple[Any, Rendered]] = {}

    def of(self, mv: ModelVersion, typical: Any) -> Rendered:
        kept = self._by_model.get(mv.id)
        if kept is None or kept[0] is not typical:
            kept = self._by_model[mv.id] = (typical, {})
        return kept[1]


def _finish_batch(
    models: Champions,
    batch: _Batch,
    refs: Mapping[int, Mapping[str, Any]],
    typicals: Mapping[int, Any],
    sentences: _RunSentences,
    names: Names,
) -> _Scored:
    """Ranks and reasons of a batch once its contributions are in. No session: this runs in the
    reasons thread while the calling thread writes the previous batch."""
    leads, frame, aging = batch.inputs
    size = len(frame)
    probs = batch.probs
    scores = batch.scores(refs)
    fits = np.zeros(size, dtype="int64")
    engagements = np.zeros(size, dtype="int64")
    texts: list[list[str]] = [[] for _ in range(size)]
    for (mv, mask, part), pending in zip(batch.groups, batch.contributions, strict=True):
        contributions = pending.result()
        ref = refs[mv.id]
        fit, engagement = split_contributions(contributions)
        rows_of = np.flatnonzero(mask)
        fits[rows_of] = rank(fit, ref["fit"])
        engagements[rows_of] = rank(engagement, ref["engagement"])
        typical = typicals[mv.id]
        marked = explain_marked(contributions, part, typical=typical, rendered=sentences.of(mv, typical), names=names)
        for pos, r in zip(rows_of.tolist(), marked, strict=True):
            texts[pos] = r
    # A lead without an inputs hash reads as NaN when its batch has no hash at all: stored as NULL
    # (PostgreSQL's text COPY stored "nan", which made the lead look changed to every later plan).
    hashes = [h if isinstance(h, str) else None for h in leads["inputs_hash"].tolist()]
    return _Scored(lead_ids=[int(i) for i in leads["id"].tolist()], hashes=hashes,
                   probs=probs, versions=[mv or models.global_mv for mv in batch.used], scores=scores, fits=fits,
                   engagements=engagements, texts=texts, aging=aging, frame=frame)


@dataclass
class _Tail:
    """What the reader reads once every batch is read, while this thread builds the last one: the
    CRM's spellings of the names reasons show, each batch's prior scores (:func:`read_prior`: the
    batches write their own leads only, so what later batches read is what the database will
    hold when they are written) and, for capacity cut-offs, every open lead's current score."""

    names: Names
    priors: list[PriorScores]
    current: pd.DataFrame | None


def _read_tail(session: Session, batch_ids: Sequence[list[int]], as_of: datetime, current: bool) -> _Tail:
    return _Tail(names=crm_spellings(session),
                 priors=[read_prior(session, ids, dict.fromkeys(ids, as_of)) for ids in batch_ids],
                 current=current_scores(session) if current else None)


def _read_batches(
    session: Session,
    models: Champions,
    pool: ThreadPoolExecutor,
    chunks: Sequence[Sequence[int]],
    as_of: datetime,
    report: Callable[[int], None],
    *,
    current: bool = False,
) -> tuple[deque[_Batch], _Tail]:
    """Phase one: each batch read (a reader thread reads the next batch while this thread builds
    the features of the last one: :func:`_reads`), gathered into calls predicted here and
    explained (SHAP) in the model thread (``pool``; the last call starts once every batch is
    read); ``report(leads)`` after each batch. Then what the writes need of the database
    (:class:`_Tail`; ``current``: every current score too), read while the last batch is built:
    the write phase that follows asks the database nothing before its first write."""
    predicted: deque[_Batch] = deque()
    shap = _ShapCalls(pool)
    with _reads(session) as submit:
        # Each read starts while the batch before it is built (no session here); the tail last.
        batch_ids: list[list[int]] = []
        if not chunks:
            pending = submit(partial(_read_tail, session, batch_ids, as_of, current))
        else:
            pending = submit(partial(read_inputs, session, chunks[0], as_of))
        for n, chunk in enumerate(chunks):
            stored = pending.result()
            batch_ids.append([int(i) for i in stored.leads["id"].tolist()])
            pending = submit(partial(read_inputs, session, chunks[n + 1], as_of) if n + 1 < len(chunks)
                             else partial(_read_tail, session, batch_ids, as_of, current))
            predicted.append(_read_batch(models, shap, stored, as_of))
            report(len(chunk))
        tail: _Tail = pending.result()
    shap.flush()
    for batch, prior in zip(predicted, tail.priors, strict=True):
        batch.prior = prior
    return predicted, tail


def _write_batches(
    session: Session,
    models: Champions,
    predicted: deque[_Batch],
    names: Names,
    as_of: datetime,
    tiers_of: Callable[[_Scored], list[str]],
    *,
    refs: Mapping[int, Mapping[str, Any]],
    policy_id: int,
    tier_change_hook: TierChangeHook | None,
    summary: ScoreSummary,
    report: Callable[[int], None],
) -> None:
    """Phase two: each batch written in this thread (its score rows, outbox rows, tier-change hooks
    and shadow scores) while a reasons thread ranks, explains and renders the next one's rows
    (:func:`scoring.score_writes.render_scores`, from the prior scores the read phase read for
    it: :class:`_Tail`): the database's part of the work overlaps that Python. ``refs``: the run's
    references (:func:`_run_refs`). The session never leaves this thread; ``report(leads)`` after
    each write."""
    typicals = _typicals(session, models, as_of, predicted, refs)
    sentences = _RunSentences()

    def finish(batch: _Batch, prior: PriorScores) -> tuple[_Scored, list[str], RenderedScores | None]:
        scored = _finish_batch(models, batch, refs, typicals, sentences, names)
        tiers = tiers_of(scored)
        rows = _new_scores(scored, tiers, as_of)
        return scored, tiers, render_scores(rows, prior, policy_id=policy_id, when=datetime.now(UTC))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring-reasons") as reasons:

        def start(batch: _Batch) -> Future[tuple[_Scored, list[str], RenderedScores | None]]:
            # The batch's leads as the database held them once every batch was read (their
            # current scores, whether still open): the batches before it wrote other leads only.
            if batch.prior is None:
                raise RuntimeError("a batch was written before its prior scores were read")
            return reasons.submit(finish, batch, batch.prior)

        # On an error here, leaving the block waits for the batch being explained (and drops it).
        upcoming = start(predicted.popleft()) if predicted else None
        while upcoming is not None:
            scored, tiers, rendered = upcoming.result()
            # The next batch is explained and rendered while this one is written; batches go once
            # written.
            upcoming = start(predicted.popleft()) if predicted else None
            report(_write_batch(session, scored, tiers, rendered, as_of=as_of, tier_change_hook=tier_change_hook,
                                summary=summary))


def _tiers(policy: PolicyLike, scored: _Scored, cutoffs: Mapping[str, float] | None) -> list[str]:
    if cutoffs is not None:
        # The run's capacity cut-offs, compared with each 1-99 score as score-mode thresholds.
        return assign_tiers(scored.scores, Policy(mode="score", thresholds=cutoffs))
    return tiers_for(policy, scored.probs, scores=scored.scores)


def _new_scores(scored: _Scored, tiers: Sequence[str], as_of: datetime) -> list[NewScore]:
    """A batch's new score rows. No session."""
    # Python numbers from the arrays at once (indexing an array per value costs more).
    probs, scores = scored.probs.astype("float64").tolist(), scored.scores.astype("int64").tolist()
    fits, engagements = scored.fits.astype("int64").tolist(), scored.engagements.astype("int64").tolist()
    # Each model's id read once (an ORM attribute per row costs more than a dict).
    known: dict[int, int] = {}
    used = [known.get(id(mv)) or known.setdefault(id(mv), mv.id) for mv in scored.versions]
    return [
        NewScore(
            lead_id=lead_id, probability=probs[i], score=scores[i], tier=tiers[i],
            reasons=scored.texts[i], model_version_id=used[i],
            inputs_hash=scored.hashes[i],
            fit_score=fits[i], engagement_score=engagements[i], as_of=as_of,
            next_aging_at=scored.aging.get(lead_id),
        )
        for i, lead_id in enumerate(scored.lead_ids)
    ]


def _write_batch(
    session: Session,
    scored: _Scored,
    tiers: Sequence[str],
    rendered: RenderedScores | None,
    *,
    as_of: datetime,
    tier_change_hook: TierChangeHook | None,
    summary: ScoreSummary,
) -> int:
    """A batch's database work: the shadow challengers' scores of the same features (stored
    only, never written to the CRM), then the score rows, outbox rows and hooks ``rendered``
    holds. Returns the batch's leads."""
    score_in_shadow(session, scored.frame, scored.lead_ids, as_of)
    stats = apply_scores(session, rendered, tier_change_hook=tier_change_hook)
    summary.scored += stats.scores
    summary.outbox_rows += stats.outbox
    summary.superseded += stats.superseded
    summary.tier_changes += stats.tier_changes
    for t in tiers:
        summary.tiers[t] = summary.tiers.get(t, 0) + 1
    return len(scored.lead_ids)


class _Progress:
    """Leads done per stage, reported as ``progress(stage, done, total)``."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total = progress, total
        self.done: dict[str, int] = {}

    def __call__(self, stage: str) -> Callable[[int], None]:
        def report(leads: int) -> None:
            self.done[stage] = self.done.get(stage, 0) + leads
            if self.progress:
                self.progress(stage, self.done[stage], self.total)

        return report


WINDOW = 8  # batches a score-mode chunk reads before writing them (bounds its memory: 40,000 leads)


@lean_collector()
def score_chunk(
    session: Session,
    plan: ScoringPlan,
    lead_ids: Sequence[int],
    *,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    tier_change_hook: TierChangeHook | None = None,
) -> ScoreSummary:
    """Score ``lead_ids`` (a chunk of ``plan.lead_ids``, e.g. one of :meth:`ScoringPlan.chunks`) end
    to end: features from the store, prediction, reasons, tiers, score rows and outbox rows.

    Chunks of one plan may run in parallel (separate processes and transactions) and give the
    same rows as one :func:`score_leads` call. Each rescored lead gets a new current ``LeadScore``
    with reasons; when its score, tier or reasons changed, an ``Outbox`` row ("score_fields")
    replaces any still-pending one; when its tier changed (or it had no score),
    ``tier_change_hook(session, lead, previous, current)`` is called in the same transaction.
    Runs in the caller's transaction, never commits. The summary counts this chunk only
    (``considered`` = the chunk's leads; add chunk summaries with :meth:`ScoreSummary.add`).
    Reads and predicts up to :data:`WINDOW` batches, then explains and writes them; progress
    stages "scoring" and "writing".
    """
    started = time.perf_counter()
    models = load_champions(session)
    policy = session.get(TierPolicy, plan.policy_id)
    if policy is None:
        raise LeadscoreError(f"tier policy {plan.policy_id} of the scoring plan no longer exists")
    summary = ScoreSummary(as_of=plan.as_of, model_version=models.global_mv.version, considered=len(lead_ids))
    chunks = id_chunks(sorted(int(i) for i in lead_ids), max(1, batch_size))
    done = _Progress(progress, len(lead_ids))
    refs = _run_refs(session, models) if chunks else {}  # the same for every window
    with _model_thread(models) as pool:
        for start in range(0, len(chunks), WINDOW):
            predicted, tail = _read_batches(session, models, pool, chunks[start : start + WINDOW], plan.as_of,
                                            done("scoring"))
            _write_batches(session, models, predicted, tail.names, plan.as_of,
                           lambda s: _tiers(policy, s, plan.cutoffs), refs=refs,
                           policy_id=policy.id, tier_change_hook=tier_change_hook, summary=summary,
                           report=done("writing"))
    summary.seconds = time.perf_counter() - started
    return summary


@lean_collector()
def score_leads(
    session: Session,
    *,
    as_of: datetime | None = None,
    all: bool = False,  # noqa: A002 - the CLI's --all
    lead_ids: Sequence[int] | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    tier_change_hook: TierChangeHook | None = None,
    tier_default: TierConfig | None = None,
) -> ScoreSummary:
    """Score the leads whose inputs changed (every live lead with ``all``), in bounded batches,
    in this process: the rows :func:`plan_scoring` and :func:`score_chunk` over the whole plan
    would write, with each lead's features read and predicted once (capacity mode keeps the
    batches' scores in memory until the run's cut-offs are known, then writes them).

    ``as_of`` None uses the CRM's clock (:func:`crm_now`). ``lead_ids`` restricts the run to those
    leads. ``tier_default`` seeds the first tier policy when none exists (default: the YAML
    config's ``tiers``). ``progress(stage, done, total)`` reports per batch. Raises
    :class:`NoChampionError` before any model exists.
    """
    started = time.perf_counter()
    plan, models, policy = _plan(session, as_of=as_of, all=all, lead_ids=lead_ids, tier_default=tier_default)
    summary = plan.summary()
    if policy.mode != "capacity":
        if plan.lead_ids:
            summary.add(score_chunk(session, plan, plan.lead_ids, batch_size=batch_size, progress=progress,
                                    tier_change_hook=tier_change_hook))
        summary.seconds = time.perf_counter() - started
        return summary
    # Capacity tiers cut every current score, this run's included: every batch is read and
    # predicted first (SHAP gathered into the model thread's calls meanwhile), then, with the
    # run's cut-offs known, each batch is explained and written while later batches' SHAP runs.
    done = _Progress(progress, len(plan.lead_ids))
    with _model_thread(models) as pool:
        predicted, tail = _read_batches(session, models, pool, plan.chunks(batch_size), plan.as_of,
                                        done("scoring"), current=True)
        if predicted:
            refs = _run_refs(session, models)
            cutoffs = _run_cutoffs(session, policy, plan.lead_ids, [b.scores(refs) for b in predicted],
                                   existing=tail.current)
            _write_batches(session, models, predicted, tail.names, plan.as_of, lambda s: _tiers(policy, s, cutoffs),
                           refs=refs, policy_id=policy.id, tier_change_hook=tier_change_hook, summary=summary,
                           report=done("writing"))
            if not (all and lead_ids is None) or plan.held:  # a run over every live lead left none to re-tier
                plan.cutoffs = cutoffs
                summary.add(retier_to_plan(session, plan, tier_change_hook=tier_change_hook))
    summary.seconds = time.perf_counter() - started
    return summary


def retier_to_plan(
    session: Session, plan: ScoringPlan, *, tier_change_hook: TierChangeHook | None = None
) -> ScoreSummary:
    """After a capacity-tiered run: the open leads it did not rescore tiered by its cut-offs too.

    The run's new scores move the cut-offs (a share of every current score), so a lead scored
    earlier can hold a tier its score no longer makes, and one score would show in two tiers in
    the CRM. Those leads get the tier the cut-offs give (a new current score row with the same
    score and reasons, an outbox row and the tier-change hook, as ``tiers set`` re-tiers). The
    summary counts them as ``retiered`` (and in ``outbox_rows`` and ``tier_changes``). Nothing to
    do outside capacity mode (thresholds do not move) or when the plan has no cut-offs.
    """
    summary = ScoreSummary(as_of=plan.as_of, model_version=plan.model_version)
    cutoffs = plan.cutoffs
    if cutoffs is None:
        return summary
    stats = retier_current(
        session, plan.policy_id,
        lambda current: assign_tiers(current["score"].to_numpy(), Policy(mode="score", thresholds=cutoffs)),
        tier_change_hook=tier_change_hook,
    )
    summary.retiered = stats.scores
    summary.outbox_rows, summary.superseded, summary.tier_changes = stats.outbox, stats.superseded, stats.tier_changes
    return summary


def _configured_tiers() -> TierConfig:
    """The YAML config's ``tiers`` (used only to create the first policy version)."""
    return load_config(get_settings().config_file).tiers
