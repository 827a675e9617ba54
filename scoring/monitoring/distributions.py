"""Binned distributions of a reference and the population stability index (PSI)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scoring.frame import MISSING_TOKEN

PSI_BINS = 10
MAX_CATEGORIES = 20
OTHER = "__other__"
MISSING_BIN = "__missing__"
# Shares are floored before the log so an empty bin gives a large but finite PSI term.
SHARE_FLOOR = 1e-4


@dataclass(frozen=True)
class Distribution:
    """Bins of one variable and each bin's share in the reference.

    Numeric: ``edges`` are interior cut points; bin i holds (edges[i-1], edges[i]], the last
    bin everything above, plus a final missing bin. Categorical: ``categories`` (the most frequent
    reference values), then ``__other__`` and ``__missing__``.
    """

    kind: str  # "numeric" | "categorical"
    shares: tuple[float, ...]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shares": list(self.shares), "edges": list(self.edges),
                "categories": list(self.categories)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Distribution:
        return cls(kind=str(d["kind"]), shares=tuple(float(s) for s in d["shares"]),
                   edges=tuple(float(e) for e in d.get("edges", ())),
                   categories=tuple(str(c) for c in d.get("categories", ())))

    def counts(self, values: Any) -> np.ndarray:
        """Counts of ``values`` in this distribution's bins."""
        if self.kind == "numeric":
            x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64")
            finite = ~np.isnan(x)
            idx = np.searchsorted(np.asarray(self.edges, dtype="float64"), x[finite], side="left")
            counts = np.bincount(idx, minlength=len(self.edges) + 1).astype("float64")
            return np.append(counts, float((~finite).sum()))
        text = pd.Series(values, dtype=object).map(lambda v: MISSING_BIN if v is None or v == MISSING_TOKEN
                                                   or (isinstance(v, float) and math.isnan(v)) else str(v))
        index = {c: i for i, c in enumerate(self.categories)}
        n = len(self.categories)
        codes = text.map(lambda v: n + 1 if v == MISSING_BIN else index.get(v, n)).to_numpy(dtype="int64")
        return np.bincount(codes, minlength=n + 2).astype("float64")


def numeric_distribution(values: Any, bins: int = PSI_BINS) -> Distribution:
    """Decile bins (fewer when values repeat, e.g. mostly-zero counts) of a numeric reference."""
    x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64")
    finite = x[~np.isnan(x)]
    edges: tuple[float, ...] = ()
    if finite.size:
        qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
        edges = tuple(float(e) for e in np.unique(qs))
    dist = Distribution(kind="numeric", shares=(), edges=edges)
    counts = dist.counts(x)
    return Distribution(kind="numeric", shares=tuple((counts / max(1.0, counts.sum())).tolist()), edges=edges)


def categorical_distribution(values: Any, max_categories: int = MAX_CATEGORIES) -> Distribution:
    """The reference's most frequent categories, then "other" and "missing"."""
    text = pd.Series(values, dtype=object)
    present = text[text.notna() & (text != MISSING_TOKEN)].astype(str)
    categories = tuple(str(c) for c in present.value_counts().index[:max_categories])
    dist = Distribution(kind="categorical", shares=(), categories=categories)
    counts = dist.counts(text)
    return Distribution(kind="categorical", shares=tuple((counts / max(1.0, counts.sum())).tolist()),
                        categories=categories)


def psi(expected_shares: Sequence[float] | np.ndarray, actual_counts: Sequence[float] | np.ndarray) -> float:
    """Population stability index Σ (a − e) · ln(a / e) of live counts against reference shares."""
    e = np.maximum(np.asarray(expected_shares, dtype="float64"), SHARE_FLOOR)
    counts = np.asarray(actual_counts, dtype="float64")
    if counts.sum() <= 0:
        return float("nan")
    a = np.maximum(counts / counts.sum(), SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


NOISE_QUANTILE = 0.99


def psi_noise(expected_shares: Sequence[float] | np.ndarray, live: int, reference: int) -> float:
    """The PSI that sampling alone exceeds once in a hundred times, for ``live`` leads measured
    against a reference of ``reference`` rows with these shares, when nothing shifted.

    Without a shift, PSI (a symmetric divergence) times the samples' harmonic size follows a
    chi-square with one degree of freedom fewer than the bins both can fill (Yurdakul 2018,
    "Statistical properties of the population stability index"): PSI ≈ χ²(B − 1) · (1/live + 1/reference).
    At 100 live leads and 10 bins that is 0.23, above the usual 0.1 warning line: a hundred leads
    alone cannot show a 0.1 shift. ``reference`` 0 (not recorded) counts the reference as exact.
    """
    from scipy.stats import chi2

    if live <= 0:
        return float("inf")
    bins = int(np.count_nonzero(np.asarray(expected_shares, dtype="float64") > 0))
    df = max(1, bins - 1)
    return float(chi2.ppf(NOISE_QUANTILE, df) * (1.0 / live + (1.0 / reference if reference > 0 else 0.0)))
