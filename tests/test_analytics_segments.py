"""CPM and RFM segments: every documented boundary, on the expressions the pipeline runs.

Each case is one customer's purchases as (days before the as-of day, yen). The expressions
run on DuckDB from an in-memory Arrow table, exactly as `kizuna analytics run` runs them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import ibis
import pyarrow as pa
import pytest

from kizuna.analytics.pipeline import expressions as ex
from kizuna.analytics.pipeline.config import AnalyticsConfig, RfmMethod, ThresholdError
from kizuna.analytics.pipeline.extract import month_of_day
from kizuna.analytics.pipeline.kpis import day_number, month_end_day, month_index

AS_OF = dt.date(2025, 6, 30)
D = day_number(AS_OF)


def _orders(
    customers: dict[int, list[tuple[int, int]]], status: dict[int, str] | None = None
) -> pa.Table:
    """Orders from {customer: [(days before as-of, yen), …]}; status per order id if given."""
    rows = [
        (cid, D - ago, amount) for cid, purchases in customers.items() for ago, amount in purchases
    ]
    days = pa.array([r[1] for r in rows], pa.int64())
    ids = list(range(1, len(rows) + 1))
    return pa.table(
        {
            "order_id": pa.array(ids, pa.int64()),
            "customer_id": pa.array([r[0] for r in rows], pa.int64()),
            "status": [(status or {}).get(i, "delivered") for i in ids],
            "channel": ["web"] * len(rows),
            "amount": pa.array([r[2] for r in rows], pa.int64()),
            "subtotal": pa.array([r[2] for r in rows], pa.int64()),
            "day": days,
            "month": month_of_day(days),
        }
    )


def _scored(orders: pa.Table, cfg: AnalyticsConfig | None = None) -> dict[int, dict[str, Any]]:
    config = cfg or AnalyticsConfig()
    con = ibis.duckdb.connect()
    table = con.create_table("orders", orders)
    summary = ex.customer_summary(ex.purchases(table, as_of_day=D), as_of_day=D)
    out = ex.with_cpm(ex.rfm_scores(summary, config), config).to_pyarrow().to_pylist()
    return {row["customer_id"]: row for row in out}


# (purchases, expected CPM segment). Defaults: 離脱 at ≥ 240 days since the last purchase;
# よちよち: 2+ purchases, tenure < 90; コツコツ: tenure ≥ 90 and total ≤ ¥70,000;
# 流行: 90 ≤ tenure < 210 and total > ¥70,000; 優良: tenure ≥ 210 and total > ¥70,000.
CPM_CASES: dict[str, tuple[list[tuple[int, int]], str]] = {
    "one purchase today is 初回(現役)": ([(0, 5000)], "first_active"),
    "one purchase 239 days ago is still 現役": ([(239, 5000)], "first_active"),
    "one purchase 240 days ago is 離脱": ([(240, 5000)], "first_lapsed"),
    "one big purchase is still 初回, whatever the amount": ([(10, 200_000)], "first_active"),
    "two purchases the same day: tenure 0 → よちよち": ([(5, 1000), (5, 1000)], "toddler_active"),
    "tenure 89 days → よちよち": ([(100, 1000), (11, 1000)], "toddler_active"),
    "tenure 90 days → no longer よちよち": ([(100, 1000), (10, 1000)], "steady_active"),
    "tenure 90, total exactly ¥70,000 → コツコツ": ([(100, 35_000), (10, 35_000)], "steady_active"),
    "tenure 90, total ¥70,001 → 流行": ([(100, 35_000), (10, 35_001)], "trendy_active"),
    "tenure 209, total ¥70,001 → 流行": ([(219, 35_000), (10, 35_001)], "trendy_active"),
    "tenure 210, total ¥70,001 → 優良": ([(220, 35_000), (10, 35_001)], "loyal_active"),
    "tenure 210, total ¥70,000 → コツコツ (amount decides)": (
        [(220, 35_000), (10, 35_000)],
        "steady_active",
    ),
    "tenure 400, small spend → コツコツ": (
        [(500, 3000), (300, 3000), (100, 3000)],
        "steady_active",
    ),
    "よちよち 239 days after the last purchase → 現役": (
        [(300, 1000), (239, 1000)],
        "toddler_active",
    ),
    "よちよち 240 days after the last purchase → 離脱": (
        [(300, 1000), (240, 1000)],
        "toddler_lapsed",
    ),
    "優良 239 days after the last purchase → 現役": (
        [(600, 40_000), (239, 40_000)],
        "loyal_active",
    ),
    "優良 240 days after the last purchase → 離脱": (
        [(600, 40_000), (240, 40_000)],
        "loyal_lapsed",
    ),
    "流行 lapsed": ([(500, 40_000), (400, 40_000)], "trendy_lapsed"),
    "コツコツ lapsed": ([(700, 1000), (300, 1000)], "steady_lapsed"),
}


@pytest.mark.parametrize("case", list(CPM_CASES), ids=list(CPM_CASES))
def test_cpm_segment_boundaries(case: str) -> None:
    # given one customer's purchases
    purchases, expected = CPM_CASES[case]
    # when the snapshot is computed
    row = _scored(_orders({1: purchases}))[1]
    # then the segment is the documented one
    assert row["cpm_segment"] == expected


def test_cpm_thresholds_are_the_shops_own() -> None:
    # given a shop that calls customers lapsed after 120 days and 優良 from ¥30,000 and 150 days
    cfg = AnalyticsConfig(
        cpm_lapse_days=120,
        cpm_toddler_tenure_days=60,
        cpm_loyal_tenure_days=150,
        cpm_amount_yen=30_000,
    )
    orders = _orders(
        {
            1: [(200, 20_000), (40, 10_001)],  # tenure 160 ≥ 150, total 30,001 > 30,000
            2: [(200, 1000), (120, 1000)],  # last purchase 120 days ago: lapsed; tenure 80
            3: [(100, 1000), (41, 1000)],  # tenure 59 < 60
        }
    )
    # when scored with those settings
    rows = _scored(orders, cfg)
    # then the shop's thresholds decide
    assert rows[1]["cpm_segment"] == "loyal_active"
    assert rows[2]["cpm_segment"] == "steady_lapsed"
    assert rows[3]["cpm_segment"] == "toddler_active"


def test_cancelled_returned_and_free_orders_are_not_purchases() -> None:
    # given a customer whose second and third orders were cancelled and returned, and a fourth
    # order that held only a free sample (subtotal 0)
    orders = _orders(
        {1: [(100, 5000), (50, 5000), (40, 5000), (30, 0)]}, {2: "cancelled", 3: "returned"}
    )
    # when scored
    row = _scored(orders)[1]
    # then only the first order counts
    assert (row["purchase_count"], row["total_spend"], row["cpm_segment"]) == (
        1,
        5000,
        "first_active",
    )
    assert row["days_since_last"] == 100


def test_orders_after_the_as_of_day_are_ignored() -> None:
    # given a purchase the day after the as-of day
    orders = _orders({1: [(10, 1000), (-1, 1000)]})
    # when scored as of the as-of day
    row = _scored(orders)[1]
    # then it does not count yet
    assert row["purchase_count"] == 1


def test_summary_columns() -> None:
    # given purchases 300, 200 and 20 days before the as-of day
    row = _scored(_orders({7: [(300, 1000), (200, 2500), (20, 4000)]}))[7]
    # then first/last, count, total, tenure (first → last) and recency follow
    assert row["first_day"] == D - 300
    assert row["last_day"] == D - 20
    assert (row["purchase_count"], row["total_spend"]) == (3, 7500)
    assert (row["tenure_days"], row["days_since_last"]) == (280, 20)


def test_monthly_cpm_matches_the_snapshot_at_the_as_of_month() -> None:
    # given customers whose segments change over the months
    orders = _orders(
        {
            1: [(400, 40_000), (150, 40_000)],
            2: [(30, 1000)],
            3: [(700, 1000), (600, 1000), (5, 1000)],
        }
    )
    con = ibis.duckdb.connect()
    p = ex.purchases(con.create_table("orders", orders), as_of_day=D)
    months = [month_index(AS_OF) - 6, month_index(AS_OF)]
    ends = [month_end_day(months[0]), D]
    # when the monthly segments are computed for two month ends
    monthly = ex.cpm_at_month_ends(p, months=months, end_days=ends, cfg=AnalyticsConfig())
    got = {
        (r["customer_id"], r["month"]): r["cpm_segment"] for r in monthly.to_pyarrow().to_pylist()
    }
    # then the as-of month agrees with the snapshot …
    snapshot = _scored(orders)
    for cid, row in snapshot.items():
        assert got[(cid, months[1])] == row["cpm_segment"]
    # … and six months earlier customer 1 was a one-time buyer, customer 2 did not exist yet
    # and customer 3 (last purchase 600 days before as-of) had lapsed
    assert got[(1, months[0])] == "first_active"
    assert (2, months[0]) not in got
    assert got[(3, months[0])] == "steady_lapsed"


FIXED = AnalyticsConfig(
    rfm_method=RfmMethod.FIXED,
    recency_days=(30, 90, 180, 365),
    frequency_counts=(2, 3, 5, 10),
    monetary_yen=(5_000, 15_000, 40_000, 100_000),
)


@pytest.mark.parametrize(
    ("ago", "expected"),
    [(0, 5), (30, 5), (31, 4), (90, 4), (91, 3), (180, 3), (181, 2), (365, 2), (366, 1)],
)
def test_fixed_recency_score_boundaries(ago: int, expected: int) -> None:
    # R: 5 when the last purchase is at most 30 days ago … 1 beyond 365 days
    assert _scored(_orders({1: [(ago, 1000)]}), FIXED)[1]["r_score"] == expected


@pytest.mark.parametrize(
    ("count", "expected"), [(1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (9, 4), (10, 5)]
)
def test_fixed_frequency_score_boundaries(count: int, expected: int) -> None:
    # F: 1 for one purchase, 2 from 2, 3 from 3, 4 from 5, 5 from 10 purchases
    purchases = [(i, 100) for i in range(count)]
    assert _scored(_orders({1: purchases}), FIXED)[1]["f_score"] == expected


@pytest.mark.parametrize(
    ("total", "expected"),
    [(4_999, 1), (5_000, 2), (14_999, 2), (15_000, 3), (40_000, 4), (99_999, 4), (100_000, 5)],
)
def test_fixed_monetary_score_boundaries(total: int, expected: int) -> None:
    assert _scored(_orders({1: [(1, total)]}), FIXED)[1]["m_score"] == expected


def test_quantile_scores_split_customers_into_fifths_and_ties_share_a_score() -> None:
    # given ten customers spending ¥1,000 … ¥10,000, and two more tied at ¥5,500
    spends = {cid: [(10, cid * 1000)] for cid in range(1, 11)}
    spends[11] = [(10, 5500)]
    spends[12] = [(10, 5500)]
    rows = _scored(_orders(spends))
    # when ranked (12 customers): score = 1 + ⌊5 × rank / 12⌋, rank 0 for the lowest spend
    # ranks: ¥1,000→0 ¥2,000→1 ¥3,000→2 ¥4,000→3 ¥5,000→4 ¥5,500→5 (both) ¥6,000→7 ¥7,000→8
    # ¥8,000→9 ¥9,000→10 ¥10,000→11; e.g. rank 5: 1 + ⌊25/12⌋ = 3, rank 10: 1 + ⌊50/12⌋ = 5
    expected = {1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 11: 3, 12: 3, 6: 3, 7: 4, 8: 4, 9: 5, 10: 5}
    # then
    assert {cid: row["m_score"] for cid, row in rows.items()} == expected


def test_quantile_recency_gives_the_most_recent_the_highest_score() -> None:
    # given five customers who last bought 1, 2, 3, 4 and 5 days ago
    rows = _scored(_orders({cid: [(cid, 1000)] for cid in range(1, 6)}))
    # then R runs from 5 (most recent) down to 1
    assert [rows[cid]["r_score"] for cid in range(1, 6)] == [5, 4, 3, 2, 1]


@pytest.mark.parametrize(
    ("r_days", "f_count", "segment"),
    [
        (0, 10, "champions"),  # R5 F5
        (40, 10, "loyal"),  # R4 F5
        (0, 2, "potential_loyalist"),  # R5 F2
        (0, 1, "new"),  # R5 F1
        (40, 1, "promising"),  # R4 F1
        (100, 3, "need_attention"),  # R3 F3
        (100, 1, "about_to_sleep"),  # R3 F1
        (200, 3, "at_risk"),  # R2 F3
        (400, 10, "cannot_lose"),  # R1 F5
        (200, 1, "hibernating"),  # R2 F1
        (400, 1, "lost"),  # R1 F1
    ],
)
def test_rfm_segment_names_follow_the_documented_grid(
    r_days: int, f_count: int, segment: str
) -> None:
    # fixed thresholds: R 30/90/180/365 days, F 2/3/5/10 purchases
    purchases = [(r_days + i, 100) for i in range(f_count)]
    assert _scored(_orders({1: purchases}), FIXED)[1]["rfm_segment"] == segment


def test_thresholds_that_cannot_work_are_refused_in_japanese() -> None:
    with pytest.raises(ThresholdError, match="小さい順"):
        AnalyticsConfig(recency_days=(90, 30, 180, 365))
    with pytest.raises(ThresholdError, match="4つ"):
        AnalyticsConfig(frequency_counts=(2, 3, 5))  # type: ignore[arg-type]
    with pytest.raises(ThresholdError, match="よちよち"):
        AnalyticsConfig(cpm_toddler_tenure_days=210, cpm_loyal_tenure_days=90)
    with pytest.raises(ThresholdError, match="0以上"):
        AnalyticsConfig(monetary_yen=(-1, 0, 1, 2))
    with pytest.raises(ThresholdError, match="0以上"):
        AnalyticsConfig(recency_days=(-30, 90, 180, 365))


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        ((30, 30, 60), "小さい順に、重複なく"),
        ((60, 30), "小さい順に、重複なく"),
        ((0, 30), "1〜3,650日"),
        ((30, 99_999), "1〜3,650日"),
        ((), "1つ以上"),
    ],
)
def test_conversion_windows_must_rise_without_repeats_within_ten_years(
    windows: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ThresholdError, match=message) as refused:
        AnalyticsConfig(windows_days=windows)
    ((field, text),) = refused.value.problems
    assert field == "windows_days"
    assert "F2転換率・引き上げ率の期間" in text
    assert AnalyticsConfig(windows_days=(1, 3650)).windows_days == (1, 3650)


def test_model_inputs_count_purchase_days_and_leave_out_the_first_days_spend() -> None:
    # given two orders on the first day, then purchases 50 and 10 days before the as-of day
    orders = _orders({1: [(100, 1000), (100, 500), (50, 2000), (10, 3000)], 2: [(30, 700)]})
    con = ibis.duckdb.connect()
    p = ex.purchases(con.create_table("orders", orders), as_of_day=D)
    summary = ex.customer_summary(p, as_of_day=D)
    # when
    got = {
        r["customer_id"]: r
        for r in ex.model_inputs(p, summary, as_of_day=D).to_pyarrow().to_pylist()
    }
    # then x = 3 purchase days − 1, t_x = 100 − 10, T = 100, repeat spend = 2,000 + 3,000
    assert got[1] == {
        "customer_id": 1,
        "frequency": 2,
        "recency": 90,
        "age": 100,
        "repeat_spend": 5000,
    }
    assert got[2] == {"customer_id": 2, "frequency": 0, "recency": 0, "age": 30, "repeat_spend": 0}
