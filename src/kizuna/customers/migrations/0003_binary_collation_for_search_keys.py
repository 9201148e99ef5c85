"""Give the name and kana search keys the "C" collation on PostgreSQL.

Customer search is a prefix range on these keys. Under a linguistic collation (ja_JP, en_US)
PostgreSQL can neither use a plain B-tree index for it nor promise that code-point ranges match
prefixes; under "C" it can, on any server locale. SQLite compares in code-point order already.
"""

from typing import Any

from django.db import migrations

COLUMNS = ("name_key", "kana_key")


def to_c(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for column in COLUMNS:
            schema_editor.execute(
                f'ALTER TABLE customers_customer ALTER COLUMN {column} TYPE varchar(100) COLLATE "C"'
            )


def to_default(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for column in COLUMNS:
            schema_editor.execute(
                f"ALTER TABLE customers_customer ALTER COLUMN {column} TYPE varchar(100) "
                'COLLATE "default"'
            )


class Migration(migrations.Migration):
    dependencies = [("customers", "0002_make_consent_evidence_append_only")]
    operations = [migrations.RunPython(to_c, to_default)]
