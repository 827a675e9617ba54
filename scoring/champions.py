"""The champion models that score: which model scores which lead, predictions, each model's score
reference and what the live leads it scores look like (for the reasons).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from config.errors import LeadscoreError
from scoring import registry
from scoring.audit import DataError
from scoring.dataset import SPLIT_COLUMN, TARGET, build_training_set
from scoring.features import align_to_spec
from scoring.inputs import crm_now, lead_features, live_lead_ids
from scoring.model import PreparedRows, TrainedModel
from scoring.reasons import typical_values
from scoring.reference import REFERENCE_KEY, build_reference, reference_rows, stored_reference
from store.db import IDS_PER_STATEMENT
from store.models import ModelVersion

logger = logging.getLogger(__name__)

# "Typical leads" for reasons are the live ones a rep sees: this many, evenly spread over the
# live leads, measured once per model and week of the data's clock (per process: what most leads
# look like moves slowly); fewer live leads than MIN use the model's reference leads instead.
LIVE_SAMPLE = 2000
LIVE_SAMPLE_MIN = 200
LIVE_TYPICAL_DAYS = 7
LIVE_TYPICAL_KEY = "live_typical"  # in a version's params: {"as_of": ISO time, "typical": typical values}
_live_typical_cache: dict[tuple[str, str], tuple[datetime, dict[str, Any] | None]] = {}


class NoChampionError(LeadscoreError):
    """Scoring was asked for before any model was trained."""


@dataclass
class Champions:
    global_mv: ModelVersion
    segment_by: str | None
    by_segment: dict[str, ModelVersion]

    @property
    def ids(self) -> list[int]:
        return [mv.id for mv in self.all()]

    def all(self) -> list[ModelVersion]:
        """The global champion, then each segment's."""
        return [self.global_mv, *self.by_segment.values()]

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


def load_champions(session: Session) -> Champions:
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
    return Champions(global_mv=global_mv, segment_by=segment_by, by_segment=by_value)


PreparedGroup = tuple[ModelVersion, np.ndarray, pd.DataFrame, PreparedRows]


AlignedGroup = tuple[ModelVersion, np.ndarray, pd.DataFrame]


def aligned_groups(models: Champions, frame: pd.DataFrame) -> list[AlignedGroup]:
    """Per champion: its rows (mask) and their features aligned to its spec."""
    return [(mv, mask, align_to_spec(frame.loc[mask], registry.load_model(mv).spec))
            for mv, mask in models.groups(frame)]


def prepare_groups(models: Champions, frame: pd.DataFrame) -> list[PreparedGroup]:
    """Per champion: its rows (mask), their features aligned to its spec, and those rows encoded
    once (:meth:`TrainedModel.prepare`) for a prediction and, when reasons are needed, SHAP."""
    return [(mv, mask, part, registry.load_model(mv).prepare(part)) for mv, mask, part in aligned_groups(models, frame)]


def predict_groups(groups: Sequence[PreparedGroup], size: int) -> tuple[np.ndarray, list[ModelVersion | None]]:
    """Probabilities of a frame of ``size`` rows from its prepared groups, and who scored each row."""
    probs = np.zeros(size)
    used: list[ModelVersion | None] = [None] * size
    for mv, mask, _, rows in groups:
        probs[mask] = rows.proba()
        for i in np.flatnonzero(mask).tolist():
            used[i] = mv
    return probs, used


def predict(models: Champions, frame: pd.DataFrame) -> tuple[np.ndarray, list[ModelVersion | None]]:
    return predict_groups(prepare_groups(models, frame), len(frame))


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


def live_typical(
    session: Session,
    mv: ModelVersion,
    as_of: datetime,
    known: Callable[[list[int]], pd.DataFrame | None] | None = None,
) -> dict[str, Any] | None:
    """What the live leads scored by ``mv`` look like at ``as_of`` (reasons compare with them and
    leave out sentences most of them would get); None with fewer than LIVE_SAMPLE_MIN live leads.

    Measured once per model and :data:`LIVE_TYPICAL_DAYS` of the data's clock: in this process,
    or by the training that made ``mv`` (:func:`ready_for_live`, stored with the version).
    ``known(ids)`` may give the sample's features at ``as_of`` already built (a run scoring every
    live lead has them), rows in ``ids`` order; None reads them from the store.
    """
    key = (str(session.get_bind().engine.url), mv.version)  # one process may serve several databases (tests)
    cached = _live_typical_cache.get(key)
    if cached is not None and abs(as_of - cached[0]) < timedelta(days=LIVE_TYPICAL_DAYS):
        return cached[1]
    stored = (mv.params or {}).get(LIVE_TYPICAL_KEY)
    if isinstance(stored, dict) and isinstance(stored.get("as_of"), str) and stored.get("typical"):
        at = datetime.fromisoformat(stored["as_of"])
        if abs(as_of - at) < timedelta(days=LIVE_TYPICAL_DAYS):
            _live_typical_cache[key] = (at, stored["typical"])
            return cast(dict[str, Any], stored["typical"])
    ids = live_sample(live_lead_ids(session))
    if ids is None:
        return None
    frame = known(ids) if known is not None else None
    if frame is None:
        _, frame = lead_features(session, ids, as_of)
    typical = _typical_of(registry.load_model(mv), mv.segment, frame)
    if len(_live_typical_cache) > 64:
        _live_typical_cache.clear()
    _live_typical_cache[key] = (as_of, typical)
    return typical


def live_sample(ids: Sequence[int]) -> list[int] | None:
    """The live leads typical values are measured on: :data:`LIVE_SAMPLE` of ``ids`` (all live
    leads, in id order), evenly spread; None with fewer than :data:`LIVE_SAMPLE_MIN`."""
    if len(ids) < LIVE_SAMPLE_MIN:
        return None
    if len(ids) > LIVE_SAMPLE:
        return [ids[i] for i in np.linspace(0, len(ids) - 1, LIVE_SAMPLE).round().astype(int)]
    return list(ids)


def _in_segment(frame: pd.DataFrame, segment: str | None) -> pd.DataFrame:
    """The rows of a segment model's segment ("feature=value"); every row for the global model."""
    if segment and "=" in segment:
        feature, _, value = segment.partition("=")
        if feature in frame.columns:
            return frame[(frame[feature].astype("string") == value).fillna(False).to_numpy()]
    return frame


def _typical_of(model: TrainedModel, segment: str | None, sample: pd.DataFrame) -> dict[str, Any] | None:
    """The typical values of the live sample's rows a model scores (None: too few of them)."""
    frame = _in_segment(sample, segment)
    return typical_values(align_to_spec(frame, model.spec)) if len(frame) >= LIVE_SAMPLE_MIN else None


@dataclass
class LiveLeads:
    """Every live lead's features at ``as_of`` (rows in ``ids`` order), read once by a training."""

    as_of: datetime
    ids: list[int]
    frame: pd.DataFrame


def read_live_leads(session: Session, as_of: datetime) -> LiveLeads:
    """The features of every live lead at ``as_of``, read in batches of one id list each."""
    ids = live_lead_ids(session)
    frames = [lead_features(session, ids[i : i + IDS_PER_STATEMENT], as_of)[1]
              for i in range(0, len(ids), IDS_PER_STATEMENT)]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return LiveLeads(as_of=as_of, ids=ids, frame=frame)


def ready_for_live(model: TrainedModel, segment: str | None, live: LiveLeads | None) -> dict[str, Any]:
    """Before a new model is registered: what its first scoring run would otherwise work out, from
    the live leads it will score (those of its segment). Its SHAP tables get the leaves those
    leads reach (:mod:`scoring.leaf_shap`; stored with the model, so no process fills them
    again), and the returned params hold their typical values (:data:`LIVE_TYPICAL_KEY`, what
    :func:`live_typical` gives for :data:`LIVE_TYPICAL_DAYS`). Nothing with no live leads."""
    if live is None or live.frame.empty:
        return {}
    rows = _in_segment(live.frame, segment)
    if len(rows):
        model.warm(align_to_spec(rows, model.spec))
    sample = live_sample(live.ids)
    if sample is None:
        return {}
    at = np.searchsorted(np.asarray(live.ids, dtype="int64"), np.asarray(sample, dtype="int64"))
    typical = _typical_of(model, segment, live.frame.iloc[at].reset_index(drop=True))
    return {LIVE_TYPICAL_KEY: {"as_of": live.as_of.isoformat(), "typical": typical}} if typical else {}
