"""The foreign keys of ``lead_score`` and ``outbox``, checked once per statement on PostgreSQL.

A scoring run inserts a score row and (for every changed lead) an outbox row per lead: for a
12,000-lead run that is 24,000 rows and seven keys. PostgreSQL checks a declared foreign key with
one internal query per inserted row and key; on this project's bench store those checks were
about 0.8 s of a 2.8 s run (copies of one trained store, five alternating runs each: median
2.83 s with the declared keys, 2.01 s with these statement checks, 1.85 s with no check at all;
docs/scaling.md "Forty-second session").

So on PostgreSQL these seven keys (:data:`SET_CHECKED`) are not declared; triggers keep what the
keys kept:

- **Inserts** (``COPY`` included): one statement-level trigger per table checks that every
  referenced row exists, locking those rows ``FOR KEY SHARE`` as the declared keys do (a
  concurrent delete of a referenced row waits, then fails). Per key, the distinct ids of the
  statement's new rows are gathered into an array in one narrow pass, then looked up as one
  array: on the bench store's 11,911 score and outbox rows the two triggers took 12 + 20 ms
  against 31 + 54 ms for a count and a semi-join over the new rows per key (``0014``). A missing
  row fails the statement with SQLSTATE 23503 (``foreign_key_violation``, an
  :class:`sqlalchemy.exc.IntegrityError`), worded as PostgreSQL words a key's failure; its detail
  names the lowest missing id.
- **The referencing columns never change** after insert (a row trigger, fired only when one of
  them is set and differs): leadscore never updates them, so nothing checks a new value.
- **The referenced rows**: deleting one still referenced fails (a statement-level trigger on the
  deleted rows); changing a referenced table's ``id`` fails (a row trigger, fired only when ``id``
  is set and differs). leadscore deletes none of these rows and changes no id.

A ``TRUNCATE`` of a referenced table is not guarded (the declared keys refused it without
``CASCADE``). SQLite keeps the declared keys: its checks are index lookups in this process, and
turning them off changed nothing measurable there. The models declare every key (relationships
and insert order use them); :func:`mark_set_checked` makes these seven SQLite-only DDL, and
:func:`include_object` keeps migrations' comparisons from asking for them on PostgreSQL. Changing
this DDL needs a migration (``0009_set_checked_keys`` created it, ``0014_set_checks_by_array``
replaced the insert check).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, ForeignKeyConstraint, MetaData

# (referencing table, column, referenced table): each references the referenced table's ``id``.
SET_CHECKED: tuple[tuple[str, str, str], ...] = (
    ("lead_score", "lead_id", "lead"),
    ("lead_score", "model_version_id", "model_version"),
    ("lead_score", "tier_policy_id", "tier_policy"),
    ("outbox", "connection_id", "connection"),
    ("outbox", "lead_id", "lead"),
    ("outbox", "account_id", "account"),
    ("outbox", "lead_score_id", "lead_score"),
)


def constraint_name(table: str, column: str, referred: str) -> str:
    """The declared key's name (the models' naming convention), as the checks' errors name it."""
    return f"fk_{table}_{column}_{referred}"


def _set_checked(constraint: ForeignKeyConstraint) -> bool:
    columns = [c.name for c in constraint.columns]
    return len(columns) == 1 and (str(constraint.table.name), columns[0], constraint.referred_table.name) in SET_CHECKED


def mark_set_checked(metadata: MetaData) -> None:
    """The keys of :data:`SET_CHECKED` created by ``create_all`` on SQLite only (PostgreSQL gets
    the triggers of :func:`postgresql_ddl` after its tables, :func:`install`)."""
    for table in metadata.tables.values():
        for constraint in table.foreign_key_constraints:
            if _set_checked(constraint):
                constraint.ddl_if(dialect="sqlite")


def include_object(dialect: str) -> Callable[..., bool]:
    """Alembic's ``include_object`` for a database of ``dialect``: the models' keys of
    :data:`SET_CHECKED` are not compared on PostgreSQL (triggers check them there)."""

    def include(obj: Any, _name: str | None, type_: str, reflected: bool, _compare_to: Any) -> bool:
        return not (dialect == "postgresql" and type_ == "foreign_key_constraint" and not reflected
                    and isinstance(obj, ForeignKeyConstraint) and _set_checked(obj))

    return include


_CHECK_INSERTED = """
CREATE OR REPLACE FUNCTION leadscore_check_references() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  i int := 0; col text; parent text; wanted bigint[]; found bigint; missing text;
BEGIN
  -- Arguments: pairs of (column, referenced table); each references the referenced table's id.
  WHILE i < TG_NARGS LOOP
    col := TG_ARGV[i]; parent := TG_ARGV[i + 1]; i := i + 2;
    -- The distinct ids the new rows refer to, in one pass over the new rows (narrow: the column
    -- alone), then looked up as one array (an index or hashed scan, as the planner sees fit).
    EXECUTE format('SELECT array_agg(DISTINCT %1$I::bigint) FROM new_rows WHERE %1$I IS NOT NULL', col)
      INTO wanted;
    CONTINUE WHEN wanted IS NULL;
    -- The referenced rows locked as a declared key locks them: a concurrent delete waits, then fails.
    EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %1$I p WHERE p.id = ANY($1) FOR KEY SHARE OF p) locked',
                   parent) INTO found USING wanted;
    IF found < cardinality(wanted) THEN
      EXECUTE format('SELECT w::text FROM unnest($1) w WHERE NOT EXISTS (SELECT 1 FROM %1$I p WHERE p.id = w) '
                     'ORDER BY w LIMIT 1', parent) INTO missing USING wanted;
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

_CHECK_DELETED = """
CREATE OR REPLACE FUNCTION leadscore_check_referenced() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  i int := 0; child text; col text; still text;
BEGIN
  -- Arguments: pairs of (referencing table, column) whose column references this table's id.
  WHILE i < TG_NARGS LOOP
    child := TG_ARGV[i]; col := TG_ARGV[i + 1]; i := i + 2;
    EXECUTE format('SELECT o.id::text FROM old_rows o WHERE EXISTS (SELECT 1 FROM %1$I c WHERE c.%2$I = o.id) '
                   'LIMIT 1', child, col) INTO still;
    IF still IS NOT NULL THEN
      RAISE EXCEPTION 'update or delete on table "%" violates foreign key constraint "fk_%_%_%" on table "%"',
          TG_TABLE_NAME, child, col, TG_TABLE_NAME, child
        USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME,
              DETAIL = format('Key (id)=(%s) is still referenced from table "%s".', still, child);
    END IF;
  END LOOP;
  RETURN NULL;
END
$fn$
"""

_REFUSE_CHANGE = """
CREATE OR REPLACE FUNCTION leadscore_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME;
END
$fn$
"""

_FUNCTIONS = ("leadscore_check_references", "leadscore_check_referenced", "leadscore_refuse_change")


Ref = tuple[str, str, str]  # one of SET_CHECKED: (referencing table, column, referenced table)


def _grouped(position: int) -> dict[str, list[Ref]]:
    """:data:`SET_CHECKED` by referencing table (``position`` 0) or referenced table (2)."""
    grouped: dict[str, list[Ref]] = {}
    for ref in SET_CHECKED:
        grouped.setdefault(ref[position], []).append(ref)
    return grouped


# Each table's triggers, by name suffix: the referencing tables' two, the referenced tables' two.
_REFERENCING_TRIGGERS = ("references", "references_fixed")
_REFERENCED_TRIGGERS = ("referenced", "id_fixed")


def _args(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def check_inserted_ddl() -> str:
    """The insert check's function (``CREATE OR REPLACE``), as :func:`postgresql_ddl` creates it."""
    return _CHECK_INSERTED


def postgresql_ddl() -> list[str]:
    """The functions and triggers that check :data:`SET_CHECKED` on PostgreSQL (after the tables
    exist, without the seven declared keys)."""
    inserted, fixed = _REFERENCING_TRIGGERS
    statements = [_CHECK_INSERTED, _CHECK_DELETED, _REFUSE_CHANGE]
    for table, refs in _grouped(0).items():
        pairs = [v for _, column, referred in refs for v in (column, referred)]
        columns = [column for _, column, _ in refs]
        statements.append(
            f"CREATE TRIGGER {table}_{inserted} AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION leadscore_check_references({_args(pairs)})")
        changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in columns)
        statements.append(
            f"CREATE TRIGGER {table}_{fixed} BEFORE UPDATE OF {', '.join(columns)} ON {table} "
            f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION leadscore_refuse_change("
            f"'the references of a {table} row ({', '.join(columns)}) never change')")
    deleted, id_fixed = _REFERENCED_TRIGGERS
    for referred, refs in _grouped(2).items():
        pairs = [v for table, column, _ in refs for v in (table, column)]
        statements.append(
            f"CREATE TRIGGER {referred}_{deleted} AFTER DELETE ON {referred} REFERENCING OLD TABLE AS old_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION leadscore_check_referenced({_args(pairs)})")
        statements.append(
            f"CREATE TRIGGER {referred}_{id_fixed} BEFORE UPDATE OF id ON {referred} "
            f"FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION leadscore_refuse_change("
            f"'the id of a {referred} row never changes (rows of "
            f"{', '.join(sorted({table for table, _, _ in refs}))} refer to it)')")
    return statements


def postgresql_drop_ddl() -> list[str]:
    """What :func:`postgresql_ddl` created, dropped (the triggers, then the functions)."""
    statements = [f"DROP TRIGGER IF EXISTS {table}_{suffix} ON {table}"
                  for position, suffixes in ((0, _REFERENCING_TRIGGERS), (2, _REFERENCED_TRIGGERS))
                  for table in _grouped(position) for suffix in suffixes]
    return statements + [f"DROP FUNCTION IF EXISTS {name}()" for name in _FUNCTIONS]


def run(connection: Connection, statements: Sequence[str]) -> None:
    """Each statement as it is (no bind parameters, no ``%`` escaping)."""
    driver = connection.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        for statement in statements:
            cursor.execute(statement)
    finally:
        cursor.close()


def install(_target: MetaData, connection: Connection, **_kw: Any) -> None:
    """``create_all``'s ``after_create`` hook: the checks on PostgreSQL (nothing elsewhere)."""
    if connection.dialect.name == "postgresql":
        run(connection, postgresql_drop_ddl() + postgresql_ddl())
