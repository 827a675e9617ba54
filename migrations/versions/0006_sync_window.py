"""sync windows: the units of a partitioned sync (a stream, or a time window of its first load)

Revision ID: 0006_sync_window
Revises: 0005_accounts
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.types

revision: str = "0006_sync_window"
down_revision: str | None = "0005_accounts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sync_window",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("plan", sa.Integer(), nullable=False),
        sa.Column("plan_until", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("server_time", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("from_cursor", sa.Boolean(), nullable=False),
        sa.Column("window_start", store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("window_end", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cursor_ts", store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cursor_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("api_calls", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("sync_run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("updated_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["connection_id"], ["connection.id"],
                                name=op.f("fk_sync_window_connection_id_connection")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_window")),
        sa.UniqueConstraint("connection_id", "plan", "stream", "part",
                            name=op.f("uq_sync_window_connection_id_plan_stream_part")),
    )
    op.create_index("ix_sync_window_connection_status", "sync_window", ["connection_id", "status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_sync_window_connection_status", table_name="sync_window")
    op.drop_table("sync_window")
