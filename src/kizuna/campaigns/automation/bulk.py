"""Fast multi-row INSERTs for the scheduler's own tables, the outbox (outbox_enqueue_many) and
the demo's history.

A tick may enroll and dispatch a hundred thousand customers at once. bulk_create spends far
longer preparing each value than the database spends storing the row; these rows are new and
plain, so their values go to the driver nearly as they are: aware datetimes as UTC text on
SQLite (the format Django itself stores there), dates as ISO text, JSON as text. Columns not
named get their field's default, as the ORM would give them.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection, models

BATCH = 5000


@functools.lru_cache(maxsize=4096)
def _sqlite_datetime(value: dt.datetime) -> str:
    # Cached: the rows of one insert mostly share a few moments (created, decided, due).
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ")


def _converter(field: models.Field[Any, Any], sqlite: bool) -> Callable[[Any], Any] | None:
    kind = field.get_internal_type()
    if kind == "DateTimeField" and sqlite:
        return lambda v: None if v is None else _sqlite_datetime(v)
    if kind == "DateField" and sqlite:
        return lambda v: None if v is None else v.isoformat()
    if kind == "JSONField":
        return lambda v: json.dumps(v, ensure_ascii=False)
    return None


def insert_rows(
    model: type[models.Model],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    ignore_conflicts: bool = False,
) -> None:
    """INSERT `rows` (values in the order of `columns`, field attnames) in batches.

    With `ignore_conflicts`, rows that would break a unique constraint are left out
    (SQLite INSERT OR IGNORE, PostgreSQL ON CONFLICT DO NOTHING), as bulk_create does.
    """
    if not rows:
        return
    meta = model._meta
    named = set(columns)
    rest = [f for f in meta.concrete_fields if f.attname not in named and not f.primary_key]
    by_attname = {f.attname: f for f in meta.concrete_fields}
    fields = [by_attname[name] for name in columns] + rest
    defaults = tuple(f.get_default() for f in rest)
    sqlite = connection.vendor == "sqlite"
    converters = [
        (index, conv)
        for index, field in enumerate(fields)
        if (conv := _converter(field, sqlite)) is not None
    ]
    quoted = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    verb = "INSERT OR IGNORE" if ignore_conflicts and sqlite else "INSERT"
    tail = " ON CONFLICT DO NOTHING" if ignore_conflicts and not sqlite else ""
    sql = f"{verb} INTO {meta.db_table} ({quoted}) VALUES ({marks}){tail}"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), BATCH):
            batch = []
            for row in rows[start : start + BATCH]:
                values = [*row, *defaults]
                for index, conv in converters:
                    values[index] = conv(values[index])
                batch.append(values)
            cursor.executemany(sql, batch)
