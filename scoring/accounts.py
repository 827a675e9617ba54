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

**Refresh** (:func:`refresh_accounts`, after every scoring run, in its transaction): the accounts
(``account``, linked to leads by ``lead_account`` after each sync) of leads scored in the run, of
leads that joined or left an account, and accounts never computed are recomputed from the current
scores of their open leads. Only an account whose score or engaged-people count changed gets an
``Outbox`` row (kind ``account_fields``, replacing its pending one), sent by the write-back drain;
an account left with no open scored lead gets its fields cleared once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from scoring import registry
from scoring.champions import ensure_score_reference
from scoring.reference import rank
from scoring.score_writes import payload_hash
from store.models import (
    ACCOUNT_OUTBOX_KIND,
    Account,
    Lead,
    LeadAccount,
    LeadLifecycle,
    LeadScore,
    Outbox,
    OutboxStatus,
)

ENGAGED_AT = 50
_CHUNK = 1000


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
    reference: Sequence[float] | np.ndarray,
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


@dataclass
class AccountRefresh:
    """What one refresh did."""

    considered: int = 0  # accounts recomputed
    changed: int = 0  # accounts whose score or engaged people changed: one outbox row each
    cleared: int = 0  # accounts left without open scored leads: fields cleared
    superseded: int = 0  # pending account rows replaced by a newer one
    by_connection: dict[int, int] = field(default_factory=dict)  # outbox rows queued per connection id

    def to_dict(self) -> dict[str, Any]:
        return {"considered": self.considered, "changed": self.changed, "cleared": self.cleared,
                "superseded": self.superseded}


def account_payload(score: int | None, engaged_people: int | None) -> dict[str, Any]:
    """The CRM-neutral account write (None clears the field)."""
    return {"account_score": score, "engaged_people": engaged_people}


def accounts_to_refresh(session: Session, since_score_id: int | None) -> list[int]:
    """Account ids whose inputs may have moved: leads scored after ``since_score_id`` (all current
    scores when None), open-lead counts that differ from the stored ones, never computed."""
    out: set[int] = set()
    scored = select(LeadAccount.account_id).join(LeadScore, LeadScore.lead_id == LeadAccount.lead_id).where(
        LeadAccount.account_id.is_not(None), LeadScore.is_current.is_(True))
    if since_score_id is not None:
        scored = scored.where(LeadScore.id > since_score_id)
    out.update(int(i) for i in session.scalars(scored.distinct()) if i is not None)
    live: dict[int, int] = {int(a): int(n) for a, n in session.execute(
        select(LeadAccount.account_id, func.count())
        .join(Lead, Lead.id == LeadAccount.lead_id)
        .join(LeadScore, (LeadScore.lead_id == Lead.id) & LeadScore.is_current.is_(True))
        .where(LeadAccount.account_id.is_not(None), Lead.lifecycle == LeadLifecycle.open)
        .group_by(LeadAccount.account_id)).all() if a is not None}
    for account_id, open_leads, refreshed in session.execute(
            select(Account.id, Account.open_leads, Account.refreshed_at)):
        if refreshed is None and account_id in live or live.get(account_id, 0) != open_leads:
            out.add(int(account_id))
    return sorted(out)


def refresh_accounts(session: Session, *, since_score_id: int | None = None,
                     now: datetime | None = None) -> AccountRefresh:
    """Recompute the accounts whose leads' scores or membership changed; queue their CRM writes.

    Runs in the caller's transaction (no commit). Ranks against the global champion's reference
    leads; does nothing before a champion exists. See the module docstring.
    """
    result = AccountRefresh()
    champion = registry.champion(session)
    if champion is None:
        return result
    when = now or datetime.now(UTC)
    reference = np.sort(np.asarray(ensure_score_reference(session, champion)["probability"], dtype="float64"))
    ids = accounts_to_refresh(session, since_score_id)
    for start in range(0, len(ids), _CHUNK):
        _refresh_chunk(session, ids[start:start + _CHUNK], reference, when, result)
    return result


def _refresh_chunk(session: Session, ids: list[int], reference: np.ndarray, when: datetime,
                   result: AccountRefresh) -> None:
    rows = session.execute(
        select(LeadAccount.account_id, LeadScore.probability, LeadScore.engagement_score)
        .join(Lead, Lead.id == LeadAccount.lead_id)
        .join(LeadScore, (LeadScore.lead_id == Lead.id) & LeadScore.is_current.is_(True))
        .where(LeadAccount.account_id.in_(ids), Lead.lifecycle == LeadLifecycle.open)).all()
    scores = account_scores(((str(a), float(p), e) for a, p, e in rows), reference)
    accounts = list(session.scalars(select(Account).where(Account.id.in_(ids))))
    changed: list[tuple[Account, dict[str, Any]]] = []
    for account in accounts:
        result.considered += 1
        computed = scores.get(str(account.id))
        new = (computed.score, computed.engaged_people) if computed else (None, None)
        old = (account.score, account.engaged_people)
        account.probability = computed.probability if computed else None
        account.open_leads = computed.leads if computed else 0
        account.refreshed_at = when
        if new == old:
            continue
        account.score, account.engaged_people = new
        changed.append((account, account_payload(*new)))
        if computed is None:
            result.cleared += 1
    if not changed:
        return
    superseded = session.execute(
        update(Outbox).where(Outbox.account_id.in_([a.id for a, _ in changed]),
                             Outbox.status == OutboxStatus.pending, Outbox.kind == ACCOUNT_OUTBOX_KIND)
        .values(status=OutboxStatus.superseded),
        execution_options={"synchronize_session": False})
    result.superseded += int(getattr(superseded, "rowcount", 0) or 0)
    session.execute(insert(Outbox), [
        {"connection_id": account.connection_id, "lead_id": None, "account_id": account.id,
         "crm_id": account.crm_id, "kind": ACCOUNT_OUTBOX_KIND, "payload": payload,
         "payload_hash": payload_hash(payload), "status": OutboxStatus.pending, "attempts": 0, "lead_score_id": None,
         "created_at": when, "next_attempt_at": when}
        for account, payload in changed])
    result.changed += len(changed)
    for account, _ in changed:
        result.by_connection[account.connection_id] = result.by_connection.get(account.connection_id, 0) + 1
