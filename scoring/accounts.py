"""Account view: one score per account from its open leads, and how many of its people engage.

Leads roll up to an account by ``company_key`` (the normalised company name, or the corporate
e-mail domain; see :func:`scoring.personas.company_key`): the CRM's account is found from it
(Salesforce Account by name / Contact AccountId, HubSpot company by association).

**Account score** (1-99): the chance that *at least one* of the account's open leads converts,
``1 − Π(1 − pᵢ)`` over their calibrated probabilities (leads treated as independent), ranked
against the champion's reference leads like a lead's score: "this account is as likely to
produce a conversion as a lead scoring N". So one hot lead (p = 0.6) and five warm ones (p = 0.2
each: 1 − 0.8⁵ = 0.67) both make a hot account, and the five warm ones slightly more so; five
cold leads (p = 0.02: 0.10) do not add up to a hot account.

**Engaged people** (buying-committee coverage): the account's open leads whose engagement score
is at least :data:`ENGAGED_AT` (they engage more than half of the reference leads).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from scoring.reference import rank

ENGAGED_AT = 50


@dataclass(frozen=True)
class AccountScore:
    company_key: str
    leads: int
    probability: float  # P(at least one open lead converts)
    score: int  # 1-99, ranked against the reference leads
    engaged_people: int


def combine(probabilities: Sequence[float]) -> float:
    """P(at least one converts) for independent leads: ``1 − Π(1 − pᵢ)``."""
    p = np.clip(np.asarray(probabilities, dtype="float64"), 0.0, 1.0)
    return float(1.0 - np.prod(1.0 - p)) if len(p) else 0.0


def account_scores(
    rows: Iterable[tuple[str, float, int | None]],
    reference: Sequence[float],
    *,
    engaged_at: int = ENGAGED_AT,
) -> dict[str, AccountScore]:
    """Account scores from ``(company_key, probability, engagement_score)`` of open leads."""
    grouped: dict[str, list[tuple[float, int | None]]] = {}
    for key, probability, engagement in rows:
        if key:
            grouped.setdefault(key, []).append((float(probability), engagement))
    keys = sorted(grouped)
    combined = np.array([combine([p for p, _ in grouped[k]]) for k in keys])
    ranks = rank(combined, reference) if keys else np.array([], dtype="int64")
    return {
        k: AccountScore(
            company_key=k, leads=len(grouped[k]), probability=round(float(c), 6), score=int(s),
            engaged_people=sum(1 for _, e in grouped[k] if e is not None and e >= engaged_at),
        )
        for k, c, s in zip(keys, combined, ranks, strict=True)
    }
