"""SQLAlchemy 2 models: the only description of leadscore's schema (changed via Alembic only).

Idempotency lives in the unique keys: a lead or activity is identified by (connection, CRM id);
a routing action by (lead, score that caused it, action); a sync cursor by (connection, stream).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from store.references import install, mark_set_checked
from store.types import JSONType, UTCDateTime, WrittenJSON

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER on SQLite (so SQLite's rowid autoincrement still applies).
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class LeadLifecycle(StrEnum):
    """Where a lead stands in the CRM; only ``open`` leads are scored anew, written and routed.

    Derived by the connectors at every sync (see :mod:`connectors.lifecycle`); a lead that
    leaves ``open`` keeps its last score as history and its pending writes/actions are cancelled.
    """

    open = "open"
    converted = "converted"
    closed = "closed"  # disqualified: a status the connection configures as closed
    deleted = "deleted"
    merged = "merged"


class WindowStatus(StrEnum):
    """``sync_window.status``: a unit of a partitioned sync (connectors/partition.py)."""

    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"
    stopped = "stopped"  # the CRM's API quota ran out: the unit resumes from its cursor


class SyncStatus(StrEnum):
    """``sync_run.status`` (and a sync report's): a run is ``running`` until it ends in one of the others."""

    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    stopped = "stopped"  # the CRM's API quota ran out: the next run resumes from the cursor


class ModelStatus(StrEnum):
    """``model_version.status``: one ``champion`` per segment scores and writes to the CRM."""

    candidate = "candidate"
    champion = "champion"
    retired = "retired"
    shadow = "shadow"  # a challenger scoring live leads beside the champion, never written to the CRM


class OutboxStatus(StrEnum):
    """``outbox.status``: a score write waits ``pending`` until it is ``sent`` or given up."""

    pending = "pending"
    sent = "sent"
    failed = "failed"
    superseded = "superseded"  # a newer write for the same lead replaced it
    cancelled = "cancelled"  # the lead left "open" before it was sent


class ActionStatus(StrEnum):
    """``routing_action.status``: ``sending`` while a CRM call may have happened (recovered on restart)."""

    pending = "pending"
    sending = "sending"
    done = "done"
    failed = "failed"
    superseded = "superseded"  # the lead's tier changed again before the action ran
    cancelled = "cancelled"  # the lead left "open" before it ran


class MonitorStatus(StrEnum):
    """``monitor_report.status``: the worst of the report's alerts."""

    ok = "ok"
    warn = "warn"
    alert = "alert"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Connection(Base):
    """A configured CRM org/portal. Secrets are never stored here."""

    __tablename__ = "connection"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "salesforce" | "hubspot"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Lead(Base):
    """A lead/contact as last read from the CRM, normalised; ``raw`` keeps the CRM record."""

    __tablename__ = "lead"
    __table_args__ = (
        UniqueConstraint("connection_id", "crm_id"),
        Index("ix_lead_connection_modified", "connection_id", "crm_modified_at"),
        Index("ix_lead_inputs_changed", "inputs_changed_at"),
        # Covering: a scoring run counts each company's recent leads (the buying-committee feature,
        # scoring.features.load_company_peers) from the index alone (migration 0012).
        Index("ix_lead_company_key", "company_key", "crm_created_at", "is_deleted"),
        Index("ix_lead_lifecycle", "lifecycle"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id"))
    crm_id: Mapped[str] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320))
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(String(255))
    company: Mapped[str | None] = mapped_column(String(255))
    company_key: Mapped[str | None] = mapped_column(String(255))  # normalised company or email domain
    industry: Mapped[str | None] = mapped_column(String(128))
    employees: Mapped[int | None] = mapped_column(Integer)
    annual_revenue: Mapped[float | None] = mapped_column(Float)
    country: Mapped[str | None] = mapped_column(String(128))
    lead_source: Mapped[str | None] = mapped_column(String(128))
    campaign: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(64))
    owner_crm_id: Mapped[str | None] = mapped_column(String(64))
    is_converted: Mapped[bool] = mapped_column(Boolean, default=False)
    converted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    crm_created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    crm_modified_at: Mapped[datetime] = mapped_column(UTCDateTime)
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    merged_into_crm_id: Mapped[str | None] = mapped_column(String(64))
    # VARCHAR + CHECK (not a native PostgreSQL enum) so SQLite and PostgreSQL store the same text.
    lifecycle: Mapped[LeadLifecycle] = mapped_column(
        Enum(LeadLifecycle, name="lead_lifecycle", native_enum=False, create_constraint=True, length=16),
        default=LeadLifecycle.open, server_default=LeadLifecycle.open.value)
    # Customer-specific mapped fields (YAML field mapping) that feed the model as extra features.
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Hash of the fields that feed the model; unchanged hash on resync = no rescoring needed.
    inputs_hash: Mapped[str | None] = mapped_column(String(64))
    inputs_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# The normalised activity types (``activity.type``): the connectors map each CRM's objects to
# them, features count them, and crmsim's funnel emits them (crmsim imports this list).
ACTIVITY_TYPES: tuple[str, ...] = (
    "email_send",
    "email_open",
    "email_click",
    "web_visit",
    "form_submit",
    "content_download",
    "webinar",
    "meeting",
    "call",
    "campaign_response",
)


class Activity(Base):
    """One engagement event of a lead, with a normalised type and a UTC time."""

    __tablename__ = "activity"
    __table_args__ = (
        UniqueConstraint("connection_id", "crm_id"),
        # Covering: a scoring run reads a batch's window activities and each lead's latest older
        # engagement from the index alone (no table row per activity; migration 0011).
        Index("ix_activity_lead_time", "lead_id", "occurred_at", "is_deleted", "type", "detail"),
        Index("ix_activity_connection_lead_crm", "connection_id", "lead_crm_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id"))
    crm_id: Mapped[str] = mapped_column(String(64))
    lead_crm_id: Mapped[str | None] = mapped_column(String(64))
    # Resolved after both the lead and the activity are synced (either may arrive first).
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("lead.id"))
    type: Mapped[str] = mapped_column(String(32))  # email_open, web_visit, meeting, ...
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    detail: Mapped[str | None] = mapped_column(String(512))  # page path, content title, subject
    campaign: Mapped[str | None] = mapped_column(String(255))
    crm_modified_at: Mapped[datetime] = mapped_column(UTCDateTime)
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PendingCampaign(Base):
    """A campaign membership read before its lead was stored: kept until the lead arrives, then
    applied as the membership would have been (``connectors.page_writer``). It happens when a
    lead is modified after a sync plan's clock: the plan's ``campaign_members`` unit reads the
    membership, a later plan reads the lead (docs/sync.md)."""

    __tablename__ = "pending_campaign"
    __table_args__ = (UniqueConstraint("connection_id", "lead_crm_id", "campaign", "member_created_at",
                                       name="uq_pending_campaign_member"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id"))
    lead_crm_id: Mapped[str] = mapped_column(String(64))
    campaign: Mapped[str] = mapped_column(String(255))
    member_created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SyncCursor(Base):
    """Where a stream's incremental sync resumes: (modification stamp, CRM id) of the last record
    committed. Moves only in the transaction that commits its page."""

    __tablename__ = "sync_cursor"
    __table_args__ = (UniqueConstraint("connection_id", "stream"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id"))
    stream: Mapped[str] = mapped_column(String(64))
    cursor_ts: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cursor_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SyncWindow(Base):
    """One unit of a partitioned sync (docs/scaling.md): a stream's records modified in
    ``[window_start, window_end)``, read by one task under its own lock.

    A plan is numbered per connection (``plan``) and reads up to ``plan_until`` (the CRM's clock
    at its start + 1 s); its ``stage`` orders the units (parents before children). ``from_cursor`` units are incremental
    reads from the stream's own ``sync_cursor``; the others are time windows of a first load with
    a cursor of their own, so a killed window resumes exactly after its last committed page.
    """

    __tablename__ = "sync_window"
    __table_args__ = (UniqueConstraint("connection_id", "plan", "stream", "part"),
                      Index("ix_sync_window_connection_status", "connection_id", "status"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id"))
    plan: Mapped[int] = mapped_column(Integer)
    plan_until: Mapped[datetime] = mapped_column(UTCDateTime)
    server_time: Mapped[datetime] = mapped_column(UTCDateTime)
    full: Mapped[bool] = mapped_column(Boolean, default=False)
    stage: Mapped[int] = mapped_column(Integer)
    stream: Mapped[str] = mapped_column(String(64))
    part: Mapped[int] = mapped_column(Integer, default=0)
    from_cursor: Mapped[bool] = mapped_column(Boolean, default=False)
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    cursor_ts: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cursor_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|running|done|failed|stopped
    records: Mapped[int] = mapped_column(Integer, default=0)
    api_calls: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # The sync_run of the unit's latest attempt: still "running" when the unit starts again, its
    # worker died (the unit's lock is what kept others out).
    sync_run_id: Mapped[int | None] = mapped_column(BigId)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SyncRun(Base):
    __tablename__ = "sync_run"
    __table_args__ = (Index("ix_sync_run_connection_started", "connection_id", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id"))
    stream: Mapped[str] = mapped_column(String(64))
    full: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default=SyncStatus.running)  # a SyncStatus
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The CRM's own clock when the sync started: the cursor never moves past it.
    server_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    records: Mapped[int] = mapped_column(Integer, default=0)
    quarantined: Mapped[int] = mapped_column(Integer, default=0)
    api_calls: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class ApiPurpose(StrEnum):
    """What leadscore's CRM calls were for (``api_usage.purpose``)."""

    sync = "sync"  # stream pages, logins, the CRM's clock
    accounts = "accounts"  # the account look-up after a sync
    writeback = "writeback"  # score and account fields, the look-ups of owner changes riding along
    routing = "routing"  # tasks, owner changes, campaign memberships
    setup = "setup"  # `crm setup`: field checks, HubSpot properties created, routing validated


class ApiUsage(Base):
    """CRM API calls leadscore made, per connection, UTC day and purpose (``store.usage``): the
    calls its clients counted (every response, logins and retries included), recorded in the
    transaction of the work they served (a sync page, a write-back batch) or when the step ends."""

    __tablename__ = "api_usage"

    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), primary_key=True)  # an ApiPurpose
    calls: Mapped[int] = mapped_column(Integer, default=0)


class QuarantinedRecord(Base):
    """A CRM record that could not be normalised: kept with the reason, never silently dropped."""

    __tablename__ = "quarantined_record"
    __table_args__ = (Index("ix_quarantined_record_connection_stream", "connection_id", "stream"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id"))
    stream: Mapped[str] = mapped_column(String(64))
    crm_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    sync_run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_run.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelVersion(Base):
    """A trained model: artifact, metrics, audit, features, window and card. Never deleted."""

    __tablename__ = "model_version"
    __table_args__ = (Index("ix_model_version_status_segment", "status", "segment"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=ModelStatus.candidate)  # a ModelStatus
    segment: Mapped[str | None] = mapped_column(String(128))  # None = the global model
    family: Mapped[str] = mapped_column(String(32))  # catboost | logistic_regression | random_forest | rules
    artifact: Mapped[bytes] = mapped_column(LargeBinary)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    audit: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    features: Mapped[list[str]] = mapped_column(JSONType, default=list)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    train_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    train_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    card: Mapped[str] = mapped_column(Text, default="")
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ShadowScore(Base):
    """A score from a challenger running in shadow: stored for the monitor's live comparison with
    the champion, never written to the CRM (no outbox row, no routing)."""

    __tablename__ = "shadow_score"
    __table_args__ = (Index("ix_shadow_score_model_lead", "model_version_id", "lead_id", "scored_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("lead.id"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_version.id"))
    probability: Mapped[float] = mapped_column(Float)
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the CRM's clock of the scoring run


class LeadScore(Base):
    """Score history. ``is_current`` marks each lead's latest score (at most one, enforced)."""

    __tablename__ = "lead_score"
    __table_args__ = (
        Index("ix_lead_score_lead_scored", "lead_id", "scored_at"),
        Index(
            "uq_lead_score_current",
            "lead_id",
            unique=True,
            postgresql_where=text("is_current"),
            sqlite_where=text("is_current"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("lead.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    tier_policy_id: Mapped[int | None] = mapped_column(ForeignKey("tier_policy.id"))
    probability: Mapped[float] = mapped_column(Float)
    score: Mapped[int] = mapped_column(Integer)
    tier: Mapped[str] = mapped_column(String(1))
    reasons: Mapped[list[str]] = mapped_column(JSONType, default=list)
    inputs_hash: Mapped[str | None] = mapped_column(String(64))
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # 1-99 ranks of the fit and engagement parts against the model's reference leads.
    fit_score: Mapped[int | None] = mapped_column(Integer)
    engagement_score: Mapped[int | None] = mapped_column(Integer)
    # Score minus the lead's score 7 days (of the data's clock) before ``as_of``.
    score_change: Mapped[int | None] = mapped_column(Integer)
    # The data's clock the features were computed at (the CRM's time; ``scored_at`` is wall time).
    as_of: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a feature window (7/30/90 days) or the 7-day change baseline next moves for this lead:
    # the score ages then, so the lead is rescored even without new activity.
    next_aging_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# The outbox row kinds: a lead's score fields, and an account's fields (scoring.accounts).
OUTBOX_KIND = "score_fields"
ACCOUNT_OUTBOX_KIND = "account_fields"


class Account(Base):
    """A CRM account (Salesforce Account, HubSpot company) that open leads roll up to, with the
    account score and engaged-people count last computed for it (``scoring.accounts``)."""

    __tablename__ = "account"
    __table_args__ = (UniqueConstraint("connection_id", "crm_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id"))
    crm_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255))
    domain: Mapped[str | None] = mapped_column(String(255))
    # The last computed values (None: never computed); an outbox row is queued only when they change.
    probability: Mapped[float | None] = mapped_column(Float)
    score: Mapped[int | None] = mapped_column(Integer)
    engaged_people: Mapped[int | None] = mapped_column(Integer)
    open_leads: Mapped[int] = mapped_column(Integer, default=0)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LeadAccount(Base):
    """Which account a lead belongs to, as the CRM showed it when last looked up.

    ``account_id`` None: looked up at ``checked_at`` and no account matched. ``matched_by`` says
    how (``name``, ``domain``, ``contact``, ``association``).
    """

    __tablename__ = "lead_account"
    __table_args__ = (Index("ix_lead_account_account", "account_id"),)

    lead_id: Mapped[int] = mapped_column(ForeignKey("lead.id"), primary_key=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    matched_by: Mapped[str | None] = mapped_column(String(16))
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Outbox(Base):
    """A write to the CRM, pending until the CRM confirmed it. Created in the scoring transaction.

    ``kind`` "score_fields": a lead's score fields (``lead_id`` set); "account_fields": an
    account's fields (``account_id`` set, ``lead_id`` None).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_status_connection", "status", "connection_id", "next_attempt_at"),
        Index("ix_outbox_lead", "lead_id"),
        Index("ix_outbox_account", "account_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id"))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("lead.id"))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"))
    crm_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32), default=OUTBOX_KIND)
    # What the call sends, and its hash without the time of scoring (the drain skips a write equal
    # to the last one sent). A scoring run queues a lead's row without them: the drain renders
    # them from the score row (``lead_score_id``) when it claims the row, and keeps them.
    payload: Mapped[dict[str, Any] | None] = mapped_column(WrittenJSON)
    payload_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.pending)  # an OutboxStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    lead_score_id: Mapped[int | None] = mapped_column(ForeignKey("lead_score.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RoutingAction(Base):
    """One routing/nurture action for one lead and one tier change: runs once, whatever retries."""

    __tablename__ = "routing_action"
    __table_args__ = (
        UniqueConstraint("lead_id", "lead_score_id", "action"),
        Index("ix_routing_action_status", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("lead.id"))
    lead_score_id: Mapped[int] = mapped_column(ForeignKey("lead_score.id"))
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id"))
    from_tier: Mapped[str | None] = mapped_column(String(1))
    to_tier: Mapped[str] = mapped_column(String(1))
    # assign_owner | create_task | add_to_campaign | enroll_workflow | set_property | pause_outreach
    action: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=ActionStatus.pending)  # an ActionStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    crm_ref: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TierPolicy(Base):
    """Versioned tier thresholds; exactly one is active."""

    __tablename__ = "tier_policy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    mode: Mapped[str] = mapped_column(String(16))  # "score" | "capacity"
    thresholds: Mapped[dict[str, float]] = mapped_column(JSONType)  # {"A": 80, "B": 60, "C": 35}
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MonitorReport(Base):
    __tablename__ = "monitor_report"
    __table_args__ = (Index("ix_monitor_report_created", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    as_of: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default=MonitorStatus.ok)  # a MonitorStatus
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    alerts: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# PostgreSQL checks the keys of lead_score and outbox once per statement (store.references).
mark_set_checked(Base.metadata)
event.listen(Base.metadata, "after_create", install)
