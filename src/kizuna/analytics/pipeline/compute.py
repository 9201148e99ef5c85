"""Run every analytics expression on one engine and collect the results (no database writes).

`compute` is shared by `kizuna analytics run` (operational tables) and the analysts' file mode;
each step is timed and reported through a `StepClock` so terminals and the web page can show
progress.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kizuna.analytics.pipeline import expressions as ex
from kizuna.analytics.pipeline import kpis
from kizuna.analytics.pipeline.config import AnalyticsConfig
from kizuna.analytics.pipeline.dynamics import dynamics
from kizuna.analytics.pipeline.fans import fan_indicators
from kizuna.analytics.pipeline.predict import Predictions, predict
from kizuna.analytics.pipeline.steps import StepClock
from kizuna.analytics.pipeline.tables import Tables


@dataclass
class PipelineResult:
    as_of: dt.date
    customers: pa.Table
    kpis: dict[str, Any]
    segments: list[dict[str, Any]]
    predictions: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


CUSTOMER_COLUMNS = (
    "customer_id",
    "first_purchase_on",
    "last_purchase_on",
    "purchase_count",
    "total_spend",
    "avg_spend",
    "tenure_days",
    "days_since_last",
    "r_score",
    "f_score",
    "m_score",
    "rfm_segment",
    "cpm_segment",
    "expected_purchases",
    "p_alive",
    "expected_avg_spend",
    "clv_12m",
    "expected_next_purchase_on",
)


def _dates(days: pa.ChunkedArray) -> pa.Array:
    return pc.cast(pc.cast(days, pa.int32()), pa.date32())


def _customer_table(scored: pa.Table, preds: Predictions) -> pa.Table:
    count = scored.column("purchase_count").to_numpy().astype(np.int64)
    total = scored.column("total_spend").to_numpy().astype(np.int64)
    # Integer yen, half rounded up: ⌊(2·total + count) / (2·count)⌋ = ⌊total/count + ½⌋.
    avg = (2 * total + count) // (2 * count)
    columns: dict[str, Any] = {
        "customer_id": scored.column("customer_id"),
        "first_purchase_on": _dates(scored.column("first_day")),
        "last_purchase_on": _dates(scored.column("last_day")),
        "purchase_count": pc.cast(scored.column("purchase_count"), pa.int64()),
        "total_spend": pc.cast(scored.column("total_spend"), pa.int64()),
        "avg_spend": pa.array(avg, pa.int64()),
        "tenure_days": pc.cast(scored.column("tenure_days"), pa.int64()),
        "days_since_last": pc.cast(scored.column("days_since_last"), pa.int64()),
        "r_score": pc.cast(scored.column("r_score"), pa.int8()),
        "f_score": pc.cast(scored.column("f_score"), pa.int8()),
        "m_score": pc.cast(scored.column("m_score"), pa.int8()),
        "rfm_segment": scored.column("rfm_segment"),
        "cpm_segment": scored.column("cpm_segment"),
        **preds.columns,
    }
    return pa.table({name: columns[name] for name in CUSTOMER_COLUMNS})


def segment_counts(customers: pa.Table) -> list[dict[str, Any]]:
    """Customers and revenue per CPM segment, RFM segment and (R, F) cell."""
    out: list[dict[str, Any]] = []
    for kind, keys in (("cpm", ["cpm_segment"]), ("rfm", ["rfm_segment"])):
        grouped = customers.group_by(keys).aggregate(
            [("customer_id", "count"), ("total_spend", "sum")]
        )
        for segment, n, revenue in zip(
            grouped.column(keys[0]).to_pylist(),
            grouped.column("customer_id_count").to_pylist(),
            grouped.column("total_spend_sum").to_pylist(),
            strict=True,
        ):
            out.append({"kind": kind, "segment": segment, "customers": n, "revenue": revenue})
    cells = customers.group_by(["r_score", "f_score"]).aggregate(
        [("customer_id", "count"), ("total_spend", "sum")]
    )
    for r, f, n, revenue in zip(
        cells.column("r_score").to_pylist(),
        cells.column("f_score").to_pylist(),
        cells.column("customer_id_count").to_pylist(),
        cells.column("total_spend_sum").to_pylist(),
        strict=True,
    ):
        out.append({"kind": "rf", "segment": f"R{r}F{f}", "customers": n, "revenue": revenue})
    return out


def _headline(customers: pa.Table, totals: pa.Table, orders: int) -> dict[str, Any]:
    n = customers.num_rows
    revenue = int(pc.sum(customers.column("total_spend")).as_py() or 0)
    t = totals.to_pylist()[0] if totals.num_rows else {"f2": 0, "f3": 0, "f4": 0}
    return {
        "customers": n,
        "purchases": orders,
        "revenue": revenue,
        "revenue_per_customer": round(revenue / n, 2) if n else None,
        "f2_customers": int(t["f2"] or 0),
        "f3_customers": int(t["f3"] or 0),
        "f4_customers": int(t["f4"] or 0),
        "f2_share": round(int(t["f2"] or 0) / n, 6) if n else None,
        "f3_share": round(int(t["f3"] or 0) / n, 6) if n else None,
        "f4_share": round(int(t["f4"] or 0) / n, 6) if n else None,
    }


def compute(
    tables: Tables, *, as_of: dt.date, cfg: AnalyticsConfig, clock: StepClock
) -> PipelineResult:
    """Everything the snapshot holds, computed on the engine that holds `tables`."""
    as_of_day = kpis.day_number(as_of)
    as_of_month = kpis.month_index(as_of)
    results: dict[str, Any] = {}
    with clock.step("summary"):
        p = ex.purchases(tables.orders, as_of_day=as_of_day).cache()
        summary = ex.customer_summary(p, as_of_day=as_of_day).cache()
        scored = ex.with_cpm(ex.rfm_scores(summary, cfg), cfg)
        scored_arrow = scored.order_by("customer_id").to_pyarrow()
        purchase_total = int(p.count().to_pyarrow().as_py())
    with clock.step("predictions"):
        inputs = ex.model_inputs(p, summary, as_of_day=as_of_day).order_by("customer_id")
        preds = predict(inputs.to_pyarrow(), as_of=as_of, cfg=cfg)
    customers = _customer_table(scored_arrow, preds)
    with clock.step("repeat"):
        seq = ex.purchase_sequence(p).cache()
        # Read by the conversion, totals, 引き上げ and fan steps: computed once.
        nth = ex.nth_purchase_days(seq, summary).cache()
        # The one (customer, month) GROUP BY behind the repeat rates, cohorts and dynamics.
        cm = ex.customer_months(p).cache()
        conversion = ex.f_conversion(nth, as_of_day=as_of_day, windows=cfg.windows_days)
        conv_arrow = conversion.to_pyarrow()
        results["f_conversion"] = kpis.f_conversion_rows(conv_arrow)
        results["f_conversion_overall"] = kpis.f_conversion_overall(conv_arrow)
        totals = ex.f_totals(nth).to_pyarrow()
        for period in ("month", "year"):
            rates = ex.repeat_rates(cm, summary, period=period).to_pyarrow()
            results[f"repeat_rate_{period}"] = kpis.repeat_rate_rows(rates, period=period)
        if tables.lines is not None and tables.products is not None:
            up = ex.upgrade(
                seq,
                tables.lines,
                tables.products,
                nth,
                as_of_day=as_of_day,
                windows=cfg.windows_days,
            ).to_pyarrow()
            results["upgrade"] = kpis.upgrade_rows(up)
            results["upgrade_overall"] = kpis.upgrade_overall(up)
    with clock.step("cohorts"):
        # Each customer's first product, for the cohorts and the fan indicators.
        first = (
            ex.first_products(seq, tables.lines).cache()
            if tables.lines is not None and tables.products is not None
            else None
        )
        results["cohorts"] = _cohorts(tables, cm, summary, first, as_of_month=as_of_month)
    if tables.subscriptions is not None and tables.deliveries is not None:
        with clock.step("subscriptions"):
            results.update(
                _subscriptions(
                    tables.subscriptions,
                    tables.deliveries,
                    tables.products,
                    as_of_day=as_of_day,
                    as_of_month=as_of_month,
                )
            )
    with clock.step("dynamics"):
        results.update(dynamics(cm, as_of_day=as_of_day, as_of_month=as_of_month, cfg=cfg))
    with clock.step("fans"):
        results["fan_indicators"] = fan_indicators(
            tables, ex.with_cpm(summary, cfg), nth, first, as_of_day=as_of_day
        )
    results["headline"] = _headline(customers, totals, purchase_total)
    return PipelineResult(
        as_of=as_of,
        customers=customers,
        kpis=results,
        segments=segment_counts(customers),
        predictions=preds.info,
        timings=clock.timings,
    )


def _cohorts(
    tables: Tables,
    cm: ir.Table,
    summary: ir.Table,
    first: ir.Table | None,
    *,
    as_of_month: int,
) -> dict[str, list[dict[str, Any]]]:
    """Retention and cumulative LTV by cohort: for all customers, by acquisition channel and by
    first product (`first`: `expressions.first_products`, when lines and products are there)."""
    base = summary.select("customer_id", "first_month")
    dims = base.mutate(all=ibis.literal("全体"))
    splits = ["all"]
    if tables.customers is not None:
        dims = dims.left_join(tables.customers, "customer_id").select(
            dims, channel=tables.customers.acquisition_channel
        )
        splits.append("channel")
    if first is not None and tables.products is not None:
        named = first.join(tables.products, first.first_product_id == tables.products.product_id)
        labelled = named.select("customer_id", first_product=named.name)
        dims = dims.left_join(labelled, "customer_id").select(dims, labelled.first_product)
        splits.append("first_product")
    dims = dims.cache()
    out: dict[str, list[dict[str, Any]]] = {}
    for split in splits:
        sizes, activity = ex.cohort_activity(cm, dims, dimension=split)
        out[split] = kpis.cohort_rows(
            sizes.to_pyarrow(), activity.to_pyarrow(), as_of_month=as_of_month
        )
    return out


def _subscriptions(
    subs: ir.Table,
    deliveries: ir.Table,
    products: ir.Table | None,
    *,
    as_of_day: int,
    as_of_month: int,
) -> dict[str, Any]:
    names: dict[int, str] = {}
    if products is not None:
        prod = products.select("product_id", "name").to_pyarrow()
        names = dict(
            zip(prod.column("product_id").to_pylist(), prod.column("name").to_pylist(), strict=True)
        )
    reach = ex.subscription_reach(subs, deliveries, as_of_day=as_of_day).to_pyarrow()
    starts, cancels = ex.subscription_months(subs, as_of_day=as_of_day)
    return {
        "continuation": kpis.continuation_rows(reach, product_names=names),
        "subscription_sbg": kpis.sbg_rows(reach),
        "churn_month": kpis.churn_rows(
            starts.to_pyarrow(), cancels.to_pyarrow(), as_of_month=as_of_month
        ),
    }
