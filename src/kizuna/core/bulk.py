"""Fast bulk writes of plain rows: multi-row INSERTs (COPY on PostgreSQL), INSERT … SELECT, and
primary keys reserved ahead of the rows that use them.

The bulk writers — CSV import and the API batch route (orders and customers), a scenario
tick (enrollments, dispatches, the outbox), the demo's history — write tens of thousands of
new rows at a time. bulk_create spends far longer preparing each value and compiling each
statement than the database spends storing the row; these rows are new and plain, so their
values go to the driver nearly as they are: aware datetimes as UTC text on SQLite (the format
Django itself stores there), dates as ISO text, JSON as text. Columns not named get their
field's default, `auto_now`/`auto_now_add` columns the moment of the write, as the ORM would
give them.

Callers that need the new rows' ids before writing (an order's lines refer to it) reserve them
with `reserve_ids`, so nothing has to be read back.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

BATCH = 5000
# Below this many rows a plain INSERT beats COPY on PostgreSQL: COPY costs a few round trips
# of its own, which is most of the time when one API call writes one order.
COPY_MIN_ROWS = 100
# The temporary table insert_rows copies rows into on PostgreSQL when some may be skipped.
STAGE_TABLE = "kizuna_bulk_stage"
_M = TypeVar("_M", bound=models.Model)


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


def _default(field: models.Field[Any, Any], now: dt.datetime, sqlite: bool) -> Any:
    """The value the ORM would give a column the row does not name, in the driver's form."""
    auto = isinstance(field, models.DateField) and (field.auto_now or field.auto_now_add)
    value = now if auto else field.get_default()
    conv = _converter(field, sqlite)
    return value if conv is None or value is None else conv(value)


class _InsertHead(NamedTuple):
    """The pieces of an INSERT into one model's table for one set of columns."""

    head: str  # INSERT [OR IGNORE] INTO table (columns…, defaulted columns…)
    tail: str  # " ON CONFLICT DO NOTHING" on PostgreSQL when ignoring conflicts, else ""
    rest: tuple[models.Field[Any, Any], ...]  # the fields left to their defaults
    table: str  # the quoted table name
    quoted: str  # the quoted column list of `head`


@functools.lru_cache(maxsize=256)
def _insert_head(
    model: type[models.Model], columns: tuple[str, ...], *, ignore_conflicts: bool, vendor: str
) -> _InsertHead:
    """The INSERT's pieces for `columns` (field attnames) and the fields they leave out.

    The primary key is among the defaults only when `columns` does not give it — then it is
    left out and the database numbers the row. Cached: a one-order API call writes five
    tables, and building their statements was a tenth of its CPU."""
    meta = model._meta
    named = set(columns)
    rest = tuple(f for f in meta.concrete_fields if f.attname not in named and not f.primary_key)
    by_attname = {f.attname: f for f in meta.concrete_fields}
    fields = [*(by_attname[name] for name in columns), *rest]
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    quoted = ", ".join(quote(f.column) for f in fields)
    sqlite = vendor == "sqlite"
    verb = "INSERT OR IGNORE" if ignore_conflicts and sqlite else "INSERT"
    tail = " ON CONFLICT DO NOTHING" if ignore_conflicts and not sqlite else ""
    table = quote(meta.db_table)
    return _InsertHead(f"{verb} INTO {table} ({quoted})", tail, rest, table, quoted)


@functools.lru_cache(maxsize=256)
def _converters(
    model: type[models.Model], columns: tuple[str, ...], *, sqlite: bool
) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """(position, converter) of each of `columns` whose values the driver needs converted."""
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    return tuple(
        (index, conv)
        for index, name in enumerate(columns)
        if (conv := _converter(by_attname[name], sqlite)) is not None
    )


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
    connection = connections[query.db]
    insert = _insert_head(
        model, tuple(columns), ignore_conflicts=ignore_conflicts, vendor=connection.vendor
    )
    select, params = query.query.sql_with_params()
    now = timezone.now()
    defaults = [
        f.get_db_prep_save(now if _auto(f) else f.get_default(), connection) for f in insert.rest
    ]
    extra = "".join(", %s" for _ in insert.rest)
    sql = f"{insert.head} SELECT q.*{extra} FROM ({select}) AS q{insert.tail}"  # noqa: S608 - our own SQL
    with connection.cursor() as cursor:
        # The defaults' placeholders come first in the statement's text.
        cursor.execute(sql, [*defaults, *params])
        inserted: int = cursor.rowcount
    return max(inserted, 0)


def _auto(field: models.Field[Any, Any]) -> bool:
    return isinstance(field, models.DateField) and (field.auto_now or field.auto_now_add)


def insert_rows(
    model: type[models.Model],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    ignore_conflicts: bool = False,
    using: str = DEFAULT_DB_ALIAS,
    now: dt.datetime | None = None,
    returning: bool = False,
) -> list[int]:
    """INSERT `rows` (values in the order of `columns`, field attnames) in batches: COPY on
    PostgreSQL (for COPY_MIN_ROWS or more), executemany otherwise.

    With `ignore_conflicts`, rows that would break a unique constraint are left out
    (SQLite INSERT OR IGNORE, PostgreSQL ON CONFLICT DO NOTHING — COPY cannot skip rows, so
    these are copied into a temporary table first), as bulk_create does. `now` fills
    auto_now columns (default: the moment of the call). With `returning` (PostgreSQL and fewer than
    COPY_MIN_ROWS rows: one statement) the new rows' primary keys are returned, in the order
    of `rows`; otherwise an empty list.
    """
    if not rows:
        return []
    connection = connections[using]
    sqlite = connection.vendor == "sqlite"
    columns = tuple(columns)
    head, tail, rest, table, quoted = _insert_head(
        model, columns, ignore_conflicts=ignore_conflicts, vendor=connection.vendor
    )
    moment = now or timezone.now()
    # The defaults are the same on every row: converted once here, not once per row.
    defaults = tuple(_default(f, moment, sqlite) for f in rest)
    converters = _converters(model, columns, sqlite=sqlite)
    # wrap_database_errors: COPY goes to psycopg directly, and callers catch Django's
    # IntegrityError / DataError (a lost creation race, a value too long for its column).
    with connection.cursor() as cursor, connection.wrap_database_errors:
        if connection.vendor == "postgresql" and len(rows) >= COPY_MIN_ROWS:
            # COPY is PostgreSQL's bulk load: several times faster than INSERTs.
            if not ignore_conflicts:
                with cursor.cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(_values(row, defaults, converters))
                return []
            # COPY cannot skip a row that breaks a unique constraint: the rows are copied
            # into a temporary table and moved over by one INSERT … SELECT that can. One
            # statement per row instead (executemany) cost about 50 µs a row at a million
            # customers (a tick's 93,000 messages: 5.3 s against 1.4 s). In a savepoint, so a
            # failure also drops the table, and a later call in the transaction makes it anew.
            with transaction.atomic(using=using):
                cursor.execute(
                    f"CREATE TEMPORARY TABLE {STAGE_TABLE} AS SELECT {quoted} FROM {table} WITH NO DATA"  # noqa: S608 - our own SQL
                )
                with cursor.cursor.copy(f"COPY {STAGE_TABLE} ({quoted}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(_values(row, defaults, converters))
                cursor.execute(
                    f"INSERT INTO {table} ({quoted}) SELECT {quoted} FROM {STAGE_TABLE}{tail}"  # noqa: S608
                )
                cursor.execute(f"DROP TABLE {STAGE_TABLE}")
            return []
        marks = "(" + ", ".join(["%s"] * (len(columns) + len(rest))) + ")"
        for start in range(0, len(rows), BATCH):
            batch = [_values(row, defaults, converters) for row in rows[start : start + BATCH]]
            if sqlite or len(batch) >= COPY_MIN_ROWS:
                cursor.executemany(f"{head} VALUES {marks}{tail}", batch)
                continue
            # A few rows on PostgreSQL: one statement, one round trip (executemany would
            # pipeline one statement per row).
            values_sql = ", ".join([marks] * len(batch))
            params = [v for b in batch for v in b]
            if not returning:
                cursor.execute(f"{head} VALUES {values_sql}{tail}", params)
                continue
            # PostgreSQL returns the rows of a multi-row VALUES in their order (bulk_create
            # relies on the same).
            pk = connection.ops.quote_name(model._meta.pk.column)
            cursor.execute(f"{head} VALUES {values_sql}{tail} RETURNING {pk}", params)
            return [row[0] for row in cursor.fetchall()]
    if returning:
        raise ValueError("returning needs PostgreSQL and fewer than COPY_MIN_ROWS rows")
    return []


def read_datetime(value: Any, zone: dt.tzinfo | None) -> dt.datetime:
    """A DateTimeField value as a plain cursor returns it, converted as Django's converters
    would: ISO text (SQLite, for an expression) becomes a moment, and a naive moment (SQLite)
    is made aware in the connection's time zone (`zone`, `connection.timezone`: UTC; None is UTC);
    PostgreSQL returns aware moments, returned as they are."""
    moment = parse_datetime(value) if isinstance(value, str) else value
    if not isinstance(moment, dt.datetime):
        raise ValueError(f"not a DateTimeField value: {value!r}")
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, zone or dt.UTC)


def analyze(models_written: Sequence[type[models.Model]], *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Give PostgreSQL's planner statistics for tables just bulk-loaded (nothing on SQLite).

    Until autovacuum comes round, a bulk-loaded table looks empty or small to the planner, and
    the queries that run right after the load are planned for that: after the demo build,
    30 times slower at 20,000 customers. It also keeps a demo's plans the ones a shop's
    analysed database gets: with the 1M demo's scenario history unanalysed, a plan that took
    283 s once autovacuum had run went unseen (docs/performance.md). ANALYZE samples a fixed
    number of rows per table, so it takes seconds at any size. (SQLite's planner works from
    index heuristics without statistics, which suit those queries.)
    """
    connection = connections[using]
    if connection.vendor != "postgresql" or not models_written:
        return
    quote = connection.ops.quote_name
    tables = ", ".join(dict.fromkeys(quote(m._meta.db_table) for m in models_written))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {tables}")


def _values(
    row: Sequence[Any],
    defaults: Sequence[Any],
    converters: Sequence[tuple[int, Callable[[Any], Any]]],
) -> list[Any]:
    """A row as the driver takes it: its values converted where the column needs it (NULL
    stays NULL), then the defaults of the columns it does not name."""
    values = [*row, *defaults]
    for index, conv in converters:
        if values[index] is not None:
            values[index] = conv(values[index])
    return values


def update_fields(
    instances: Sequence[models.Model], fields: Sequence[str], *, using: str = DEFAULT_DB_ALIAS
) -> None:
    """Write `fields` (attnames) of stored instances, one prepared UPDATE per instance run with
    executemany: what `bulk_update` does, without its CASE … WHEN per field and instance, whose
    building cost more than the updates when a batch changes a few orders or one API call one.
    """
    if not instances:
        return
    connection = connections[using]
    sqlite = connection.vendor == "sqlite"
    model = type(instances[0])
    meta = model._meta
    by_attname = {f.attname: f for f in meta.concrete_fields}
    converters = _converters(model, tuple(fields), sqlite=sqlite)
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(by_attname[name].column)} = %s" for name in fields)
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"  # noqa: S608
    # The primary key goes last, as the WHERE's parameter (a "default" to _values).
    rows = [
        _values([getattr(instance, name) for name in fields], (instance.pk,), converters)
        for instance in instances
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def insert_instances(instances: Sequence[_M], *, using: str = DEFAULT_DB_ALIAS) -> None:
    """INSERT new instances of one model as `insert_rows` does, and leave them as saved ones.

    Instances without a primary key get one from `reserve_ids` (so on SQLite, call inside a
    transaction), or from the INSERT itself for a few rows on PostgreSQL; `auto_now` fields
    are set to the moment of the call, and a foreign key given as an object takes that
    object's id, as `bulk_create` does. Like `bulk_create`, no `save()` and no signals.
    """
    if not instances:
        return
    model = type(instances[0])
    meta = model._meta
    pk_name = meta.pk.attname
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    stamped = [f.attname for f in fields if _auto(f)]
    now = timezone.now()
    unnumbered = [instance for instance in instances if instance.pk is None]
    # A few new rows on PostgreSQL (one API call's order): the INSERT hands out their ids
    # (RETURNING), which saves a round trip to the sequence per table.
    returned = (
        connections[using].vendor == "postgresql"
        and len(unnumbered) == len(instances)
        and len(instances) < COPY_MIN_ROWS
    )
    if not returned:
        ids = reserve_ids(model, len(unnumbered), using=using)
        for instance, pk in zip(unnumbered, ids, strict=True):
            setattr(instance, pk_name, pk)
    relations = [f for f in fields if isinstance(f, models.ForeignKey)]
    for instance in instances:
        for relation in relations:
            # A parent given as an object before it had its id (Shipment(order=new_order)).
            if getattr(instance, relation.attname) is None and relation.is_cached(instance):
                parent = getattr(instance, relation.name)
                if parent is not None:
                    if parent.pk is None:
                        raise ValueError(f"{relation.name} of a new {meta.label} is not saved")
                    setattr(instance, relation.attname, parent.pk)
        for name in stamped:
            setattr(instance, name, now)
    columns = (
        tuple(f.attname for f in fields) if returned else (pk_name, *(f.attname for f in fields))
    )
    ids = insert_rows(
        model,
        columns,
        [tuple(getattr(instance, name) for name in columns) for instance in instances],
        using=using,
        now=now,
        returning=returned,
    )
    for instance, pk in zip(instances if returned else (), ids, strict=True):
        setattr(instance, pk_name, pk)
    for instance in instances:
        instance._state.adding = False
        instance._state.db = using


def reserve_ids(
    model: type[models.Model], count: int, *, using: str = DEFAULT_DB_ALIAS
) -> list[int]:
    """`count` primary keys for new rows of `model`, never handed out again (to this caller or
    any other), so rows can refer to each other before they are written.

    PostgreSQL takes them from the table's sequence, as INSERT would. SQLite advances the
    table's AUTOINCREMENT counter; that is safe only while this connection holds the write
    lock, which Kizuna's IMMEDIATE transactions take at BEGIN — so call it inside one.
    """
    if count <= 0:
        return []
    connection = connections[using]
    table = model._meta.db_table
    column = model._meta.pk.column
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                [table, column, count],
            )
            # Not necessarily one unbroken run: other sessions may draw at the same time.
            return [row[0] for row in cursor.fetchall()]
        if not connection.in_atomic_block:
            raise RuntimeError("reserve_ids on SQLite needs a transaction (the write lock)")
        quote = connection.ops.quote_name
        cursor.execute(
            f"SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = %s), 0),"  # noqa: S608
            f" coalesce((SELECT max({quote(column)}) FROM {quote(table)}), 0))",
            [table],
        )
        last = int(cursor.fetchone()[0])
        cursor.execute("UPDATE sqlite_sequence SET seq = %s WHERE name = %s", [last + count, table])
        if cursor.rowcount == 0:
            cursor.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)", [table, last + count]
            )
        return list(range(last + 1, last + count + 1))
