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
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from config.app_config import TierConfig, load_config
from config.errors import LeadscoreError
from config.settings import get_settings
from scoring import registry
from scoring.champions import ensure_score_reference, live_typical, load_champions, predict
from scoring.features import align_to_spec
from scoring.hooks import TierChangeHook
from scoring.inputs import batch_inputs, crm_now, id_chunks, lead_features, live_count, live_lead_ids, stale_lead_ids
from scoring.reasons import explain, reason_strings
from scoring.reference import rank
from scoring.score_writes import NewScore, write_scores
from scoring.shadow import score_in_shadow
from scoring.subscores import split_contributions
from scoring.tiers import (
    Policy,
    active_policy,
    assign_tiers,
    capacity_cutoffs,
    current_scores,
    find_active_policy,
    tiers_for,
)
from store.models import TierPolicy
from store.types import Progress


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
    accounts: dict[str, int] = field(default_factory=dict)  # account refresh (scoring.pipeline)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accounts": dict(self.accounts),
            "as_of": self.as_of.isoformat(), "model": self.model_version, "considered": self.considered,
            "scored": self.scored, "unchanged": self.unchanged, "outbox_rows": self.outbox_rows,
            "superseded": self.superseded, "tier_changes": self.tier_changes, "tiers": self.tiers,
            "routing_planned": dict(self.routing_planned), "seconds": round(self.seconds, 3),
        }

    def add(self, chunk: ScoreSummary) -> None:
        """Add what a chunk of this run did (scored, writes, tiers; not ``considered``/``seconds``)."""
        self.scored += chunk.scored
        self.outbox_rows += chunk.outbox_rows
        self.superseded += chunk.superseded
        self.tier_changes += chunk.tier_changes
        for tier, n in chunk.tiers.items():
            self.tiers[tier] = self.tiers.get(tier, 0) + n
        for action, n in chunk.routing_planned.items():
            self.routing_planned[action] = self.routing_planned.get(action, 0) + n


@dataclass
class ScoringPlan:
    """What a scoring run will score, decided once; chunks of it can then be scored anywhere.

    ``lead_ids``: the leads to score (id order). ``cutoffs``: in capacity mode, the tier cut-offs
    of this run (probabilities, cut on every current score plus this run's new probabilities), so
    chunks scored apart (parallel Celery tasks) tier exactly as one run would; None otherwise.
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

    def chunks(self, size: int = 2000) -> list[list[int]]:
        """``lead_ids`` in consecutive chunks of at most ``size`` (id ranges, in order)."""
        return id_chunks(self.lead_ids, max(1, size))

    def summary(self) -> ScoreSummary:
        """An empty summary of this run (scoring chunks adds to it)."""
        return ScoreSummary(as_of=self.as_of, model_version=self.model_version, considered=self.considered,
                            unchanged=self.considered - len(self.lead_ids))

    def to_dict(self) -> dict[str, Any]:
        return {"as_of": self.as_of.isoformat(), "model_version": self.model_version,
                "model_ids": list(self.model_ids), "policy_id": self.policy_id, "lead_ids": list(self.lead_ids),
                "considered": self.considered, "cutoffs": dict(self.cutoffs) if self.cutoffs is not None else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoringPlan:
        cutoffs = data.get("cutoffs")
        return cls(as_of=datetime.fromisoformat(str(data["as_of"])), model_version=str(data["model_version"]),
                   model_ids=[int(i) for i in data["model_ids"]], policy_id=int(data["policy_id"]),
                   lead_ids=[int(i) for i in data["lead_ids"]], considered=int(data["considered"]),
                   cutoffs={str(k): float(v) for k, v in cutoffs.items()} if cutoffs is not None else None)


def plan_scoring(
    session: Session,
    *,
    as_of: datetime | None = None,
    all: bool = False,  # noqa: A002 - the CLI's --all
    lead_ids: Sequence[int] | None = None,
    batch_size: int = 2000,
    progress: Progress | None = None,
    tier_default: TierConfig | None = None,
) -> ScoringPlan:
    """Decide a scoring run: the leads whose inputs changed (every live lead with ``all``), as of
    ``as_of`` (None: the CRM's clock, :func:`crm_now`), restricted to ``lead_ids`` when given.

    Also makes sure what every chunk shares exists before chunks run: the active tier policy
    (``tier_default`` seeds the first one; default: the YAML config's ``tiers``) and each
    champion's score reference. In capacity mode it predicts the planned leads once (features
    and probabilities, no reasons) to fix the run's cut-offs. Raises :class:`NoChampionError`
    before any model exists.
    """
    as_of = as_of or crm_now(session)
    models = load_champions(session)
    policy = find_active_policy(session) or active_policy(session, tier_default or _configured_tiers())
    ids = live_lead_ids(session, lead_ids) if all else stale_lead_ids(
        session, models.ids, lead_ids=lead_ids, as_of=as_of)
    considered = len(live_lead_ids(session, lead_ids)) if lead_ids is not None else live_count(session)
    if ids:  # built once here, not by chunks racing each other
        for mv in models.all():
            ensure_score_reference(session, mv)
    plan = ScoringPlan(as_of=as_of, model_version=models.global_mv.version, model_ids=models.ids,
                       policy_id=policy.id, lead_ids=ids, considered=considered)
    if policy.mode == "capacity" and ids:
        # Capacity tiers cut the distribution of all current scores, which this run changes:
        # a first pass computes the new probabilities so the cut-offs include them.
        new_probs: list[np.ndarray] = []
        total = len(ids)
        for n, batch in enumerate(plan.chunks(batch_size), 1):
            _, frame = lead_features(session, batch, as_of)
            new_probs.append(predict(models, frame)[0])
            if progress:
                progress("ranking", min(n * batch_size, total), total)
        existing = current_scores(session)
        others = existing.loc[~existing["lead_id"].isin(set(ids)), "probability"].to_numpy()
        plan.cutoffs = capacity_cutoffs(np.concatenate([others, *new_probs]), policy.thresholds)
    return plan


def score_chunk(
    session: Session,
    plan: ScoringPlan,
    lead_ids: Sequence[int],
    *,
    batch_size: int = 2000,
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
    """
    started = time.perf_counter()
    as_of = plan.as_of
    models = load_champions(session)
    policy = session.get(TierPolicy, plan.policy_id)
    if policy is None:
        raise LeadscoreError(f"tier policy {plan.policy_id} of the scoring plan no longer exists")
    summary = ScoreSummary(as_of=as_of, model_version=models.global_mv.version, considered=len(lead_ids))
    total = len(lead_ids)
    for n, batch in enumerate(id_chunks(sorted(int(i) for i in lead_ids), max(1, batch_size)), 1):
        leads, frame, aging = batch_inputs(session, batch, as_of)
        probs, used = predict(models, frame)
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
        if plan.cutoffs is not None:
            # The run's capacity cut-offs, compared with each probability as score-mode thresholds.
            tiers = assign_tiers(probs, Policy(mode="score", thresholds=plan.cutoffs))
        else:
            tiers = tiers_for(policy, probs, scores=scores)
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
    """Score the leads whose inputs changed (every live lead with ``all``), in bounded batches:
    :func:`plan_scoring`, then :func:`score_chunk` over the whole plan in this process.

    ``as_of`` None uses the CRM's clock (:func:`crm_now`). ``lead_ids`` restricts the run to those
    leads. ``tier_default`` seeds the first tier policy when none exists (default: the YAML
    config's ``tiers``). ``progress(stage, done, total)`` reports per batch. Raises
    :class:`NoChampionError` before any model exists.
    """
    started = time.perf_counter()
    plan = plan_scoring(session, as_of=as_of, all=all, lead_ids=lead_ids, batch_size=batch_size,
                        progress=progress, tier_default=tier_default)
    summary = plan.summary()
    if plan.lead_ids:
        summary.add(score_chunk(session, plan, plan.lead_ids, batch_size=batch_size, progress=progress,
                                tier_change_hook=tier_change_hook))
    summary.seconds = time.perf_counter() - started
    return summary


def _configured_tiers() -> TierConfig:
    """The YAML config's ``tiers`` (used only to create the first policy version)."""
    return load_config(get_settings().config_file).tiers
