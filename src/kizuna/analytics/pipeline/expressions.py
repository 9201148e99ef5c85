"""The analytics as Ibis expressions: one definition, run by DuckDB, PostgreSQL or PySpark.

Every function takes Ibis tables in the normalised shape of `kizuna.analytics.pipeline.tables`
and returns an Ibis table; nothing here executes. Dates are whole days since 1970-01-01 on the
Asia/Tokyo calendar (`day`) and months since 1970-01 (`month`), so the arithmetic is integer
arithmetic that every engine does alike. Expressions produce counts and sums; ratios are taken
after collection (`kizuna.analytics.pipeline.kpis`), so no engine's float rounding shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import ibis
import ibis.expr.types as ir

from kizuna.analytics.pipeline.config import AnalyticsConfig, RfmMethod
from kizuna.analytics.pipeline.segments import LAPSED_SUFFIX, RFM_GRID

# Order statuses that are not purchases: the order was called off or sent back.
NOT_PURCHASED = ("cancelled", "returned")
TRIAL_KINDS = ("trial",)
MAIN_KINDS = ("main", "subscription")
DELIVERED_STATUSES = ("shipped", "delivered")


def purchases(orders: ir.Table, *, as_of_day: int) -> ir.Table:
    """Orders that count as purchases on `as_of_day`: placed on or before it (JST), not cancelled
    or returned, and with goods worth something (a free-sample shipment is not a purchase)."""
    return orders.filter(
        ~orders.status.isin(NOT_PURCHASED),
        orders.subtotal > 0,
        orders.day <= as_of_day,
    ).select("order_id", "customer_id", "day", "month", "amount")


def customer_summary(p: ir.Table, *, as_of_day: int) -> ir.Table:
    """One row per customer with a purchase: the RFM and CPM inputs, in one GROUP BY."""
    s = p.group_by("customer_id").aggregate(
        first_day=p.day.min(),
        last_day=p.day.max(),
        first_month=p.month.min(),
        purchase_count=p.count(),
        total_spend=p.amount.sum().cast("int64"),
    )
    return s.mutate(
        tenure_days=s.last_day - s.first_day,
        days_since_last=ibis.literal(as_of_day, "int64") - s.last_day,
    )


def _quantile_score(value: ir.NumericColumn, n: ir.IntegerValue, *, best_high: bool) -> ir.Value:
    """1–5 by quintile of the rank: 1 + floor(5 × rank / n), rank counted from the worst value
    and shared by ties (so equal values always get equal scores, on every engine)."""
    key = value if best_high else value.desc()
    rank = ibis.rank().over(order_by=key)
    return ((rank * 5) // n + 1).cast("int8")


def _fixed_score_high(value: ir.NumericValue, cuts: Sequence[int]) -> ir.Value:
    """Higher is better: 5 at or above the 4th cut point, … 1 below the 1st."""
    return ibis.cases(
        (value >= cuts[3], 5),
        (value >= cuts[2], 4),
        (value >= cuts[1], 3),
        (value >= cuts[0], 2),
        else_=1,
    ).cast("int8")


def _fixed_score_low(value: ir.NumericValue, cuts: Sequence[int]) -> ir.Value:
    """Lower is better (days since the last purchase): 5 at or below the 1st cut point."""
    return ibis.cases(
        (value <= cuts[0], 5),
        (value <= cuts[1], 4),
        (value <= cuts[2], 3),
        (value <= cuts[3], 2),
        else_=1,
    ).cast("int8")


def rfm_scores(summary: ir.Table, cfg: AnalyticsConfig) -> ir.Table:
    """Add r_score, f_score, m_score (1–5) and the named rfm_segment."""
    if cfg.rfm_method == RfmMethod.QUANTILE:
        n = summary.customer_id.count().over(ibis.window())
        scored = summary.mutate(
            r_score=_quantile_score(summary.days_since_last, n, best_high=False),
            f_score=_quantile_score(summary.purchase_count, n, best_high=True),
            m_score=_quantile_score(summary.total_spend, n, best_high=True),
        )
    else:
        scored = summary.mutate(
            r_score=_fixed_score_low(summary.days_since_last, cfg.recency_days),
            f_score=_fixed_score_high(summary.purchase_count, cfg.frequency_counts),
            m_score=_fixed_score_high(summary.total_spend, cfg.monetary_yen),
        )
    key = scored.r_score.cast("int64") * 10 + scored.f_score.cast("int64")
    grid = {r * 10 + f: name for (r, f), name in RFM_GRID.items()}
    return scored.mutate(rfm_segment=key.cases(*grid.items()))


def cpm_segment(
    *,
    purchase_count: ir.IntegerValue,
    tenure_days: ir.IntegerValue,
    total_spend: ir.IntegerValue,
    days_since_last: ir.IntegerValue,
    cfg: AnalyticsConfig,
) -> ir.StringValue:
    """The CPM segment code ("toddler_active", …). The checks run top to bottom:

    1 purchase → 初回; tenure < 90 → よちよち; total ≤ ¥70,000 → コツコツ;
    tenure < 210 → 流行; otherwise 優良; then 離脱 when days since the last purchase ≥ 240.
    """
    stage = ibis.cases(
        (purchase_count <= 1, "first"),
        (tenure_days < cfg.cpm_toddler_tenure_days, "toddler"),
        (total_spend <= cfg.cpm_amount_yen, "steady"),
        (tenure_days < cfg.cpm_loyal_tenure_days, "trendy"),
        else_="loyal",
    )
    state = ibis.ifelse(days_since_last >= cfg.cpm_lapse_days, "_" + LAPSED_SUFFIX, "_active")
    return stage.concat(state)


def with_cpm(summary: ir.Table, cfg: AnalyticsConfig) -> ir.Table:
    return summary.mutate(
        cpm_segment=cpm_segment(
            purchase_count=summary.purchase_count,
            tenure_days=summary.tenure_days,
            total_spend=summary.total_spend,
            days_since_last=summary.days_since_last,
            cfg=cfg,
        )
    )


def cpm_at_month_ends(
    p: ir.Table, *, months: Sequence[int], end_days: Sequence[int], cfg: AnalyticsConfig
) -> ir.Table:
    """Each customer's CPM segment at the end of each of `months`, as one expression.

    `end_days[i]` is the day the i-th month is judged on: its last day, or the as-of day for
    the current month (`p` must already stop at the as-of day). Purchases are first summed per
    (customer, month), so the join with the month ends stays small. Returns customer_id,
    month, purchase_count, tenure_days, total_spend, days_since_last and cpm_segment; a
    customer appears from the month of their first purchase on.
    """
    monthly = p.group_by(["customer_id", "month"]).aggregate(
        n=p.count(), amount=p.amount.sum(), first=p.day.min(), last=p.day.max()
    )
    ends = ibis.memtable(
        {"at_month": list(months), "end_day": list(end_days)},
        schema={"at_month": "int64", "end_day": "int64"},
    )
    joined = monthly.join(ends, monthly.month <= ends.at_month)
    grouped = joined.group_by(["customer_id", "at_month", "end_day"]).aggregate(
        purchase_count=joined.n.sum(),
        total_spend=joined.amount.sum().cast("int64"),
        first_day=joined.first.min(),
        last_day=joined.last.max(),
    )
    out = grouped.mutate(
        tenure_days=grouped.last_day - grouped.first_day,
        days_since_last=grouped.end_day - grouped.last_day,
    )
    return with_cpm(out, cfg).select(
        "customer_id",
        month=out.at_month,
        purchase_count=out.purchase_count,
        tenure_days=out.tenure_days,
        total_spend=out.total_spend,
        days_since_last=out.days_since_last,
        cpm_segment="cpm_segment",
    )


def model_inputs(p: ir.Table, summary: ir.Table, *, as_of_day: int) -> ir.Table:
    """(x, t_x, T, monetary) per customer for the purchase and spend models, in days.

    Purchases on the same day count once (x = purchase days − 1), as in Fader, Hardie & Lee;
    the spend model sees the average of the repeat days' totals (the first day excluded).
    """
    # One join and one GROUP BY: distinct days counted directly, the first day's spend summed
    # against the summary's first day (a per-day pre-aggregation costs a second pass).
    first = summary.select("customer_id", "first_day", "last_day", "total_spend")
    joined = p.join(first, "customer_id")
    agg = joined.group_by("customer_id").aggregate(
        purchase_days=joined.day.nunique(),
        first_day_spend=joined.amount.sum(where=joined.day == joined.first_day),
        first_day=joined.first_day.max(),
        last_day=joined.last_day.max(),
        total_spend=joined.total_spend.max(),
    )
    return agg.select(
        "customer_id",
        frequency=(agg.purchase_days - 1).cast("int64"),
        recency=(agg.last_day - agg.first_day).cast("int64"),
        age=(ibis.literal(as_of_day, "int64") - agg.first_day).cast("int64"),
        repeat_spend=(agg.total_spend - agg.first_day_spend).cast("int64"),
    )


def purchase_sequence(p: ir.Table) -> ir.Table:
    """Number each customer's purchases 0, 1, 2… by day, then order id (the order they came in)."""
    return p.mutate(
        seq=ibis.row_number().over(group_by=p.customer_id, order_by=[p.day, p.order_id])
    )


def nth_purchase_days(seq: ir.Table, summary: ir.Table) -> ir.Table:
    """first_day, first_month and the day of the 2nd, 3rd and 4th purchase (null if none)."""
    later = seq.filter(seq.seq.between(1, 3))
    nth = later.group_by("customer_id").aggregate(
        day2=later.day.min(where=later.seq == 1),
        day3=later.day.min(where=later.seq == 2),
        day4=later.day.min(where=later.seq == 3),
    )
    base = summary.select("customer_id", "first_day", "first_month")
    return base.left_join(nth, "customer_id").select(
        base.customer_id, base.first_day, base.first_month, nth.day2, nth.day3, nth.day4
    )


def _windows(windows: Sequence[int]) -> ir.Table:
    return ibis.memtable({"window_days": list(windows)}, schema={"window_days": "int64"})


def f_conversion(nth: ir.Table, *, as_of_day: int, windows: Sequence[int]) -> ir.Table:
    """Per first-purchase month and window N: customers, eligible (observed for N full days),
    and how many of the eligible bought a 2nd/3rd/4th time within N days of the first."""
    x = nth.cross_join(_windows(windows))
    eligible = (ibis.literal(as_of_day, "int64") - x.first_day) >= x.window_days

    def within(day: ir.IntegerColumn) -> ir.BooleanValue:
        return eligible & day.notnull() & ((day - x.first_day) <= x.window_days)

    return x.group_by(["first_month", "window_days"]).aggregate(
        customers=x.count(),
        eligible=x.count(where=eligible),
        f2=x.count(where=within(x.day2)),
        f3=x.count(where=within(x.day3)),
        f4=x.count(where=within(x.day4)),
    )


def f_totals(nth: ir.Table) -> ir.Table:
    """How many customers ever made a 2nd, 3rd and 4th purchase (no window)."""
    return nth.aggregate(
        customers=nth.count(),
        f2=nth.count(where=nth.day2.notnull()),
        f3=nth.count(where=nth.day3.notnull()),
        f4=nth.count(where=nth.day4.notnull()),
    )


def repeat_rates(cm: ir.Table, summary: ir.Table, *, period: str) -> ir.Table:
    """Per period ("month" or "year"): buyers, buyers with 2+ purchases in the period
    (definition a) and buyers whose first purchase came before the period (definition b).

    `cm` is `customer_months` of the purchases (a month is its own period; a year adds up
    its months)."""
    first = summary.select("customer_id", "first_month")
    if period == "month":
        per = cm.select("customer_id", period=cm.month, orders=cm.n)
        first = first.mutate(first_period=first.first_month)
    else:
        keyed = cm.mutate(period=cm.month // 12)
        per = keyed.group_by(["customer_id", "period"]).aggregate(orders=keyed.n.sum())
        first = first.mutate(first_period=first.first_month // 12)
    joined = per.join(first, "customer_id")
    return joined.group_by("period").aggregate(
        buyers=joined.count(),
        repeat_in_period=joined.count(where=joined.orders >= 2),
        bought_before=joined.count(where=joined.first_period < joined.period),
    )


def upgrade(
    seq: ir.Table,
    lines: ir.Table,
    products: ir.Table,
    nth: ir.Table,
    *,
    as_of_day: int,
    windows: Sequence[int],
) -> ir.Table:
    """引き上げ: per first-purchase month and window N, the trial-first customers (first order
    holds a trial and no main/subscription product), those observed for N days, and those of
    them whose later order within N days held a main or subscription product.

    Orders are matched to trial and main lines with IN (subquery) filters, which every engine
    runs as a semi-join (Ibis's semi_join becomes SQL PostgreSQL does not read): no per-order
    flags over every line (ten million groups), and only the trial-first customers' later
    orders are looked at.
    """

    def holding(kinds: Sequence[str]) -> ir.IntegerColumn:
        wanted = products.filter(products.kind.isin(kinds)).product_id
        return lines.filter(lines.product_id.isin(wanted)).order_id

    trial_orders, main_orders = holding(TRIAL_KINDS), holding(MAIN_KINDS)
    trial_first = seq.filter(
        seq.seq == 0, seq.order_id.isin(trial_orders), ~seq.order_id.isin(main_orders)
    ).customer_id
    later = seq.filter(
        seq.seq >= 1, seq.customer_id.isin(trial_first), seq.order_id.isin(main_orders)
    )
    upgraded_on = later.group_by("customer_id").aggregate(upgrade_day=later.day.min())
    base = nth.select("customer_id", "first_day", "first_month")
    trial = base.filter(base.customer_id.isin(trial_first))
    trial = trial.left_join(upgraded_on, trial.customer_id == upgraded_on.customer_id).select(
        trial.first_day, trial.first_month, upgraded_on.upgrade_day
    )
    x = trial.cross_join(_windows(windows))
    eligible = (ibis.literal(as_of_day, "int64") - x.first_day) >= x.window_days
    upgraded = eligible & x.upgrade_day.notnull() & ((x.upgrade_day - x.first_day) <= x.window_days)
    return x.group_by(["first_month", "window_days"]).aggregate(
        trial_first=x.count(), eligible=x.count(where=eligible), upgraded=x.count(where=upgraded)
    )


def first_products(seq: ir.Table, lines: ir.Table) -> ir.Table:
    """Each customer's first product: the line of the first order with the highest amount
    (the lowest product id among equals)."""
    firsts = seq.filter(seq.seq == 0).select("order_id", "customer_id")
    fl = firsts.join(lines, firsts.order_id == lines.order_id).select(
        firsts.customer_id, lines.product_id, lines.amount
    )
    ranked = fl.mutate(
        pick=ibis.row_number().over(
            group_by=fl.customer_id, order_by=[fl.amount.desc(), fl.product_id]
        )
    )
    return ranked.filter(ranked.pick == 0).select("customer_id", first_product_id="product_id")


def customer_months(p: ir.Table) -> ir.Table:
    """Per customer and month with a purchase: purchases `n`, revenue `amount` and the first
    and last day bought. One GROUP BY shared by the repeat rates, the cohorts and the
    dynamics (each used to make its own pass over every purchase)."""
    return p.group_by(["customer_id", "month"]).aggregate(
        n=p.count(), amount=p.amount.sum(), first=p.day.min(), last=p.day.max()
    )


def cohort_activity(cm: ir.Table, dims: ir.Table, *, dimension: str) -> tuple[ir.Table, ir.Table]:
    """Cohort sizes and, per months since the first purchase, active customers and revenue.

    `cm` is `customer_months` of the purchases; `dims` has customer_id, first_month and
    the `dimension` column to split by. Returns (sizes: dim, first_month, customers; activity:
    dim, first_month, offset, active, revenue).
    """
    d = dims.select("customer_id", "first_month", dim=dims[dimension])
    joined = cm.join(d, "customer_id")
    activity = joined.group_by(
        [joined.dim, joined.first_month, (joined.month - joined.first_month).name("offset")]
    ).aggregate(active=joined.count(), revenue=joined.amount.sum().cast("int64"))
    sizes = d.group_by(["dim", "first_month"]).aggregate(customers=d.count())
    return sizes, activity


def subscription_reach(subs: ir.Table, deliveries: ir.Table, *, as_of_day: int) -> ir.Table:
    """Subscriptions by product and start month, how many boxes went out (skips are not boxes)
    and whether the subscription had been cancelled, all as of `as_of_day`: counts per group."""
    boxes = deliveries.filter(
        deliveries.status.isin(DELIVERED_STATUSES), deliveries.day <= as_of_day
    )
    reached = boxes.group_by("subscription_id").aggregate(reached=boxes.count())
    started = subs.filter(subs.start_day <= as_of_day)
    joined = started.left_join(reached, started.subscription_id == reached.subscription_id)
    shaped = joined.select(
        product_id=joined.product_id,
        start_month=joined.start_month,
        reached=joined.reached.fill_null(0),
        cancelled=joined.cancel_day.notnull() & (joined.cancel_day <= as_of_day),
    )
    return shaped.group_by(["product_id", "start_month", "reached", "cancelled"]).aggregate(
        n=shaped.count()
    )


def subscription_months(subs: ir.Table, *, as_of_day: int) -> tuple[ir.Table, ir.Table]:
    """Subscriptions started, and cancelled (all; those started in an earlier month), per month."""
    started = subs.filter(subs.start_day <= as_of_day)
    starts = started.group_by(month=started.start_month).aggregate(n=started.count())
    gone = started.filter(started.cancel_day.notnull() & (started.cancel_day <= as_of_day))
    cancels = gone.group_by(month=gone.cancel_month).aggregate(
        n=gone.count(), running=gone.count(where=gone.start_month < gone.cancel_month)
    )
    return starts, cancels
