"""The pipeline's input tables on an Ibis backend, in one normalised shape.

    orders         order_id, customer_id, day, month, status, amount, subtotal
    lines          order_id, product_id, amount
    products       product_id, code, name, kind
    customers      customer_id, acquisition_channel
    subscriptions  subscription_id, customer_id, product_id, status, start_day, cancel_day,
                   start_month, cancel_month
    deliveries     subscription_id, sequence, status, day
    points         customer_id, kind, day            (point ledger entries)
    contacts       customer_id, direction, day       (contact-center records)

`day` is days since 1970-01-01 and `month` months since 1970-01, both on the Asia/Tokyo
calendar. They come from an Arrow snapshot (DuckDB, PySpark), straight from the operational
PostgreSQL tables, or from an analyst's transactions file (orders only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import ibis
import ibis.expr.types as ir

from kizuna.analytics.pipeline.extract import Snapshot


@dataclass(frozen=True)
class Tables:
    orders: ir.Table
    lines: ir.Table | None = None
    products: ir.Table | None = None
    customers: ir.Table | None = None
    subscriptions: ir.Table | None = None
    deliveries: ir.Table | None = None
    points: ir.Table | None = None
    contacts: ir.Table | None = None


def load_snapshot(con: ibis.BaseBackend, snapshot: Snapshot, *, prefix: str = "kz_") -> Tables:
    """Hand the Arrow snapshot to the engine: a DuckDB view of the Arrow data, or a Spark
    temporary view.

    DuckDB scans the Arrow tables where they are (no copy: ten million orders would otherwise
    take seconds to copy and their memory twice); the pipeline reads the orders once, into
    its cached purchases. (Ibis's Spark create_table would write a managed table under
    ./spark-warehouse; a view over a DataFrame built from Arrow keeps everything in memory.)
    """
    loaded: dict[str, ir.Table] = {}
    for name, table in snapshot.tables().items():
        if con.name == "pyspark":
            frame = con._session.createDataFrame(table)
            frame.createOrReplaceTempView(f"{prefix}{name}")
        elif con.name == "duckdb":
            con.con.register(f"{prefix}{name}", table)
        else:
            con.create_table(f"{prefix}{name}", table, overwrite=True)
        loaded[name] = con.table(f"{prefix}{name}")
    return Tables(**loaded)


def _days_since_epoch(value: ir.DateValue) -> ir.IntegerValue:
    return value.delta(ibis.date(1970, 1, 1), unit="day").cast("int64")


def _month_index(value: ir.DateValue | ir.TimestampValue) -> ir.IntegerValue:
    return ((value.year() - 1970) * 12 + value.month() - 1).cast("int64")


def postgres_tables(con: ibis.BaseBackend) -> Tables:
    """The same shape as expressions over the operational tables, computed inside PostgreSQL.

    The connection's session time zone must be UTC (see backends.connect): timestamps are
    shifted by nine hours to the Asia/Tokyo calendar before they are cut into days.
    """
    o = con.table("commerce_order")
    jst = o.ordered_at + ibis.interval(hours=9)
    orders = o.select(
        order_id=o.id.cast("int64"),
        customer_id=o.customer_id.cast("int64"),
        status=o.status,
        amount=o.total.cast("int64"),
        subtotal=o.subtotal.cast("int64"),
        day=_days_since_epoch(jst.date()),
        month=_month_index(jst),
    )
    ln = con.table("commerce_orderline")
    lines = ln.select(
        order_id=ln.order_id.cast("int64"),
        product_id=ln.product_id.cast("int64"),
        amount=ln.amount.cast("int64"),
    )
    pr = con.table("commerce_product")
    products = pr.select(product_id=pr.id.cast("int64"), code=pr.code, name=pr.name, kind=pr.kind)
    cu = con.table("customers_customer")
    customers = cu.filter(cu.merged_into_id.isnull()).select(
        customer_id=cu.id.cast("int64"), acquisition_channel=cu.acquisition_channel
    )
    su = con.table("subscriptions_subscription")
    subscriptions = su.select(
        subscription_id=su.id.cast("int64"),
        customer_id=su.customer_id.cast("int64"),
        product_id=su.product_id.cast("int64"),
        status=su.status,
        start_day=_days_since_epoch(su.started_on),
        cancel_day=_days_since_epoch(su.cancelled_on),
        start_month=_month_index(su.started_on),
        cancel_month=_month_index(su.cancelled_on),
    )
    de = con.table("subscriptions_subscriptiondelivery")
    deliveries = de.select(
        subscription_id=de.subscription_id.cast("int64"),
        sequence=de.sequence.cast("int64"),
        status=de.status,
        day=_days_since_epoch(de.scheduled_on),
    )
    pe = con.table("loyalty_pointentry")
    points = pe.select(
        customer_id=pe.customer_id.cast("int64"),
        kind=pe.kind,
        day=_days_since_epoch((pe.occurred_at + ibis.interval(hours=9)).date()),
    )
    co = con.table("support_contact")
    contacts = co.select(
        customer_id=co.customer_id.cast("int64"),
        direction=co.direction,
        day=_days_since_epoch((co.occurred_at + ibis.interval(hours=9)).date()),
    )
    return Tables(orders, lines, products, customers, subscriptions, deliveries, points, contacts)


def _parse_day(value: ir.Value) -> ir.DateValue:
    """Dates as analysts' files carry them: 2025-06-30, 2025/6/30, 20250630, or date-times
    (JST). Anything else becomes NULL, and NULLs are refused with the offending lines."""
    if value.type().is_date():
        return value
    if value.type().is_timestamp():
        return value.date()
    text = value.cast("string").strip()
    compact = text.re_search(r"^[0-9]{8}$")
    iso = ibis.ifelse(
        compact,
        text.substr(0, 4).concat("-", text.substr(4, 2), "-", text.substr(6, 2)),
        text.replace("/", "-").split(" ")[0],
    )
    return iso.try_cast("date")


def _parse_amount(value: ir.Value) -> ir.FloatingValue:
    """Amounts as numbers or text such as "1,980" or "¥1,980"."""
    if value.type().is_numeric():
        return value.cast("float64")
    text = value.cast("string").replace(",", "").replace("¥", "").replace("円", "").strip()
    return text.try_cast("float64")


def _refuse_unreadable(
    raw: ir.Table,
    day: ir.DateValue,
    amount: ir.FloatingValue,
    customer: ir.StringValue,
    columns: Mapping[str, str],
    *,
    is_csv: bool,
) -> None:
    """Stop with the lines that cannot be read, rather than silently leaving them out."""
    checks = (
        (day.isnull(), columns["date"], "日付として読めません"),
        (amount.isnull(), columns["amount"], "金額として読めません"),
        (customer.isnull() | (customer.strip() == ""), columns["customer"], "顧客が空です"),
    )
    problems: list[str] = []
    for condition, column, reason in checks:
        bad = raw.filter(condition)
        count = int(bad.count().to_pyarrow().as_py())
        if not count:
            continue
        sample = bad.select(line=bad._line, value=bad[column].cast("string")).limit(3)
        where = ", ".join(
            f"{row['line']}行目「{row['value'] if row['value'] is not None else ''}」"
            if is_csv
            else f"{row['line'] - 1}件目"
            for row in sample.order_by("line").to_pyarrow().to_pylist()
        )
        problems.append(f"列「{column}」: {reason}({count:,}行。例: {where})")
    if problems:
        raise TransactionsFileError(
            "取り込めない行があるため中止しました。ファイルを直してから実行してください。\n"
            + "\n".join(problems)
        )


class TransactionsFileError(ValueError):
    """The analyst's file cannot be read as transactions; the message says why, in Japanese."""


DEFAULT_COLUMNS: Mapping[str, str] = {"customer": "customer", "date": "date", "amount": "amount"}


def file_tables(con: ibis.BaseBackend, path: Path, columns: Mapping[str, str]) -> Tables:
    """Transactions from a CSV or Parquet file read by DuckDB itself (no database involved).

    `columns` maps customer/date/amount (and optionally order) to the file's column names.
    The date column may hold dates or local (JST) date-times. Each row with an amount above
    zero is one purchase (rows of zero or less — free items, refunds — are not purchases).
    """
    if not path.exists():
        raise TransactionsFileError(f"ファイルが見つかりません: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            raw = con.read_parquet(path)
        elif suffix in (".csv", ".tsv", ".txt"):
            raw = con.read_csv(path)
        else:
            raise TransactionsFileError(
                f"CSV(.csv/.tsv/.txt)か Parquet(.parquet)のファイルを指定してください: {path.name}"
            )
    except TransactionsFileError:
        raise
    except Exception as exc:
        raise TransactionsFileError(f"ファイルを読み込めませんでした: {exc}") from exc
    missing = [
        f"{role}={name}"
        for role, name in columns.items()
        if role in ("customer", "date", "amount", "order") and name not in raw.columns
    ]
    if missing:
        raise TransactionsFileError(
            "ファイルに次の列がありません: "
            + ", ".join(missing)
            + f"(ファイルの列: {', '.join(raw.columns)}。--columns で対応を指定できます)"
        )
    with_line = raw.mutate(_line=ibis.row_number() + 2)  # + header, 1-based: the CSV line
    day_value = _parse_day(with_line[columns["date"]])
    amount_value = _parse_amount(with_line[columns["amount"]])
    customer_value = with_line[columns["customer"]].cast("string")
    try:
        _refuse_unreadable(
            with_line, day_value, amount_value, customer_value, columns, is_csv=suffix != ".parquet"
        )
    except TransactionsFileError:
        raise
    except Exception as exc:
        # Typically bytes that are not UTF-8 (DuckDB reads UTF-8 only; CP932 needs converting).
        raise TransactionsFileError(
            f"ファイルを読み込めませんでした(文字コードは UTF-8 にしてください): {exc}"
        ) from exc
    order_id = (
        with_line[columns["order"]].cast("string")
        if "order" in columns
        else with_line._line.cast("string")
    )
    # Money is integer yen; a file with decimals is rounded to the yen.
    amount = amount_value.round().cast("int64")
    orders = with_line.select(
        order_id=order_id,
        customer_id=customer_value,
        status=ibis.literal("delivered"),
        amount=amount,
        subtotal=amount,
        day=_days_since_epoch(day_value),
        month=_month_index(day_value),
    )
    return Tables(orders=orders)
