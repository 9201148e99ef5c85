"""Reads by key without the ORM's query compiler: the rows whose column holds one of some values.

A one-order API call reads a handful of rows by key — the stored order, the customers holding
its identities, its products — and compiling those querysets cost 0.1–0.3 ms each, about a
third of the request's CPU, far more than the database spends answering them. Their SQL
depends only on the model, the columns, the key and how many values are asked for, so here it
is built once per shape (and connection) and run with each call's values. Rows come back as
the ORM would make them: instances through `Model.from_db`, with each field's database
converters applied (text to datetime on SQLite, JSON…), or tuples of the columns asked for.

The counterpart of kizuna.core.bulk, which writes plain rows the same way. Anything with joins,
aggregates or conditions beyond "key in values" belongs to the ORM.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

_M = TypeVar("_M", bound=models.Model)
_Converter = Callable[[Any, Any, BaseDatabaseWrapper], Any]


@functools.lru_cache(maxsize=256)
def _plan(
    model: type[models.Model],
    attnames: tuple[str, ...],
    key: str,
    count: int,
    *,
    for_update: bool,
    order_by: str | None,
    connection: BaseDatabaseWrapper,
) -> tuple[str, tuple[tuple[int, Any, tuple[_Converter, ...]], ...]]:
    """(SELECT statement, the converters of each column that has any) for one shape of read.

    Cached per connection object (one per thread and alias): the converters are bound to its
    backend, as the compiler's are."""
    meta = model._meta
    by_attname = {f.attname: f for f in meta.concrete_fields}
    quote = connection.ops.quote_name
    fields = [by_attname[name] for name in attnames]
    marks = ", ".join(["%s"] * count)
    sql = (
        f"SELECT {', '.join(quote(f.column) for f in fields)} FROM {quote(meta.db_table)}"  # noqa: S608 - names from the model
        f" WHERE {quote(by_attname[key].column)} IN ({marks})"
    )
    if order_by is not None:
        sql += f" ORDER BY {quote(by_attname[order_by].column)}"
    if for_update and connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    converters = []
    for index, field in enumerate(fields):
        # What Field.get_db_converters gives (django-stubs does not declare it).
        from_db = getattr(field, "from_db_value", None)
        found = (
            *connection.ops.get_db_converters(field.cached_col),
            *((from_db,) if from_db is not None else ()),
        )
        if found:
            converters.append((index, field.cached_col, found))
    return sql, tuple(converters)


def rows_where_in(
    model: type[models.Model],
    attnames: Sequence[str],
    key: str,
    values: Collection[Any],
    *,
    order_by: str | None = None,
    for_update: bool = False,
    using: str = DEFAULT_DB_ALIAS,
) -> list[tuple[Any, ...]]:
    """The `attnames` columns (field attnames) of the rows whose `key` column is one of
    `values`, as tuples, converted as the ORM converts them. `for_update` locks the rows
    (FOR UPDATE where the database has it; SQLite's IMMEDIATE transactions already hold the
    write lock)."""
    if not values:
        return []
    connection = connections[using]
    sql, converters = _plan(
        model,
        tuple(attnames),
        key,
        len(values),
        for_update=for_update,
        order_by=order_by,
        connection=connection,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, list(values))
        rows = cursor.fetchall()
    if not converters:
        return [tuple(row) for row in rows]
    converted = []
    for row in rows:
        values_ = list(row)
        for index, expression, functions in converters:
            value = values_[index]
            for function in functions:
                value = function(value, expression, connection)
            values_[index] = value
        converted.append(tuple(values_))
    return converted


def instances_where_in(
    model: type[_M],
    key: str,
    values: Collection[Any],
    *,
    order_by: str | None = None,
    for_update: bool = False,
    using: str = DEFAULT_DB_ALIAS,
) -> list[_M]:
    """Model instances of the rows whose `key` column is one of `values`: what
    `model.objects.filter(key__in=values)` returns (`for_update` as in rows_where_in)."""
    attnames = tuple(f.attname for f in model._meta.concrete_fields)
    return [
        model.from_db(using, attnames, row)
        for row in rows_where_in(
            model, attnames, key, values, order_by=order_by, for_update=for_update, using=using
        )
    ]
