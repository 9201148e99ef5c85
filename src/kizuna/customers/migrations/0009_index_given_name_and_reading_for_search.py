"""Search keys for the given name and its reading alone (`given_name_key`, `given_kana_key`), so
an operator who types only 「七海」 or 「ナナミ」 finds the customer through a prefix range, as
the family-first keys allow for 「高橋」.

The columns are added without an index, given the "C" collation on PostgreSQL (as 0003 did for
the other keys: a prefix range then uses the B-tree index in any locale), filled in batches by
primary key, and indexed last, so a large table is not re-indexed row by row while filled.

Search reads one key's prefix range among records not merged away (merged_into IS NULL) in
(key, id) order, and stops after the page. PostgreSQL walks the (key, id) indexes. SQLite plans
without statistics and took the merged_into index (every customer) and sorted them all, for the
family name keys as well; the (merged_into, key) indexes, whose entries end with the row id,
give it the same walk.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

from kizuna.core import jp

BATCH = 2_000
COLUMNS = ("given_name_key", "given_kana_key")


def to_c(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for column in COLUMNS:
            schema_editor.execute(
                f'ALTER TABLE customers_customer ALTER COLUMN {column} TYPE varchar(100) COLLATE "C"'
            )


def backfill(apps: Any, schema_editor: Any) -> None:
    """Fill both keys of every customer with a given name or reading, BATCH rows at a time (one
    UPDATE per row by primary key, sent together: Django's bulk_update builds a CASE over the
    whole batch, which SQLite evaluates row by row)."""
    customer = apps.get_model("customers", "Customer")
    rows = customer.objects.order_by("pk").values_list("pk", "given_name", "given_kana")
    sql = "UPDATE customers_customer SET given_name_key = %s, given_kana_key = %s WHERE id = %s"
    last = 0
    while True:
        batch = list(rows.filter(pk__gt=last)[:BATCH])
        if not batch:
            return
        last = batch[-1][0]
        keys = [(jp.name_key(name), jp.normalize_kana(kana), pk) for pk, name, kana in batch]
        with schema_editor.connection.cursor() as cursor:
            cursor.executemany(sql, [key for key in keys if key[0] or key[1]])


class Migration(migrations.Migration):
    dependencies = [("customers", "0008_close_duplicate_candidates_of_erased_records")]

    operations = [
        migrations.AddField(
            model_name="customer",
            name="given_name_key",
            field=models.CharField(default="", editable=False, max_length=100),
        ),
        migrations.AddField(
            model_name="customer",
            name="given_kana_key",
            field=models.CharField(default="", editable=False, max_length=100),
        ),
        migrations.RunPython(to_c, migrations.RunPython.noop),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="customer",
            index=models.Index(fields=["given_name_key", "id"], name="customer_given_name_id"),
        ),
        migrations.AddIndex(
            model_name="customer",
            index=models.Index(fields=["given_kana_key", "id"], name="customer_given_kana_id"),
        ),
        *(
            migrations.AddIndex(
                model_name="customer",
                index=models.Index(fields=["merged_into", key], name=f"customer_search_{name}"),
            )
            for key, name in (
                ("name_key", "name"),
                ("kana_key", "kana"),
                ("given_name_key", "given"),
                ("given_kana_key", "given_kana"),
            )
        ),
    ]
