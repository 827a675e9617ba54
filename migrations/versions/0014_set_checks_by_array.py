"""set checks by array: on PostgreSQL the insert check of the set-checked keys (store.references)
gathers each key's distinct ids in one narrow pass over the new rows and looks them up as one array,
instead of a count and a semi-join over the whole new rows per key (same refusals, same locks)

Revision ID: 0014_set_checks_by_array
Revises: 0013_outbox_payload_at_claim
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from store.references import check_inserted_ddl, run

revision: str = "0014_set_checks_by_array"
down_revision: str | None = "0013_outbox_payload_at_claim"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The insert check as 0009 created it, for the downgrade.
_BEFORE = """
CREATE OR REPLACE FUNCTION leadscore_check_references() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  i int := 0; col text; parent text; wanted bigint; found bigint; missing text;
BEGIN
  -- Arguments: pairs of (column, referenced table); each references the referenced table's id.
  WHILE i < TG_NARGS LOOP
    col := TG_ARGV[i]; parent := TG_ARGV[i + 1]; i := i + 2;
    EXECUTE format('SELECT count(DISTINCT %1$I) FROM new_rows', col) INTO wanted;
    CONTINUE WHEN wanted = 0;
    -- The referenced rows locked as a declared key locks them: a concurrent delete waits, then fails.
    EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %2$I p WHERE p.id IN (SELECT %1$I FROM new_rows) '
                   'FOR KEY SHARE OF p) locked', col, parent) INTO found;
    IF found < wanted THEN
      EXECUTE format('SELECT c.%1$I::text FROM new_rows c WHERE c.%1$I IS NOT NULL AND NOT EXISTS '
                     '(SELECT 1 FROM %2$I p WHERE p.id = c.%1$I) LIMIT 1', col, parent) INTO missing;
      RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "fk_%_%_%"',
          TG_TABLE_NAME, TG_TABLE_NAME, col, parent
        USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME,
              DETAIL = format('Key (%s)=(%s) is not present in table "%s".', col, missing, parent);
    END IF;
  END LOOP;
  RETURN NULL;
END
$fn$
"""


def _replace(statement: str) -> None:
    if op.get_context().dialect.name != "postgresql":
        return  # SQLite declares the keys
    if op.get_context().as_sql:  # offline (--sql): the statement as it is
        op.execute(statement)
    else:
        run(op.get_bind(), [statement])


def upgrade() -> None:
    _replace(check_inserted_ddl())


def downgrade() -> None:
    _replace(_BEFORE)
