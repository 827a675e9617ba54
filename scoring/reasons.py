"""Reason codes: the top drivers of a lead's score, in words a rep understands.

Per-feature contributions (SHAP values for CatBoost, see ``TrainedModel.contributions``) are
first summed per *concept*: the 7/30/90-day counts of one activity type are one concept, title
seniority and department are one ("VP-level title in Engineering"). The three concepts that
pushed the score up most and the two that pulled it down most are rendered as short sentences
using the lead's own values ("4 pricing/demo page visits in the last 7 days", "No engagement
for 45 days", "Free-mail address"). Raw feature names never appear.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scoring.features import ATTRIBUTE_PREFIX, ENGAGEMENT_TYPES, WINDOWS_DAYS
from scoring.frame import MISSING_TOKEN

MAX_REASONS_CHARS = 255
SEPARATOR = "; "
# Contributions (log-odds) smaller than this move the score by well under a point: not a reason.
MIN_IMPACT = 0.02

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

    @property
    def marked(self) -> str:
        """The sentence with its direction: ``"+ ..."`` raises the score, ``"- ..."`` lowers it."""
        return f"{'+' if self.impact > 0 else '-'} {self.text}"


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


def _render_type(activity_type: str, values: Mapping[str, Any]) -> str:
    one, many = _TYPE_LABELS.get(activity_type, (activity_type.replace("_", " "),) * 2)
    for w in WINDOWS_DAYS:
        n = _count(values.get(f"{activity_type}_{w}d"))
        if n > 0:
            return f"{_plural(n, one, many)} in the last {w} days"
    return f"No {many} in the last {max(WINDOWS_DAYS)} days"


def _text(value: Any) -> str:
    return str(value).strip()[:60]


def render(concept: str, values: Mapping[str, Any]) -> str:
    """The sentence for one concept given the lead's feature values (one row as a mapping)."""
    if concept.startswith("type:"):
        return _render_type(concept[5:], values)
    if concept == "high_intent":
        for w in (7, 30):
            n = _count(values.get(f"high_intent_visits_{w}d"))
            if n > 0:
                return f"{_plural(n, 'pricing/demo page visit', 'pricing/demo page visits')} in the last {w} days"
        return "No pricing or demo page visits in the last 30 days"
    if concept == "content":
        for w in (7, 30):
            n = _count(values.get(f"content_depth_{w}d"))
            if n > 0:
                return f"Engaged with {_plural(n, 'content piece', 'different content pieces')} in the last {w} days"
        return "No content downloads or webinars in the last 30 days"
    if concept == "engagement_30d":
        n = _count(values.get(concept))
        if n:
            return f"{_plural(n, 'engagement', 'engagements')} in the last 30 days"
        return "No engagement in the last 30 days"
    if concept == "engagement_velocity":
        n = _count(values.get(concept))
        if n > 0:
            return f"Engagement rising: {n} more actions than the 30 days before"
        if n < 0:
            return f"Engagement falling: {-n} fewer actions than the 30 days before"
        return "Engagement flat compared with the 30 days before"
    if concept == "days_since_last_engagement":
        value = values.get(concept)
        if _missing(value):
            return "No engagement yet"
        days = _count(value)
        if days <= 1:
            return "Engaged in the last day"
        if days < 14:
            return f"Last engaged {days} days ago"
        return f"No engagement for {days} days"
    if concept == "committee_size":
        n = _count(values.get(concept))
        if n == 0:
            return "No colleagues became leads in the last 90 days"
        return f"{_plural(n, 'colleague', 'colleagues')} became leads in the last 90 days"
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
        "industry": ("Industry: {}", "Industry unknown"),
        "employee_band": ("Company size {} employees", "Company size unknown"),
        "revenue_band": ("Annual revenue {}", "Annual revenue unknown"),
        "country": ("Based in {}", "Country unknown"),
        "lead_source": ("Lead source: {}", "Lead source unknown"),
        "campaign": ("From campaign {}", "Not from a campaign"),
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


def explain(
    contributions: pd.DataFrame,
    features: pd.DataFrame,
    *,
    positive: int = 3,
    negative: int = 2,
    min_impact: float = MIN_IMPACT,
) -> list[list[Reason]]:
    """Top ``positive`` and ``negative`` reasons per row (rows aligned by position).

    ``contributions`` has one column per feature plus ``__bias__`` (ignored); ``features`` is the
    raw feature frame the contributions were computed on. Positives come first, strongest first.
    """
    feature_cols = [c for c in contributions.columns if not str(c).startswith("__")]
    concepts: list[str] = []
    for col in feature_cols:
        concept = concept_of(str(col))
        if concept not in concepts:
            concepts.append(concept)
    mapping = np.zeros((len(feature_cols), len(concepts)))
    for i, col in enumerate(feature_cols):
        mapping[i, concepts.index(concept_of(str(col)))] = 1.0
    by_concept = contributions[feature_cols].to_numpy(dtype="float64") @ mapping
    records = features.to_dict(orient="records")
    out: list[list[Reason]] = []
    for row, values in zip(by_concept, records, strict=True):
        order = np.argsort(-row, kind="stable")
        ups = [j for j in order[:positive] if row[j] > min_impact]
        downs = [j for j in order[::-1][:negative] if row[j] < -min_impact]
        out.append([Reason(render(concepts[j], values), float(row[j])) for j in [*ups, *downs]])
    return out


def reason_strings(reasons: Sequence[Reason]) -> list[str]:
    """Reasons as stored on the score row: ``["+ 4 pricing/demo page visits ...", "- Free-mail address"]``."""
    return [r.marked for r in reasons]


def join_reasons(strings: Sequence[str], limit: int = MAX_REASONS_CHARS) -> str:
    """One text for the CRM field: whole reasons joined by "; " within ``limit`` characters."""
    parts: list[str] = []
    length = 0
    for s in strings:
        extra = len(s) + (len(SEPARATOR) if parts else 0)
        if length + extra > limit:
            if not parts:  # a single over-long reason: cut it rather than write nothing
                return s[: limit - 1] + "…"
            break
        parts.append(s)
        length += extra
    return SEPARATOR.join(parts)
