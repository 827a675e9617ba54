"""api usage: CRM API calls per connection, UTC day and purpose (sync, accounts, write-back, routing)

Revision ID: 0008_api_usage
Revises: 0007_pending_campaign
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_api_usage"
down_revision: str | None = "0007_pending_campaign"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_usage",
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["connection_id"], ["connection.id"],
                                name=op.f("fk_api_usage_connection_id_connection")),
        sa.PrimaryKeyConstraint("connection_id", "day", "purpose", name=op.f("pk_api_usage")),
    )


def downgrade() -> None:
    op.drop_table("api_usage")
