"""Reason codes: the top drivers of a lead's score, in words a rep understands.

Per-feature contributions (SHAP values for CatBoost, see ``TrainedModel.contributions``) are
first summed per *concept*: the 7/30/90-day counts of one activity type are one concept, title
seniority and department are one ("VP-level title in Engineering"). The three concepts that
pushed the score up most and the two that pulled it down most are rendered as short sentences
using the lead's own values, compared with the typical reference lead where that helps ("4
pricing/demo page visits in the last 7 days (most leads have none)", "No engagement for over a month",
"Free-mail address"). Raw feature names never appear.

What is not a reason:

- a sentence that holds for many reference leads (``common`` in the model's reference, share >
  :data:`COMMON_SHARE`): "Based in United States" says nothing when most leads are;
- an absence that raised the score ("No calls in the last 90 days" as a plus): the model learned
  something else behind it, and the sentence would read as nonsense to a rep;
- the lead's age (constant in training, so it carries no weight).

Each reason belongs to the fit or the engagement group, the same grouping as the sub-scores
(:mod:`scoring.subscores`), and is stored as ``"+ Engagement: ..."`` / ``"- Fit: ..."``.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scoring.features import ATTRIBUTE_PREFIX, ENGAGEMENT_TYPES, WINDOWS_DAYS
from scoring.frame import MISSING_TOKEN
from scoring.subscores import ENGAGEMENT, FIT, group_of

MAX_REASONS_CHARS = 255
SEPARATOR = "; "
# How a count compares with most leads (in parentheses: "; " separates whole reasons).
ABOVE_MOST = " (most leads have none)"
BELOW_MOST = " (most leads have some)"
# A count compared with the typical lead's ("3 website visits ... (typical lead: 1)"): the
# sentence's first number is the lead's count, the one in parentheses the typical lead's.
_TYPICAL = re.compile(r"^\D*(\d+)\D.*\(typical lead: (\d+)\)$")
# Contributions (log-odds) smaller than this move the score by well under a point: not a reason.
MIN_IMPACT = 0.02
# A sentence true of more than this share of the reference leads is not a reason (the issue's
# ceiling is 40 % of scored leads; live leads are younger than the reference, so keep a margin).
COMMON_SHARE = 0.25
# Concepts never given as a reason: constant in training (lead age), so their weight is noise.
SILENT_CONCEPTS = frozenset({"lead_age_days"})
_GROUP_LABELS = {FIT: "Fit", ENGAGEMENT: "Engagement"}

_TYPE_LABELS: dict[str, tuple[str, str]] = {
    "email_open": ("email open", "email opens"),
    "email_click": ("email click", "email clicks"),
    "web_visit": ("website visit", "website visits"),
    "form_submit": ("form submission", "form submissions"),
    "content_download": ("content download", "content downloads"),
    "webinar": ("webinar attended", "webinars attended"),
    "meeting": ("meeting", "meetings"),
    "call": ("call", "calls"),
    "campaign_response": ("campaign response", "campaign responses"),
}
_SENIORITY_LABELS = {
    "C-Level": "C-level",
    "VP": "VP-level",
    "Director": "Director-level",
    "Manager": "Manager-level",
    "Individual Contributor": "Individual-contributor",
    "Student": "Student",
}


@dataclass(frozen=True)
class Reason:
    """One driver of a score: its sentence and its effect on the log-odds (+ raises the score)."""

    text: str
    impact: float
    group: str | None = None  # "fit" | "engagement" (None: ungrouped, as in older stored reasons)

    @property
    def marked(self) -> str:
        """The sentence with its direction and group: ``"+ Engagement: ..."`` raises the score."""
        label = f"{_GROUP_LABELS[self.group]}: " if self.group in _GROUP_LABELS else ""
        return f"{'+' if self.impact > 0 else '-'} {label}{self.text}"


def concept_of(feature: str) -> str:
    """The concept a feature column belongs to (several columns can share one)."""
    for t in ENGAGEMENT_TYPES:
        if feature.startswith(f"{t}_") and feature.endswith("d") and feature[len(t) + 1 : -1].isdigit():
            return f"type:{t}"
    if feature.startswith("high_intent_visits_"):
        return "high_intent"
    if feature.startswith("content_depth_"):
        return "content"
    if feature in ("seniority", "department"):
        return "persona"
    return feature


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and (value == MISSING_TOKEN or not value.strip())


def _count(value: Any) -> int:
    if _missing(value):
        return 0
    try:
        return int(round(float(value)))
    except (TypeError, ValueError):
        return 0


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


Typical = Mapping[str, Any]


def _compare(feature: str, n: int, typical: Typical | None, noun: str) -> str:
    """``" (most leads have none)"`` or ``" (typical lead: 2)"`` for a count, or ``""`` (never "; ":
    that separates reasons in the CRM field)."""
    if not typical:
        return ""
    stats = (typical.get("numeric") or {}).get(feature)
    if not isinstance(stats, Mapping):
        return ""
    zero = float(stats.get("zero") or 0.0)
    median = _count(stats.get("median"))
    if n > 0 and zero >= 0.5:
        return ABOVE_MOST
    if n == 0 and zero < 0.5:
        return BELOW_MOST
    if n > 0 and median > 0 and median != n:
        return f" (typical lead: {median})"
    return ""


def compared(text: str) -> int:
    """How a sentence says the lead compares with most leads: 1 more ("(most leads have none)",
    "3 visits ... (typical lead: 1)"), -1 fewer ("(most leads have some)", "1 visit ...
    (typical lead: 3)"), 0 when it makes no comparison."""
    if text.endswith(ABOVE_MOST):
        return 1
    if text.endswith(BELOW_MOST):
        return -1
    found = _TYPICAL.match(text)
    if found is None:
        return 0
    n, median = int(found.group(1)), int(found.group(2))
    return (n > median) - (n < median)


def _render_type(activity_type: str, values: Mapping[str, Any], typical: Typical | None = None) -> str:
    one, many = _TYPE_LABELS.get(activity_type, (activity_type.replace("_", " "),) * 2)
    for w in WINDOWS_DAYS:
        feature = f"{activity_type}_{w}d"
        n = _count(values.get(feature))
        if n > 0:
            return f"{_plural(n, one, many)} in the last {w} days" + _compare(feature, n, typical, many)
    feature = f"{activity_type}_{max(WINDOWS_DAYS)}d"
    return f"No {many} in the last {max(WINDOWS_DAYS)} days" + _compare(feature, 0, typical, many)


def _text(value: Any) -> str:
    return str(value).strip()[:60]


# Concepts whose sentence ends with a name from the CRM (the sentence's start before it). The
# features hold such a name cleaned and title-cased (the model's category: "Content: Roi Guide");
# a reason shows it as the CRM spells it ("Content: ROI Guide"), given ``names``.
NAMED_CONCEPTS: dict[str, str] = {
    "industry": "Industry: ", "lead_source": "Lead source: ", "campaign": "From campaign ",
}
Names = Mapping[str, Mapping[str, str]]  # concept -> a name as the features hold it -> as the CRM spells it


def _spelled(concept: str, said: list[str], names: Names | None) -> list[str]:
    """A concept's sentences with its name as the CRM spells it (``said`` as rendered when not
    a named concept or no spelling differs). The rendered sentences stay what the reference's
    ``typical["common"]`` is compared with."""
    spelling = (names or {}).get(concept)
    if not spelling:
        return said
    start = NAMED_CONCEPTS[concept]
    shown = {_text(held): _text(crm) for held, crm in spelling.items()}
    return [start + shown.get(t[len(start):], t[len(start):]) if t.startswith(start) else t for t in said]


# What reasons say of the days since the last engagement, per span of the activity windows: under
# 7 days, 7 to 29, 30 to 89, 90 and more. Each stays true until the lead's latest engagement leaves
# the next window, when the lead is rescored (the last two stay true for good). Good news under 7
# days, an absence from 30 (is_good_news, is_absence).
_RECENCY = ("Engaged in the last 7 days", "Last engaged 1-4 weeks ago", "No engagement for over a month",
            "No engagement for over 3 months")
if WINDOWS_DAYS != (7, 30, 90):
    raise RuntimeError("the recency sentences name the 7/30/90-day windows: say the new spans")
_RECENT_DAYS, _QUIET_DAYS = WINDOWS_DAYS[0], WINDOWS_DAYS[1]


def is_absence(concept: str, values: Mapping[str, Any]) -> bool:
    """True when the concept's sentence is about something the lead lacks (no visits, unknown
    industry, no colleagues): such a sentence may explain a lower score, never a higher one."""
    if concept.startswith("type:"):
        return all(_count(values.get(f"{concept[5:]}_{w}d")) == 0 for w in WINDOWS_DAYS)
    if concept == "high_intent":
        return all(_count(values.get(f"high_intent_visits_{w}d")) == 0 for w in (7, 30))
    if concept == "content":
        return all(_count(values.get(f"content_depth_{w}d")) == 0 for w in (7, 30))
    if concept in ("engagement_30d", "committee_size"):
        return _count(values.get(concept)) == 0
    if concept == "engagement_velocity":
        return _count(values.get(concept)) <= 0
    if concept == "days_since_last_engagement":
        value = values.get(concept)
        return _missing(value) or _count(value) >= _QUIET_DAYS
    if concept == "persona":
        return _missing(values.get("seniority")) and _missing(values.get("department"))
    if concept in ("missing_fields", "junk_flags"):
        # Fields the record lacks, signs of junk: a crmsim trial's top lead read "+ Fit: 1 key
        # field missing on the record".
        return _count(values.get(concept)) > 0
    return _missing(values.get(concept))


def is_good_news(concept: str, values: Mapping[str, Any]) -> bool:
    """True when the concept's sentence reads as good news whatever the model made of it (engaged
    2 days ago, engagement rising, a complete record): such a sentence may explain a higher score,
    never a lower one. A rep read "- Engagement: Last engaged 2 days ago" as a contradiction; the
    model lowered the score through it for another reason (an interaction with other values)."""
    if concept == "days_since_last_engagement":
        value = values.get(concept)
        return not _missing(value) and _count(value) < _RECENT_DAYS
    if concept == "engagement_velocity":
        return _count(values.get(concept)) > 0
    if concept in ("missing_fields", "junk_flags"):
        return _count(values.get(concept)) == 0
    return False


def render(concept: str, values: Mapping[str, Any], typical: Typical | None = None) -> str:
    """The sentence for one concept given the lead's feature values (one row as a mapping).

    ``typical`` (a model reference's ``typical``) adds how the lead compares with most leads.
    """
    if concept.startswith("type:"):
        return _render_type(concept[5:], values, typical)
    if concept == "high_intent":
        for w in (7, 30):
            feature = f"high_intent_visits_{w}d"
            n = _count(values.get(feature))
            if n > 0:
                return (f"{_plural(n, 'pricing/demo page visit', 'pricing/demo page visits')} in the last {w} days"
                        + _compare(feature, n, typical, "visits"))
        return "No pricing or demo page visits in the last 30 days" + _compare(
            "high_intent_visits_30d", 0, typical, "visits")
    if concept == "content":
        for w in (7, 30):
            feature = f"content_depth_{w}d"
            n = _count(values.get(feature))
            if n > 0:
                return (f"Engaged with {_plural(n, 'content piece', 'different content pieces')} in the last {w} days"
                        + _compare(feature, n, typical, "pieces"))
        return "No content downloads or webinars in the last 30 days" + _compare(
            "content_depth_30d", 0, typical, "pieces")
    if concept == "engagement_30d":
        n = _count(values.get(concept))
        if n:
            return f"{_plural(n, 'engagement', 'engagements')} in the last 30 days" + _compare(
                concept, n, typical, "engagements")
        return "No engagement in the last 30 days" + _compare(concept, 0, typical, "engagements")
    if concept == "engagement_velocity":
        n = _count(values.get(concept))
        if n > 0:
            return f"Engagement rising: {_plural(n, 'more action', 'more actions')} than in the 30 days before"
        if n < 0:
            return f"Engagement falling: {_plural(-n, 'fewer action', 'fewer actions')} than in the 30 days before"
        return "Engagement flat compared with the 30 days before"
    if concept == "days_since_last_engagement":
        value = values.get(concept)
        if _missing(value):
            return "No engagement yet"
        # One sentence per span between the activity windows, not the day count: a quiet lead is
        # rescored when its latest engagement leaves a window (scoring.inputs.next_aging), and
        # "No engagement for 45 days" stayed in the CRM for weeks after it stopped being true.
        return _RECENCY[bisect.bisect_right(WINDOWS_DAYS, _count(value))]
    if concept == "committee_size":
        n = _count(values.get(concept))
        if n == 0:
            return "No colleagues became leads in the last 90 days"
        if n == 1:
            return "1 colleague became a lead in the last 90 days"
        return f"{n} colleagues became leads in the last 90 days" + _compare(concept, n, typical, "colleagues")
    if concept == "lead_age_days":
        return f"Lead created {_plural(_count(values.get(concept)), 'day', 'days')} ago"
    if concept == "missing_fields":
        n = _count(values.get(concept))
        return f"{_plural(n, 'key field', 'key fields')} missing on the record" if n else "Complete record"
    if concept == "junk_flags":
        return "Record shows signs of test or junk data" if _count(values.get(concept)) else "Record looks genuine"
    if concept == "persona":
        level, dept = values.get("seniority"), values.get("department")
        label = None if _missing(level) else _SENIORITY_LABELS.get(str(level), _text(level))
        if label and not _missing(dept):
            return f"{label} title in {_text(dept)}"
        if label:
            return f"{label} title"
        if not _missing(dept):
            return f"Works in {_text(dept)}"
        return "Job title shows no seniority"
    value = values.get(concept)
    fixed: dict[str, tuple[str, str]] = {
        "industry": (NAMED_CONCEPTS["industry"] + "{}", "Industry unknown"),
        "employee_band": ("Company size {} employees", "Company size unknown"),
        "revenue_band": ("Annual revenue {}", "Annual revenue unknown"),
        "country": ("Based in {}", "Country unknown"),
        "lead_source": (NAMED_CONCEPTS["lead_source"] + "{}", "Lead source unknown"),
        "campaign": (NAMED_CONCEPTS["campaign"] + "{}", "Not from a campaign"),
    }
    if concept in fixed:
        known, unknown = fixed[concept]
        return unknown if _missing(value) else known.format(_text(value))
    if concept == "email_type":
        if _missing(value):
            return "No e-mail address"
        return "Free-mail address" if str(value) == "Free-mail" else "Corporate e-mail address"
    name = concept[len(ATTRIBUTE_PREFIX):] if concept.startswith(ATTRIBUTE_PREFIX) else concept
    label = name.replace("_", " ").strip().capitalize() or "Custom field"
    if _missing(value):
        return f"{label} not set"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{label}: {_text(value)}"


def concept_group(concept: str, features: Sequence[str]) -> str:
    """The sub-score group (fit or engagement) of a concept: that of its features."""
    return ENGAGEMENT if any(group_of(f) == ENGAGEMENT for f in features) else FIT


def _concept_columns(columns: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    concepts: list[str] = []
    members: dict[str, list[str]] = {}
    for col in columns:
        concept = concept_of(str(col))
        if concept not in members:
            concepts.append(concept)
            members[concept] = []
        members[concept].append(str(col))
    return concepts, members


def explain(
    contributions: pd.DataFrame,
    features: pd.DataFrame,
    *,
    positive: int = 3,
    negative: int = 2,
    min_impact: float = MIN_IMPACT,
    typical: Typical | None = None,
    rendered: Rendered | None = None,
    names: Names | None = None,
) -> list[list[Reason]]:
    """Top ``positive`` and ``negative`` reasons per row (rows aligned by position).

    ``contributions`` has one column per feature plus ``__bias__`` (ignored); ``features`` is the
    raw feature frame the contributions were computed on; ``typical`` is the model reference's
    ``typical`` (comparisons with most leads, and the sentences too common to be reasons).
    Positives come first, strongest first. Skipped: absences that raised the score, sentences in
    ``typical["common"]``, and :data:`SILENT_CONCEPTS`. ``rendered``, a dict the caller keeps
    for frames explained with the same ``typical``, spares rendering a sentence twice. ``names``
    (:func:`scoring.features.crm_spellings`) shows the CRM's names as the CRM spells them.
    """
    picks = _picks(contributions, features, positive=positive, negative=negative, min_impact=min_impact,
                   typical=typical, rendered=rendered, names=names)
    out: list[list[Reason]] = [[] for _ in range(picks.rows)]
    for i, j, impact, code in picks:
        out[i].append(Reason(picks.texts[j][code], impact, picks.groups[j]))
    return out


def explain_marked(
    contributions: pd.DataFrame,
    features: pd.DataFrame,
    *,
    positive: int = 3,
    negative: int = 2,
    min_impact: float = MIN_IMPACT,
    typical: Typical | None = None,
    rendered: Rendered | None = None,
    names: Names | None = None,
) -> list[list[str]]:
    """``reason_strings`` of each row's :func:`explain` (the same arguments), without a
    :class:`Reason` per pick: each distinct marked sentence is formatted once. What a scoring run
    stores and writes for thousands of leads."""
    picks = _picks(contributions, features, positive=positive, negative=negative, min_impact=min_impact,
                   typical=typical, rendered=rendered, names=names)
    out: list[list[str]] = [[] for _ in range(picks.rows)]
    marked: dict[tuple[int, int, bool], str] = {}
    for i, j, impact, code in picks:
        key = (j, code, impact > 0)
        text = marked.get(key)
        if text is None:
            text = marked[key] = Reason(picks.texts[j][code], impact, picks.groups[j]).marked
        out[i].append(text)
    return out


@dataclass
class _Picked:
    """The reasons :func:`explain` picks: per pick its row, concept column, impact and sentence
    code, positives first (row by row, strongest first), then negatives."""

    rows: int
    texts: list[list[str]]  # per concept column, each code's sentence
    groups: list[str]  # per concept column
    picked: list[tuple[list[int], list[int], list[float], list[int]]]

    def __iter__(self) -> Iterator[tuple[int, int, float, int]]:
        for rows, cols, impacts, codes in self.picked:
            yield from zip(rows, cols, impacts, codes, strict=True)


def _picks(
    contributions: pd.DataFrame,
    features: pd.DataFrame,
    *,
    positive: int,
    negative: int,
    min_impact: float,
    typical: Typical | None,
    rendered: Rendered | None,
    names: Names | None,
) -> _Picked:
    feature_cols = [c for c in contributions.columns if not str(c).startswith("__")]
    concepts, members = _concept_columns([str(c) for c in feature_cols])
    mapping = np.zeros((len(feature_cols), len(concepts)))
    for i, col in enumerate(feature_cols):
        mapping[i, concepts.index(concept_of(str(col)))] = 1.0
    by_concept = contributions[feature_cols].to_numpy(dtype="float64") @ mapping
    groups = [concept_group(c, members[c]) for c in concepts]
    common = set((typical or {}).get("common") or {})
    sentences = _Sentences(features, typical, rendered)
    n, m = by_concept.shape
    # Per row and concept: its sentence's code (rendered once per distinct combination of the
    # values it reads), and whether that sentence may be a plus / a minus.
    codes = np.zeros((n, m), dtype="int64")
    texts: list[list[str]] = []
    up_ok = np.zeros((n, m), dtype=bool)
    down_ok = np.zeros((n, m), dtype=bool)
    for j, concept in enumerate(concepts):
        if concept in SILENT_CONCEPTS:
            texts.append([])
            continue
        row_codes, said, absent, good, _ = sentences.every(concept)
        usable = np.array([t not in common for t in said], dtype=bool)
        codes[:, j] = row_codes
        texts.append(_spelled(concept, said, names))
        # "3 visits (most leads have none)", "3 visits (typical lead: 1)" or "Last engaged 2 days
        # ago" as a minus, or "1 visit (typical lead: 3)" as a plus, contradicts itself: the model
        # moved the score through this concept for another reason (recency, interactions); leave
        # it out.
        comparison = np.array([compared(t) for t in said], dtype="int64")
        up_ok[:, j] = (usable & ~absent & (comparison >= 0))[row_codes]
        down_ok[:, j] = (usable & (comparison <= 0) & ~good)[row_codes]
    # Strongest first (a stable order, ties by column), the first ``positive`` usable concepts
    # above ``min_impact``; weakest first from the other end for the minuses.
    orders = np.argsort(-by_concept, axis=1, kind="stable")
    ups = _first(np.take_along_axis((by_concept > min_impact) & up_ok, orders, axis=1), positive)
    backwards = orders[:, ::-1]
    downs = _first(np.take_along_axis((by_concept < -min_impact) & down_ok, backwards, axis=1), negative)
    picked = []
    for chosen, order in ((ups, orders), (downs, backwards)):
        rows, ranks = np.nonzero(chosen)  # row-major: each row's picks in order
        cols = order[rows, ranks]
        picked.append((rows.tolist(), cols.tolist(), by_concept[rows, cols].tolist(), codes[rows, cols].tolist()))
    return _Picked(rows=n, texts=texts, groups=groups, picked=picked)


def _first(candidates: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` True values of each row (the others set False)."""
    return candidates & (np.cumsum(candidates, axis=1) <= k)


def _reads(concept: str) -> tuple[str, ...]:
    """The feature values :func:`render` and :func:`is_absence` read for ``concept``."""
    if concept.startswith("type:"):
        return tuple(f"{concept[5:]}_{w}d" for w in WINDOWS_DAYS)
    if concept == "high_intent":
        return ("high_intent_visits_7d", "high_intent_visits_30d")
    if concept == "content":
        return ("content_depth_7d", "content_depth_30d")
    if concept == "persona":
        return ("seniority", "department")
    return (concept,)


def _key(value: Any) -> Any:
    # NaN never equals itself: one key for every NaN (with its type, so 1, 1.0 and True stay apart).
    return None if isinstance(value, float) and math.isnan(value) else value


Rendered = dict[tuple[Any, ...], tuple[str, bool, bool]]


def _text_or_none(column: pd.Series) -> bool:
    """Whether an object column holds only ``str`` values and ``None`` (no NaN, pd.NA or others)."""
    if column.dtype != object or pd.api.types.infer_dtype(column, skipna=True) not in ("string", "empty"):
        return False
    gaps = column.isna().to_numpy()
    return all(v is None for v in column.to_numpy()[gaps])


def _dense(keys: np.ndarray, span: int) -> np.ndarray:
    """Each key (an int in ``0 .. span-1``) as its rank among the distinct keys: ``np.unique``'s
    inverse. Without a sort when ``span`` is small next to the rows (a table of ``span`` flags and
    their running count: a tenth of the sort's time for a 5,000-row batch)."""
    if span <= max(1 << 16, 4 * len(keys)):
        seen = np.zeros(span, dtype=bool)
        seen[keys] = True
        return (np.cumsum(seen) - 1)[keys]
    return np.unique(keys, return_inverse=True)[1].reshape(-1)


def _first_rows(codes: np.ndarray, count: int) -> np.ndarray:
    """For dense codes (each of ``0 .. count-1`` held by some row), the first row holding each."""
    first = np.full(count, len(codes), dtype="int64")
    np.minimum.at(first, codes, np.arange(len(codes), dtype="int64"))
    return first


def _factorized(column: pd.Series, listed: Callable[[Any], list[Any]], gap: Any) -> tuple[np.ndarray, list[Any]]:
    """A column of one kind of value coded by ``pd.factorize``: each row's code, and each code's
    value (``listed(uniques)``, then ``gap`` for the missing values, when there are any)."""
    found_codes, uniques = pd.factorize(column, use_na_sentinel=True)
    values = listed(uniques)
    codes = np.asarray(found_codes, dtype="int64")
    if (codes < 0).any():
        codes = np.where(codes < 0, len(values), codes)
        values.append(gap)
    return codes, values


class _Sentences:
    """A concept's sentence (and whether it is about an absence) per row of a feature frame,
    rendered once per distinct combination of the values it reads: most leads share them. Values
    are coded per column and combinations per concept with numpy, once per frame; each distinct
    combination's sentence is rendered once (once per run with a ``rendered`` dict kept across
    frames)."""

    def __init__(self, features: pd.DataFrame, typical: Typical | None, rendered: Rendered | None = None) -> None:
        self._frame = features
        self._typical = typical
        self._codes: dict[str, tuple[np.ndarray, list[Any]]] = {}
        # Per concept: each row's combination code, how many codes, and the columns read.
        self._combos: dict[str, tuple[np.ndarray, int, list[tuple[str, np.ndarray, list[Any]]]]] = {}
        # Sentences by the values they read, kept by the caller across frames explained with the
        # same ``typical`` (the batches of one scoring run).
        self._rendered: Rendered = rendered if rendered is not None else {}

    def _column_codes(self, name: str) -> tuple[np.ndarray, list[Any]]:
        """Each row's value of ``name`` as a code, and the value of each code. Values are told
        apart by type too (1, 1.0 and True stay apart); every NaN is one value."""
        found = self._codes.get(name)
        if found is not None:
            return found
        column = self._frame[name]
        values: list[Any] = []
        if isinstance(column.dtype, np.dtype) and column.dtype.kind in "biuf":
            # A numpy bool/int/float column holds one type: factorize it (every NaN one value, as
            # below; nullable and object columns take the loop, which keeps pd.NA and None apart).
            codes, values = _factorized(column, lambda uniques: uniques.tolist(), math.nan)
        elif isinstance(column.dtype, pd.StringDtype) and column.dtype.na_value is not pd.NA:
            # pandas' "str" columns (texts and NaN, which is how a feature frame's categoricals
            # come back from pandas 3): NaN as one value, the gap the loop below would keep.
            codes, values = _factorized(column, lambda uniques: [str(v) for v in uniques], math.nan)
        elif _text_or_none(column):
            # Texts and None (a feature frame's categorical column): None as one value.
            codes, values = _factorized(column, list, None)
        else:
            seen: dict[tuple[type, Any], int] = {}
            codes = np.empty(len(column), dtype="int64")
            for i, v in enumerate(column.tolist()):
                key = (type(v), _key(v))
                code = seen.get(key)
                if code is None:
                    code = seen[key] = len(values)
                    values.append(v)
                codes[i] = code
        found = self._codes[name] = (codes, values)
        return found

    def _combined(self, concept: str) -> tuple[np.ndarray, int, list[tuple[str, np.ndarray, list[Any]]]]:
        """Per row, one code for the combination of values ``concept`` reads; how many codes (dense:
        0 .. count-1); and those columns."""
        found = self._combos.get(concept)
        if found is None:
            coded = [(name, *self._column_codes(name)) for name in _reads(concept) if name in self._frame.columns]
            combined = np.zeros(len(self._frame), dtype="int64")
            count = 1 if len(self._frame) else 0  # distinct combinations so far (codes 0 .. count-1)
            for _, codes, values in coded:
                # Re-coded densely after each column, so no product of cardinalities can overflow.
                combined = _dense(combined * len(values) + codes, count * len(values))
                count = int(combined.max()) + 1 if len(combined) else 0
            found = self._combos[concept] = (combined, count, coded)
        return found

    def every(self, concept: str) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Each row's code of ``concept``; each code's sentence, whether it is an absence, whether
        it is good news, and the first row holding it (codes are dense: 0 .. count-1)."""
        combined, count, coded = self._combined(concept)
        first = _first_rows(combined, count)
        texts = [""] * count
        absent = np.zeros(count, dtype=bool)
        good = np.zeros(count, dtype=bool)
        for code, row in enumerate(first.tolist()):
            named = {name: values[codes[row]] for name, codes, values in coded}
            by_values = (concept, *((type(v), _key(v)) for v in named.values()))
            found = self._rendered.get(by_values)
            if found is None:
                found = self._rendered[by_values] = (render(concept, named, self._typical),
                                                     is_absence(concept, named), is_good_news(concept, named))
            texts[code], absent[code], good[code] = found
        return combined, texts, absent, good, first


def typical_values(features: pd.DataFrame, *, common_share: float = COMMON_SHARE) -> dict[str, Any]:
    """What a typical lead of ``features`` (reference or live leads) looks like.

    ``numeric``: per count feature, the share of leads at zero and the median; ``common``: the
    sentences (rendered with these comparisons) that more than ``common_share`` of these leads
    would get, with their share: those are never given as reasons.
    """
    numeric: dict[str, dict[str, float]] = {}
    for col in features.columns:
        if pd.api.types.is_numeric_dtype(features[col]):
            v = pd.to_numeric(features[col], errors="coerce").to_numpy(dtype="float64")
            v = v[np.isfinite(v)]
            if len(v):
                numeric[str(col)] = {"zero": round(float((v == 0).mean()), 4), "median": float(np.median(v))}
    base = {"numeric": numeric}
    concepts, _ = _concept_columns([str(c) for c in features.columns])
    sentences = _Sentences(features, base)
    common: dict[str, float] = {}
    n = len(features)
    if n:
        for concept in concepts:
            if concept in SILENT_CONCEPTS:
                continue
            row_codes, texts, _, _, first = sentences.every(concept)
            per_code = np.bincount(row_codes, minlength=len(texts)).tolist()
            counts: dict[str, int] = {}
            # Codes in the order their first row comes (what a row-by-row count would give).
            for code in np.argsort(first, kind="stable").tolist():
                counts[texts[code]] = counts.get(texts[code], 0) + per_code[code]
            for text, k in counts.items():
                if k / n > common_share:
                    common[text] = round(k / n, 4)
    return {**base, "common": common}


def reason_strings(reasons: Sequence[Reason]) -> list[str]:
    """Reasons as stored on the score row: ``["+ 4 pricing/demo page visits ...", "- Free-mail address"]``."""
    return [r.marked for r in reasons]


def _sign_and_group(reason: str) -> tuple[str, str | None]:
    """("+" or "-", "Fit"/"Engagement" or None for an ungrouped older reason) of a stored reason."""
    label, colon, _ = reason[2:].partition(":")
    return reason[:1], label if colon and label in _GROUP_LABELS.values() else None


def crm_reason_indices(strings: Sequence[str], limit: int = MAX_REASONS_CHARS) -> list[int]:
    """Which of ``strings`` (their indices, in order) the CRM's reasons field holds: whole reasons
    joined by "; " within ``limit`` characters (the first alone, cut, when none fits whole).

    When they do not all fit, the first reason goes first, then the first reason of the other sign,
    then the first of a group (fit, engagement) not yet given, then the rest in order, each whole
    reason that still fits. Taken in order, three long "+ Engagement" reasons filled the field and
    a rep read "fit 16" beside no fit reason at all, and a lead pulled down by something beside no
    "-" reason (a user trial on crmsim)."""
    sizes = [len(s) for s in strings]
    if sum(sizes) + len(SEPARATOR) * max(0, len(strings) - 1) <= limit:  # most leads: every reason fits
        return list(range(len(strings)))
    kinds = [_sign_and_group(s) for s in strings]
    # Each sign's and each group's first reason, in that priority (dicts keep the first index of a
    # key), then every reason in order; the first reason is the first sign's first.
    signs = {sign: i for i, (sign, _) in reversed(list(enumerate(kinds)))}
    groups = {group: i for i, (_, group) in reversed(list(enumerate(kinds))) if group is not None}
    order = dict.fromkeys([*sorted(signs.values()), *sorted(groups.values()), *range(len(strings))])
    kept: list[int] = []
    length = 0
    for i in order:
        extra = sizes[i] + (len(SEPARATOR) if kept else 0)
        if length + extra <= limit:
            kept.append(i)
            length += extra
    return sorted(kept) or [0]  # none fits whole: the first, cut (:func:`join_reasons`)


def join_reasons(strings: Sequence[str], limit: int = MAX_REASONS_CHARS) -> str:
    """One text for the CRM field: the reasons :func:`crm_reason_indices` keeps, in order, joined
    by "; " within ``limit`` characters (a single over-long reason is cut rather than none written)."""
    joined = SEPARATOR.join(strings[i] for i in crm_reason_indices(strings, limit))
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"
