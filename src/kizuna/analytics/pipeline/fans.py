"""Fan indicators (ファン化指標): which early behaviours separate customers who became 優良客
from those who lapsed without getting there.

Customers are judged once their first purchase is at least `judge_days` old. Because purchase
count, tenure and total spend never go down, a customer who was ever 優良 at a month end is
優良 now, so the current CPM stage answers "reached 優良". Behaviours are measured in the first
`window_days` days after the first purchase. The engine only counts customers per (behaviour
value, outcome); the effect sizes are numpy on those counts. Definitions: docs/analytics.md
(「ファン化指標」).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
from scipy import stats

from kizuna.analytics.pipeline.config import ODDS_RATIO_MIN_CUSTOMERS
from kizuna.analytics.pipeline.tables import Tables

Z95 = 1.959963984540054


BEHAVIOUR_LABELS: dict[str, str] = {
    "first_product": "初回購入の商品",
    "channel": "獲得チャネル",
    "days_to_second": "2回目購入までの日数",
    "points_used": "ポイント利用",
    "contacts": "問い合わせ・連絡",
}
SECOND_PURCHASE_BUCKETS: tuple[tuple[int, str], ...] = (
    (14, "14日以内"),
    (30, "15〜30日"),
    (60, "31〜60日"),
)
NO_SECOND = "なし"
VALUE_LABELS: dict[str, dict[str, str]] = {
    "points_used": {"yes": "使った", "no": "使っていない"},
    "contacts": {
        "inbound": "お客様から問い合わせあり",
        "outbound": "店からの連絡のみ",
        "none": "なし",
    },
}


def fan_base(
    scored: ir.Table, nth: ir.Table, *, as_of_day: int, judge_days: int, window_days: int
) -> ir.Table:
    """Judged customers (first purchase ≥ judge_days before as-of) that reached 優良 or lapsed
    without it, with their first day and the days-to-2nd-purchase bucket."""
    old = scored.filter(scored.first_day <= as_of_day - judge_days)
    loyal = old.cpm_segment.startswith("loyal_")
    judged = old.filter(loyal | old.cpm_segment.endswith("_lapsed")).select(
        "customer_id", "first_day", loyal=loyal
    )
    second = nth.select("customer_id", "day2")
    joined = judged.left_join(second, "customer_id")
    gap = joined.day2 - joined.first_day
    cases = [(gap <= limit, label) for limit, label in SECOND_PURCHASE_BUCKETS]
    bucket = ibis.cases(
        (joined.day2.isnull() | (gap > window_days), NO_SECOND),
        *cases,
        else_=f"{SECOND_PURCHASE_BUCKETS[-1][0] + 1}〜{window_days}日",
    )
    return joined.select(judged.customer_id, judged.first_day, judged.loyal, days_to_second=bucket)


def _within(events: ir.Table, base: ir.Table, window_days: int) -> ir.Table:
    """Events of judged customers from their first day to `window_days` days after it."""
    j = events.join(base.select("customer_id", "first_day"), "customer_id")
    return j.filter((j.day >= j.first_day) & (j.day <= j.first_day + window_days))


def fan_table(
    tables: Tables,
    scored: ir.Table,
    nth: ir.Table,
    first: ir.Table | None,
    *,
    as_of_day: int,
    judge_days: int = 365,
    window_days: int = 90,
) -> tuple[ir.Table, list[str]]:
    """One row per judged customer: `loyal` and one column per behaviour available here.

    `first` is `expressions.first_products` (None without order lines)."""
    base = fan_base(
        scored, nth, as_of_day=as_of_day, judge_days=judge_days, window_days=window_days
    ).cache()
    out = base
    names = ["days_to_second"]
    if first is not None and tables.products is not None:
        named = first.join(tables.products, first.first_product_id == tables.products.product_id)
        picked = named.select("customer_id", first_product=named.name)
        out = out.left_join(picked, "customer_id").select(
            out, first_product=picked.first_product.fill_null("(不明)")
        )
        names.append("first_product")
    if tables.customers is not None:
        cu = tables.customers
        out = out.left_join(cu, "customer_id").select(
            out, channel=cu.acquisition_channel.fill_null("(不明)")
        )
        names.append("channel")
    points = tables.points
    if points is not None:
        used = _within(points.filter(points.kind == "redeem"), base, window_days)
        who = used.group_by("customer_id").aggregate(n=used.count())
        out = out.left_join(who, "customer_id").select(
            out, points_used=ibis.ifelse(who.n.isnull(), "no", "yes")
        )
        names.append("points_used")
    contacts = tables.contacts
    if contacts is not None:
        near = _within(contacts, base, window_days)
        who = near.group_by("customer_id").aggregate(
            inbound=near.count(where=near.direction == "inbound"), any=near.count()
        )
        out = out.left_join(who, "customer_id").select(
            out,
            contacts=ibis.cases(
                (who.inbound > 0, "inbound"), (who.any > 0, "outbound"), else_="none"
            ),
        )
        names.append("contacts")
    return out, names


def fan_counts(per_customer: ir.Table, behaviour: str) -> ir.Table:
    """Judged customers per value of one behaviour: how many reached 優良, how many lapsed."""
    return per_customer.group_by(value=per_customer[behaviour]).aggregate(
        loyal=per_customer.count(where=per_customer.loyal),
        lapsed=per_customer.count(where=~per_customer.loyal),
    )


@dataclass(frozen=True)
class _Cell:
    value: str
    loyal: int
    lapsed: int


def _odds_ratio(a: float, b: float, c: float, d: float) -> tuple[float | None, ...]:
    """Odds ratio a·d / b·c (a, b: 優良 and lapsed with the value; c, d: everyone else) with a
    Wald 95% interval on the log scale — or None when either side has fewer than
    ODDS_RATIO_MIN_CUSTOMERS customers or a cell is empty. With every cell non-empty the ratio
    is above 1 exactly when the value's 優良 rate is above everyone else's, so it never points
    the other way from the rates beside it."""
    if min(a + b, c + d) < ODDS_RATIO_MIN_CUSTOMERS or min(a, b, c, d) == 0:
        return None, None, None
    ratio = (a * d) / (b * c)
    se = math.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
    return ratio, math.exp(math.log(ratio) - Z95 * se), math.exp(math.log(ratio) + Z95 * se)


def _wilson(successes: float, n: float) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion (stays inside 0–1, fine for small n)."""
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return centre - half, centre + half


def _difference_interval(
    loyal_in: float, n_in: float, loyal_out: float, n_out: float
) -> tuple[float, float]:
    """Newcombe's hybrid score interval (95%) for the difference of two proportions: built
    from the two Wilson intervals, so it stays within −1…1 even for a handful of customers."""
    p1, p2 = loyal_in / n_in, loyal_out / n_out
    l1, u1 = _wilson(loyal_in, n_in)
    l2, u2 = _wilson(loyal_out, n_out)
    d = p1 - p2
    return (
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def _round(value: float | None, places: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, places)


def behaviour_rows(behaviour: str, cells: list[_Cell]) -> dict[str, Any]:
    """Effect sizes for one behaviour: per value, its 優良 rate against everyone else's (difference
    in points with a 95% interval, rate ratio, odds ratio — None for a value too small to give
    one, see `_odds_ratio`); for the behaviour, Cramér's V and the χ² test of the value ×
    outcome table."""
    loyal = np.array([c.loyal for c in cells], np.float64)
    lapsed = np.array([c.lapsed for c in cells], np.float64)
    n = loyal + lapsed
    total = float(n.sum())
    total_loyal, total_lapsed = float(loyal.sum()), float(lapsed.sum())
    chi2 = 0.0
    p_value: float | None = None
    if len(cells) > 1 and total_loyal > 0 and total_lapsed > 0:
        observed = np.stack([loyal, lapsed], axis=1)
        expected = n[:, np.newaxis] * np.array([total_loyal, total_lapsed]) / total
        chi2 = float(((observed - expected) ** 2 / expected).sum())
        p_value = float(stats.chi2.sf(chi2, df=len(cells) - 1))
    values: list[dict[str, Any]] = []
    for i, cell in enumerate(cells):
        n_in, n_out = n[i], total - n[i]
        rate_in = loyal[i] / n_in if n_in else None
        rate_out = (total_loyal - loyal[i]) / n_out if n_out else None
        diff: float | None = None
        low: float | None = None
        high: float | None = None
        ratio: float | None = None
        odds: tuple[float | None, ...] = (None, None, None)
        if rate_in is not None and rate_out is not None:
            diff = rate_in - rate_out
            low, high = _difference_interval(loyal[i], n_in, total_loyal - loyal[i], n_out)
            # Like the odds ratio, only for groups big enough that a ratio means something:
            # 1 fan of 2 customers against 2.4% elsewhere would read "21 times".
            big_enough = min(n_in, n_out) >= ODDS_RATIO_MIN_CUSTOMERS
            ratio = rate_in / rate_out if rate_out > 0 and big_enough else None
            odds = _odds_ratio(
                loyal[i], lapsed[i], total_loyal - loyal[i], total_lapsed - lapsed[i]
            )
        values.append(
            {
                "value": cell.value,
                "label": VALUE_LABELS.get(behaviour, {}).get(cell.value, cell.value),
                "customers": int(n_in),
                "loyal": cell.loyal,
                "lapsed": cell.lapsed,
                "share_of_loyal": _round(loyal[i] / total_loyal if total_loyal else None),
                "share_of_lapsed": _round(lapsed[i] / total_lapsed if total_lapsed else None),
                "loyal_rate": _round(rate_in),
                "loyal_rate_others": _round(rate_out),
                "difference": _round(diff),
                "difference_low": _round(low),
                "difference_high": _round(high),
                "rate_ratio": _round(ratio),
                "odds_ratio": _round(odds[0]),
                "odds_ratio_low": _round(odds[1]),
                "odds_ratio_high": _round(odds[2]),
            }
        )
    values.sort(key=lambda v: (-(v["loyal_rate"] or 0), -v["customers"], v["value"]))
    # With two outcomes, Cramér's V is √(χ² / N): 0 = no separation, 1 = perfect.
    return {
        "behaviour": behaviour,
        "label": BEHAVIOUR_LABELS[behaviour],
        "cramers_v": _round(math.sqrt(chi2 / total) if total else 0.0),
        "chi2": _round(chi2),
        "p_value": _round(p_value, 6),
        "values": values,
    }


def fan_indicators(
    tables: Tables,
    scored: ir.Table,
    nth: ir.Table,
    first: ir.Table | None,
    *,
    as_of_day: int,
    judge_days: int = 365,
    window_days: int = 90,
) -> dict[str, Any]:
    """The fan_indicators KPI table: the judged population and the behaviours ranked by
    Cramér's V (ties by name, so every engine gives the same order)."""
    per_customer, names = fan_table(
        tables,
        scored,
        nth,
        first,
        as_of_day=as_of_day,
        judge_days=judge_days,
        window_days=window_days,
    )
    per_customer = per_customer.cache()
    ranked = []
    for name in names:
        counted = fan_counts(per_customer, name).to_pyarrow().to_pylist()
        cells = [
            _Cell(str(row["value"]), int(row["loyal"]), int(row["lapsed"]))
            for row in sorted(counted, key=lambda r: str(r["value"]))
        ]
        ranked.append(behaviour_rows(name, cells))
    ranked.sort(key=lambda b: (-(b["cramers_v"] or 0.0), b["behaviour"]))
    loyal = sum(v["loyal"] for v in ranked[0]["values"]) if ranked else 0
    lapsed = sum(v["lapsed"] for v in ranked[0]["values"]) if ranked else 0
    return {
        "judge_days": judge_days,
        "window_days": window_days,
        "loyal": loyal,
        "lapsed": lapsed,
        "behaviours": ranked,
    }
