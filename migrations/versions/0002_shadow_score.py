"""shadow scores: a challenger scoring live leads beside the champion, never written to the CRM

Revision ID: 0002_shadow_score
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.types

revision: str = "0002_shadow_score"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shadow_score",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lead_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("scored_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["lead.id"], name=op.f("fk_shadow_score_lead_id_lead")),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_version.id"],
                                name=op.f("fk_shadow_score_model_version_id_model_version")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_score")),
    )
    op.create_index("ix_shadow_score_model_lead", "shadow_score", ["model_version_id", "lead_id", "scored_at"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_shadow_score_model_lead", table_name="shadow_score")
    op.drop_table("shadow_score")
