"""set-checked keys: on PostgreSQL the seven foreign keys of lead_score and outbox are checked once
per statement by triggers (store.references) instead of once per row; SQLite keeps them declared

Revision ID: 0009_set_checked_keys
Revises: 0008_api_usage
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from store.references import SET_CHECKED, constraint_name, postgresql_ddl, postgresql_drop_ddl, run

revision: str = "0009_set_checked_keys"
down_revision: str | None = "0008_api_usage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"


def _run(statements: Sequence[str]) -> None:
    if op.get_context().as_sql:  # offline (--sql): the statements as they are
        for statement in statements:
            op.execute(statement)
    else:
        run(op.get_bind(), statements)


def upgrade() -> None:
    if not _postgresql():
        return
    for table, column, referred in SET_CHECKED:
        op.drop_constraint(constraint_name(table, column, referred), table, type_="foreignkey")
    _run(postgresql_drop_ddl() + postgresql_ddl())


def downgrade() -> None:
    if not _postgresql():
        return
    _run(postgresql_drop_ddl())
    for table, column, referred in SET_CHECKED:
        op.create_foreign_key(constraint_name(table, column, referred), table, referred, [column], ["id"])
