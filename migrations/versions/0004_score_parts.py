"""score parts: fit and engagement scores, 7-day change, data clock and ageing time on lead_score

Revision ID: 0004_score_parts
Revises: 0003_lead_lifecycle
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.types

revision: str = "0004_score_parts"
down_revision: str | None = "0003_lead_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lead_score") as batch:
        batch.add_column(sa.Column("fit_score", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("engagement_score", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("score_change", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("as_of", store.types.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("next_aging_at", store.types.UTCDateTime(timezone=True), nullable=True))
    # Older rows were scored on the clock they were written at: the best data time known for them.
    op.execute("UPDATE lead_score SET as_of = scored_at WHERE as_of IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("lead_score") as batch:
        batch.drop_column("next_aging_at")
        batch.drop_column("as_of")
        batch.drop_column("score_change")
        batch.drop_column("engagement_score")
        batch.drop_column("fit_score")
