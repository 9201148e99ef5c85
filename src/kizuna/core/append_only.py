"""Database triggers that make a table append-only, for use in migrations.

UPDATE is refused on SQLite and PostgreSQL. DELETE is refused on PostgreSQL by a row trigger;
on SQLite only the ORM refuses it, because Django's test flush and `kizuna flush` empty tables
with DELETE there (PostgreSQL empties them with TRUNCATE, which row triggers do not see).
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


def _forwards(table: str) -> Any:
    def apply(apps: Any, schema_editor: Any) -> None:
        vendor = schema_editor.connection.vendor
        if vendor == "sqlite":
            schema_editor.execute(
                f'CREATE TRIGGER "{table}_append_only" BEFORE UPDATE ON "{table}" '
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
            )
        elif vendor == "postgresql":
            schema_editor.execute(
                "CREATE OR REPLACE FUNCTION kizuna_append_only() RETURNS trigger AS $$ "
                # psycopg reads % as a placeholder, hence %%.
                "BEGIN RAISE EXCEPTION '%% is append-only', TG_TABLE_NAME; END; "
                "$$ LANGUAGE plpgsql;"
            )
            schema_editor.execute(
                f'CREATE TRIGGER "{table}_append_only" BEFORE UPDATE OR DELETE ON "{table}" '
                "FOR EACH ROW EXECUTE FUNCTION kizuna_append_only();"
            )

    return apply


def _backwards(table: str) -> Any:
    def apply(apps: Any, schema_editor: Any) -> None:
        vendor = schema_editor.connection.vendor
        if vendor == "sqlite":
            schema_editor.execute(f'DROP TRIGGER IF EXISTS "{table}_append_only";')
        elif vendor == "postgresql":
            schema_editor.execute(f'DROP TRIGGER IF EXISTS "{table}_append_only" ON "{table}";')

    return apply


def make_append_only(table: str) -> migrations.RunPython:
    return migrations.RunPython(_forwards(table), _backwards(table))


# --- the one exception: redacting personal data in the audit log (APPI erasure) -------------
#
# An audit row keeps who did what to which record and which fields changed; the values it
# recorded (old → new names, addresses, e-mails) are personal data that an erasure request
# must remove (customers.privacy). The guard below still refuses every DELETE and every UPDATE
# except one that keeps each column but `changes` as it was and keeps the shape of `changes`
# (same keys, same list lengths), replacing some of its values with REDACTED. Nothing else can
# be written through it: not a new value, not a removed key, not a different actor or time.

REDACTED = "[削除済み]"
# The columns of core_auditlog other than `changes`; a redaction must leave them untouched.
AUDIT_GUARDED_COLUMNS = (
    "id",
    "at",
    "actor_id",
    "actor_label",
    "action",
    "entity",
    "entity_id",
    "customer_id",
)

_SQLITE_LEAF = "('object', 'array')"


def _sqlite_redaction_trigger(table: str) -> str:
    same = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in AUDIT_GUARDED_COLUMNS)
    # json_tree lists every node by path: the new document must have exactly the old paths, and
    # each leaf must be unchanged or the marker. Built from constants and a migration's table
    # name: no input reaches it.
    return (
        f'CREATE TRIGGER "{table}_append_only" BEFORE UPDATE ON "{table}" '  # noqa: S608
        f"WHEN NOT ({same} AND json_valid(NEW.changes) "
        "AND (SELECT count(*) FROM json_tree(NEW.changes)) "
        "= (SELECT count(*) FROM json_tree(OLD.changes)) "
        "AND NOT EXISTS (SELECT 1 FROM json_tree(NEW.changes) AS n "
        "LEFT JOIN json_tree(OLD.changes) AS o ON o.fullkey = n.fullkey "
        "WHERE o.fullkey IS NULL "
        f"OR (n.type IN {_SQLITE_LEAF} AND n.type IS NOT o.type) "
        f"OR (n.type NOT IN {_SQLITE_LEAF} AND NOT ((n.type IS o.type AND n.atom IS o.atom) "
        f"OR (n.type = 'text' AND n.atom = '{REDACTED}' AND o.type NOT IN {_SQLITE_LEAF}))))) "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
    )


_PG_IS_REDACTION = (
    "CREATE OR REPLACE FUNCTION kizuna_is_redaction(old jsonb, new jsonb) "  # noqa: S608
    "RETURNS boolean AS $$ "
    "DECLARE k text; i integer; "
    "BEGIN "
    "IF new = old THEN RETURN true; END IF; "
    "IF jsonb_typeof(old) = 'object' THEN "
    "  IF jsonb_typeof(new) <> 'object' THEN RETURN false; END IF; "
    "  IF (SELECT array_agg(x ORDER BY x) FROM jsonb_object_keys(old) AS x) IS DISTINCT FROM "
    "     (SELECT array_agg(x ORDER BY x) FROM jsonb_object_keys(new) AS x) THEN "
    "    RETURN false; "
    "  END IF; "
    "  FOR k IN SELECT jsonb_object_keys(old) LOOP "
    "    IF NOT kizuna_is_redaction(old -> k, new -> k) THEN RETURN false; END IF; "
    "  END LOOP; "
    "  RETURN true; "
    "END IF; "
    "IF jsonb_typeof(old) = 'array' THEN "
    "  IF jsonb_typeof(new) <> 'array' OR jsonb_array_length(new) <> jsonb_array_length(old) "
    "  THEN RETURN false; END IF; "
    "  FOR i IN 0 .. jsonb_array_length(old) - 1 LOOP "
    "    IF NOT kizuna_is_redaction(old -> i, new -> i) THEN RETURN false; END IF; "
    "  END LOOP; "
    "  RETURN true; "
    "END IF; "
    f"RETURN new = to_jsonb('{REDACTED}'::text); "
    "END; $$ LANGUAGE plpgsql IMMUTABLE;"
)


def _pg_redaction_guard() -> str:
    new = ", ".join(f"NEW.{c}" for c in AUDIT_GUARDED_COLUMNS)
    old = ", ".join(f"OLD.{c}" for c in AUDIT_GUARDED_COLUMNS)
    return (
        "CREATE OR REPLACE FUNCTION kizuna_append_only_but_redaction() RETURNS trigger AS $$ "
        "BEGIN "
        f"IF TG_OP = 'UPDATE' AND ROW({new}) IS NOT DISTINCT FROM ROW({old}) "
        "AND kizuna_is_redaction(OLD.changes, NEW.changes) THEN RETURN NEW; END IF; "
        "RAISE EXCEPTION '%% is append-only', TG_TABLE_NAME; "
        "END; $$ LANGUAGE plpgsql;"
    )


def _allow_redaction(table: str) -> Any:
    def apply(apps: Any, schema_editor: Any) -> None:
        _backwards(table)(apps, schema_editor)
        vendor = schema_editor.connection.vendor
        if vendor == "sqlite":
            schema_editor.execute(_sqlite_redaction_trigger(table))
        elif vendor == "postgresql":
            schema_editor.execute(_PG_IS_REDACTION)
            schema_editor.execute(_pg_redaction_guard())
            schema_editor.execute(
                f'CREATE TRIGGER "{table}_append_only" BEFORE UPDATE OR DELETE ON "{table}" '
                "FOR EACH ROW EXECUTE FUNCTION kizuna_append_only_but_redaction();"
            )

    return apply


def _back_to_strict(table: str) -> Any:
    def apply(apps: Any, schema_editor: Any) -> None:
        _backwards(table)(apps, schema_editor)
        _forwards(table)(apps, schema_editor)

    return apply


def allow_audit_redaction(table: str) -> migrations.RunPython:
    """Replace `table`'s append-only trigger with one that also admits a redaction."""
    return migrations.RunPython(_allow_redaction(table), _back_to_strict(table))
