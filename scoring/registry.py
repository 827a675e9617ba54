"""The model registry: every trained model is a ``model_version`` row; one champion per segment.

Status moves candidate → champion → retired. :func:`promote` makes a version the champion of its
segment (the old champion retires); :func:`rollback` brings back the champion that preceded the
current one. Versions are never deleted. ``segment`` None is the global model; a per-segment
model is named ``"<feature>=<value>"`` (e.g. ``"seniority=VP"``) and scoring falls back to the
global champion wherever a segment has none.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.errors import LeadscoreError
from scoring.frame import FeatureSpec
from scoring.monitoring.stats import MIN_PERFORMANCE_POSITIVES
from scoring.training import TrainedModel, TrainingResult
from store.models import ModelStatus, ModelVersion
from store.types import json_safe

CANDIDATE, CHAMPION, RETIRED, SHADOW = (ModelStatus.candidate, ModelStatus.champion, ModelStatus.retired,
                                         ModelStatus.shadow)
_CACHE_SIZE = 16
_cache: OrderedDict[tuple[int, str], TrainedModel] = OrderedDict()
_cache_lock = threading.Lock()


class RegistryError(LeadscoreError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to)."""


def segment_name(feature: str, value: str) -> str:
    """The registry's name of a segment: ``"seniority=VP"``."""
    return f"{feature}={value}"


def _new_version(session: Session, artifact: bytes, now: datetime) -> str:
    digest = hashlib.sha256(artifact).hexdigest()
    for width in range(4, 17):
        version = f"m{now:%Y%m%d-%H%M%S}-{digest[:width]}"
        if session.scalar(select(ModelVersion.id).where(ModelVersion.version == version)) is None:
            return version
    raise RegistryError("could not make a unique model version name")  # 13 sha256 collisions


def register(
    session: Session,
    result: TrainingResult,
    *,
    segment: str | None = None,
    train_window: tuple[datetime | None, datetime | None],
    status: str = CANDIDATE,
    notes: str | None = None,
    extra_params: dict[str, Any] | None = None,
) -> ModelVersion:
    """Store a training result as a new model version (``status`` candidate unless told).

    The version string is ``m<UTC time>-<artifact hash prefix>``, unique. Registering a champion
    retires the segment's previous champion. The model card is rendered and stored with it.
    """
    from scoring.card_render import render_model_card

    if status not in (CANDIDATE, CHAMPION):
        raise ValueError("register a model as 'candidate' or 'champion'")
    artifact = result.model.to_bytes()
    now = datetime.now(UTC)
    version = _new_version(session, artifact, now)
    params = dict(result.params)
    params["spec"] = result.spec.to_dict()
    params["split"] = result.split
    if extra_params:
        params.update(extra_params)
    start, end = train_window
    card = render_model_card(result, version=version, train_window=(start, end), notes=notes or "")
    mv = ModelVersion(
        version=version,
        status=CANDIDATE,
        segment=segment,
        family=result.model.family,
        artifact=artifact,
        metrics=json_safe(result.metrics),
        audit=json_safe(result.audit.to_dict()),
        features=list(result.spec.columns),
        params=json_safe(params),
        train_start=start,
        train_end=end,
        card=card,
        notes=notes,
        created_at=now,
    )
    session.add(mv)
    session.flush()
    if status == CHAMPION:
        promote(session, version)
    return mv


def get_version(session: Session, version: str) -> ModelVersion:
    """The model version named ``version``; raises :class:`RegistryError` if there is none."""
    mv = session.scalar(select(ModelVersion).where(ModelVersion.version == version))
    if mv is None:
        raise RegistryError(f"unknown model version {version!r} (see leadscore models list)")
    return mv


def champion(session: Session, segment: str | None = None) -> ModelVersion | None:
    """The champion of ``segment`` (None: the global model), or None if there is none yet."""
    stmt = select(ModelVersion).where(ModelVersion.status == CHAMPION)
    stmt = stmt.where(ModelVersion.segment.is_(None) if segment is None else ModelVersion.segment == segment)
    return session.scalars(stmt.order_by(ModelVersion.promoted_at.desc(), ModelVersion.id.desc())).first()


def segment_champions(session: Session) -> dict[str, ModelVersion]:
    """Every per-segment champion by segment name (the global model is not included)."""
    rows = session.scalars(
        select(ModelVersion).where(ModelVersion.status == CHAMPION, ModelVersion.segment.is_not(None))
    ).all()
    return {mv.segment: mv for mv in rows if mv.segment is not None}


def _record_promotion(mv: ModelVersion, action: str, by: str | None, when: datetime) -> None:
    # Who made a version champion, kept with the version (reassigned so the JSON column is saved).
    history = list((mv.params or {}).get("promotions") or [])
    history.append({"action": action, "by": by or "unknown", "at": when.isoformat()})
    mv.params = {**(mv.params or {}), "promotions": history}


def promote(session: Session, version: str, *, by: str | None = None) -> ModelVersion:
    """Make ``version`` the champion of its segment; the previous champion becomes retired.

    ``by`` (the user or "cli") is recorded in the version's ``params["promotions"]``.
    """
    mv = get_version(session, version)
    if mv.status == CHAMPION:
        return mv
    current = champion(session, mv.segment)
    if current is not None:
        current.status = RETIRED
    mv.status = CHAMPION
    mv.promoted_at = datetime.now(UTC)
    if by is not None:
        _record_promotion(mv, "promote", by, mv.promoted_at)
    session.flush()
    return mv


def shadow(session: Session, version: str) -> tuple[ModelVersion, list[ModelVersion]]:
    """Run ``version`` in shadow: from the next scoring run it scores the same leads as the champion,
    its scores are stored (``shadow_score``) and never written to the CRM. One shadow per segment:
    a previous shadow stops (returned second) and goes back to what it was, a candidate, or retired
    when it was a champion once (it stays in the rollback chain, :func:`rollback_target`)."""
    mv = get_version(session, version)
    if mv.status == CHAMPION:
        raise RegistryError(f"{version} is the champion: only a challenger can run in shadow")
    if mv.status == SHADOW:
        return mv, []
    stmt = select(ModelVersion).where(ModelVersion.status == SHADOW)
    stmt = stmt.where(ModelVersion.segment.is_(None) if mv.segment is None else ModelVersion.segment == mv.segment)
    replaced = list(session.scalars(stmt))
    for previous in replaced:
        previous.status = RETIRED if previous.promoted_at is not None else CANDIDATE
    mv.status = SHADOW
    session.flush()
    return mv, replaced


def shadows(session: Session) -> list[ModelVersion]:
    """The versions running in shadow (global first)."""
    rows = list(session.scalars(select(ModelVersion).where(ModelVersion.status == SHADOW)))
    return sorted(rows, key=lambda mv: (mv.segment is not None, mv.segment or ""))


def rollback(session: Session, segment: str | None = None, *, by: str | None = None) -> ModelVersion:
    """Retire the current champion and bring back the one promoted before it.

    "Before" is by promotion time, so repeated rollbacks walk further back rather than
    alternating between two versions.
    """
    current = champion(session, segment)
    if current is None:
        raise RegistryError("no champion model to roll back")
    previous = rollback_target(session, current)
    if previous is None:
        raise RegistryError(f"no earlier champion to roll back to (current: {current.version})")
    current.status = RETIRED
    previous.status = CHAMPION
    if by is not None:
        _record_promotion(previous, "rollback", by, datetime.now(UTC))
    session.flush()
    return previous


def rollback_target(session: Session, current: ModelVersion) -> ModelVersion | None:
    """The champion promoted before ``current`` in its segment (what :func:`rollback` brings back),
    None when there is none (the console offers no rollback then)."""
    # A former champion running in shadow is still one (:func:`shadow`).
    stmt = select(ModelVersion).where(
        ModelVersion.status.in_([RETIRED, SHADOW]),
        ModelVersion.promoted_at.is_not(None),
        ModelVersion.id != current.id,
    )
    segment = current.segment
    stmt = stmt.where(ModelVersion.segment.is_(None) if segment is None else ModelVersion.segment == segment)
    if current.promoted_at is not None:
        stmt = stmt.where(ModelVersion.promoted_at < current.promoted_at)
    return session.scalars(stmt.order_by(ModelVersion.promoted_at.desc(), ModelVersion.id.desc())).first()


def list_versions(session: Session) -> list[ModelVersion]:
    """All model versions, newest first."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())))


def load_model(mv: ModelVersion) -> TrainedModel:
    """The trained model of a version, deserialised once per process (cached by id and version)."""
    key = (mv.id, mv.version)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    model = TrainedModel.from_bytes(mv.artifact)
    with _cache_lock:
        _cache[key] = model
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return model


def stored_spec(mv: ModelVersion) -> FeatureSpec:
    """The feature spec a version was trained with."""
    spec = (mv.params or {}).get("spec")
    if isinstance(spec, dict):
        return FeatureSpec.from_dict(spec)
    return load_model(mv).spec


# Under a list of versions with more than one test AUC (`models list`, the console's Model page):
# each version's test leads are the latest of its own training window, so two AUCs are of two sets
# of leads (a trial read a lower AUC as a worse model).
AUC_ACROSS_VERSIONS = ("test AUCs are each measured on the version's own test leads, so they do not compare across "
                       "rows; `leadscore retrain` compares two versions on the same held-out leads")


def auc_caveat(split: dict[str, Any] | None) -> str | None:
    """Why a test AUC cannot be judged, from its split's counts (``params["split"]``): too few test
    leads of one class, below the bar the monitor holds the live AUC to. None when there are
    enough, or when the split's counts were not recorded."""
    split = split or {}
    positives, rows = split.get("test_positives"), split.get("test_rows")
    if not isinstance(positives, int) or not isinstance(rows, int):
        return None
    negatives = rows - positives
    if min(positives, negatives) >= MIN_PERFORMANCE_POSITIVES:
        return None
    fewer = f"{positives} converted" if positives <= negatives else f"{negatives} unconverted"
    plural = "s" if min(positives, negatives) != 1 else ""
    return (f"the test AUC rests on {fewer} test lead{plural}: too few to judge "
            f"({MIN_PERFORMANCE_POSITIVES} of each class needed)")


def short_note(notes: str | None, limit: int = 100) -> str:
    """A version's notes as one line of a list: the first clause (up to the first "; "), without
    its parenthetical asides, ending on a whole word and with " …" where anything was left out
    (`leadscore models show` and the console's full note have the rest). Never cut mid-word."""
    text = " ".join((notes or "").split())
    if len(text) <= limit:
        return text
    first = text.split("; ", 1)[0]
    first = re.sub(r"\s*\([^()]*\)", "", first).strip()
    if len(first) > limit - 2:
        cut = first[: limit - 1]
        first = cut[: cut.rfind(" ")] if " " in cut else cut[: limit - 2]
        first = first.rstrip(" ,:;")
    return first + " …"


def recorded_auc_caveat(mv: ModelVersion) -> str | None:
    """:func:`auc_caveat` of the split recorded with the version at training."""
    return auc_caveat((mv.params or {}).get("split"))


def recorded_test_auc(mv: ModelVersion) -> float | None:
    """The selected family's test AUC recorded at training time (None if not recorded)."""
    family = mv.family
    value = (mv.metrics or {}).get(family, {}).get("test", {}).get("auc")
    return float(value) if isinstance(value, int | float) else None
