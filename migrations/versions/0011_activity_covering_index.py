"""activity covering index: the (lead_id, occurred_at) index also holds is_deleted, type and detail,
so a scoring run reads a batch's activities in the feature windows (and each lead's latest older
engagement) from the index alone, without a table row per activity

Revision ID: 0011_activity_covering_index
Revises: 0010_outbox_payload_json
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011_activity_covering_index"
down_revision: str | None = "0010_outbox_payload_json"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_activity_lead_time", table_name="activity")
    op.create_index("ix_activity_lead_time", "activity", ["lead_id", "occurred_at", "is_deleted", "type", "detail"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_activity_lead_time", table_name="activity")
    op.create_index("ix_activity_lead_time", "activity", ["lead_id", "occurred_at"], unique=False)
