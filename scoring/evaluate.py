"""Offline comparison of the model families on any CSV (behind ``leadscore evaluate``).

:func:`evaluate_csv` returns the architecture note's evaluate JSON; :func:`format_evaluation`
renders it for a terminal. Bad input raises :class:`EvaluationInputError` (a
``LeadscoreError``) with a one-line message naming the problem.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from scoring.audit import DataError
from scoring.frame import FeatureSpec
from scoring.training import FAMILIES, train_and_compare
from store.types import json_safe

# Past this many labelled rows, evaluate trains on a stratified random sample of this size: the
# comparison of model families is settled long before (AUC standard error ~0.008 on the 7,500
# test rows of 50k),
# while time and memory keep growing with every row (500k x 10 columns took > 15 min and 1.5 GB).
DEFAULT_MAX_ROWS = 50_000
# Fewer test rows than this in either class and AUC, PR-AUC and lift are noise.
MIN_TEST_ROWS_PER_CLASS = 30

SUMMARY_METRICS = ("auc", "pr_auc", "brier", "precision_at_10pct", "recall_at_10pct", "lift_top_decile")


class EvaluationInputError(DataError):
    """The CSV or the arguments given with it cannot be evaluated."""


def infer_spec(df: pd.DataFrame, columns: Sequence[str]) -> FeatureSpec:
    """Numeric (numbers and booleans) vs categorical (everything else) for the given columns."""
    numeric = tuple(c for c in columns if pd.api.types.is_numeric_dtype(df[c]))
    categorical = tuple(c for c in columns if c not in numeric)
    return FeatureSpec(numeric=numeric, categorical=categorical)


def _read_csv(path: Path) -> pd.DataFrame:
    if path.is_dir():
        csvs = sorted(p.name for p in path.glob("*.csv"))
        raise EvaluationInputError(f"{path} is a directory, not a CSV file"
                                   + (f" (it holds {', '.join(csvs[:3])}{', ...' if len(csvs) > 3 else ''})"
                                      if csvs else ""))
    if not path.is_file():
        raise EvaluationInputError(f"CSV file not found: {path}")
    try:
        df = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise EvaluationInputError(f"CSV file is empty: {path}") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvaluationInputError(f"cannot parse {path} as CSV: {first_line}") from exc
    if df.empty:
        raise EvaluationInputError(f"CSV file has no data rows: {path}")
    return df


def evaluate_csv(
    path: str | Path,
    *,
    target: str,
    exclude: Sequence[str] = (),
    seed: int = 0,
    min_per_class: int = 500,
    progress: Callable[[str], None] | None = None,
    time_col: str | None = None,
    keep_leaky: bool = False,
    catboost_iterations: int = 600,
    catboost_grid: Sequence[Mapping[str, Any]] | None = None,
    forest_trees: int = 300,
    max_rows: int | None = DEFAULT_MAX_ROWS,
) -> dict[str, Any]:
    """Audit a CSV and compare CatBoost, logistic regression and random forest on it.

    Every column except ``target``, ``exclude`` (and ``time_col``) is a candidate feature;
    numeric vs categorical is inferred from the column type. The audit then excludes
    identifiers, constant columns, leaky columns (kept, with a warning, when ``keep_leaky``) and
    redundant columns; each exclusion has a warning. Split: stratified 70/15/15 with ``seed``,
    or by ``time_col``. Returns ``{"dataset", "audit", "models", "selected"}`` (see
    docs/model.md); METRICS carry extra keys (ece, lift_by_decile, calibration, …).
    """
    say = progress or (lambda _msg: None)
    csv = Path(path)
    say(f"reading {csv.name}")
    df = _read_csv(csv)
    say(f"read {len(df):,} rows x {len(df.columns)} columns")
    if target not in df.columns:
        raise EvaluationInputError(f"target column {target!r} not in {csv.name} (columns: {_short(df.columns)})")
    unknown = [c for c in exclude if c not in df.columns]
    if unknown:
        raise EvaluationInputError(f"--exclude column(s) not in {csv.name}: {', '.join(unknown)}")
    if target in exclude:
        raise EvaluationInputError(f"the target column {target!r} cannot also be excluded")
    if time_col is not None and time_col not in df.columns:
        raise EvaluationInputError(f"time column {time_col!r} not in {csv.name}")
    warnings: list[str] = []
    unlabelled = int(df[target].isna().sum())
    if unlabelled:
        df = df[df[target].notna()].reset_index(drop=True)
        warnings.append(f"{unlabelled} rows without a {target} value were left out")

    sampling = None
    if max_rows is not None and len(df) > max_rows:
        df, sampling = _stratified_sample(df, target, max_rows, seed)
        warnings.append(f"{sampling['rows_available']:,} labelled rows: evaluated on {sampling['method']}")
        say(f"sampled {len(df):,} of {sampling['rows_available']:,} rows ({sampling['method']})")

    excluded_by_user = list(dict.fromkeys(exclude))
    candidates = [c for c in df.columns if c != target and c not in excluded_by_user and c != time_col]
    if not candidates:
        raise EvaluationInputError("no feature columns left to evaluate")
    spec = infer_spec(df, candidates)
    result = train_and_compare(
        df,
        target=target,
        spec=spec,
        time_col=time_col,
        seed=seed,
        min_per_class=min_per_class,
        progress=progress,
        drop_leaky=not keep_leaky,
        catboost_iterations=catboost_iterations,
        catboost_grid=catboost_grid,
        forest_trees=forest_trees,
    )
    audit = result.audit
    warnings.extend(_small_test_warnings(result.metrics))
    models = {
        family: {part: dict(result.metrics[family][part]) for part in ("validation", "test")}
        for family in FAMILIES
        if family in result.metrics
    }
    return json_safe(
        {
            "dataset": {
                "rows": audit.rows,
                "positives": audit.positives,
                "features": list(result.spec.columns),
                "excluded": excluded_by_user + [c for c in audit.dropped if c not in excluded_by_user],
                "sampling": sampling,
            },
            "audit": {"warnings": warnings + list(audit.warnings), "leaky_features": list(audit.leaky_features)},
            "models": models,
            "selected": result.selected,
        }
    )


def _stratified_sample(df: pd.DataFrame, target: str, max_rows: int, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``max_rows`` rows drawn at random within each target value in proportion to its share
    (the conversion rate is kept), in their original order (a time split still sees time order)."""
    total = len(df)
    fraction = max_rows / total
    parts = [group.sample(n=max(1, round(len(group) * fraction)), random_state=seed)
             for _value, group in df.groupby(target, sort=True)]
    sample = pd.concat(parts).sort_index().reset_index(drop=True)
    method = (f"a stratified random sample of {len(sample):,} rows (by {target}, seed {seed}; "
              f"conversion rate kept); raise --max-rows to use more")
    return sample, {"method": method, "rows_available": total, "rows_used": len(sample), "seed": seed,
                    "max_rows": max_rows}


def _small_test_warnings(metrics: Mapping[str, Any]) -> list[str]:
    for family_metrics in metrics.values():
        test = family_metrics.get("test") if isinstance(family_metrics, Mapping) else None
        if not test or "rows" not in test:
            continue
        positives = int(test["positives"])
        negatives = int(test["rows"]) - positives
        if min(positives, negatives) < MIN_TEST_ROWS_PER_CLASS:
            return [f"the test split has {positives} positive and {negatives} negative rows (fewer than "
                    f"{MIN_TEST_ROWS_PER_CLASS} in a class): its metrics are not meaningful"]
        return []
    return []


def _short(columns: Sequence[str] | pd.Index, limit: int = 8) -> str:
    names = [str(c) for c in columns]
    return ", ".join(names[:limit]) + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_evaluation(result: dict[str, Any]) -> str:
    """A readable terminal report of :func:`evaluate_csv`'s result."""
    ds = result["dataset"]
    rate = ds["positives"] / ds["rows"] if ds["rows"] else 0.0
    lines = [
        f"Dataset: {ds['rows']} rows, {ds['positives']} positives ({rate:.1%}), "
        f"{len(ds['features'])} features used, {len(ds['excluded'])} excluded",
    ]
    if ds["excluded"]:
        lines.append(f"Excluded: {', '.join(ds['excluded'])}")
    audit = result["audit"]
    if audit["leaky_features"]:
        lines.append(f"Leaky features: {', '.join(audit['leaky_features'])}")
    if audit["warnings"]:
        lines.append("Audit:")
        lines.extend(f"  - {w}" for w in audit["warnings"])
    headers = ("model", "part", "AUC", "PR-AUC", "Brier", "Prec@10%", "Rec@10%", "Lift@10%")
    rows: list[tuple[str, ...]] = []
    for family, parts in result["models"].items():
        mark = " *" if family == result["selected"] else ""
        for i, part in enumerate(("validation", "test")):
            m = parts[part]
            rows.append(
                (
                    family + mark if i == 0 else "",
                    part,
                    _fmt(m.get("auc")),
                    _fmt(m.get("pr_auc")),
                    _fmt(m.get("brier")),
                    _fmt(m.get("precision_at_10pct")),
                    _fmt(m.get("recall_at_10pct")),
                    _fmt(m.get("lift_top_decile"), 2),
                )
            )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        # names left-aligned, numbers right-aligned
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    lines.append("")
    lines.append(line(headers))
    lines.extend(line(r) for r in rows)
    lines.append("")
    lines.append(f"Selected: {result['selected']} (* best validation AUC; test measured once, after selection)")
    return "\n".join(lines)
