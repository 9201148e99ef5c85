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
