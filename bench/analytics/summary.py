"""Summary-step and full-run benchmark for the analytics pipeline.

    python -m bench.analytics.summary                        # 1,000,000 customers / 10,000,000 orders
    python -m bench.analytics.summary --customers 100000 --orders 1000000 --skip-full-run

Part 1 (no database): a history generated with numpy straight into Arrow, loaded into DuckDB.
  * our summary step (`customer_summary`: first/last, count, total, tenure, recency) and our
    model inputs (`model_inputs`: lifetimes' frequency/recency/T/monetary) against one plain
    DuckDB GROUP BY over the same purchases giving the same columns: the floor (the bare
    GROUP BY of every order with four aggregates, the earlier floor, is shown too);
  * lifetimes' `summary_data_from_transaction_data` on a subset of customers (it is pandas and
    slow), against ours on the same subset; the two outputs are checked to agree.
Part 2 (full run): the same history written into a scratch SQLite database (executemany,
  outside the timing), then `kizuna analytics run` in a child process: wall time, each step's
  time (extraction from SQLite to Arrow is its own step) and the children's peak memory; then
  the extraction alone by connectorx and by Django's cursor. The scratch database is removed
  unless --database-dir keeps it (a later run with the same sizes then reuses it: building
  10,000,000 orders takes about 15 minutes here).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ibis
import numpy as np
import pyarrow as pa

from kizuna.analytics.pipeline import expressions as ex
from kizuna.analytics.pipeline.extract import month_of_day
from kizuna.analytics.pipeline.kpis import day_number

SEED = 20250630
AS_OF = dt.date(2025, 6, 30)
HISTORY_DAYS = 3 * 365
LIFETIMES_CUSTOMERS = 20_000


def generate(customers: int, orders: int, seed: int = SEED) -> pa.Table:
    """Orders in the pipeline's normalised shape. Customers arrive uniformly over three years;
    how often they buy is skewed (a few buy very often, most once or twice), as in a shop."""
    rng = np.random.default_rng(seed)
    end = day_number(AS_OF)
    first = end - rng.integers(0, HISTORY_DAYS, customers)
    weight = rng.gamma(0.35, 1.0, customers) + 1e-3
    extra = rng.multinomial(orders - customers, weight / weight.sum()) if orders > customers else 0
    per_customer = 1 + np.asarray(extra)
    customer = np.repeat(np.arange(1, customers + 1, dtype=np.int64), per_customer)[:orders]
    start = first[customer - 1]
    span = end - start + 1
    # The first order of each customer is on their first day; the rest fall after it.
    is_first = np.r_[True, customer[1:] != customer[:-1]]
    day = np.where(is_first, start, start + (rng.random(customer.size) * span).astype(np.int64))
    amount = np.maximum(rng.lognormal(8.3, 0.6, customer.size).astype(np.int64), 1)
    status = np.where(rng.random(customer.size) < 0.03, "cancelled", "delivered")
    days = pa.array(day, pa.int64())
    return pa.table(
        {
            "order_id": pa.array(np.arange(1, customer.size + 1, dtype=np.int64)),
            "customer_id": pa.array(customer),
            "status": pa.array(status),
            "channel": pa.array(np.full(customer.size, "web")),
            "amount": pa.array(amount),
            "subtotal": pa.array(amount),
            "day": days,
            "month": month_of_day(days),
        }
    )


def _best_of(runs: int, func: Callable[[], Any]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def _lifetimes_summary(orders: pa.Table) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes.utils import summary_data_from_transaction_data
    kept = orders.filter(pa.compute.equal(orders["status"], "delivered"))
    frame = pa.table(
        {
            "customer_id": kept["customer_id"],
            "date": kept["day"].cast(pa.int32()).cast(pa.date32()).cast(pa.timestamp("s")),
            "amount": kept["amount"].cast(pa.float64()),
        }
    ).to_pandas()
    return summary_data_from_transaction_data(
        frame,
        "customer_id",
        "date",
        monetary_value_col="amount",
        observation_period_end=AS_OF.isoformat(),
        freq="D",
    )


def _check_against_lifetimes(ours: pa.Table, theirs: Any) -> int:
    """Rows where ours and lifetimes disagree on frequency, recency, T or the repeat mean."""
    o = ours.to_pandas().set_index("customer_id").sort_index()
    t = theirs.sort_index()
    freq = o["frequency"].to_numpy()
    mean = np.divide(o["repeat_spend"].to_numpy(), freq, out=np.zeros(len(o)), where=freq > 0)
    bad = (
        (freq != t["frequency"].to_numpy())
        | (o["recency"].to_numpy() != t["recency"].to_numpy())
        | (o["age"].to_numpy() != t["T"].to_numpy())
        | ~np.isclose(mean, t["monetary_value"].to_numpy())
    )
    return int(bad.sum())


def part_summary(customers: int, orders: int) -> list[dict[str, Any]]:
    table = generate(customers, orders)
    con = ibis.duckdb.connect()
    loaded = con.create_table("orders", table)
    as_of_day = day_number(AS_OF)
    p = ex.purchases(loaded, as_of_day=as_of_day)
    summary = ex.customer_summary(p, as_of_day=as_of_day)
    inputs = ex.model_inputs(p, summary, as_of_day=as_of_day)
    bare_sql = (
        "SELECT customer_id, min(day), max(day), count(*), sum(amount) "
        "FROM orders GROUP BY customer_id"
    )
    # The floor for the same output: one GROUP BY over the same purchases (cancelled and
    # returned orders, free samples and later orders left out) giving the same columns.
    floor_sql = (
        "SELECT customer_id, min(day) AS first_day, max(day) AS last_day, "  # noqa: S608
        "min(month) AS first_month, count(*) AS purchase_count, sum(amount) AS total_spend, "
        f"max(day) - min(day) AS tenure_days, {as_of_day} - max(day) AS days_since_last "
        "FROM orders WHERE status NOT IN ('cancelled', 'returned') AND subtotal > 0 "
        f"AND day <= {as_of_day} GROUP BY customer_id"
    )
    bare = _best_of(3, lambda: con.con.sql(bare_sql).fetch_arrow_table())
    floor = _best_of(3, lambda: con.con.sql(floor_sql).fetch_arrow_table())
    ours = _best_of(3, summary.to_pyarrow)
    ours_inputs = _best_of(3, inputs.to_pyarrow)
    rows: list[dict[str, Any]] = [
        {
            "what": "DuckDB GROUP BY of every order, 4 aggregates (the earlier floor)",
            "orders": orders,
            "seconds": round(bare, 3),
        },
        {
            "what": "DuckDB GROUP BY, same purchases and columns as ours (floor)",
            "orders": orders,
            "seconds": round(floor, 3),
        },
        {
            "what": "customer_summary (ours)",
            "orders": orders,
            "seconds": round(ours, 3),
            "vs_floor": round(ours / floor, 2),
            "vs_earlier_floor": round(ours / bare, 2),
        },
        {
            "what": "model_inputs: frequency/recency/T/monetary (ours)",
            "orders": orders,
            "seconds": round(ours_inputs, 3),
            "vs_floor": round(ours_inputs / floor, 2),
        },
    ]
    # lifetimes on a subset of customers: all orders of the first N customers.
    subset_customers = min(LIFETIMES_CUSTOMERS, customers)
    sub = table.filter(pa.compute.less_equal(table["customer_id"], subset_customers))
    sub_con = ibis.duckdb.connect()
    sub_loaded = sub_con.create_table("orders", sub)
    sp = ex.purchases(sub_loaded, as_of_day=as_of_day)
    sub_inputs = ex.model_inputs(
        sp, ex.customer_summary(sp, as_of_day=as_of_day), as_of_day=as_of_day
    )
    theirs_seconds = _best_of(1, lambda: _lifetimes_summary(sub))
    ours_sub = _best_of(3, sub_inputs.to_pyarrow)
    mismatches = _check_against_lifetimes(
        sub_inputs.order_by("customer_id").to_pyarrow(), _lifetimes_summary(sub)
    )
    rows.append(
        {
            "what": f"lifetimes summary_data_from_transaction_data ({subset_customers:,} customers)",
            "orders": sub.num_rows,
            "seconds": round(theirs_seconds, 3),
            "ours_seconds": round(ours_sub, 3),
            "lifetimes_vs_ours": round(theirs_seconds / ours_sub, 1),
            "rows_disagreeing": mismatches,
        }
    )
    return rows


def _fill_value(sql_type: str) -> Any:
    kind = sql_type.lower()
    if "int" in kind or "bool" in kind or "decimal" in kind or "real" in kind:
        return 0
    if "datetime" in kind:
        return "2020-01-01 00:00:00"
    if "date" in kind:
        return "2020-01-01"
    return "{}" if "json" in kind or kind == "text" else ""


def _insert(
    db: sqlite3.Connection, table: str, columns: dict[str, Iterator[Any] | Any], n: int
) -> None:
    """INSERT n rows; columns not given get a filler for NOT NULL columns without a default."""
    info = db.execute(f"PRAGMA table_info({table})").fetchall()
    names, values = [], []
    for _, name, sql_type, notnull, default, is_pk in info:
        if name in columns:
            names.append(name)
            values.append(columns[name])
        elif notnull and default is None and not is_pk:
            names.append(name)
            values.append(_fill_value(sql_type))
    iterables = [v if isinstance(v, list) else [v] * n for v in values]
    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"  # noqa: S608
    db.executemany(sql, zip(*iterables, strict=True))


def _kizuna(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "kizuna", *args], env=env, check=True, capture_output=True, text=True
    )


_EXTRACT_SCRIPT = """
import json, time
from kizuna.analytics.pipeline.extract import snapshot_from_database
out = {}
for method in ("connectorx", "cursor"):
    start = time.perf_counter()
    rows = sum(t.num_rows for t in snapshot_from_database(method=method).tables().values())
    out[method] = [round(time.perf_counter() - start, 2), rows]
print(json.dumps(out))
"""


def _scratch_env(scratch: Path) -> dict[str, str]:
    env = {**os.environ, "KIZUNA_DATA_DIR": str(scratch)}
    env.pop("DATABASE_URL", None)
    return env


def build_scratch(customers: int, orders: int, scratch: Path) -> float:
    """Migrate a SQLite database under `scratch` and write the generated history into it
    (executemany); returns the seconds the writing took."""
    table = generate(customers, orders)
    _kizuna(_scratch_env(scratch), "migrate", "-v0")
    load_start = time.perf_counter()
    db = sqlite3.connect(scratch / "kizuna.sqlite3")
    db.execute("PRAGMA synchronous=OFF")
    _insert(
        db,
        "commerce_product",
        {"id": [1], "code": ["B-1"], "name": ["ベンチ商品"], "kind": ["main"], "price": [5000]},
        1,
    )
    ids = list(range(1, customers + 1))
    _insert(
        db,
        "customers_customer",
        {
            "id": ids,
            "family_name": "ベンチ",
            "acquisition_channel": "web",
            "registered_at": "2020-01-01 00:00:00",
        },
        customers,
    )
    day = table["day"].to_numpy()
    # noon JST = 03:00 UTC on the same day
    ordered_at = (
        day.astype("datetime64[D]").astype("datetime64[s]") + np.timedelta64(3, "h")
    ).astype(str)
    order_ids = table["order_id"].to_pylist()
    amounts = table["amount"].to_pylist()
    _insert(
        db,
        "commerce_order",
        {
            "id": order_ids,
            "number": [f"B{i}" for i in order_ids],
            "customer_id": table["customer_id"].to_pylist(),
            "ordered_at": [s.replace("T", " ") for s in ordered_at.tolist()],
            "status": table["status"].to_pylist(),
            "channel": "web",
            "subtotal": amounts,
            "total": amounts,
        },
        table.num_rows,
    )
    _insert(
        db,
        "commerce_orderline",
        {
            "order_id": order_ids,
            "product_id": 1,
            "product_name": "ベンチ商品",
            "unit_price": amounts,
            "quantity": 1,
            "amount": amounts,
        },
        table.num_rows,
    )
    db.commit()
    db.close()
    return time.perf_counter() - load_start


def part_full_run(
    customers: int, orders: int, *, compare_extract: bool, scratch: Path | None = None
) -> list[dict[str, Any]]:
    """The full run on a scratch SQLite database. With `scratch` (--database-dir) the database
    is kept there, and reused when it already exists (the history is then not rebuilt: give the
    same sizes); without it a temporary one is built and removed afterwards."""
    temporary = scratch is None
    if scratch is None:
        scratch = Path(tempfile.mkdtemp(prefix="kizuna-bench-analytics-"))
    reuse = (scratch / "kizuna.sqlite3").exists()
    if not reuse:
        scratch.mkdir(parents=True, exist_ok=True)
    env = _scratch_env(scratch)
    load_seconds = 0.0 if reuse else build_scratch(customers, orders, scratch)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    out = _kizuna(env, "analytics", "run", "--as-of", AS_OF.isoformat())
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    timings = json.loads(
        _kizuna(
            env,
            "shell",
            "-c",
            "import json; from kizuna.analytics.models import AnalyticsRun; "
            "print(json.dumps(AnalyticsRun.objects.latest('id').timings))",
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    rows: list[dict[str, Any]] = [
        {
            "what": "load scratch SQLite (executemany, not part of the run)",
            "seconds": round(load_seconds, 1),
        },
        {
            "what": "kizuna analytics run (child process, SQLite → connectorx → DuckDB)",
            "customers": customers,
            "orders": orders,
            "seconds": round(wall, 1),
            "target_seconds": 60,
            "peak_memory_mib": round(max(peak_kib, before) / 1024),
            "steps": timings,
            "output": out.stdout.strip().splitlines()[-1],
        },
    ]
    if compare_extract:
        result = _kizuna(env, "shell", "-c", _EXTRACT_SCRIPT).stdout.strip().splitlines()[-1]
        timed = json.loads(result)
        rows.append(
            {
                "what": "extraction SQLite → Arrow: connectorx vs Django cursor (fetchmany)",
                "connectorx_seconds": timed["connectorx"][0],
                "cursor_seconds": timed["cursor"][0],
                "rows": timed["cursor"][1],
                "cursor_vs_connectorx": round(timed["cursor"][0] / timed["connectorx"][0], 1),
            }
        )
    if temporary:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def run(
    customers: int,
    orders: int,
    *,
    full_run: bool = True,
    compare_extract: bool = True,
    scratch: Path | None = None,
) -> list[dict[str, Any]]:
    rows = part_summary(customers, orders)
    if full_run:
        rows += part_full_run(customers, orders, compare_extract=compare_extract, scratch=scratch)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="Kizuna analytics summary/full-run benchmark")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--skip-full-run", action="store_true")
    parser.add_argument(
        "--skip-extract-comparison",
        action="store_true",
        help="do not time the Django-cursor extraction against connectorx (slow at 10M)",
    )
    parser.add_argument(
        "--database-dir",
        type=Path,
        help="keep the scratch SQLite database here and reuse it on the next run",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kizuna.settings")
    rows = run(
        args.customers,
        args.orders,
        full_run=not args.skip_full_run,
        compare_extract=not args.skip_extract_comparison,
        scratch=args.database_dir,
    )
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
