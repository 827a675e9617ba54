"""lead company covering index: the company_key index also holds crm_created_at and is_deleted, so
a scoring run counts each company's recent leads (the buying-committee feature) from the index
alone, without a table row per colleague

Revision ID: 0012_lead_company_covering_index
Revises: 0011_activity_covering_index
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012_lead_company_covering_index"
down_revision: str | None = "0011_activity_covering_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_lead_company_key", table_name="lead")
    op.create_index("ix_lead_company_key", "lead", ["company_key", "crm_created_at", "is_deleted"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_lead_company_key", table_name="lead")
    op.create_index("ix_lead_company_key", "lead", ["company_key"], unique=False)
