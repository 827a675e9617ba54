"""Train CatBoost and two baselines on one split, compare them on validation, keep the best.

Flow of :func:`train_and_compare`: audit (refuses too little data) → split 70/15/15 (by time
when ``time_col`` is given, else stratified and seeded) → for each family a small
hyper-parameter search scored by validation AUC → every family calibrated on validation
(Platt by default, see :mod:`scoring.calibration`) → selection by the validation metric →
test metrics computed once, at the end, for every family.

:class:`TrainedModel` is what gets stored: it takes the raw feature frame (it calls
:func:`scoring.frame.prepare_frame` itself), returns calibrated probabilities, raw log-odds and
per-feature contributions that add up to the raw log-odds.
"""

from __future__ import annotations

import math
import pickle  # noqa: S403 - artifacts are written and read only by leadscore itself
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from scoring.audit import (
    AuditReport,
    DataError,
    InsufficientDataError,
    audit_frame,
    binary_target,
)
from scoring.calibration import Calibrator, fit_calibrator
from scoring.frame import MISSING_TOKEN, FeatureSpec, prepare_frame
from scoring.metrics import classification_metrics

FAMILIES = ("catboost", "logistic_regression", "random_forest")
RULES = "rules"
ARTIFACT_MAGIC = b"LEADSCORE-MODEL-1\n"
BIAS = "__bias__"
SELECTION_METRICS = ("auc", "pr_auc", "precision_at_10pct", "recall_at_10pct", "lift_top_decile", "brier", "ece")
THREADS = 2
_EPS = 1e-6

DEFAULT_CATBOOST_GRID: tuple[dict[str, Any], ...] = (
    {"depth": 4, "learning_rate": 0.08},
    {"depth": 6, "learning_rate": 0.05},
    {"depth": 6, "learning_rate": 0.1},
)
LOGISTIC_C_GRID = (0.01, 0.1, 1.0, 10.0)
FOREST_GRID: tuple[dict[str, Any], ...] = (
    {"min_samples_leaf": 3, "max_features": "sqrt"},
    {"min_samples_leaf": 10, "max_features": 0.3},
)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype="float64"), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype="float64")))


# --------------------------------------------------------------------------- family estimators


class _CatBoostEstimator:
    """CatBoost with native categoricals; contributions are exact SHAP values."""

    def __init__(self, model: Any, spec: FeatureSpec) -> None:
        self.model = model
        self.cat_idx = list(range(len(spec.numeric), len(spec.columns)))

    def _pool(self, x: pd.DataFrame) -> Any:
        from catboost import Pool

        return Pool(x, cat_features=self.cat_idx)

    def raw(self, x: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict(self._pool(x), prediction_type="RawFormulaVal"), dtype="float64")

    def contributions(self, x: pd.DataFrame) -> np.ndarray:
        # One column per feature plus the expected value last; rows sum to the raw prediction.
        shap = self.model.get_feature_importance(data=self._pool(x), type="ShapValues", thread_count=THREADS)
        return np.asarray(shap, dtype="float64")


def _column_transformer(spec: FeatureSpec, *, scale: bool, one_hot: bool) -> ColumnTransformer:
    """One transformer per feature, so ``output_indices_`` maps output columns back to features."""
    parts: list[tuple[str, Any, list[str]]] = []
    for i, col in enumerate(spec.numeric):
        steps: list[tuple[str, Any]] = [
            ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True))
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
        return self.calibrator.transform(self.raw_log_odds(df))

    def raw_log_odds(self, df: pd.DataFrame) -> np.ndarray:
        """Uncalibrated model output on the log-odds scale."""
        return np.asarray(self.estimator.raw(prepare_frame(df, self.spec)), dtype="float64")

    def contributions(self, df: pd.DataFrame) -> pd.DataFrame:
        """Per-feature contributions to :meth:`raw_log_odds`; columns ``spec.columns + ["__bias__"]``.

        Rows sum to ``raw_log_odds(df)``. Costly for CatBoost (SHAP ≈ 30× a prediction): call
        it only for leads whose reasons are being written.
        """
        values = self.estimator.contributions(prepare_frame(df, self.spec))
        return pd.DataFrame(values, index=df.index, columns=[*self.spec.columns, BIAS])

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


@dataclass
class TrainingResult:
    """Everything one training run produced; ``metrics[family]["validation"|"test"]``."""

    selected: str
    model: TrainedModel
    spec: FeatureSpec
    audit: AuditReport
    metrics: dict[str, dict[str, dict[str, Any]]]
    split: dict[str, Any]
    params: dict[str, Any]
    models: dict[str, TrainedModel] = field(default_factory=dict)


# --------------------------------------------------------------------------- split


def _parse_times(raw: pd.Series, time_col: str) -> pd.Series:
    """Timestamps of a time column; values that are not dates are a one-line DataError naming one."""
    try:
        return pd.to_datetime(raw, utc=True)
    except (ValueError, TypeError, OverflowError):
        parsed = pd.to_datetime(raw, utc=True, format="mixed", errors="coerce")
    bad = raw[parsed.isna() & raw.notna()]
    if bad.empty:
        raise DataError(f"time column {time_col!r} mixes date formats (use one, e.g. ISO 8601 2024-01-31T12:00:00)")
    raise DataError(f"time column {time_col!r}: {bad.iloc[0]!r} (data row {int(bad.index[0]) + 1}) is not a date "
                    f"or time ({len(bad)} such value{'s' if len(bad) != 1 else ''})")


def split_frame(
    df: pd.DataFrame, y: np.ndarray, *, time_col: str | None, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Positional indices of train/validation/test (70/15/15) and a description of the split.

    By time: rows ordered by ``time_col``; boundaries move forward past ties so every test row
    is at or after every validation row, which is at or after every train row. Otherwise:
    stratified on the label with ``seed``.
    """
    n = len(df)
    positions = np.arange(n)
    if time_col is not None:
        if time_col not in df.columns:
            raise DataError(f"time column {time_col!r} not found")
        raw_times = df[time_col]
        times = raw_times if pd.api.types.is_numeric_dtype(raw_times) else _parse_times(raw_times, time_col)
        if times.isna().any():
            raise DataError(f"time column {time_col!r} has {int(times.isna().sum())} missing values")
        order = np.argsort(times.to_numpy(), kind="stable")
        sorted_times = times.to_numpy()[order]

        def boundary(i: int) -> int:
            while 0 < i < n and sorted_times[i] == sorted_times[i - 1]:
                i += 1
            return i

        b1 = boundary(int(round(n * 0.70)))
        b2 = boundary(max(b1, int(round(n * 0.85))))
        train, val, test = order[:b1], order[b1:b2], order[b2:]
        info: dict[str, Any] = {"kind": "time", "time_col": time_col}
        for name, lo, hi in (("train", 0, b1), ("validation", b1, b2), ("test", b2, n)):
            if hi > lo:
                info[f"{name}_from"] = str(sorted_times[lo])
                info[f"{name}_to"] = str(sorted_times[hi - 1])
    else:
        train, rest = train_test_split(positions, test_size=0.30, random_state=seed, stratify=y)
        val, test = train_test_split(rest, test_size=0.50, random_state=seed, stratify=y[rest])
        info = {"kind": "stratified", "seed": seed}
    for name, part in (("train", train), ("validation", val), ("test", test)):
        info[f"{name}_rows"] = len(part)
        info[f"{name}_positives"] = int(y[part].sum())
        if len(part) == 0 or len(np.unique(y[part])) < 2:
            raise DataError(f"the {name} part of the split has a single class; more (or more varied) data needed")
    return np.asarray(train), np.asarray(val), np.asarray(test), info


# --------------------------------------------------------------------------- family fitting


def _fit_catboost(
    xt: pd.DataFrame,
    yt: np.ndarray,
    xv: pd.DataFrame,
    yv: np.ndarray,
    spec: FeatureSpec,
    *,
    seed: int,
    iterations: int,
    grid: Sequence[Mapping[str, Any]],
    monotone: Mapping[str, int],
    progress: Callable[[str], None],
) -> tuple[_CatBoostEstimator, dict[str, Any], float]:
    from catboost import CatBoostClassifier, Pool

    cat_idx = list(range(len(spec.numeric), len(spec.columns)))
    train_pool = Pool(xt, yt, cat_features=cat_idx)
    val_pool = Pool(xv, yv, cat_features=cat_idx)
    best: tuple[float, Any, dict[str, Any]] | None = None
    for combo in grid:
        params: dict[str, Any] = {
            "iterations": iterations,
            "loss_function": "Logloss",
            "od_type": "Iter",
            "od_wait": 50,
            "use_best_model": True,
            "random_seed": seed,
            "thread_count": THREADS,
            "allow_writing_files": False,
            "verbose": False,
            **combo,
        }
        if monotone:
            params["monotone_constraints"] = {k: int(v) for k, v in monotone.items()}
        model = CatBoostClassifier(**params)
        model.fit(train_pool, eval_set=val_pool)
        auc = float(roc_auc_score(yv, model.predict(val_pool, prediction_type="RawFormulaVal")))
        progress(f"catboost {dict(combo)}: validation AUC {auc:.4f} at {model.get_best_iteration()} trees")
        if best is None or auc > best[0]:
            chosen = {**dict(combo), "iterations_used": int(model.get_best_iteration() or 0) + 1}
            if monotone:
                chosen["monotone_constraints"] = dict(monotone)
            best = (auc, model, chosen)
    assert best is not None
    return _CatBoostEstimator(best[1], spec), best[2], best[0]


def _fit_logistic(
    xt: pd.DataFrame,
    yt: np.ndarray,
    xv: pd.DataFrame,
    yv: np.ndarray,
    spec: FeatureSpec,
    *,
    seed: int,
    progress: Callable[[str], None],
) -> tuple[_LogisticEstimator, dict[str, Any], float]:
    pre = _column_transformer(spec, scale=True, one_hot=True)
    train_t = pre.fit_transform(xt)
    val_t = pre.transform(xv)
    best: tuple[float, LogisticRegression, float] | None = None
    # Newton-Cholesky converges in a handful of steps on a few hundred dense columns (~10× faster
    # than lbfgs here); its cost grows with columns³, so very wide encodings go back to lbfgs.
    solver = "newton-cholesky" if train_t.shape[1] <= 2000 else "lbfgs"
    for c in LOGISTIC_C_GRID:
        lr = LogisticRegression(C=c, solver=solver, max_iter=3000, random_state=seed)
        lr.fit(train_t, yt)
        auc = float(roc_auc_score(yv, lr.decision_function(val_t)))
        progress(f"logistic_regression C={c}: validation AUC {auc:.4f}")
        if best is None or auc > best[0]:
            best = (auc, lr, c)
    assert best is not None
    return _LogisticEstimator(pre, best[1], spec, xt), {"C": best[2]}, best[0]


def _fit_forest(
    xt: pd.DataFrame,
    yt: np.ndarray,
    xv: pd.DataFrame,
    yv: np.ndarray,
    spec: FeatureSpec,
    *,
    seed: int,
    trees: int,
    progress: Callable[[str], None],
) -> tuple[_ForestEstimator, dict[str, Any], float]:
    pre = _column_transformer(spec, scale=False, one_hot=False)
    train_t = pre.fit_transform(xt)
    val_t = pre.transform(xv)
    best: tuple[float, RandomForestClassifier, dict[str, Any]] | None = None
    for combo in FOREST_GRID:
        forest = RandomForestClassifier(n_estimators=trees, n_jobs=THREADS, random_state=seed, **combo)
        forest.fit(train_t, yt)
        auc = float(roc_auc_score(yv, forest.predict_proba(val_t)[:, 1]))
        progress(f"random_forest {combo}: validation AUC {auc:.4f}")
        if best is None or auc > best[0]:
            best = (auc, forest, {"n_estimators": trees, **combo})
    assert best is not None
    return _ForestEstimator(pre, best[1], spec), best[2], best[0]


def _evaluate(model: TrainedModel, x: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
    """Metrics of the calibrated probability, plus ECE/Brier of the uncalibrated one."""
    raw = model.estimator.raw(x)
    metrics = classification_metrics(y, model.calibrator.transform(raw))
    before = classification_metrics(y, _sigmoid(raw))
    metrics["ece_before_calibration"] = before["ece"]
    metrics["brier_before_calibration"] = before["brier"]
    return metrics


# --------------------------------------------------------------------------- entry point


def train_and_compare(
    df: pd.DataFrame,
    *,
    target: str,
    spec: FeatureSpec,
    time_col: str | None = None,
    seed: int = 0,
    min_per_class: int = 500,
    on_insufficient: str = "refuse",
    families: Sequence[str] = FAMILIES,
    selection_metric: str = "auc",
    post_outcome: Iterable[str] = (),
    progress: Callable[[str], None] | None = None,
    catboost_iterations: int = 600,
    catboost_grid: Sequence[Mapping[str, Any]] | None = None,
    forest_trees: int = 300,
    calibration: str = "platt",
    monotone: Mapping[str, int] | None = None,
    drop_leaky: bool = True,
) -> TrainingResult:
    """Audit, split, train every family, calibrate, select on validation, test once.

    ``on_insufficient="rules"`` trains the transparent points model instead of raising
    :class:`InsufficientDataError` when a class has fewer than ``min_per_class`` rows (at least
    10 per class are still required). ``selection_metric`` is a key of
    :func:`scoring.metrics.classification_metrics` (higher is better, except brier/ece).
    ``monotone`` maps numeric features to +1/-1 CatBoost monotone constraints.
    """
    say = progress or (lambda _msg: None)
    if on_insufficient not in ("refuse", RULES):
        raise ValueError("on_insufficient must be 'refuse' or 'rules'")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"unknown model families: {unknown}; choose from {FAMILIES}")
    if selection_metric not in SELECTION_METRICS:
        raise ValueError(f"unknown selection metric {selection_metric!r}; choose from {SELECTION_METRICS}")
    if target not in df.columns:
        raise DataError(f"target column {target!r} not found")
    df = df.reset_index(drop=True)
    y = binary_target(df[target], target)
    try:
        audit, clean = audit_frame(
            df,
            target=target,
            spec=spec,
            min_per_class=min_per_class,
            post_outcome=post_outcome,
            drop_leaky=drop_leaky,
            seed=seed,
        )
    except InsufficientDataError:
        if on_insufficient != RULES:
            raise
        say("too few examples for machine learning; training the transparent points model")
        audit, clean = audit_frame(
            df,
            target=target,
            spec=spec,
            min_per_class=10,
            post_outcome=post_outcome,
            drop_leaky=drop_leaky,
            seed=seed,
        )
        audit.warnings.append(
            f"fewer than {min_per_class} examples per class: a simple points model was trained instead"
        )
        return _train_rules(df, y, clean, audit, time_col=time_col, seed=seed, calibration=calibration)
    for w in audit.warnings:
        say(f"audit: {w}")

    x = prepare_frame(df, clean)
    train, val, test, split = split_frame(df, y, time_col=time_col, seed=seed)
    say(f"split ({split['kind']}): {len(train)} train, {len(val)} validation, {len(test)} test")
    xt, xv, xs = x.iloc[train], x.iloc[val], x.iloc[test]
    yt, yv, ys = y[train], y[val], y[test]

    models: dict[str, TrainedModel] = {}
    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    params: dict[str, Any] = {}
    for family in families:
        estimator: Any
        if family == "catboost":
            estimator, fam_params, _ = _fit_catboost(
                xt,
                yt,
                xv,
                yv,
                clean,
                seed=seed,
                iterations=catboost_iterations,
                grid=catboost_grid or DEFAULT_CATBOOST_GRID,
                monotone=monotone or {},
                progress=say,
            )
        elif family == "logistic_regression":
            estimator, fam_params, _ = _fit_logistic(xt, yt, xv, yv, clean, seed=seed, progress=say)
        else:
            estimator, fam_params, _ = _fit_forest(xt, yt, xv, yv, clean, seed=seed, trees=forest_trees, progress=say)
        calibrator = fit_calibrator(estimator.raw(xv), yv, method=calibration)
        fam_params = {**fam_params, "calibration": calibrator.method, "seed": seed}
        models[family] = TrainedModel(family, clean, fam_params, estimator, calibrator)
        metrics[family] = {"validation": _evaluate(models[family], xv, yv)}
        params[family] = fam_params

    lower_is_better = selection_metric in ("brier", "ece")

    def score(f: str) -> float:
        v = float(metrics[f]["validation"][selection_metric])
        return -v if lower_is_better else v

    selected = max(families, key=score)
    say(f"selected {selected} on validation {selection_metric}")
    # Test metrics: computed once, here, after every choice has been made.
    for family in families:
        metrics[family]["test"] = _evaluate(models[family], xs, ys)
    return TrainingResult(
        selected=selected,
        model=models[selected],
        spec=clean,
        audit=audit,
        metrics=metrics,
        split=split,
        params={"selected": selected, "selection_metric": selection_metric, "families": params},
        models=models,
    )


def _train_rules(
    df: pd.DataFrame,
    y: np.ndarray,
    spec: FeatureSpec,
    audit: AuditReport,
    *,
    time_col: str | None,
    seed: int,
    calibration: str,
) -> TrainingResult:
    x = prepare_frame(df, spec)
    train, val, test, split = split_frame(df, y, time_col=time_col, seed=seed)
    estimator = _RulesEstimator(spec, x.iloc[train], y[train])
    calibrator = fit_calibrator(estimator.raw(x.iloc[val]), y[val], method=calibration)
    params = {"calibration": calibrator.method, "seed": seed, "note": "points model for small data"}
    model = TrainedModel(RULES, spec, params, estimator, calibrator)
    metrics = {
        RULES: {
            "validation": _evaluate(model, x.iloc[val], y[val]),
            "test": _evaluate(model, x.iloc[test], y[test]),
        }
    }
    return TrainingResult(
        selected=RULES,
        model=model,
        spec=spec,
        audit=audit,
        metrics=metrics,
        split=split,
        params={"selected": RULES, "families": {RULES: params}},
        models={RULES: model},
    )


__all__ = [
    "BIAS",
    "FAMILIES",
    "MISSING_TOKEN",
    "TrainedModel",
    "TrainingResult",
    "split_frame",
    "train_and_compare",
]
