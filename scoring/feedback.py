"""Rep feedback on scores: what reps flagged, by tier, and what later happened to flagged leads.

Reps set a picklist on the lead (Salesforce ``Lead_Score_Feedback__c``, HubSpot
``leadscore_feedback``: Too high, Too low, About right) and optionally a comment. The sync reads
both back with the lead, into ``lead.raw``. Feedback is evidence for the model's owners, never a
training label: a rep's view is not an outcome, and training on it would teach the model the
reps' opinions.

:func:`feedback_summary` answers: how much feedback per tier, and did the leads flagged "Too low"
convert more than the rest of their tier (and "Too high" less)? A tier's rate is measured on its
unflagged leads, so the comparison is like for like.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.app_config import SCORE_FIELDS_BY_KIND, AppConfig, HubSpotFields, SalesforceFields
from store.models import Connection, Lead, LeadScore

VALUES = ("Too high", "Too low", "About right")
TIERS = ("A", "B", "C", "D")
_CHUNK = 2000


def _names(config: AppConfig | None) -> dict[str, SalesforceFields | HubSpotFields]:
    out: dict[str, SalesforceFields | HubSpotFields] = {}
    for conn in (config.connections if config else []):
        if conn.score_fields is not None:
            out[conn.name] = conn.score_fields
    return out


def feedback_of(kind: str, raw: Mapping[str, Any] | None, fields: SalesforceFields | HubSpotFields | None
                ) -> tuple[str | None, str | None]:
    """(feedback, comment) of a lead's stored CRM record, or (None, None)."""
    cls = SCORE_FIELDS_BY_KIND.get(kind)
    if not isinstance(raw, Mapping) or cls is None:
        return None, None
    if fields is None:
        fields = cls()
    record = cls.stored_record(raw)
    if not isinstance(record, Mapping):
        return None, None
    value = record.get(fields.feedback) if fields.feedback else None
    comment = record.get(fields.feedback_comment) if fields.feedback_comment else None
    value = str(value).strip() if value not in (None, "") else None
    comment = str(comment).strip() if comment not in (None, "") else None
    return (value if value in VALUES else None), comment


def lead_feedback(session: Session, lead: Lead, config: AppConfig | None = None) -> dict[str, str | None] | None:
    """The rep feedback on ``lead``'s score as last synced (``{"feedback", "comment"}``), or None."""
    conn = session.get(Connection, lead.connection_id)
    if conn is None:
        return None
    value, comment = feedback_of(conn.kind, lead.raw, _names(config).get(conn.name))
    if value is None and comment is None:
        return None
    return {"feedback": value, "comment": comment}


def feedback_words(found: Mapping[str, str | None] | None) -> str | None:
    """:func:`lead_feedback` as one line, "Too low — asked for a demo" (None without feedback)."""
    if not found:
        return None
    return " — ".join(v for v in (found.get("feedback"), found.get("comment")) if v)


def feedback_summary(session: Session, config: AppConfig | None = None) -> dict[str, Any]:
    """Feedback by current tier and the later conversion of flagged leads vs their tier's others."""
    names = _names(config)
    stmt = (
        select(Lead.id, Connection.name, Connection.kind, Lead.raw, Lead.is_converted, LeadScore.tier)
        .join(Connection, Connection.id == Lead.connection_id)
        .join(LeadScore, (LeadScore.lead_id == Lead.id) & LeadScore.is_current.is_(True))
        .where(Lead.is_deleted.is_(False))
        .order_by(Lead.id)
        .execution_options(yield_per=_CHUNK)
    )
    by_tier = {t: {"leads": 0, **{v: 0 for v in VALUES}} for t in TIERS}
    tier_plain = {t: [0, 0] for t in TIERS}  # unflagged leads: [leads, converted]
    flagged: dict[str, list[tuple[str, bool]]] = {v: [] for v in VALUES}
    comments: list[dict[str, Any]] = []
    scored = 0
    for _lead_id, conn_name, kind, raw, converted, tier in session.execute(stmt):
        scored += 1
        tier = tier if tier in by_tier else "D"
        by_tier[tier]["leads"] += 1
        value, comment = feedback_of(kind, raw, names.get(conn_name))
        if value is None:
            tier_plain[tier][0] += 1
            tier_plain[tier][1] += int(bool(converted))
            continue
        by_tier[tier][value] += 1
        flagged[value].append((tier, bool(converted)))
        if comment and len(comments) < 5:
            comments.append({"feedback": value, "tier": tier, "comment": comment[:200]})
    tier_rate = {t: (c / n if n else None) for t, (n, c) in tier_plain.items()}
    outcomes: dict[str, Any] = {}
    for value, rows in flagged.items():
        expected = [r for t, _ in rows if (r := tier_rate[t]) is not None]
        outcomes[value] = {
            "leads": len(rows),
            "converted": sum(1 for _, c in rows if c),
            "conversion_rate": (sum(1 for _, c in rows if c) / len(rows)) if rows else None,
            # What the same leads would convert at if they behaved like their tiers' unflagged leads.
            "tier_conversion_rate": (sum(expected) / len(expected)) if expected else None,
        }
    total = sum(len(rows) for rows in flagged.values())
    return {"scored_leads": scored, "leads_with_feedback": total, "by_tier": by_tier, "outcomes": outcomes,
            "comments": comments}
