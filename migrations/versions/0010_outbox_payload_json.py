"""outbox payload json: on PostgreSQL the outbox's payload is stored as json (its text as written)
instead of jsonb (parsed into a binary form on every insert: a scoring run writes one per changed
lead); SQLite's JSON column is unchanged

Revision ID: 0010_outbox_payload_json
Revises: 0009_set_checked_keys
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_outbox_payload_json"
down_revision: str | None = "0009_set_checked_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.alter_column("outbox", "payload", type_=postgresql.JSON(), existing_type=postgresql.JSONB(),
                    existing_nullable=False, postgresql_using="payload::json")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.alter_column("outbox", "payload", type_=postgresql.JSONB(), existing_type=postgresql.JSON(),
                    existing_nullable=False, postgresql_using="payload::jsonb")
