"""Recompute the search key of names written with variant kanji (髙, 﨑, 邊 …), which
`jp.name_key` now folds to the everyday form, so existing customers are found as new ones are.

Only rows whose name holds one of those characters are read and written (one scan of the
table, then updates in batches); the names themselves are not touched.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations
from django.db.models import Q

from kizuna.core import jp

BATCH = 2_000


def refold(apps: Any, schema_editor: Any) -> None:
    customer = apps.get_model("customers", "Customer")
    variants = [chr(code) for code in jp.NAME_VARIANTS]
    holds_variant = Q()
    for char in variants:
        holds_variant |= Q(family_name__contains=char) | Q(given_name__contains=char)
    changed = []
    for row in customer.objects.filter(holds_variant).only(
        "pk", "family_name", "given_name", "name_key"
    ):
        key = jp.name_key(row.family_name + row.given_name)
        if key != row.name_key:
            row.name_key = key
            changed.append(row)
        if len(changed) >= BATCH:
            customer.objects.bulk_update(changed, ["name_key"])
            changed = []
    if changed:
        customer.objects.bulk_update(changed, ["name_key"])


class Migration(migrations.Migration):
    dependencies = [("customers", "0006_index_postal_code_and_kana_for_duplicate_proposals")]

    operations = [migrations.RunPython(refold, migrations.RunPython.noop)]
