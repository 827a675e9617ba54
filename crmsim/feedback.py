"""Simulated reps flag scores that look wrong: the score-feedback picklist, set in the CRM UI.

A rep sees a lead's score field and knows the lead a little better than the model (the hidden
truth stands in for that knowledge). On a share of scored open leads each rep leaves feedback,
more often where the score is far from the lead's true rank: "Too high" when the score is well
above the true rank, "Too low" when well below, "About right" otherwise; some add a comment.

Everything is seeded per lead, so the same seed gives the same feedback. Nothing here knows
leadscore's code: the field names are the defaults leadscore documents (parameters).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping
from typing import Any

FEEDBACK_VALUES = ("Too high", "Too low", "About right")
FAR = 20  # score points between the score and the true rank that make a rep disagree
_COMMENTS = {
    "Too high": "Spoke to them: no budget this year",
    "Too low": "Asked for a demo on the phone",
    "About right": "",
}


def _true_ranks(truth: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Each person's true probability as a percentile (0-100) of everyone's."""
    probs = sorted(float(r["true_probability"]) for r in truth if r.get("true_probability") is not None)
    out: dict[tuple[str, str], float] = {}
    if not probs:
        return out
    for row in truth:
        p = row.get("true_probability")
        if p is None or not row.get("crm_id"):
            continue
        out[(str(row["crm"]), str(row["crm_id"]))] = 100.0 * bisect.bisect_left(probs, float(p)) / len(probs)
    return out


def _decide(score: float, true_rank: float, share: float, rng: random.Random) -> str | None:
    gap = score - true_rank
    chance = min(0.9, share * (0.5 + abs(gap) / FAR))
    if rng.random() >= chance:
        return None
    if gap > FAR:
        return "Too high"
    if gap < -FAR:
        return "Too low"
    return "About right"


def reps_leave_feedback(
    salesforce_store: Any,
    hubspot_store: Any,
    truth: list[dict[str, Any]],
    *,
    share: float = 0.06,
    seed: int = 0,
    salesforce_fields: Mapping[str, str] | None = None,
    hubspot_fields: Mapping[str, str] | None = None,
) -> dict[str, dict[str, int]]:
    """Set the feedback fields on scored, open, not-yet-flagged leads/contacts; counts per value."""
    sf = {"score": "Lead_Score__c", "feedback": "Lead_Score_Feedback__c",
          "comment": "Lead_Score_Feedback_Comment__c", **(salesforce_fields or {})}
    hs = {"score": "leadscore_score", "feedback": "leadscore_feedback", "comment": "leadscore_feedback_comment",
          **(hubspot_fields or {})}
    ranks = _true_ranks(truth)
    counts: dict[str, dict[str, int]] = {"salesforce": {}, "hubspot": {}}
    with salesforce_store.lock:
        for rec in list(salesforce_store.records["Lead"].values()):
            values = rec.values
            score = values.get(sf["score"])
            if score is None or values.get("IsDeleted") or values.get("IsConverted") or values.get(sf["feedback"]):
                continue
            true_rank = ranks.get(("salesforce", rec.id))
            if true_rank is None:
                continue
            choice = _decide(float(score), true_rank, share, random.Random(f"crmsim/{seed}/feedback/{rec.id}"))
            if choice is None:
                continue
            changes = {sf["feedback"]: choice}
            if _COMMENTS[choice]:
                changes[sf["comment"]] = _COMMENTS[choice]
            salesforce_store._write(rec, changes, "funnel")  # a rep in the UI: not an API write
            counts["salesforce"][choice] = counts["salesforce"].get(choice, 0) + 1
    with hubspot_store.lock:
        known = hubspot_store.properties.get("contacts", {})
        if hs["feedback"] in known:
            for rec in list(hubspot_store.records["contacts"].values()):
                props = rec.props
                score = props.get(hs["score"])
                if score in (None, "") or rec.archived or props.get(hs["feedback"]) \
                        or props.get("lifecyclestage") == "customer":
                    continue
                true_rank = ranks.get(("hubspot", str(rec.id)))
                if true_rank is None:
                    continue
                choice = _decide(float(score), true_rank, share,
                                 random.Random(f"crmsim/{seed}/feedback/{rec.id}"))
                if choice is None:
                    continue
                update: dict[str, str | None] = {hs["feedback"]: choice}
                if _COMMENTS[choice] and hs["comment"] in known:
                    update[hs["comment"]] = _COMMENTS[choice]
                hubspot_store._apply(rec, update, "funnel")
                counts["hubspot"][choice] = counts["hubspot"].get(choice, 0) + 1
    return counts
