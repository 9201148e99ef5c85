"""Fast multi-row INSERTs for the scheduler's own tables, the outbox (outbox_enqueue_many) and
the demo's history; and INSERT … SELECT, for rows the database can compute itself.

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
from django.db.models import QuerySet

BATCH = 5000


# Cached: the rows of one insert mostly share a few moments (created, decided, due) and dates.
@functools.lru_cache(maxsize=4096)
def _sqlite_datetime(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ")


@functools.lru_cache(maxsize=4096)
def _sqlite_date(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


# One encoder for every row: json.dumps with options builds a new encoder on each call.
_json_text = json.JSONEncoder(ensure_ascii=False).encode


def _converter(field: models.Field[Any, Any], sqlite: bool) -> Callable[[Any], Any] | None:
    kind = field.get_internal_type()
    if kind == "DateTimeField" and sqlite:
        return _sqlite_datetime
    if kind == "DateField" and sqlite:
        return _sqlite_date
    if kind == "JSONField":
        return _json_text
    return None


def _converted(field: models.Field[Any, Any], value: Any, sqlite: bool) -> Any:
    conv = _converter(field, sqlite)
    return value if conv is None else conv(value)


def _insert_head(
    model: type[models.Model], columns: Sequence[str], *, ignore_conflicts: bool
) -> tuple[str, str, list[models.Field[Any, Any]]]:
    """(INSERT … INTO table (columns), the ON CONFLICT tail, the fields left to their defaults)."""
    meta = model._meta
    named = set(columns)
    rest = [f for f in meta.concrete_fields if f.attname not in named and not f.primary_key]
    by_attname = {f.attname: f for f in meta.concrete_fields}
    fields = [by_attname[name] for name in columns] + rest
    sqlite = connection.vendor == "sqlite"
    quoted = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    verb = "INSERT OR IGNORE" if ignore_conflicts and sqlite else "INSERT"
    tail = " ON CONFLICT DO NOTHING" if ignore_conflicts and not sqlite else ""
    return f"{verb} INTO {meta.db_table} ({quoted})", tail, rest


def insert_select(
    model: type[models.Model],
    columns: Sequence[str],
    query: QuerySet[Any],
    *,
    ignore_conflicts: bool = False,
) -> int:
    """INSERT the rows `query` selects (a values_list of annotations only — so the SELECT
    keeps their order — giving `columns`, field attnames, in that order) without fetching
    them; returns how many rows were inserted.

    Nothing passes through Python, so the values must already be in the column's form (use
    expressions with the field's output_field). Columns not named get their field's default.
    With `ignore_conflicts`, rows that would break a unique constraint are left out.
    """
    if query.query.values_select or len(query.query.annotation_select) != len(columns):
        raise ValueError(f"the query must select {len(columns)} annotations, one per column")
    head, tail, rest = _insert_head(model, columns, ignore_conflicts=ignore_conflicts)
    select, params = query.query.sql_with_params()
    defaults = [f.get_db_prep_save(f.get_default(), connection) for f in rest]
    extra = "".join(", %s" for _ in rest)
    sql = f"{head} SELECT q.*{extra} FROM ({select}) AS q{tail}"  # noqa: S608 - our own SQL
    with connection.cursor() as cursor:
        # The defaults' placeholders come first in the statement's text.
        cursor.execute(sql, [*defaults, *params])
        inserted: int = cursor.rowcount
    return max(inserted, 0)


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
    head, tail, rest = _insert_head(model, columns, ignore_conflicts=ignore_conflicts)
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    fields = [by_attname[name] for name in columns] + rest
    sqlite = connection.vendor == "sqlite"
    # The defaults are the same on every row: converted once here, not once per row.
    defaults = tuple(_converted(f, f.get_default(), sqlite) for f in rest)
    converters = [
        (index, conv)
        for index, field in enumerate(fields[: len(columns)])
        if (conv := _converter(field, sqlite)) is not None
    ]
    marks = ", ".join(["%s"] * len(fields))
    sql = f"{head} VALUES ({marks}){tail}"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), BATCH):
            batch = []
            for row in rows[start : start + BATCH]:
                values = [*row, *defaults]
                for index, conv in converters:
                    values[index] = conv(values[index])
                batch.append(values)
            cursor.executemany(sql, batch)
