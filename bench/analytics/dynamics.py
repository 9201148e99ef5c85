"""Benchmark of the customer-count dynamics and fan-indicator steps (DuckDB, no database).

    python -m bench.analytics.dynamics                         # 1,000,000 customers / 10,000,000 orders
    python -m bench.analytics.dynamics --customers 100000 --orders 1000000

The history is `bench.analytics.summary.generate` (three years, skewed purchase frequency).
Measured, each on the same cached purchases:
  * floor: one plain GROUP BY (customer, month) of the purchases — every approach needs at
    least this pass;
  * reference: the straightforward expression — every customer's segment at every month end
    (`expressions.cpm_at_month_ends`, a join of each buying month with every later month end),
    the previous month's segment by LAG, then GROUP BY; its result is checked to equal ours;
  * ours: `dynamics.month_flows` alone, and the whole `dynamics` step (KPI tables, forecast,
    back-test);
  * the `fans` step on the orders-only tables (days to the 2nd purchase).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np

from bench.analytics.summary import AS_OF, generate
from kizuna.analytics.pipeline import dynamics as dy
from kizuna.analytics.pipeline import expressions as ex
from kizuna.analytics.pipeline.config import AnalyticsConfig
from kizuna.analytics.pipeline.fans import fan_indicators
from kizuna.analytics.pipeline.kpis import day_number, month_index
from kizuna.analytics.pipeline.tables import Tables


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = run()
    return time.perf_counter() - started, out


def _reference_flows(
    p: ir.Table, months: list[int], ends: list[int], cfg: AnalyticsConfig
) -> ir.Table:
    seg = ex.cpm_at_month_ends(p, months=months, end_days=ends, cfg=cfg)
    spent = p.group_by(["customer_id", "month"]).aggregate(revenue=p.amount.sum())
    joined = seg.left_join(
        spent, [seg.customer_id == spent.customer_id, seg.month == spent.month]
    ).select(seg.customer_id, seg.month, seg.cpm_segment, revenue=spent.revenue.fill_null(0))
    before = ibis.window(group_by=joined.customer_id, order_by=joined.month)
    paired = joined.mutate(prev_segment=joined.cpm_segment.lag().over(before))
    return paired.group_by(["month", "prev_segment", "cpm_segment"]).aggregate(
        customers=paired.count(), revenue=paired.revenue.sum().cast("int64")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=10_000_000)
    args = parser.parse_args()
    cfg = AnalyticsConfig()
    con = ibis.duckdb.connect()
    orders = con.create_table("orders", generate(args.customers, args.orders))
    as_of_day, as_of_month = day_number(AS_OF), month_index(AS_OF)
    p = ex.purchases(orders, as_of_day=as_of_day).cache()
    months, ends, partial = dy.month_grid(as_of_day, as_of_month, months=36)
    cm = ex.customer_months(p).cache()
    first = dy.first_purchases_by_month(cm).to_pyarrow()

    floor, _ = _timed(
        lambda: p.group_by(["customer_id", "month"]).aggregate(n=p.count()).count().to_pyarrow()
    )
    ours_flows, flows = _timed(
        lambda: dy.month_flows(cm, months=months, end_days=ends, cfg=cfg).to_pyarrow()
    )
    reference, ref = _timed(lambda: _reference_flows(p, months, ends, cfg).to_pyarrow())
    a = dy.flows_from_arrow(flows, first, months=months, partial=partial)
    b = dy.flows_from_arrow(ref, first, months=months, partial=partial)
    # Month 0 is only a starting point (its "previous" segment differs by construction).
    same = bool(
        np.array_equal(a.customers[1:], b.customers[1:])
        and np.array_equal(a.revenue[1:], b.revenue[1:])
        and np.array_equal(a.counts(0), b.counts(0))
    )
    step, out = _timed(
        lambda: dy.dynamics(cm, as_of_day=as_of_day, as_of_month=as_of_month, cfg=cfg)
    )
    summary = ex.customer_summary(p, as_of_day=as_of_day).cache()
    seq = ex.purchase_sequence(p).cache()
    nth = ex.nth_purchase_days(seq, summary)
    first_products = None  # orders only: no lines to pick a first product from
    fans_time, _ = _timed(
        lambda: fan_indicators(
            Tables(orders=orders),
            ex.with_cpm(summary, cfg),
            nth,
            first_products,
            as_of_day=as_of_day,
        )
    )
    print(f"customers {args.customers:,}, orders {args.orders:,}")
    print(f"floor GROUP BY (customer, month)   {floor:7.2f} s")
    print(
        f"month_flows (ours)                 {ours_flows:7.2f} s  ({ours_flows / floor:.1f}× floor)"
    )
    print(
        f"reference (cpm_at_month_ends+LAG)  {reference:7.2f} s  "
        f"(ours {reference / ours_flows:.1f}× faster), same result: {same}"
    )
    print(f"dynamics step (all five tables)    {step:7.2f} s")
    print(f"fans step (orders only)            {fans_time:7.2f} s")
    backtest = out["cpm_forecast_backtest"]
    print(f"back-test MAPE: active {backtest['mape_active']}, total {backtest['mape_total']}")


if __name__ == "__main__":
    main()
