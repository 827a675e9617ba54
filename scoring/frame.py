"""The one place that turns a feature frame into what a model sees.

Training, evaluation and online scoring all call :func:`prepare_frame`, so a value is encoded
the same way whether the model is being fitted or used. Categoricals become plain Python
strings with missing (and form placeholders such as ``"Select"``) mapped to
:data:`MISSING_TOKEN`; numerics become ``float64`` with NaN kept (CatBoost handles NaN natively;
the scikit-learn baselines impute inside their own pipelines).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MISSING_TOKEN = "__missing__"  # noqa: S105 - a category label, not a secret

# Values that mean "nobody filled this in" in web forms and CRM exports. Compared after
# stripping and lower-casing, and only for categorical columns: a numeric -1 may be a real value.
PLACEHOLDERS: frozenset[str] = frozenset(
    {"", "select", "n/a", "na", "nan", "none", "null", "nil", "-", "--", "?", "-1", "not provided"}
)


class FrameError(KeyError):
    """A feature frame lacks columns its spec names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "feature frame error"


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns a model uses and how each is typed (numeric or categorical)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    def __post_init__(self) -> None:
        overlap = set(self.numeric) & set(self.categorical)
        if overlap:
            raise ValueError(f"columns both numeric and categorical: {sorted(overlap)}")

    @property
    def columns(self) -> list[str]:
        """All feature columns: numerics first, then categoricals (the model's column order)."""
        return [*self.numeric, *self.categorical]

    def without(self, names: Iterable[str]) -> FeatureSpec:
        """A copy without the given columns (unknown names are ignored)."""
        drop = set(names)
        return FeatureSpec(
            numeric=tuple(c for c in self.numeric if c not in drop),
            categorical=tuple(c for c in self.categorical if c not in drop),
        )

    def to_dict(self) -> dict[str, list[str]]:
        """JSON-able form, inverse of :meth:`from_dict`."""
        return {"numeric": list(self.numeric), "categorical": list(self.categorical)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        """Rebuild a spec stored with :meth:`to_dict`."""
        return cls(numeric=tuple(d.get("numeric", ())), categorical=tuple(d.get("categorical", ())))


def is_placeholder(value: object) -> bool:
    """True if a raw categorical value means "not filled in" (see :data:`PLACEHOLDERS`)."""
    return str(value).strip().lower() in PLACEHOLDERS


def categorical_series(s: pd.Series) -> pd.Series:
    """Encode one categorical column: stripped strings, missing/placeholders → MISSING_TOKEN.

    Goes through pandas' nullable string dtype because under pandas 3 ``astype(str)`` keeps NaN
    as NaN, which CatBoost refuses in a categorical column.
    """
    if len(s) and pd.api.types.infer_dtype(s, skipna=True) == "string":
        # Text with gaps (what the feature builder gives): encode each distinct value once.
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
        encoded = _categorical_text(pd.Series(uniques, dtype="string").str.strip())
        values = np.append(encoded.to_numpy(dtype=object, na_value=MISSING_TOKEN), MISSING_TOKEN)
        return pd.Series(values[codes], index=s.index, dtype=object)  # code -1 (a gap): the last
    text = s.astype("string").str.strip()
    if pd.api.types.is_float_dtype(s):
        # A code column read with NaN becomes float (1.0) in training but may arrive as int (1)
        # when scoring: spell integral values the integer way so both meet the same category.
        values = s.to_numpy(dtype="float64", na_value=np.nan)
        integral = np.isfinite(values) & (values == np.round(values))
        if integral.any():
            as_int = pd.Series(values, index=s.index).where(integral, 0).astype("int64").astype("string")
            text = text.where(~integral, as_int)
    out = _categorical_text(text)
    return pd.Series(out.to_numpy(dtype=object, na_value=MISSING_TOKEN), index=s.index, dtype=object)


def _categorical_text(text: pd.Series) -> pd.Series:
    """Stripped text with missing values and placeholders as MISSING_TOKEN."""
    missing = text.isna() | text.str.lower().isin(PLACEHOLDERS)
    return text.where(~missing.fillna(True), MISSING_TOKEN)


def numeric_series(s: pd.Series) -> pd.Series:
    """Encode one numeric column as float64; unparsable values become NaN."""
    if pd.api.types.is_bool_dtype(s):
        s = s.astype("float64")
    return pd.to_numeric(s, errors="coerce").astype("float64")


def prepare_frame(df: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Return exactly ``spec.columns`` (in that order) encoded for the models.

    Raises :class:`FrameError` naming the columns the frame lacks. The index is preserved;
    columns not in the spec are ignored.
    """
    missing = [c for c in spec.columns if c not in df.columns]
    if missing:
        raise FrameError(f"feature frame lacks columns: {', '.join(missing)}")
    data: dict[str, pd.Series] = {}
    for col in spec.numeric:
        data[col] = numeric_series(df[col])
    for col in spec.categorical:
        data[col] = categorical_series(df[col])
    return pd.DataFrame(data, index=df.index, columns=spec.columns)
