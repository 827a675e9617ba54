"""lead lifecycle: open, converted, closed, deleted, merged

Revision ID: 0003_lead_lifecycle
Revises: 0002_shadow_score
Create Date: 2026-11-30 04:30:00

Existing leads get their state from what the store already knows (the next sync re-derives it
from the CRM with the connection's configured lists); pending writes and routing actions of
leads that are no longer open are cancelled with the reason, as the connectors do from now on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_lead_lifecycle"
down_revision: str | None = "0002_shadow_score"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = ("open", "converted", "closed", "deleted", "merged")

# The defaults of connectors.lifecycle at the time of this migration (frozen here on purpose:
# a migration must not change meaning when the code's defaults change later).
_BACKFILL = """
UPDATE lead SET lifecycle = CASE
    WHEN is_deleted AND merged_into_crm_id IS NOT NULL THEN 'merged'
    WHEN is_deleted THEN 'deleted'
    WHEN is_converted THEN 'converted'
    WHEN status IN ('Closed - Converted', 'Closed - Not Converted')
         AND connection_id IN (SELECT id FROM connection WHERE kind = 'salesforce') THEN 'closed'
    WHEN status IN ('UNQUALIFIED')
         AND connection_id IN (SELECT id FROM connection WHERE kind = 'hubspot') THEN 'closed'
    ELSE 'open' END
"""
_CANCEL_OUTBOX = """
UPDATE outbox SET status = 'cancelled',
    last_error = 'LEAD_NOT_OPEN: the lead was no longer open when leadscore was upgraded'
WHERE status = 'pending' AND lead_id IN (SELECT id FROM lead WHERE lifecycle <> 'open')
"""
_CANCEL_ROUTING = """
UPDATE routing_action SET status = 'cancelled',
    error = 'LEAD_NOT_OPEN: the lead was no longer open when leadscore was upgraded'
WHERE status = 'pending' AND lead_id IN (SELECT id FROM lead WHERE lifecycle <> 'open')
"""


def upgrade() -> None:
    with op.batch_alter_table("lead") as batch:
        batch.add_column(sa.Column(
            "lifecycle",
            sa.Enum(*STATES, name="lead_lifecycle", native_enum=False, create_constraint=True, length=16),
            server_default="open", nullable=False))
        batch.create_index("ix_lead_lifecycle", ["lifecycle"], unique=False)
    op.execute(_BACKFILL)
    op.execute(_CANCEL_OUTBOX)
    op.execute(_CANCEL_ROUTING)


def downgrade() -> None:
    with op.batch_alter_table("lead") as batch:
        batch.drop_index("ix_lead_lifecycle")
        batch.drop_column("lifecycle")
