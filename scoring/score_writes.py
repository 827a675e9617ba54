"""Score writing: new current score rows, their outbox rows and the tier-change hook, set-based.

Score rows and their outbox rows are written in the same flush, so the CRM write exists if and
only if the score does. Used by scoring runs and by re-tiering.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Table, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session, defer

from scoring.hooks import TierChangeHook
from scoring.inputs import id_chunks
from scoring.reasons import join_reasons
from scoring.tiers import current_scores, likelihood_percent
from store.db import JSONText, among, driver_rows, insert_columns
from store.models import OUTBOX_KIND, Lead, LeadLifecycle, LeadScore, ModelVersion, Outbox, OutboxStatus

# Core inserts into the tables (executemany), not ORM bulk inserts of the mapped classes.
_SCORE_TABLE: Table = LeadScore.__table__  # type: ignore[assignment]
_OUTBOX_TABLE: Table = Outbox.__table__  # type: ignore[assignment]
CHANGE_DAYS = 7  # the trend field: score change over this many days of the data's clock


# One encoder each, made once (json.dumps with options builds a new encoder per call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _reused(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """``encoder.encode`` for flat dicts and lists, with the C encoder it would build made once:
    ``JSONEncoder.encode`` makes a new one per call, which cost more than the encoding of a score
    row's reasons or payload. The same text (no circular check: these values are flat)."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # a Python without the _json accelerator
        return encoder.encode
    made = c_make_encoder(None, encoder.default, json.encoder.encode_basestring, None, encoder.key_separator,
                          encoder.item_separator, encoder.sort_keys, encoder.skipkeys, encoder.allow_nan)
    return lambda value: "".join(made(value, 0))


_canonical_text = _reused(_CANONICAL)


def payload_json(payload: dict[str, Any]) -> JSONText:
    """The payload's canonical JSON (sorted keys, no spaces): what is stored and hashed."""
    return JSONText(_canonical_text(payload))


_quoted = json.encoder.encode_basestring  # a str as its JSON text (ensure_ascii=False), in C


def json_list(values: Sequence[str]) -> JSONText:
    """A score row's reasons as their compact JSON text (what the JSON column stores)."""
    return JSONText("[" + ",".join(map(_quoted, values)) + "]")


@lru_cache(maxsize=64)
def _iso_seconds(at: datetime) -> str:
    """A run's rows share their time: formatted once."""
    return at.astimezone(UTC).isoformat(timespec="seconds")


# A score payload's time of scoring, as the canonical JSON writes it (keys sorted: "scored_at"
# is followed by "tier", so by a comma).
_SCORED_AT = re.compile(r'"scored_at":"[^"]*",?')


def payload_hash(payload: dict[str, Any] | JSONText) -> str:
    """sha256 of the payload's canonical JSON (:func:`payload_json`) without its ``scored_at``: the
    values the CRM shows. The drain skips a row whose hash equals the lead's last sent one, so a
    tier changed and changed back before a write-back (or any rescore back to the values the CRM
    already shows) writes nothing; the time of scoring alone is no reason to write."""
    text = payload if isinstance(payload, JSONText) else payload_json(payload)
    return hashlib.sha256(_SCORED_AT.sub("", text).encode("utf-8")).hexdigest()


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
        "scored_at": _iso_seconds(scored_at),
    }
    extra = {"likelihood": likelihood, "fit": fit, "engagement": engagement, "score_change": score_change}
    payload.update({k: v for k, v in extra.items() if v is not None})
    return payload


def render_queued(session: Session, rows: Sequence[Outbox]) -> int:
    """Give each score write a scoring run queued without its payload (``payload`` None) the payload
    and hash of the score row it carries, as :func:`outbox_payload` and :func:`payload_hash` make
    them; rows that have theirs keep them. The write-back drain calls it on the rows it claims (in
    the claim's transaction: a sent row keeps what was sent, and its hash is what later writes of
    the lead are compared with). Returns the rows rendered."""
    wanted = [r for r in rows if r.payload is None and r.lead_score_id is not None]
    if not wanted:
        return 0
    scores: dict[int, tuple[Any, ...]] = {}
    for chunk in id_chunks(sorted({int(r.lead_score_id) for r in wanted if r.lead_score_id is not None})):
        scores.update({row[0]: tuple(row[1:]) for row in session.execute(
            select(LeadScore.id, LeadScore.score, LeadScore.tier, LeadScore.reasons, LeadScore.probability,
                   LeadScore.fit_score, LeadScore.engagement_score, LeadScore.score_change, LeadScore.scored_at,
                   ModelVersion.version)
            .outerjoin(ModelVersion, ModelVersion.id == LeadScore.model_version_id)
            .where(among(session, LeadScore.id, chunk)))})
    of_row = [scores[int(row.lead_score_id or 0)] for row in wanted]
    likelihoods = _likelihoods([values[3] for values in of_row])
    for row, values, likelihood in zip(wanted, of_row, likelihoods, strict=True):
        score, tier, reasons, _, fit, engagement, change, scored_at, version = values
        payload = outbox_payload(score, tier, list(reasons or []), version or "", scored_at, likelihood=likelihood,
                                 fit=fit, engagement=engagement, score_change=change)
        row.payload, row.payload_hash = payload, payload_hash(payload)
    return len(wanted)


@dataclass
class NewScore:
    """A score about to be written for one lead."""

    lead_id: int
    probability: float
    score: int
    tier: str
    reasons: list[str]
    model_version_id: int | None  # the payload names its version (rendered when the drain claims the row)
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


def _fields(score: int, tier: str, reasons: Sequence[str], likelihood: float, fit: int | None,
            engagement: int | None, change: int | None) -> tuple[Any, ...]:
    """What the CRM shows of a score: a write is needed only when this differs."""
    return (score, tier, list(reasons), likelihood, fit, engagement, change)


def _likelihoods(probabilities: Sequence[float]) -> list[float]:
    """:func:`scoring.tiers.likelihood_percent` of many probabilities at once."""
    return [float(v) for v in likelihood_percent(np.asarray(probabilities, dtype="float64"))]


def _change_baselines(
    session: Session, ids: Sequence[int], as_of: datetime, since: dict[int, datetime | None] | None = None,
) -> tuple[dict[int, int], dict[int, datetime]]:
    """Per lead: the score to measure the 7-day change against, and when that baseline moves
    (``since``, when given, gets each baseline's own data clock: :func:`change_baseline_as_of`).

    The baseline is the lead's latest score with ``as_of`` at least :data:`CHANGE_DAYS` before
    ``as_of``; a lead first scored within those days is measured against its first score. A lead
    with no score on an earlier clock (its first score, or a rescore at the same ``as_of``) has
    none: its change is blank, not 0. The baseline moves when the next later score turns 7 days old.
    """
    cutoff = as_of - timedelta(days=CHANGE_DAYS)
    base: dict[int, int] = {}
    moves: dict[int, datetime] = {}
    for chunk in id_chunks(ids):
        latest_old = (
            select(LeadScore.lead_id, func.max(LeadScore.id).label("sid"))
            .where(among(session, LeadScore.lead_id, chunk), LeadScore.as_of <= cutoff)
            .group_by(LeadScore.lead_id)
            .subquery()
        )
        for lead_id, score, base_as_of in session.execute(
            select(LeadScore.lead_id, LeadScore.score, LeadScore.as_of)
            .join(latest_old, LeadScore.id == latest_old.c.sid)
        ):
            base[lead_id] = score
            if since is not None:
                since[lead_id] = base_as_of
        missing = [i for i in chunk if i not in base]
        if missing:
            first = (
                select(LeadScore.lead_id, func.min(LeadScore.id).label("sid"))
                # Scores before this clock (rows from before as_of was stored count as earlier).
                .where(among(session, LeadScore.lead_id, missing),
                       or_(LeadScore.as_of < as_of, LeadScore.as_of.is_(None)))
                .group_by(LeadScore.lead_id)
                .subquery()
            )
            for lead_id, score, base_as_of in session.execute(
                select(LeadScore.lead_id, LeadScore.score, LeadScore.as_of).join(first, LeadScore.id == first.c.sid)
            ):
                base[lead_id] = score
                if since is not None:
                    since[lead_id] = base_as_of
        for lead_id, when in session.execute(
            select(LeadScore.lead_id, func.min(LeadScore.as_of))
            .where(among(session, LeadScore.lead_id, chunk), LeadScore.as_of > cutoff)
            .group_by(LeadScore.lead_id)
        ):
            if when is not None:
                when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
                moves[lead_id] = when + timedelta(days=CHANGE_DAYS)
    return base, moves


def change_baseline_as_of(session: Session, current: LeadScore) -> datetime | None:
    """The data clock of the score ``current.score_change`` was measured against (the baseline
    :func:`read_prior` picked; ``current`` is the newest row, so the same rows qualify now), or
    None when the change is blank. ``explain`` names its date."""
    if current.score_change is None or current.as_of is None:
        return None
    since: dict[int, datetime | None] = {}
    _change_baselines(session, [current.lead_id], current.as_of, since)
    return since.get(current.lead_id)


@dataclass
class PriorScores:
    """What the database holds that new score rows depend on (:func:`read_prior`)."""

    previous: dict[int, _Previous]  # each open lead's current score
    not_open: set[int]  # converted, closed, deleted or merged leads: they get no new score
    baselines: dict[int, int]  # the score each lead's 7-day change is measured against
    baseline_moves: dict[int, datetime]  # when that baseline moves


@dataclass
class RenderedScores:
    """New score rows and their outbox rows, ready to be written (:func:`render_scores`): what
    :func:`apply_scores` writes, computed without the session."""

    when: datetime
    lead_ids: list[int]
    score_columns: dict[str, Sequence[Any]]
    changed: list[int]  # leads whose CRM fields change: an outbox row each (made of the new score row)
    tier_changed: list[int]
    previous_of: dict[int, int]  # lead -> its current score id: it stops being current


def read_prior(session: Session, ids: Sequence[int], clock: Mapping[int, datetime]) -> PriorScores:
    """The database's part of :func:`write_scores` before any write: the leads' current scores,
    which leads are no longer open, and the 7-day change baselines (at each lead's data clock,
    ``clock``)."""
    previous: dict[int, _Previous] = {}
    not_open: set[int] = set()
    for chunk in id_chunks(ids):
        for sid, lead_id, score, tier, reasons, prob, fit, eng, change in session.execute(
            select(LeadScore.id, LeadScore.lead_id, LeadScore.score, LeadScore.tier, LeadScore.reasons,
                   LeadScore.probability, LeadScore.fit_score, LeadScore.engagement_score,
                   LeadScore.score_change).where(
                among(session, LeadScore.lead_id, chunk), LeadScore.is_current.is_(True)
            )
        ):
            previous[lead_id] = _Previous(sid, score, tier, list(reasons or []), float(prob), fit, eng, change)
        for lead_id, is_open in driver_rows(session, select(
            Lead.id, Lead.lifecycle == LeadLifecycle.open
        ).where(among(session, Lead.id, chunk))):
            if not is_open:
                not_open.add(lead_id)
    # Only open leads get new scores, writes and routing (re-tiering included); the others keep
    # their current score as history.
    previous = {k: v for k, v in previous.items() if k not in not_open}
    baselines: dict[int, int] = {}
    baseline_moves: dict[int, datetime] = {}
    # Only write_scores makes a score not current, and it always adds the lead's new current one:
    # a lead without a current score has no scores (and no score writes) at all, so nothing to
    # measure against or supersede (a first scoring run asks the database nothing about them).
    for as_of in sorted({clock[i] for i in previous}):
        group = [i for i in previous if clock[i] == as_of]
        base, moves = _change_baselines(session, group, as_of)
        baselines.update(base)
        baseline_moves.update(moves)
    return PriorScores(previous, not_open, baselines, baseline_moves)


def render_scores(
    rows: Sequence[NewScore], prior: PriorScores, *, policy_id: int | None, when: datetime
) -> RenderedScores | None:
    """The score rows and outbox rows :func:`apply_scores` writes for ``rows`` (None when no row's
    lead is open), from what :func:`read_prior` read. No session: a scoring run renders a batch
    in another thread while the calling thread writes the batch before."""
    rows = [r for r in rows if r.lead_id not in prior.not_open]
    if not rows:
        return None
    previous = prior.previous
    # The 7-day change needs each row's data clock: rows without one are measured at ``when``.
    clock = {r.lead_id: (r.as_of or when) for r in rows}
    # A lead without a score on an earlier clock has nothing to compare with: no change (blank
    # in the CRM), not 0.
    changes = {r.lead_id: (r.score - prior.baselines[r.lead_id]) if r.lead_id in prior.baselines else None
               for r in rows}
    n = len(rows)
    lead_ids = [r.lead_id for r in rows]
    agings: list[datetime | None] = []
    for r in rows:
        aging = r.next_aging_at
        if changes[r.lead_id]:  # neither 0 nor a first score's None
            # A non-zero change goes stale when its baseline moves: rescore the lead then.
            move = prior.baseline_moves.get(r.lead_id, clock[r.lead_id] + timedelta(days=CHANGE_DAYS))
            aging = move if aging is None else min(aging, move)
        agings.append(aging)
    score_columns: dict[str, Sequence[Any]] = {
        "lead_id": lead_ids, "model_version_id": [r.model_version_id for r in rows],
        "tier_policy_id": [policy_id] * n, "probability": [r.probability for r in rows],
        "score": [r.score for r in rows], "tier": [r.tier for r in rows],
        "reasons": [json_list(r.reasons) for r in rows], "inputs_hash": [r.inputs_hash for r in rows],
        "is_current": [True] * n, "scored_at": [when] * n, "fit_score": [r.fit_score for r in rows],
        "engagement_score": [r.engagement_score for r in rows], "score_change": [changes[i] for i in lead_ids],
        "as_of": [clock[i] for i in lead_ids], "next_aging_at": agings,
    }
    likelihood = dict(zip(lead_ids, _likelihoods([r.probability for r in rows]), strict=True))
    likelihood_before = dict(zip(previous, _likelihoods([p.probability for p in previous.values()]), strict=True))

    def shown(r: NewScore) -> tuple[Any, ...]:
        return _fields(r.score, r.tier, r.reasons, likelihood[r.lead_id], r.fit_score, r.engagement_score,
                       changes[r.lead_id])

    changed = [
        r for r in rows
        if (p := previous.get(r.lead_id)) is None
        or _fields(p.score, p.tier, p.reasons, likelihood_before[r.lead_id], p.fit_score, p.engagement_score,
                   p.score_change) != shown(r)
    ]
    return RenderedScores(
        when=when, lead_ids=lead_ids, score_columns=score_columns, changed=[r.lead_id for r in changed],
        tier_changed=[r.lead_id for r in rows if (p := previous.get(r.lead_id)) is None or p.tier != r.tier],
        previous_of={lead_id: p.id for lead_id, p in previous.items()},
    )


def apply_scores(
    session: Session, rendered: RenderedScores | None, *, tier_change_hook: TierChangeHook | None = None
) -> WriteStats:
    """Write what :func:`render_scores` rendered (no commit): the previous current rows stop being
    current, the new ones and their outbox rows are inserted (superseding the leads' pending
    ones), and the tier-change hook is called per lead whose tier changed."""
    stats = WriteStats()
    if rendered is None:
        return stats
    # Old current rows stop being current before the new ones exist (one current row per lead).
    # "fetch" keeps LeadScore objects already loaded in this session in step (the criteria, an
    # array on PostgreSQL, cannot be evaluated in Python).
    previous_of = rendered.previous_of
    for chunk in id_chunks(list(previous_of.values())):
        session.execute(
            update(LeadScore).where(among(session, LeadScore.id, chunk)).values(is_current=False),
            execution_options={"synchronize_session": "fetch"},
        )
    # Column by column (no mapping per row): plain executemany or COPY (no RETURNING, which
    # SQLite can only keep in parameter order one row per statement).
    insert_columns(session, _SCORE_TABLE, rendered.score_columns)
    stats.scores = len(rendered.lead_ids)
    # A changed lead that had a score: its pending outbox rows are superseded.
    for chunk in id_chunks([i for i in rendered.changed if i in previous_of]):
        result = session.execute(
            update(Outbox)
            .where(among(session, Outbox.lead_id, chunk), Outbox.status == OutboxStatus.pending,
                   Outbox.kind == OUTBOX_KIND)
            .values(status=OutboxStatus.superseded),
            execution_options={"synchronize_session": "fetch"},
        )
        stats.superseded += int(getattr(result, "rowcount", 0) or 0)
    stats.outbox = _queue_writes(session, rendered.changed, rendered.when)
    tier_changed = rendered.tier_changed
    stats.tier_changes = len(tier_changed)
    if tier_change_hook is not None and tier_changed:
        # The hook gets ORM objects: the lead, its previous score (None for a first score) and
        # the new current score, all in this transaction.
        new_ids: dict[int, int] = {}
        for chunk in id_chunks(tier_changed):  # each lead now has exactly one current row
            new_ids.update(driver_rows(session, select(LeadScore.lead_id, LeadScore.id).where(
                among(session, LeadScore.lead_id, chunk), LeadScore.is_current.is_(True))))
        score_ids = [new_ids[i] for i in tier_changed] + [previous_of[i] for i in tier_changed if i in previous_of]
        scores: dict[int, LeadScore] = {}
        leads: dict[int, Lead] = {}
        for chunk in id_chunks(score_ids):
            found = session.scalars(select(LeadScore).where(among(session, LeadScore.id, chunk)))
            scores.update({s.id: s for s in found})
        for chunk in id_chunks(tier_changed):
            # The hook reads ids, states and tiers: the leads' raw payloads and attributes (most
            # of a lead row) stay unloaded unless it asks for them.
            stored = session.scalars(select(Lead).options(defer(Lead.raw), defer(Lead.attributes))
                                     .where(among(session, Lead.id, chunk)))
            leads.update({lead.id: lead for lead in stored})
        for lead_id in tier_changed:
            before = scores[previous_of[lead_id]] if lead_id in previous_of else None
            tier_change_hook(session, leads[lead_id], before, scores[new_ids[lead_id]])
    return stats


def _queue_writes(session: Session, lead_ids: Sequence[int], when: datetime) -> int:
    """Per lead of ``lead_ids``, a pending outbox row for its current score row (just written),
    made by the database from that row and the lead's: its connection, CRM id and score row id
    are never sent back and forth (a select of the new rows' ids and a second COPY per batch
    cost more than this statement). Rows in lead order. Returns how many were queued."""
    columns = _OUTBOX_TABLE.c
    queued = 0
    for chunk in id_chunks(lead_ids):
        rows = (
            select(Lead.connection_id, Lead.id, Lead.crm_id, literal(OUTBOX_KIND, columns.kind.type),
                   literal(OutboxStatus.pending.value, columns.status.type), literal(0, columns.attempts.type),
                   literal(when, columns.created_at.type), literal(when, columns.next_attempt_at.type), LeadScore.id)
            .join_from(LeadScore, Lead, Lead.id == LeadScore.lead_id)
            .where(among(session, LeadScore.lead_id, chunk), LeadScore.is_current.is_(True))
            .order_by(LeadScore.lead_id)
        )
        result = session.execute(insert(_OUTBOX_TABLE).from_select(
            ["connection_id", "lead_id", "crm_id", "kind", "status", "attempts", "created_at", "next_attempt_at",
             "lead_score_id"], rows), execution_options={"preserve_rowcount": True})  # psycopg forgets it otherwise
        queued += int(result.rowcount or 0)  # type: ignore[attr-defined]
    if queued != len(lead_ids):
        raise RuntimeError(f"queued {queued} CRM writes for {len(lead_ids)} new scores: a lead lost its current score")
    return queued


def write_scores(
    session: Session,
    rows: Sequence[NewScore],
    *,
    policy_id: int | None,
    tier_change_hook: TierChangeHook | None = None,
    scored_at: datetime | None = None,
) -> WriteStats:
    """Record new current scores, their outbox rows and tier-change hooks (no commit):
    :func:`read_prior`, :func:`render_scores`, :func:`apply_scores`.

    The previous current row of each lead is marked not current before the new one is inserted
    (the partial unique index allows one current row per lead). An outbox row is written only
    when score, tier or reasons differ from the previous score; it supersedes the lead's pending
    outbox rows. Bulk statements (not one ORM object per row) keep a 2,000-lead batch fast.
    Used by scoring and by re-tiering. Rows of leads that are not open (converted, closed,
    deleted, merged) are dropped: those leads keep their current score.
    """
    if not rows:
        return WriteStats()
    when = scored_at or datetime.now(UTC)
    prior = read_prior(session, [r.lead_id for r in rows], {r.lead_id: (r.as_of or when) for r in rows})
    return apply_scores(session, render_scores(rows, prior, policy_id=policy_id, when=when),
                        tier_change_hook=tier_change_hook)


def retier_current(
    session: Session,
    policy_id: int,
    tiers_of: Callable[[pd.DataFrame], Sequence[str]],
    *,
    tier_change_hook: TierChangeHook | None = None,
) -> WriteStats:
    """Give the open leads' current scores the tiers ``tiers_of(current)`` assigns (``current``:
    :func:`scoring.tiers.current_scores`, one tier per row) where they differ, without rescoring.

    A changed lead gets a new current ``LeadScore`` (same probability, score, reasons and model),
    an outbox row and a ``tier_change_hook`` call, exactly as scoring would. Used by ``tiers set``
    and by capacity-tiered runs, whose new cut-offs also move leads they did not rescore.
    """
    current = current_scores(session)
    if current.empty:
        return WriteStats()
    new_tiers = list(tiers_of(current))
    changed = [i for i, (old, new) in enumerate(zip(current["tier"], new_tiers, strict=True)) if old != new]
    if not changed:
        return WriteStats()
    ids = current["score_id"].to_numpy()[changed].tolist()
    previous: dict[int, LeadScore] = {}
    for chunk in id_chunks(ids):
        found = session.scalars(select(LeadScore).where(among(session, LeadScore.id, chunk)))
        previous.update({s.id: s for s in found})
    rows = []
    for i in changed:
        old = previous[int(current["score_id"].iloc[i])]
        rows.append(NewScore(
            lead_id=old.lead_id, probability=old.probability, score=old.score, tier=new_tiers[i],
            reasons=list(old.reasons or []), model_version_id=old.model_version_id, inputs_hash=old.inputs_hash,
            fit_score=old.fit_score, engagement_score=old.engagement_score, as_of=old.as_of,
            next_aging_at=old.next_aging_at,
        ))
    return write_scores(session, rows, policy_id=policy_id, tier_change_hook=tier_change_hook)
