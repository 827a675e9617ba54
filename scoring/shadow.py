"""Shadow challengers: the seed's A/B test, live.

A challenger put in shadow (``leadscore models shadow VERSION``) scores the same leads as the
champion in every scoring run (:func:`score_in_shadow`, called by the scoring service); its
scores go to ``shadow_score`` only -- no outbox row, no routing, nothing reaches the CRM. As the
leads' outcomes arrive, :func:`scoring.monitor.shadow_comparison` compares both models on the **same** leads, each
with the score it gave at :data:`scoring.monitor.COHORT_AGE_DAYS` days old: AUC of both and a
paired bootstrap over leads. The monitor reports it daily; ``models promote`` shows it.
Global shadows only: a segment model in shadow is not scored (future work).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd
from sqlalchemy import insert
from sqlalchemy.orm import Session

from scoring import registry
from scoring.features import align_to_spec
from store.models import ShadowScore


def score_in_shadow(session: Session, frame: pd.DataFrame, lead_ids: Sequence[int], as_of: datetime) -> int:
    """Score ``frame`` (features of ``lead_ids``, as the champion saw them) with every global
    shadow model and store the scores stamped with the run's CRM time. Returns rows written."""
    written = 0
    for mv in registry.shadows(session):
        if mv.segment is not None:
            continue
        model = registry.load_model(mv)
        proba = np.asarray(model.predict_proba(align_to_spec(frame, model.spec)), dtype="float64")
        rows = [{"lead_id": int(i), "model_version_id": mv.id, "probability": float(p), "scored_at": as_of}
                for i, p in zip(lead_ids, proba, strict=True)]
        for start in range(0, len(rows), 1000):
            session.execute(insert(ShadowScore), rows[start : start + 1000])
        written += len(rows)
    return written


__all__ = ["score_in_shadow"]
