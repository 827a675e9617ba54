"""pending campaigns: memberships read before their lead, applied when the lead arrives

Revision ID: 0007_pending_campaign
Revises: 0006_sync_window
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.types

revision: str = "0007_pending_campaign"
down_revision: str | None = "0006_sync_window"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_campaign",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("lead_crm_id", sa.String(length=64), nullable=False),
        sa.Column("campaign", sa.String(length=255), nullable=False),
        sa.Column("member_created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["connection_id"], ["connection.id"],
                                name=op.f("fk_pending_campaign_connection_id_connection")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_campaign")),
        sa.UniqueConstraint("connection_id", "lead_crm_id", "campaign", "member_created_at",
                            name="uq_pending_campaign_member"),
    )


def downgrade() -> None:
    op.drop_table("pending_campaign")
