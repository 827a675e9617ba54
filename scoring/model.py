"""The stored model: :class:`TrainedModel` and the family estimators it wraps.

:class:`TrainedModel` is what gets stored (``model_version.artifact``): it takes the raw feature
frame (it calls :func:`scoring.frame.prepare_frame` itself), returns calibrated probabilities,
raw log-odds and per-feature contributions that add up to the raw log-odds. Each family's
estimator (CatBoost, logistic regression, random forest, the rules points model) computes raw
log-odds and contributions its own way; :mod:`scoring.training` fits them.

Artifacts pickled before this module existed name the estimators under ``scoring.training``,
which still imports them, so they load unchanged.
"""

from __future__ import annotations

import math
import pickle  # noqa: S403 - artifacts are written and read only by leadscore itself
import threading
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from scoring.calibration import Calibrator
from scoring.frame import FeatureSpec, prepare_frame
from scoring.leaf_shap import LeafShap, catboost_shap, symmetric

ARTIFACT_MAGIC = b"LEADSCORE-MODEL-1\n"
BIAS = "__bias__"
THREADS = 2
_EPS = 1e-6
_LEAF_SHAP_LOCK = threading.Lock()

def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype="float64"), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype="float64")))


# --------------------------------------------------------------------------- family estimators


class _CatBoostEstimator:
    """CatBoost with native categoricals; contributions are exact SHAP values (by leaf for
    symmetric trees: :mod:`scoring.leaf_shap`)."""

    def __init__(self, model: Any, spec: FeatureSpec) -> None:
        self.model = model
        self.cat_idx = list(range(len(spec.numeric), len(spec.columns)))
        self._leaf_shap: LeafShap | None = LeafShap(model) if symmetric(model) else None

    def leaf_shap(self) -> LeafShap | None:
        """The model's SHAP tables (None for trees that are not symmetric). Artifacts pickled
        before the tables existed get empty ones, filled as they explain rows."""
        if "_leaf_shap" not in self.__dict__:
            with _LEAF_SHAP_LOCK:
                if "_leaf_shap" not in self.__dict__:
                    self._leaf_shap = LeafShap(self.model) if symmetric(self.model) else None
        return self._leaf_shap

    def _pool(self, x: Any) -> Any:
        from catboost import Pool  # heavy import (~1 s), paid only where a CatBoost model scores

        return x if isinstance(x, Pool) else Pool(x, cat_features=self.cat_idx)

    def prepare(self, x: pd.DataFrame) -> Any:
        """The rows as a CatBoost pool, built once for a prediction and its SHAP values."""
        return self._pool(x)

    def raw(self, x: Any) -> np.ndarray:
        return np.asarray(self.model.predict(self._pool(x), prediction_type="RawFormulaVal"), dtype="float64")

    def catboost_contributions(self, x: Any) -> np.ndarray:
        """CatBoost's own SHAP values (``get_feature_importance``), not looked up by leaf: what
        the leaf tables reproduce, and what ``bench/scoring.py`` compares with."""
        return catboost_shap(self.model, self._pool(x), THREADS)

    def warm(self, x: Any) -> None:
        """The SHAP tables filled for the leaves these rows reach (:meth:`LeafShap.fill`)."""
        tables = self.leaf_shap()
        if tables is not None and tables.usable:
            tables.fill(self.model, self._pool(x))

    def contributions(self, x: Any) -> np.ndarray:
        # One column per feature plus the expected value last; rows sum to the raw prediction.
        tables = self.leaf_shap()
        if tables is None:
            return catboost_shap(self.model, self._pool(x), THREADS)
        return tables.values(self.model, self._pool(x), THREADS)


class TrainingRange(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Clips a numeric column to the range it had in training (NaN stays NaN for the imputer).

    The examples are leads at 14 days, so ``days_since_last_engagement`` never exceeds 14 there,
    while a live lead can have been quiet for 470 days. A tree puts 470 where it puts 14; a linear
    model extrapolates: 470 days sat 110 standard deviations out and gave a long-quiet lead a
    likelihood of 100 % (a 200-lead crmsim trial, docs/model.md "Point in time"). Clipped, a value
    outside the training range counts as the nearest value the model has seen.
    """

    def fit(self, x: Any, y: Any = None) -> TrainingRange:
        values = np.asarray(x, dtype="float64")
        seen = ~np.isnan(values)
        any_seen = seen.any(axis=0)  # a column never seen stays unclipped
        self.low_ = np.where(any_seen, np.where(seen, values, np.inf).min(axis=0), -np.inf)
        self.high_ = np.where(any_seen, np.where(seen, values, -np.inf).max(axis=0), np.inf)
        self.n_features_in_ = values.shape[1]
        return self

    def transform(self, x: Any) -> np.ndarray:
        return np.clip(np.asarray(x, dtype="float64"), self.low_, self.high_)


def _column_transformer(spec: FeatureSpec, *, scale: bool, one_hot: bool) -> ColumnTransformer:
    """One transformer per feature, so ``output_indices_`` maps output columns back to features."""
    parts: list[tuple[str, Any, list[str]]] = []
    for i, col in enumerate(spec.numeric):
        steps: list[tuple[str, Any]] = [
            ("range", TrainingRange()),
            ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
        ]
        if scale:
            steps.append(("scale", StandardScaler()))
        parts.append((f"n{i}", Pipeline(steps), [col]))
    for i, col in enumerate(spec.categorical):
        encoder: Any
        if one_hot:
            encoder = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=10, sparse_output=False)
        else:
            encoder = OrdinalEncoder(
                handle_unknown="use_encoded_value", unknown_value=-1, min_frequency=10, dtype=np.float64
            )
        parts.append((f"c{i}", encoder, [col]))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def _feature_map(pre: ColumnTransformer, spec: FeatureSpec) -> np.ndarray:
    """0/1 matrix (transformed columns × features) telling which feature each column came from."""
    names = [f"n{i}" for i in range(len(spec.numeric))] + [f"c{i}" for i in range(len(spec.categorical))]
    width = max(sl.stop for sl in pre.output_indices_.values())
    mapping = np.zeros((width, len(names)))
    for j, name in enumerate(names):
        sl = pre.output_indices_[name]
        mapping[sl.start : sl.stop, j] = 1.0
    return mapping


class _LogisticEstimator:
    """One-hot + impute/scale + logistic regression; contributions are exact linear terms.

    Each term is ``coef × (x − training mean)``, so a contribution says how far this lead's value
    moves the log-odds from an average lead; the bias is the log-odds of the average lead.
    """

    def __init__(self, pre: ColumnTransformer, lr: LogisticRegression, spec: FeatureSpec, x_train: pd.DataFrame):
        self.pre = pre
        self.lr = lr
        self.mapping = _feature_map(pre, spec)
        self.means = np.asarray(pre.transform(x_train), dtype="float64").mean(axis=0)

    def raw(self, x: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.lr.decision_function(self.pre.transform(x)), dtype="float64")

    def contributions(self, x: pd.DataFrame) -> np.ndarray:
        xt = np.asarray(self.pre.transform(x), dtype="float64")
        coef = self.lr.coef_[0]
        per_feature = ((xt - self.means) * coef) @ self.mapping
        bias = float(self.lr.intercept_[0] + self.means @ coef)
        return np.column_stack([per_feature, np.full(len(x), bias)])


class _ForestEstimator:
    """Ordinal-encoded random forest; contributions are tree-path (Saabas) contributions.

    Tree paths decompose the forest's probability exactly: average root value + Σ changes in
    node value at each split, attributed to the split feature. Contributions are then moved to
    the log-odds scale by one per-row factor (logit(p) − logit(p₀)) / (p − p₀), a documented
    approximation that keeps the exact sum: rows add up to :meth:`raw`.
    """

    def __init__(self, pre: ColumnTransformer, forest: RandomForestClassifier, spec: FeatureSpec) -> None:
        self.pre = pre
        self.forest = forest
        # Parallel prediction sums trees in a varying order (last-bit differences between calls):
        # score single-threaded so the same lead always gets the same number.
        self.forest.n_jobs = 1
        self.mapping = _feature_map(pre, spec)
        self._deltas: list[sparse.csr_matrix] = []
        self._roots: list[float] = []
        n_cols = self.mapping.shape[0]
        for est in forest.estimators_:
            tree = est.tree_
            value = tree.value[:, 0, :]
            positive = value[:, 1] / value.sum(axis=1)
            # Each child node gets (its value − its parent's value) under the parent's split feature.
            split = tree.children_left != -1
            parents = np.flatnonzero(split)
            parents = np.concatenate([parents, parents])
            children = np.concatenate([tree.children_left[split], tree.children_right[split]])
            rows, cols = children, tree.feature[parents]
            data = positive[children] - positive[parents]
            delta = sparse.csr_matrix((data, (rows, cols)), shape=(tree.node_count, n_cols))
            self._deltas.append(delta)
            self._roots.append(float(positive[0]))

    def _proba(self, xt: np.ndarray) -> np.ndarray:
        return np.asarray(self.forest.predict_proba(xt)[:, 1], dtype="float64")

    def raw(self, x: pd.DataFrame) -> np.ndarray:
        return _logit(self._proba(np.asarray(self.pre.transform(x), dtype="float64")))

    def contributions(self, x: pd.DataFrame) -> np.ndarray:
        xt = np.asarray(self.pre.transform(x), dtype="float64")
        total = np.zeros((len(x), self.mapping.shape[0]))
        for est, delta in zip(self.forest.estimators_, self._deltas, strict=True):
            total += np.asarray((est.decision_path(xt) @ delta).todense())
        prob_contrib = (total / len(self._deltas)) @ self.mapping
        p0 = float(np.mean(self._roots))
        p = p0 + prob_contrib.sum(axis=1)
        raw = _logit(p)
        bias = float(_logit(np.array([p0]))[0])
        diff = p - p0
        derivative = 1.0 / (min(max(p0, _EPS), 1 - _EPS) * (1 - min(max(p0, _EPS), 1 - _EPS)))
        safe = np.abs(diff) > 1e-12
        factor = np.where(safe, (raw - bias) / np.where(safe, diff, 1.0), derivative)
        return np.column_stack([prob_contrib * factor[:, None], np.full(len(x), bias)])


class _RulesEstimator:
    """Transparent points model for small data: each feature value earns smoothed log-odds points.

    Numerics are cut into up to four quantile bins (plus a missing bin); categoricals keep levels
    seen at least 5 times. A value's points are its bin's smoothed weight of evidence, shrunk by
    1/√(number of features) because the features overlap. Score = prior log-odds + Σ points.
    """

    def __init__(self, spec: FeatureSpec, x: pd.DataFrame, y: np.ndarray) -> None:
        self.spec = spec
        self.prior = float(np.log((y.sum() + 1) / (len(y) - y.sum() + 1)))
        self.edges: dict[str, np.ndarray] = {}
        self.points: dict[str, dict[str, float]] = {}
        shrink = 1.0 / math.sqrt(max(1, len(spec.columns)))
        base_rate = (y.sum() + 1) / (len(y) + 2)
        for col in spec.columns:
            if col in spec.numeric:
                values = x[col].to_numpy(dtype="float64")
                finite = values[~np.isnan(values)]
                self.edges[col] = np.unique(np.quantile(finite, [0.25, 0.5, 0.75])) if finite.size else np.array([])
            keys = self._keys(col, x[col])
            table: dict[str, float] = {}
            frame = pd.DataFrame({"k": keys, "y": y}).groupby("k")["y"].agg(["sum", "count"])
            for key, row in frame.iterrows():
                if row["count"] < 5 and col in spec.categorical:
                    continue
                rate = (row["sum"] + 2 * base_rate) / (row["count"] + 2)
                table[str(key)] = shrink * float(np.log(rate / (1 - rate)) - np.log(base_rate / (1 - base_rate)))
            self.points[col] = table

    def _keys(self, col: str, s: pd.Series) -> np.ndarray:
        if col in self.spec.numeric:
            values = s.to_numpy(dtype="float64")
            bins = np.searchsorted(self.edges[col], values, side="right")
            return np.where(np.isnan(values), "missing", np.char.add("bin", bins.astype(str)))
        return s.astype(str).to_numpy()

    def contributions(self, x: pd.DataFrame) -> np.ndarray:
        cols = [
            np.array([self.points[col].get(k, 0.0) for k in self._keys(col, x[col])], dtype="float64")
            for col in self.spec.columns
        ]
        return np.column_stack([*cols, np.full(len(x), self.prior)])

    def raw(self, x: pd.DataFrame) -> np.ndarray:
        return self.contributions(x).sum(axis=1)


# --------------------------------------------------------------------------- the stored model


class TrainedModel:
    """A fitted, calibrated model of one family. Picklable; stored as ``model_version.artifact``."""

    def __init__(
        self,
        family: str,
        spec: FeatureSpec,
        params: dict[str, Any],
        estimator: Any,
        calibrator: Calibrator,
    ) -> None:
        self.family = family
        self.spec = spec
        self.params = params
        self.estimator = estimator
        self.calibrator = calibrator

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """Calibrated P(convert) per row of a raw feature frame."""
        return self.prepare(df).proba()

    def raw_log_odds(self, df: pd.DataFrame) -> np.ndarray:
        """Uncalibrated model output on the log-odds scale."""
        return self.prepare(df).raw()

    def contributions(self, df: pd.DataFrame) -> pd.DataFrame:
        """Per-feature contributions to :meth:`raw_log_odds`; columns ``spec.columns + ["__bias__"]``.

        Rows sum to ``raw_log_odds(df)``. Costly for CatBoost (SHAP ≈ 30× a prediction): call
        it only for leads whose reasons are being written.
        """
        return self.prepare(df).contributions()

    def prepare(self, df: pd.DataFrame) -> PreparedRows:
        """The rows of a raw feature frame encoded once (for CatBoost, one pool): a prediction
        and the contributions of the same rows then share that work (scoring needs both)."""
        x = prepare_frame(df, self.spec)
        encode = getattr(self.estimator, "prepare", None)
        return PreparedRows(self, df.index, encode(x) if encode is not None else x)

    def warm(self, df: pd.DataFrame) -> None:
        """Work the model's explanations of these rows would do once, done now, kept with the model
        (pickled with it): for CatBoost, the SHAP tables of the leaves the rows reach."""
        warm = getattr(self.estimator, "warm", None)
        if warm is not None and len(df):
            warm(self.prepare(df).encoded)

    def to_bytes(self) -> bytes:
        """Serialise (pickle with a format header)."""
        return ARTIFACT_MAGIC + pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def from_bytes(b: bytes) -> TrainedModel:
        """Inverse of :meth:`to_bytes`. Only load artifacts leadscore wrote itself (pickle)."""
        if not b.startswith(ARTIFACT_MAGIC):
            raise ValueError("not a leadscore model artifact")
        model = pickle.loads(b[len(ARTIFACT_MAGIC) :])  # noqa: S301 - our own artifact, see docstring
        if not isinstance(model, TrainedModel):
            raise ValueError("artifact does not hold a TrainedModel")
        return model


class PreparedRows:
    """Rows prepared by :meth:`TrainedModel.prepare`. Not thread-safe: one thread at a time (a
    scoring run predicts in its thread and hands the rows to its model thread for SHAP)."""

    def __init__(self, model: TrainedModel, index: pd.Index, rows: Any) -> None:
        self.model = model
        self.index = index
        self._rows = rows

    def raw(self) -> np.ndarray:
        return np.asarray(self.model.estimator.raw(self._rows), dtype="float64")

    def proba(self) -> np.ndarray:
        return self.model.calibrator.transform(self.raw())

    @property
    def encoded(self) -> Any:
        """The rows as the estimator takes them (for CatBoost, the pool)."""
        return self._rows

    def contributions(self) -> pd.DataFrame:
        values = self.model.estimator.contributions(self._rows)
        return pd.DataFrame(values, index=self.index, columns=[*self.model.spec.columns, BIAS])
