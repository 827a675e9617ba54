"""Train CatBoost and two baselines on one split, compare them on validation, keep the best.

Flow of :func:`train_and_compare`: audit (refuses too little data) → split 70/15/15 (by time
when ``time_col`` is given, else stratified and seeded) → for each family a small
hyper-parameter search scored by validation AUC → every family calibrated on validation
(Platt by default, see :mod:`scoring.calibration`) → selection by the validation metric →
test metrics computed once, at the end, for every family.

What gets stored is a :class:`scoring.model.TrainedModel` (family estimators and the artifact
format live in :mod:`scoring.model`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from scoring.audit import (
    AuditReport,
    DataError,
    InsufficientDataError,
    audit_frame,
    binary_target,
)
from scoring.calibration import fit_calibrator
from scoring.frame import MISSING_TOKEN, FeatureSpec, prepare_frame
from scoring.metrics import classification_metrics

# Artifacts pickled before scoring.model existed name these classes under scoring.training:
# importing them here keeps those artifacts loadable.
from scoring.model import (
    BIAS,
    THREADS,
    TrainedModel,
    _CatBoostEstimator,
    _column_transformer,
    _ForestEstimator,
    _LogisticEstimator,
    _RulesEstimator,
    _sigmoid,
)

FAMILIES = ("catboost", "logistic_regression", "random_forest")
RULES = "rules"
SELECTION_METRICS = ("auc", "pr_auc", "precision_at_10pct", "recall_at_10pct", "lift_top_decile", "brier", "ece")

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
    from catboost import CatBoostClassifier, Pool  # heavy import (~1 s), paid only where CatBoost trains

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
    estimator = _CatBoostEstimator(best[1], spec)
    tables = estimator.leaf_shap()
    if tables is not None:
        # SHAP values by leaf for every leaf the training rows reach, and for the leaves rows
        # mixing their values column by column reach (rows scored later reach leaves that no
        # training row did; each such tree costs a CatBoost call when it first does): one fill,
        # one CatBoost call per tree.
        rows = pd.concat([xt, _mixed_rows(xt, spec, seed=seed)], ignore_index=True)
        tables.fill(best[1], Pool(rows, cat_features=cat_idx))
    return estimator, best[2], best[0]


MIXED_ROWS = 4  # mixed rows per training row (at most MIXED_ROWS_MAX) that fill the SHAP tables
MIXED_ROWS_MAX = 200_000


MIXED_GAPS = 0.05  # share of a mixed column's values made missing (and, categorical, never seen)


def _mixed_rows(x: pd.DataFrame, spec: FeatureSpec, *, seed: int) -> pd.DataFrame:
    """Rows whose every column is drawn from the training rows independently of the others, some
    values missing or, categorical, never seen: they reach leaf combinations that the training
    rows' own values never reach together and that leads scored later do."""
    rng = np.random.default_rng(seed)
    n = min(len(x) * MIXED_ROWS, MIXED_ROWS_MAX)
    out: dict[str, np.ndarray] = {}
    for c in x.columns:
        values = x[c].to_numpy()[rng.integers(0, len(x), size=n)]
        gap = rng.random(n)
        if c in spec.categorical:
            values = values.astype(object)
            values[gap < MIXED_GAPS] = MISSING_TOKEN
            values[(gap >= MIXED_GAPS) & (gap < 2 * MIXED_GAPS)] = "\x00unseen"
        else:
            values = values.astype("float64")
            values[gap < MIXED_GAPS] = np.nan
        out[c] = values
    return pd.DataFrame(out, columns=x.columns)


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
        fam_params = {**fam_params, "calibration": calibrator.method, "seed": seed,
                      **({"calibration_note": calibrator.reason} if calibrator.reason else {})}
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
    params = {"calibration": calibrator.method, "seed": seed, "note": "points model for small data",
              **({"calibration_note": calibrator.reason} if calibrator.reason else {})}
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
