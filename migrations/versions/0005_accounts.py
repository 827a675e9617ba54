"""accounts: the CRM accounts leads roll up to, each lead's account, and account rows in the outbox

Revision ID: 0005_accounts
Revises: 0004_score_parts
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.types

revision: str = "0005_accounts"
down_revision: str | None = "0004_score_parts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("id", BigId, nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("crm_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("domain", sa.String(length=255), nullable=True),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("engaged_people", sa.Integer(), nullable=True),
        sa.Column("open_leads", sa.Integer(), nullable=False),
        sa.Column("refreshed_at", store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["connection_id"], ["connection.id"], name=op.f("fk_account_connection_id_connection")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account")),
        sa.UniqueConstraint("connection_id", "crm_id", name=op.f("uq_account_connection_id_crm_id")),
    )
    op.create_table(
        "lead_account",
        sa.Column("lead_id", BigId, nullable=False),
        sa.Column("account_id", BigId, nullable=True),
        sa.Column("matched_by", sa.String(length=16), nullable=True),
        sa.Column("checked_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"], name=op.f("fk_lead_account_account_id_account")),
        sa.ForeignKeyConstraint(["lead_id"], ["lead.id"], name=op.f("fk_lead_account_lead_id_lead")),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_lead_account")),
    )
    op.create_index("ix_lead_account_account", "lead_account", ["account_id"], unique=False)
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("lead_id", existing_type=BigId, nullable=True)
        batch.add_column(sa.Column("account_id", BigId, nullable=True))
        batch.create_foreign_key(op.f("fk_outbox_account_id_account"), "account", ["account_id"], ["id"])
        batch.create_index("ix_outbox_account", ["account_id"], unique=False)


def downgrade() -> None:
    op.execute("DELETE FROM outbox WHERE lead_id IS NULL")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_account")
        batch.drop_constraint(op.f("fk_outbox_account_id_account"), type_="foreignkey")
        batch.drop_column("account_id")
        batch.alter_column("lead_id", existing_type=BigId, nullable=False)
    op.drop_index("ix_lead_account_account", table_name="lead_account")
    op.drop_table("lead_account")
    op.drop_table("account")
