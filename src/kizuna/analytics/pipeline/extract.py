"""Read the operational tables into an Arrow snapshot in the pipeline's normalised shape.

DuckDB here cannot fetch its sqlite/postgres scanner extensions, so data moves as Arrow:

* `connectorx` (Rust, straight to Arrow) when the run is not inside a transaction: it opens
  its own connection and would not see uncommitted rows;
* PostgreSQL `COPY (SELECT …) TO STDOUT` parsed by Arrow's CSV reader, on Django's connection;
* otherwise Django's connection, `fetchmany` in chunks turned into Arrow record batches.

Timestamps leave the database as UTC epoch seconds and become Asia/Tokyo day numbers here
(Japan has no daylight saving time, so JST is always UTC+9).
"""

from __future__ import annotations

import io
import multiprocessing
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from django.db import connections

JST_OFFSET_SECONDS = 9 * 3600
SECONDS_PER_DAY = 86_400
FETCH_ROWS = 200_000


@dataclass(frozen=True)
class Snapshot:
    """The operational data the analytics need, as Arrow tables (normalised shape)."""

    orders: pa.Table
    lines: pa.Table | None = None
    products: pa.Table | None = None
    customers: pa.Table | None = None
    subscriptions: pa.Table | None = None
    deliveries: pa.Table | None = None
    points: pa.Table | None = None
    contacts: pa.Table | None = None

    def tables(self) -> dict[str, pa.Table]:
        named = {
            "orders": self.orders,
            "lines": self.lines,
            "products": self.products,
            "customers": self.customers,
            "subscriptions": self.subscriptions,
            "deliveries": self.deliveries,
            "points": self.points,
            "contacts": self.contacts,
        }
        return {name: table for name, table in named.items() if table is not None}


# SQL per vendor for the two conversions the databases store differently.
_EPOCH = {
    # Whole seconds, like strftime('%s', …) (both go through SQLite's internal Julian-day
    # milliseconds) but about twice as fast on ten million rows: integer arithmetic on
    # julianday() instead of formatting a string and parsing it back.
    "sqlite": "(CAST(ROUND(julianday({col}) * 86400000) AS INTEGER) - 210866760000000) / 1000",
    "postgresql": "CAST(FLOOR(EXTRACT(EPOCH FROM {col})) AS BIGINT)",
}
_DAYS = {
    "sqlite": "CAST(julianday({col}) - 2440587.5 AS INTEGER)",
    "postgresql": "({col} - DATE '1970-01-01')",
}
# connectorx infers an SQLite expression's type from its first value, and cannot from a NULL:
# nullable day columns leave the database as this stand-in and become NULL again in Arrow.
NULL_DAY = -1_000_000_000


def _nullable_days(vendor: str, col: str) -> str:
    return f"COALESCE({_DAYS[vendor].format(col=col)}, {NULL_DAY})"


@dataclass(frozen=True)
class _Query:
    name: str
    sql: str
    schema: pa.Schema


def _queries(vendor: str) -> list[_Query]:
    # The SQL is assembled from this module's constants only (S608 is about user input).
    epoch = _EPOCH[vendor].format
    days = _DAYS[vendor].format
    i64, s = pa.int64(), pa.string()
    return [
        _Query(
            "orders",
            "SELECT id, customer_id, "  # noqa: S608
            f"{epoch(col='ordered_at')}, status, total, subtotal FROM commerce_order",
            pa.schema(
                [
                    ("order_id", i64),
                    ("customer_id", i64),
                    ("epoch", i64),
                    ("status", s),
                    ("amount", i64),
                    ("subtotal", i64),
                ]
            ),
        ),
        _Query(
            "lines",
            "SELECT order_id, product_id, amount, id FROM commerce_orderline",
            pa.schema([("order_id", i64), ("product_id", i64), ("amount", i64), ("id", i64)]),
        ),
        _Query(
            "products",
            "SELECT id, code, name, kind FROM commerce_product",
            pa.schema([("product_id", i64), ("code", s), ("name", s), ("kind", s)]),
        ),
        _Query(
            "customers",
            "SELECT id, acquisition_channel FROM customers_customer WHERE merged_into_id IS NULL",
            pa.schema([("customer_id", i64), ("acquisition_channel", s)]),
        ),
        _Query(
            "subscriptions",
            "SELECT id, customer_id, product_id, status, "  # noqa: S608
            f"{days(col='started_on')}, {_nullable_days(vendor, 'cancelled_on')} "
            "FROM subscriptions_subscription",
            pa.schema(
                [
                    ("subscription_id", i64),
                    ("customer_id", i64),
                    ("product_id", i64),
                    ("status", s),
                    ("start_day", i64),
                    ("cancel_day", i64),
                ]
            ),
        ),
        _Query(
            "deliveries",
            f"SELECT subscription_id, sequence, status, {days(col='scheduled_on')} "  # noqa: S608
            "FROM subscriptions_subscriptiondelivery",
            pa.schema([("subscription_id", i64), ("sequence", i64), ("status", s), ("day", i64)]),
        ),
        # Points use and contacts: early behaviours for the fan indicators (pipeline/fans.py).
        _Query(
            "points",
            f"SELECT customer_id, kind, {epoch(col='occurred_at')} FROM loyalty_pointentry",  # noqa: S608
            pa.schema([("customer_id", i64), ("kind", s), ("epoch", i64)]),
        ),
        _Query(
            "contacts",
            f"SELECT customer_id, direction, {epoch(col='occurred_at')} FROM support_contact",  # noqa: S608
            pa.schema([("customer_id", i64), ("direction", s), ("epoch", i64)]),
        ),
    ]


def month_of_day(days: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Months since 1970-01 for day numbers (nulls stay null).

    numpy's day → month datetime conversion: several times faster than Arrow's year() and
    month() kernels on ten million rows.
    """
    values = pc.cast(days, pa.int64())
    mask = pc.is_null(values).to_numpy(zero_copy_only=False)
    numbers = pc.fill_null(values, 0).to_numpy(zero_copy_only=False)
    months = numbers.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    return pa.array(months, pa.int64(), mask=mask if mask.any() else None)


def _normalise(name: str, table: pa.Table) -> pa.Table:
    if name == "lines":
        return table.drop_columns(["id"])  # read only to split the scan (see _PARTITIONED)
    if name in ("orders", "points", "contacts"):
        epoch = table.column("epoch").to_numpy()
        day = pa.array((epoch + JST_OFFSET_SECONDS) // SECONDS_PER_DAY, pa.int64())
        table = table.drop_columns(["epoch"]).append_column("day", day)
        return table.append_column("month", month_of_day(day)) if name == "orders" else table
    if name == "subscriptions":
        cancel = table["cancel_day"]
        table = table.set_column(
            table.schema.get_field_index("cancel_day"),
            "cancel_day",
            pc.if_else(pc.equal(cancel, NULL_DAY), pa.scalar(None, pa.int64()), cancel),
        )
        return table.append_column("start_month", month_of_day(table["start_day"])).append_column(
            "cancel_month", month_of_day(table["cancel_day"])
        )
    return table


# The tables with a row per order: connectorx reads them in this many id ranges at once
# (one thread each), which nearly halves the longest step of a run on two cores.
_PARTITIONED = {"orders": "id", "lines": "id"}
PARTITIONS = 2


def _read_connectorx(url: str, query: _Query) -> pa.Table:
    import connectorx

    column = _PARTITIONED.get(query.name)
    if column is None:
        table = connectorx.read_sql(url, query.sql, return_type="arrow")
    else:
        table = connectorx.read_sql(
            url, query.sql, return_type="arrow", partition_on=column, partition_num=PARTITIONS
        )
    return _conform(table, query.schema)


def _connectorx_to_files(url: str, queries: list[_Query], directory: str) -> None:
    """Child-process side of `_read_connectorx_isolated`: each table to an Arrow IPC file."""
    for query in queries:
        table = _read_connectorx(url, query)
        path = os.path.join(directory, query.name)
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)


def _read_connectorx_isolated(url: str, queries: list[_Query]) -> dict[str, pa.Table]:
    """connectorx on SQLite, in a child process.

    connectorx links its own copy of SQLite. Two copies in one process do not see each other's
    POSIX locks, so when one closes the database file it drops the other's locks too (SQLite's
    "How To Corrupt An SQLite Database File", 2.2.1); after a large write through Django's
    connection this killed the process with SIGBUS. In a child process the locks stay apart;
    the tables come back as Arrow IPC files.
    """
    with tempfile.TemporaryDirectory(prefix="kizuna-extract-") as directory:
        child = multiprocessing.get_context("spawn").Process(
            target=_connectorx_to_files, args=(url, queries, directory)
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(
                f"業務データの読み出し(connectorx)が終了コード {child.exitcode} で失敗しました"
            )
        out: dict[str, pa.Table] = {}
        for query in queries:
            with pa.OSFile(os.path.join(directory, query.name), "rb") as source:
                out[query.name] = pa.ipc.open_file(source).read_all()
        return out


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Rename positionally and cast: each engine reports slightly different column types."""
    renamed = table.rename_columns(schema.names)
    return renamed.cast(schema) if renamed.schema != schema else renamed


def _read_copy(cursor: Any, query: _Query) -> pa.Table:
    buffer = io.BytesIO()
    with cursor.copy(f"COPY ({query.sql}) TO STDOUT WITH (FORMAT csv)") as copy:
        for block in copy:
            buffer.write(block)
    buffer.seek(0)
    if buffer.getbuffer().nbytes == 0:
        return query.schema.empty_table()
    return pa_csv.read_csv(
        buffer,
        read_options=pa_csv.ReadOptions(column_names=query.schema.names),
        convert_options=pa_csv.ConvertOptions(
            column_types=query.schema,
            # COPY writes NULL as an empty unquoted field and an empty string as "".
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _read_cursor(cursor: Any, query: _Query) -> pa.Table:
    cursor.execute(query.sql)
    batches: list[pa.RecordBatch] = []
    while rows := cursor.fetchmany(FETCH_ROWS):
        columns = list(zip(*rows, strict=True))
        batches.append(
            pa.record_batch(
                [
                    pa.array(col, type=field.type)
                    for col, field in zip(columns, query.schema, strict=True)
                ],
                schema=query.schema,
            )
        )
    return pa.Table.from_batches(batches, schema=query.schema)


def connectorx_url(using: str = "default") -> str | None:
    """A connectorx URL for the Django database, or None when connectorx cannot read it."""
    try:
        import connectorx  # noqa: F401
    except ImportError:
        return None
    conn = connections[using]
    settings = conn.settings_dict
    if conn.vendor == "sqlite":
        name = str(settings["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            return None
        return f"sqlite://{name}"
    if conn.vendor == "postgresql":
        user = settings.get("USER") or "postgres"
        password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
        host = settings.get("HOST") or "localhost"
        port = settings.get("PORT") or 5432
        return f"postgresql://{user}{password}@{host}:{port}/{settings['NAME']}"
    return None


def choose_method(using: str = "default") -> str:
    """connectorx when it can see the same data; otherwise COPY (PostgreSQL) or the cursor."""
    conn = connections[using]
    if not conn.in_atomic_block and connectorx_url(using) is not None:
        return "connectorx"
    return "copy" if conn.vendor == "postgresql" else "cursor"


def snapshot_from_database(
    *,
    using: str = "default",
    method: str = "auto",
    on_table: Callable[[str, int], None] | None = None,
) -> Snapshot:
    """Read every table the analytics use into Arrow. `method`: auto, connectorx, copy or cursor."""
    conn = connections[using]
    if conn.vendor not in _EPOCH:
        raise NotImplementedError(f"{conn.vendor} から分析用データを読み出す方法がありません")
    chosen = choose_method(using) if method == "auto" else method
    url = connectorx_url(using) if chosen == "connectorx" else None
    if chosen == "connectorx" and url is None:
        raise ValueError("connectorx はこのデータベースを読めません")
    if chosen == "copy" and conn.vendor != "postgresql":
        raise ValueError("COPY での読み出しは PostgreSQL のときだけ使えます")
    out: dict[str, pa.Table] = {}
    queries = _queries(conn.vendor)
    isolated = (
        _read_connectorx_isolated(url, queries)
        if url is not None and conn.vendor == "sqlite"
        else {}
    )
    conn.ensure_connection()
    with conn.cursor() as cursor:
        raw = getattr(cursor, "cursor", cursor)  # the DB-API cursor under Django's wrappers
        for query in queries:
            if query.name in isolated:
                table = isolated.pop(query.name)
            elif url is not None:
                table = _read_connectorx(url, query)
            elif chosen == "copy":
                table = _read_copy(raw, query)
            else:
                table = _read_cursor(raw, query)
            out[query.name] = _normalise(query.name, table)
            if on_table is not None:
                on_table(query.name, out[query.name].num_rows)
    return Snapshot(**out)
