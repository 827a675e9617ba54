"""Writing one sync page into the store: leads, activities, merges, campaigns, quarantine.

Everything here runs inside the caller's transaction (one per page, see :mod:`connectors.sync`):
rows are upserted keyed by (connection, CRM id), so a page read twice (an overlap, a restart, two
time-window slices meeting) is an update, never a duplicate. ``inputs_changed_at`` moves only when
a lead's model inputs change (``inputs_hash``) or one of its activities arrives or goes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from connectors.base import ActivityRecord, Connector, LeadRecord, Merge, Page, QuarantinedItem
from connectors.lifecycle import cancel_not_open
from connectors.normalise import INPUT_FIELDS, inputs_hash
from store.models import Activity, Lead, LeadLifecycle, PendingCampaign, QuarantinedRecord
from store.upsert import upsert_rows


def apply_page(session: Session, connector: Connector, connection_id: int, page: Page,
               run_id: int | None = None) -> dict[str, int]:
    """Write one page (leads, merges, company refreshes, activities, quarantine) in ``session``.

    Runs in the caller's transaction. Returns counts of lead and activity rows written.
    """
    now = datetime.now(UTC)
    leads = list(page.leads)
    if page.company_updates:
        leads.extend(_relinked_leads(session, connector, connection_id, page.company_updates))
    written_leads = upsert_leads(session, connection_id, leads, now)
    if page.merges:
        apply_merges(session, connection_id, page.merges, now)
    if page.lead_campaigns:
        apply_lead_campaigns(session, connection_id, page.lead_campaigns, now)
    written_activities = upsert_activities(session, connection_id, page.activities, now)
    _quarantine(session, connection_id, page.stream, page.quarantined, run_id)
    return {"leads": written_leads, "activities": written_activities}


# Lead columns learnt from another record than the lead itself: a merge (from the survivor, HubSpot)
# and the original campaign (from the CampaignMember, Salesforce). Re-reading the lead, which does
# not carry them, must not erase them.
KEPT_WHEN_NULL: tuple[str, ...] = ("merged_into_crm_id", "campaign")


def _bulk_upsert(session: Session, model: type[Any], rows: Sequence[dict[str, Any]],
                 conflict: Sequence[str]) -> None:
    """INSERT .. ON CONFLICT DO UPDATE as one executemany: the statement compiles once (cached),
    which is several times faster than a multi-VALUES statement per page."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        upsert_rows(session, model, rows, conflict_columns=conflict)
        return
    insert_fn: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = sa_inspect(model).local_table
    stmt = insert_fn(table)
    updates = [c for c in rows[0] if c not in conflict]
    set_: dict[str, Any] = {c: stmt.excluded[c] for c in updates}
    for column in KEPT_WHEN_NULL:
        if column in set_:
            set_[column] = func.coalesce(stmt.excluded[column], table.c[column])
    stmt = stmt.on_conflict_do_update(index_elements=list(conflict), set_=set_)
    session.execute(stmt, list(rows))


def _last_by_id(records: Iterable[Any]) -> list[Any]:
    # PostgreSQL refuses one INSERT .. ON CONFLICT touching a row twice: keep each id's last version.
    by_id: dict[str, Any] = {}
    for record in records:
        by_id[record.crm_id] = record
    return list(by_id.values())


_LEAD_COLUMNS = (
    "email", "first_name", "last_name", "title", "company", "company_key", "industry", "employees",
    "annual_revenue", "country", "lead_source", "campaign", "status", "owner_crm_id", "is_converted",
    "converted_at", "crm_created_at", "crm_modified_at", "is_deleted", "deleted_at", "merged_into_crm_id",
    "attributes", "raw", "lifecycle",
)


def upsert_leads(session: Session, connection_id: int, records: Sequence[LeadRecord], now: datetime) -> int:
    """Upsert leads; ``inputs_changed_at`` moves only for leads whose ``inputs_hash`` changed,
    and activities waiting for these leads get linked."""
    records = _last_by_id(records)
    if not records:
        return 0
    ids = [r.crm_id for r in records]
    existing: dict[str, str | None] = {}
    kept: dict[str, dict[str, Any]] = {}
    for crm_id, digest, merged_into, campaign in session.execute(
            select(Lead.crm_id, Lead.inputs_hash, Lead.merged_into_crm_id, Lead.campaign)
            .where(Lead.connection_id == connection_id, Lead.crm_id.in_(ids))):
        existing[crm_id] = digest
        kept[crm_id] = {"merged_into_crm_id": merged_into, "campaign": campaign}
    changed: list[dict[str, Any]] = []
    unchanged: list[dict[str, Any]] = []
    for record in records:
        row: dict[str, Any] = {"connection_id": connection_id, "crm_id": record.crm_id}
        row.update({name: getattr(record, name) for name in _LEAD_COLUMNS})
        stored = kept.get(record.crm_id, {})
        keep = {c: stored[c] for c in KEPT_WHEN_NULL if getattr(record, c) is None and stored.get(c) is not None}
        if keep:
            # The upsert keeps these (COALESCE): hash what will be stored.
            record = replace(record, **keep)
            if record.is_deleted and record.merged_into_crm_id:
                # A merge learnt from the survivor: the loser stays "merged" when re-read archived.
                row["lifecycle"] = LeadLifecycle.merged
        digest = inputs_hash(record)
        row["inputs_hash"] = digest
        row["synced_at"] = now
        if record.crm_id in existing and existing[record.crm_id] == digest:
            unchanged.append(row)
        else:
            row["inputs_changed_at"] = now
            changed.append(row)
    conflict = ["connection_id", "crm_id"]
    _bulk_upsert(session, Lead, changed, conflict)
    _bulk_upsert(session, Lead, unchanged, conflict)
    lead_id = select(Lead.id).where(Lead.connection_id == connection_id,
                                    Lead.crm_id == Activity.lead_crm_id).scalar_subquery()
    session.execute(
        update(Activity)
        .where(Activity.connection_id == connection_id, Activity.lead_crm_id.in_(ids),
               Activity.lead_id.is_(None))
        .values(lead_id=lead_id)
        .execution_options(synchronize_session=False)
    )
    _apply_pending_campaigns(session, connection_id, ids, now)
    # Leads that left "open" lose their pending writes and routing actions (reason recorded).
    cancel_not_open(session, connection_id, ids)
    return len(records)


def _row_hash(row: Lead) -> str:
    """The inputs hash of a stored lead, as :func:`inputs_hash` computes it for a record."""
    record = LeadRecord(crm_id=row.crm_id, crm_created_at=row.crm_created_at, crm_modified_at=row.crm_modified_at,
                        **{name: getattr(row, name) for name in INPUT_FIELDS if name != "crm_created_at"})
    return inputs_hash(record)


def apply_merges(session: Session, connection_id: int, merges: Sequence[Merge], now: datetime) -> None:
    """Mark each merged-away lead deleted and pointing at its survivor (rows are never removed)."""
    winners = {m.loser_crm_id: m for m in merges}
    rows = session.execute(
        select(Lead).where(Lead.connection_id == connection_id, Lead.crm_id.in_(sorted(winners)))
    ).scalars().all()
    for row in rows:
        merge = winners[row.crm_id]
        if row.is_deleted and row.merged_into_crm_id == merge.winner_crm_id:
            continue
        row.is_deleted = True
        row.merged_into_crm_id = merge.winner_crm_id
        row.lifecycle = LeadLifecycle.merged
        row.deleted_at = row.deleted_at or merge.at
        digest = _row_hash(row)
        if digest != row.inputs_hash:
            row.inputs_hash = digest
            row.inputs_changed_at = now
    session.flush()
    cancel_not_open(session, connection_id, [row.crm_id for row in rows])


def apply_lead_campaigns(session: Session, connection_id: int, joined: Sequence[tuple[str, str, datetime]],
                         now: datetime) -> None:
    """Set a lead's ``campaign`` from the membership created together with the lead. Memberships
    of leads not stored yet wait in ``pending_campaign`` until :func:`upsert_leads` stores them
    (a lead modified after a plan's clock is read by a later plan, after its membership)."""
    stored = _set_campaigns(session, connection_id, joined, now)
    waiting = list({(lead, name, created): {"connection_id": connection_id, "lead_crm_id": lead, "campaign": name,
                                             "member_created_at": created}
                    for lead, name, created in joined if lead not in stored}.values())
    upsert_rows(session, PendingCampaign, waiting,
                conflict_columns=["connection_id", "lead_crm_id", "campaign", "member_created_at"], update_columns=[])
    session.flush()


def _apply_pending_campaigns(session: Session, connection_id: int, crm_ids: Sequence[str], now: datetime) -> None:
    """Memberships that waited for these (now stored) leads: applied, then gone."""
    where = (PendingCampaign.connection_id == connection_id, PendingCampaign.lead_crm_id.in_(crm_ids))
    pending = session.execute(select(PendingCampaign.lead_crm_id, PendingCampaign.campaign,
                                     PendingCampaign.member_created_at).where(*where)).tuples().all()
    if not pending:
        return
    _set_campaigns(session, connection_id, pending, now)
    session.execute(delete(PendingCampaign).where(*where))
    session.flush()


def _set_campaigns(session: Session, connection_id: int, joined: Sequence[tuple[str, str, datetime]],
                   now: datetime) -> set[str]:
    """Each stored lead's campaign from its membership created together with it (the lead's own
    creation time); the lead's inputs change when its campaign does. Returns the stored leads'
    CRM ids."""
    by_lead: dict[str, list[tuple[str, datetime]]] = {}
    for lead, name, created in joined:
        by_lead.setdefault(lead, []).append((name, created))
    rows = session.execute(
        select(Lead).where(Lead.connection_id == connection_id, Lead.crm_id.in_(sorted(by_lead)))
    ).scalars().all()
    for row in rows:
        original = next((n for n, created in by_lead[row.crm_id] if created == row.crm_created_at), None)
        if original is None or row.campaign == original:
            continue
        row.campaign = original
        digest = _row_hash(row)
        if digest != row.inputs_hash:
            row.inputs_hash = digest
            row.inputs_changed_at = now
    return {row.crm_id for row in rows}


def upsert_activities(session: Session, connection_id: int, records: Sequence[ActivityRecord],
                      now: datetime) -> int:
    """Upsert activities, linking each to its lead when the lead is already stored; a lead gets a
    new ``inputs_changed_at`` when one of its activities is new or was deleted/restored.

    ``synced_at`` moves only when what scoring reads of the activity changed (its lead, type,
    time, detail, campaign or deletion): scoring rescores a lead whose activity was synced after
    its score, and a record read again unchanged (the overlap of every incremental sync, a
    restart) must not make its lead stale. Under a CRM clock that stands still, it did so on
    every sync.
    """
    records = _last_by_id(records)
    if not records:
        return 0
    ids = [r.crm_id for r in records]
    # What scoring reads of each stored activity (its lead, type, time, detail, campaign,
    # deletion; lead CRM id and deletion first), and when it was synced.
    stored: dict[str, tuple[tuple[Any, ...], datetime]] = {
        crm_id: (tuple(read), synced_at)
        for crm_id, *read, synced_at in session.execute(
            select(Activity.crm_id, Activity.lead_crm_id, Activity.is_deleted, Activity.lead_id, Activity.type,
                   Activity.occurred_at, Activity.detail, Activity.campaign, Activity.synced_at)
            .where(Activity.connection_id == connection_id, Activity.crm_id.in_(ids))
        )
    }
    lead_crm_ids = sorted({r.lead_crm_id for r in records if r.lead_crm_id})
    lead_ids: dict[str, int] = {
        crm_id: lead_id for crm_id, lead_id in session.execute(
            select(Lead.crm_id, Lead.id).where(Lead.connection_id == connection_id, Lead.crm_id.in_(lead_crm_ids)))
    } if lead_crm_ids else {}
    rows = []
    touched: set[str] = set()
    for record in records:
        lead_id = lead_ids.get(record.lead_crm_id) if record.lead_crm_id else None
        read = (record.lead_crm_id, record.is_deleted, lead_id, record.type, record.occurred_at, record.detail,
                record.campaign)
        was = stored.get(record.crm_id)
        rows.append({
            "connection_id": connection_id,
            "crm_id": record.crm_id,
            "lead_crm_id": record.lead_crm_id,
            "lead_id": lead_id,
            "type": record.type,
            "occurred_at": record.occurred_at,
            "detail": record.detail,
            "campaign": record.campaign,
            "crm_modified_at": record.crm_modified_at,
            "is_deleted": record.is_deleted,
            "raw": record.raw,
            "synced_at": was[1] if was is not None and was[0] == read else now,
        })
        previous = was[0][:2] if was is not None else None  # (lead CRM id, deleted) as stored
        if record.lead_crm_id and (previous is None or previous != (record.lead_crm_id, record.is_deleted)):
            touched.add(record.lead_crm_id)
            if previous is not None and previous[0] and previous[0] != record.lead_crm_id:
                touched.add(previous[0])
    _bulk_upsert(session, Activity, rows, ["connection_id", "crm_id"])
    if touched:
        session.execute(
            update(Lead)
            .where(Lead.connection_id == connection_id, Lead.crm_id.in_(sorted(touched)))
            .values(inputs_changed_at=now)
            .execution_options(synchronize_session=False)
        )
    return len(rows)


def _relinked_leads(session: Session, connector: Connector, connection_id: int,
                    companies: dict[str, dict[str, Any]]) -> list[LeadRecord]:
    company_id = Lead.raw["company_id"].as_string()
    # Deleted and merged-away leads keep what they had: their stored raw contact may be the live
    # one last read (a merge learnt from the survivor), and rebuilding from it would reopen them.
    rows = session.execute(
        select(Lead.raw).where(Lead.connection_id == connection_id, company_id.in_(sorted(companies)),
                               Lead.is_deleted.is_(False))
    ).scalars().all()
    out: list[LeadRecord] = []
    for raw in rows:
        company = companies.get(str(raw.get("company_id")))
        if company is None:
            continue
        record = connector.relink_company(raw, company)
        if record is not None:
            out.append(record)
    return out


def _quarantine(session: Session, connection_id: int, stream: str, items: Sequence[QuarantinedItem],
                run_id: int | None) -> None:
    for item in items:
        reason = f"{item.reason}: {item.detail}" if item.detail else item.reason
        # A re-read (overlap, restart) of the same bad record is not a new quarantine entry.
        same = and_(QuarantinedRecord.connection_id == connection_id, QuarantinedRecord.stream == stream,
                    QuarantinedRecord.reason == reason)
        if item.crm_id is not None:
            seen = session.execute(
                select(QuarantinedRecord.id).where(same, QuarantinedRecord.crm_id == item.crm_id).limit(1)
            ).first()
            if seen is not None:
                continue
        else:
            payloads = session.execute(
                select(QuarantinedRecord.raw).where(same, QuarantinedRecord.crm_id.is_(None))
            ).scalars().all()
            if any(payload == item.raw for payload in payloads):
                continue
        session.add(QuarantinedRecord(connection_id=connection_id, stream=stream, crm_id=item.crm_id,
                                      reason=reason, raw=item.raw, sync_run_id=run_id))
    session.flush()
