"""Exact SHAP values of a symmetric-tree CatBoost model, looked up by leaf.

CatBoost's ``ShapValues`` (the path-dependent TreeSHAP it calls "Regular") cost about 50 µs a
row on this project's default model (156 trees of depth 6), against under 1 µs for a prediction:
most of a scoring run's model time. In a symmetric (oblivious) tree every node of a level tests
the same split, so the leaf a row reaches fixes its direction at every node of the tree, and the
tree's SHAP values of the row are a function of that leaf alone. An ensemble's SHAP values are the
sum of its trees'. So:

- each tree's SHAP values per leaf are taken from CatBoost itself: a one-tree copy of the model
  (``shrink``) explains one row that reaches the leaf;
- a row's SHAP values are then the sum, tree by tree in CatBoost's order, of the rows of those
  tables its leaves (``calc_leaf_indexes``) pick: the same numbers (``tests/scoring/test_leaf_shap.py``
  compares them with ``get_feature_importance`` on rows the tables were not built from).

Tables start empty and are filled for the leaves rows reach: training fills them from its training
rows (every leaf that holds training weight), and a later call fills any leaf its rows reach first.
The first fill checks the tables against CatBoost's own SHAP values of some of its rows; if they
differ (a model kind this reasoning does not cover), the model is explained by CatBoost from then on.
Other tree shapes (``Depthwise``, ``Lossguide``) are explained by CatBoost directly.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Rows of the first fill whose tables are checked against CatBoost's SHAP (one CatBoost call).
CHECK_ROWS = 64
_TOLERANCE = 1e-9


def catboost_shap(model: Any, pool: Any, thread_count: int) -> np.ndarray:
    """CatBoost's own SHAP values: one column per feature, then the expected value."""
    return np.asarray(model.get_feature_importance(data=pool, type="ShapValues", thread_count=thread_count),
                      dtype="float64")


def symmetric(model: Any) -> bool:
    """Whether every tree of the model is symmetric (CatBoost's default ``SymmetricTree``)."""
    return str(model.get_all_params().get("grow_policy", "SymmetricTree")) == "SymmetricTree"


class LeafShap:
    """Per tree, per leaf, the tree's SHAP values of a row reaching that leaf (see the module).

    Not bound to a model object: :meth:`values` takes the model each time (the estimator holds
    both and pickles both). Fills happen under a lock; :meth:`values` may run in any thread.
    """

    def __init__(self, model: Any) -> None:
        counts = np.asarray(model.get_tree_leaf_counts(), dtype="int64")
        self.counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype("int64")
        self.known = np.zeros(int(counts.sum()), dtype=bool)  # per leaf of the flat table
        self.width: int | None = None  # features (known at the first fill)
        self.expected = np.zeros(len(counts))  # per tree, its expected value
        self.shift = 0.0  # expected value CatBoost adds beyond the trees' (set by the check)
        self.usable = True
        # Per tree: the feature columns its leaves hold non-zero values in, and those values (a
        # row per column, a value per leaf).
        self.columns: list[np.ndarray] = [np.zeros(0, dtype="int64") for _ in counts]
        self.tables: list[np.ndarray] = [np.zeros((0, int(n))) for n in counts]
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def values(self, model: Any, pool: Any, thread_count: int) -> np.ndarray:
        """The rows' SHAP values (CatBoost's layout: one column per feature, then the expected
        value); filled first for leaves not known yet."""
        if not self.usable:
            return catboost_shap(model, pool, thread_count)
        leaves = np.asarray(model.calc_leaf_indexes(pool, thread_count=thread_count), dtype="int64")
        if not self.known[leaves + self.offsets].all():
            self.fill(model, pool, leaves)
            if not self.usable:
                return catboost_shap(model, pool, thread_count)
        return self._sum(leaves)

    def _sum(self, leaves: np.ndarray) -> np.ndarray:
        """Each row's values: its leaves' table rows added tree by tree, in CatBoost's order (the
        same numbers as CatBoost's own, to the last bit on this project's models)."""
        assert self.width is not None
        by_tree = np.ascontiguousarray(leaves.T)
        out = np.zeros((self.width + 1, len(leaves)))  # a column per row: a tree's columns are rows
        for t, (cols, table) in enumerate(zip(self.columns, self.tables, strict=True)):
            if len(cols):
                out[cols] += np.take(table, by_tree[t], axis=1)
        expected = 0.0
        for e in self.expected.tolist():
            expected += e
        out[-1] = expected + self.shift
        return out.T

    def fill(self, model: Any, pool: Any, leaves: np.ndarray | None = None) -> None:
        """Compute the tables' rows of the leaves ``pool``'s rows reach that are not known yet:
        per tree with such leaves, a one-tree copy of ``model`` explains one row of each."""
        with self._lock:
            if leaves is None:
                leaves = np.asarray(model.calc_leaf_indexes(pool, thread_count=-1), dtype="int64")
            first = self.width is None
            # Per tree with leaves not known yet: those leaves and a row reaching each.
            needed: list[tuple[int, int, np.ndarray, np.ndarray]] = []
            for t, offset in enumerate(self.offsets.tolist()):
                lv = leaves[:, t]
                missing = np.flatnonzero(~self.known[offset + lv])
                if len(missing):
                    found, at = np.unique(lv[missing], return_index=True)
                    needed.append((t, offset, found, missing[at]))
            if needed:
                self._fill_trees(model, pool, needed)
            if first and self.width is not None:
                self._check(model, pool, leaves)

    def _fill_trees(self, model: Any, pool: Any, needed: list[tuple[int, int, np.ndarray, np.ndarray]]) -> None:
        """Each tree's rows of its ``needed`` leaves (tree, offset, leaves, a row reaching each). The
        rows are sliced out of the pool once (a slice costs about as much as the pool's size: one per
        tree took more than the trees' SHAP calls), then each tree's rows from them."""
        rows = np.unique(np.concatenate([r for *_, r in needed]))
        few = pool.slice(rows.tolist())
        for t, offset, found, reaching in needed:
            one = model.copy()
            one.shrink(ntree_end=t + 1, ntree_start=t)
            shap = catboost_shap(one, few.slice(np.searchsorted(rows, reaching).tolist()), 1)
            if self.width is None:
                self.width = shap.shape[1] - 1
            dense = np.zeros((self.width, int(self.counts[t])))
            dense[self.columns[t]] = self.tables[t]
            dense[:, found] = shap[:, :-1].T
            self.columns[t] = np.flatnonzero(np.any(dense != 0, axis=1))
            self.tables[t] = dense[self.columns[t]]
            self.expected[t] = shap[0, -1]
            self.known[offset + found] = True

    def _check(self, model: Any, pool: Any, leaves: np.ndarray) -> None:
        """After the first fill: the tables' values of some of its rows against CatBoost's own."""
        rows = np.unique(np.linspace(0, len(leaves) - 1, num=min(CHECK_ROWS, len(leaves))).astype("int64"))
        own = catboost_shap(model, pool.slice(rows.tolist()), -1)
        summed = self._sum(leaves[rows])
        # CatBoost's expected value may hold a bias beyond the trees' own: a shift of that column.
        self.shift = float(own[0, -1] - summed[0, -1])
        summed[:, -1] += self.shift
        if not np.allclose(summed, own, rtol=0, atol=_TOLERANCE):
            self.usable = False
            logger.warning("SHAP values by leaf differ from CatBoost's for this model (by up to %.3g): "
                           "CatBoost explains it", float(np.abs(summed - own).max()))
