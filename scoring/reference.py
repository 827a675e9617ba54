"""The champion's reference leads: what a score of 1-99 ranks a lead against.

A model version stores, next to its artifact, the calibrated probabilities of its reference
population (the validation and test leads of its own split: the latest, most live-like leads
it never trained on) and their fit and engagement sums (see :mod:`scoring.subscores`). A lead's
*score* is the share of those reference leads it outranks, in percent, clipped to 1-99. The
reference is fixed with the version, so a lead's score does not move when other leads change,
and a new champion does not shift every score by a changed base rate.

The reference is stored in ``model_version.params["score_reference"]``; versions registered without
one (older versions, challengers trained elsewhere) get it built once, from the store, the first
time they score (:func:`scoring.champions.ensure_score_reference`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from config.app_config import TOP_SCORE
from scoring.features import align_to_spec
from scoring.model import TrainedModel
from scoring.reasons import typical_values
from scoring.subscores import split_contributions
from scoring.training import split_frame
from store.models import ModelVersion

REFERENCE_KEY = "score_reference"
# Enough points that a rank is exact to well under one score point, small enough for a JSON column.
MAX_POINTS = 5000


def _sorted_sample(values: np.ndarray) -> list[float]:
    v = np.sort(np.asarray(values, dtype="float64")[np.isfinite(values)])
    if len(v) > MAX_POINTS:
        # Evenly spaced order statistics keep every quantile of the full population.
        v = v[np.linspace(0, len(v) - 1, MAX_POINTS).round().astype(int)]
    return [round(float(x), 7) for x in v]


def build_reference(
    model: TrainedModel,
    rows: pd.DataFrame,
    *,
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """The reference of ``model`` from its reference rows (raw feature frame, one row per lead).

    Holds the sorted probabilities, fit sums and engagement sums, and what a typical reference
    lead looks like (used by the reasons: "most leads have none").
    """
    x = align_to_spec(rows, model.spec)
    probs = model.predict_proba(x)
    contrib = model.contributions(x)
    fit, engagement = split_contributions(contrib)
    out: dict[str, Any] = {
        "n": int(len(rows)),
        "probability": _sorted_sample(probs),
        "fit": _sorted_sample(fit),
        "engagement": _sorted_sample(engagement),
        "typical": typical_values(x),
    }
    if labels is not None and len(labels) == len(rows):
        out["positives"] = int(np.asarray(labels).sum())
    return out


def reference_rows(frame: pd.DataFrame, y: np.ndarray, *, time_col: str | None, seed: int) -> np.ndarray:
    """Positions of the validation and test rows of the split ``train_and_compare`` makes."""
    _train, val, test, _ = split_frame(frame, y, time_col=time_col, seed=seed)
    return np.concatenate([val, test])


def rank(values: np.ndarray, reference: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-99: the percentage of ``reference`` each value outranks (ties count half)."""
    ref = np.asarray(reference, dtype="float64")
    v = np.nan_to_num(np.asarray(values, dtype="float64"), nan=-np.inf)
    if len(ref) == 0:
        return np.full(v.shape, 50, dtype="int64")
    below = np.searchsorted(ref, v, side="left")
    upto = np.searchsorted(ref, v, side="right")
    share = (below + 0.5 * (upto - below)) / len(ref)
    return np.clip(np.rint(100.0 * share), 1, TOP_SCORE).astype("int64")


def stored_reference(mv: ModelVersion) -> Mapping[str, Any] | None:
    ref = (mv.params or {}).get(REFERENCE_KEY)
    return ref if isinstance(ref, dict) and ref.get("probability") else None
