"""Migration helpers for the campaigns apps' large tables.

Turning off a foreign key's own index (`db_index=False`) is an AlterField, and on SQLite
Django carries out every AlterField by copying the whole table — the outbox, enrollments and
step dispatches hold millions of rows in a long-running shop. `unindex_foreign_keys` records
the same change in the migration state but only drops the index in the database.
`drop_pattern_index` drops the extra index PostgreSQL gets for LIKE searches on a unique text
column that is only ever looked up whole.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps


def unindex_foreign_keys(
    app_label: str, model_name: str, fields: dict[str, models.Field[Any, Any]]
) -> migrations.SeparateDatabaseAndState:
    """AlterField each of `fields` (the new definitions, with db_index=False) in the state;
    in the database, DROP INDEX the field's own index (CREATE INDEX it again when reversed)."""

    def drop(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
        model = apps.get_model(app_label, model_name)
        table = model._meta.db_table
        named = {index.name for index in model._meta.indexes}
        columns = {model._meta.get_field(name).column for name in fields}
        connection = schema_editor.connection
        with connection.cursor() as cursor:
            found = connection.introspection.get_constraints(cursor, table)
        for name, info in found.items():
            own = info["index"] and not info["unique"] and not info["primary_key"]
            cols = info["columns"] or []
            if own and name not in named and len(cols) == 1 and cols[0] in columns:
                schema_editor.execute(
                    schema_editor.sql_delete_index
                    % {
                        "table": schema_editor.quote_name(table),
                        "name": schema_editor.quote_name(name),
                    }
                )

    def create(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
        model = apps.get_model(app_label, model_name)
        for name in fields:
            field = model._meta.get_field(name)
            # The statement (and index name) Django itself creates for an indexed field; the
            # stubs do not know the method.
            sql = schema_editor._create_index_sql(model, fields=[field])  # type: ignore[attr-defined]
            schema_editor.execute(sql)

    return migrations.SeparateDatabaseAndState(
        state_operations=[
            migrations.AlterField(model_name=model_name, name=name, field=field)
            for name, field in fields.items()
        ],
        database_operations=[migrations.RunPython(drop, create)],
    )


def drop_pattern_index(app_label: str, model_name: str, field_name: str) -> migrations.RunPython:
    """On PostgreSQL, DROP the `…_like` (varchar_pattern_ops) index Django adds to a unique or
    indexed CharField; CREATE it again when reversed. Nothing on other databases."""

    def drop(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        model = apps.get_model(app_label, model_name)
        column = model._meta.get_field(field_name).column
        connection = schema_editor.connection
        with connection.cursor() as cursor:
            found = connection.introspection.get_constraints(cursor, model._meta.db_table)
        for name, info in found.items():
            if info["index"] and name.endswith("_like") and info["columns"] == [column]:
                schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")

    def create(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        model = apps.get_model(app_label, model_name)
        field = model._meta.get_field(field_name)
        # Django's own statement and name for the index (PostgreSQL schema editor).
        sql = schema_editor._create_like_index_sql(model, field)  # type: ignore[attr-defined]
        if sql is not None:
            schema_editor.execute(sql)

    return migrations.RunPython(drop, create)
