"""Which CRM account each lead belongs to, found after each sync and kept in ``lead_account``.

Each CRM package has an :class:`AccountFinder` (Salesforce: Account by company name, by website
domain, or by the ``AccountId`` of a Contact with the lead's e-mail, in batched SOQL; HubSpot: the
contact's primary associated company). :func:`link_accounts` asks it about the open leads that
need a look-up, in bounded batches, and stores what it answered:

* a lead never looked up, or whose inputs (company, e-mail...) changed since, is looked up;
* a lead that matched no account is looked up again after :data:`RECHECK_UNMATCHED` (an admin
  may have created the account meanwhile);
* each batch commits its accounts (``account``, keyed by (connection, CRM id)) and the leads'
  links together, so an interrupted run keeps what it found.

The account score and engaged-people count are computed from these links by
:mod:`scoring.accounts` and written by the write-back drain (:mod:`connectors.account_writeback`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, or_, select
from sqlalchemy.orm import Session

from config.app_config import ConnectionConfig
from connectors.normalise import FREEMAIL_DOMAINS, JUNK_TOKENS, email_domain
from store.db import unit_of_work
from store.models import Account, ApiPurpose, Connection, Lead, LeadAccount, LeadLifecycle
from store.upsert import upsert_rows
from store.usage import CallMeter, add_api_calls, record_api_calls

logger = logging.getLogger(__name__)

LINK_BATCH = 500  # leads looked up per batch (one transaction, a few CRM calls)
RECHECK_UNMATCHED = timedelta(days=1)
_WEBSITE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:www\d?\.)?([^/:?#\s]+)")


@dataclass(frozen=True)
class LeadForAccount:
    """What a finder may use to place a lead: its CRM id, company text, e-mail and raw payload."""

    lead_id: int
    crm_id: str
    company: str | None
    email: str | None
    raw: dict[str, Any]

    @property
    def company_name(self) -> str | None:
        """The company as typed, or None for a blank or placeholder ("N/A", "[not provided]")."""
        text = (self.company or "").strip()
        return None if text.casefold() in JUNK_TOKENS else text

    @property
    def corporate_domain(self) -> str | None:
        """The e-mail's domain unless it is a free-mail one (those say nothing about the company)."""
        domain = email_domain((self.email or "").strip().lower())
        return domain if domain and domain not in FREEMAIL_DOMAINS else None


@dataclass(frozen=True)
class AccountMatch:
    """The account a finder placed a lead at, and how (``name``, ``domain``, ``contact``, ``association``)."""

    crm_id: str
    name: str | None
    domain: str | None
    matched_by: str


class AccountFinder(Protocol):
    """One CRM's way of finding leads' accounts."""

    @property
    def api_calls(self) -> int:
        """HTTP requests sent so far by the underlying client."""
        ...

    def find(self, leads: Sequence[LeadForAccount]) -> dict[int, AccountMatch]:
        """The account of each lead that has one, by ``lead_id``; leads without are left out."""
        ...


def website_domain(website: str | None) -> str | None:
    """``https://www.Acme.com/about`` -> ``acme.com``: the host of a website as typed, no ``www``."""
    if not website:
        return None
    match = _WEBSITE.match(website.strip().lower())
    host = match.group(1).rstrip(".") if match else ""
    return host if "." in host else None


@dataclass
class LinkReport:
    """What one look-up run did for one connection."""

    connection: str
    checked: int = 0
    linked: int = 0
    unmatched: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    accounts: int = 0  # distinct accounts the linked leads belong to
    api_calls: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"connection": self.connection, "checked": self.checked, "linked": self.linked,
                "unmatched": self.unmatched, "by_method": dict(sorted(self.by_method.items())),
                "accounts": self.accounts, "api_calls": self.api_calls, "seconds": round(self.seconds, 2)}


def leads_to_link(session: Session, connection_id: int, now: datetime, *, after_id: int = 0,
                  limit: int = LINK_BATCH) -> list[LeadForAccount]:
    """Open leads of the connection that need a look-up, in id order after ``after_id``."""
    link = LeadAccount
    rows = session.execute(
        select(Lead.id, Lead.crm_id, Lead.company, Lead.email, Lead.raw)
        .outerjoin(link, link.lead_id == Lead.id)
        .where(Lead.connection_id == connection_id, Lead.lifecycle == LeadLifecycle.open, Lead.id > after_id)
        .where(or_(link.lead_id.is_(None), link.checked_at < Lead.inputs_changed_at,
                   link.account_id.is_(None) & (link.checked_at < now - RECHECK_UNMATCHED)))
        .order_by(Lead.id)
        .limit(limit)
    ).all()
    return [LeadForAccount(int(i), str(c), company, email, dict(raw or {})) for i, c, company, email, raw in rows]


def store_links(session: Session, connection_id: int, leads: Sequence[LeadForAccount],
                found: dict[int, AccountMatch], now: datetime) -> dict[int, int]:
    """Upsert the found accounts and every looked-up lead's link; returns {lead id: account row id}."""
    accounts: dict[str, AccountMatch] = {}
    for found_match in found.values():
        accounts.setdefault(found_match.crm_id, found_match)
    upsert_rows(session, Account, [
        {"connection_id": connection_id, "crm_id": m.crm_id, "name": (m.name or None) and m.name[:255],
         "domain": (m.domain or None) and m.domain[:255], "open_leads": 0, "created_at": now}
        for m in sorted(accounts.values(), key=lambda m: m.crm_id)
    ], conflict_columns=["connection_id", "crm_id"], update_columns=["name", "domain"])
    ids: dict[str, int] = {}
    crm_ids = sorted(accounts)
    for start in range(0, len(crm_ids), 500):
        ids.update({crm_id: row_id for row_id, crm_id in session.execute(
            select(Account.id, Account.crm_id).where(Account.connection_id == connection_id,
                                                     Account.crm_id.in_(crm_ids[start:start + 500])))})
    links = []
    out: dict[int, int] = {}
    for lead in leads:
        match = found.get(lead.lead_id)
        account_id = ids[match.crm_id] if match else None
        if account_id is not None:
            out[lead.lead_id] = account_id
        links.append({"lead_id": lead.lead_id, "account_id": account_id,
                      "matched_by": match.matched_by if match else None, "checked_at": now})
    upsert_rows(session, LeadAccount, links, conflict_columns=["lead_id"])
    return out


def link_accounts(engine: Engine, conn: ConnectionConfig, finder: AccountFinder, *,
                  now: datetime | None = None, limit: int | None = None) -> LinkReport:
    """Look up the accounts of ``conn``'s open leads that need it (see the module docstring).

    One transaction per batch of :data:`LINK_BATCH` leads. ``limit`` bounds the leads looked up in
    this run. CRM errors propagate as :mod:`connectors.errors` types (batches already committed
    stay).
    """
    clock = now or datetime.now(UTC)
    started = time.monotonic()
    report = LinkReport(connection=conn.name)
    before = finder.api_calls
    with unit_of_work(engine) as session:
        connection_id = session.scalar(select(Connection.id).where(Connection.name == conn.name))
    if connection_id is None:
        return report
    after_id = 0
    accounts: set[int] = set()
    meter = CallMeter(lambda: finder.api_calls, before)
    try:
        while limit is None or report.checked < limit:
            size = LINK_BATCH if limit is None else min(LINK_BATCH, limit - report.checked)
            with unit_of_work(engine) as session:
                leads = leads_to_link(session, connection_id, clock, after_id=after_id, limit=size)
                if not leads:
                    break
                found = finder.find(leads)
                linked = store_links(session, connection_id, leads, found, clock)
                add_api_calls(session, connection_id, ApiPurpose.accounts, meter.take())
            after_id = leads[-1].lead_id
            report.checked += len(leads)
            report.linked += len(linked)
            report.unmatched += len(leads) - len(linked)
            accounts.update(linked.values())
            for match in found.values():
                report.by_method[match.matched_by] = report.by_method.get(match.matched_by, 0) + 1
    finally:
        # A batch the CRM refused: its calls were made all the same.
        record_api_calls(engine, connection_id, ApiPurpose.accounts, meter.take())
    report.accounts = len(accounts)
    report.api_calls = finder.api_calls - before
    report.seconds = time.monotonic() - started
    if report.checked:
        logger.info("accounts %s: %d leads looked up, %d linked to %d accounts, %d unmatched (%d API calls)",
                    conn.name, report.checked, report.linked, report.accounts, report.unmatched, report.api_calls)
    return report
