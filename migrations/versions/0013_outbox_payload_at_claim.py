"""outbox payload at claim: a scoring run queues a lead's score write without its payload and hash
(the score row it carries holds every value); the write-back drain renders and keeps them when it
claims the row, so the outbox's payload and payload_hash may be empty until then

Revision ID: 0013_outbox_payload_at_claim
Revises: 0012_lead_company_covering_index
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from store.types import WrittenJSON

revision: str = "0013_outbox_payload_at_claim"
down_revision: str | None = "0012_lead_company_covering_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("payload", existing_type=WrittenJSON, nullable=True)
        batch.alter_column("payload_hash", existing_type=sa.String(64), nullable=True)


def downgrade() -> None:
    # Pending rows queued without their payload need this revision's drain to render it: refuse
    # rather than lose a write. Rows superseded or cancelled before any claim never had one.
    bind = op.get_bind()
    waiting = bind.scalar(sa.text("SELECT count(*) FROM outbox WHERE status = 'pending' AND payload IS NULL"))
    if waiting:
        raise RuntimeError(f"{waiting} pending outbox row(s) wait for their payload: send them first "
                           "(`leadscore writeback`), then downgrade")
    op.execute("UPDATE outbox SET payload = '{}', payload_hash = '' WHERE payload IS NULL OR payload_hash IS NULL")
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("payload", existing_type=WrittenJSON, nullable=False)
        batch.alter_column("payload_hash", existing_type=sa.String(64), nullable=False)
