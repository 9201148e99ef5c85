"""Repeat KPIs on hand-built shops: each expected number is worked out in the comments.

Every test builds a few customers and orders with the ORM, runs `run_analytics` as of
2025-06-30 (DuckDB) and reads the stored KPI tables, as the pages and the API will.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kizuna.analytics.models import AnalyticsSettings
from kizuna.commerce.models import OrderStatus, ProductKind
from kizuna.customers.models import AcquisitionChannel
from tests.analytics_shop import Shop, kpi, run, scores

pytestmark = pytest.mark.django_db
AS_OF = dt.date(2025, 6, 30)
d = dt.date


def _windows(text: str) -> None:
    settings = AnalyticsSettings.load()
    settings.windows_days = text
    settings.save()


def _by(rows: Any, **match: Any) -> dict[str, Any]:
    found = [row for row in rows if all(row[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def test_f2_f3_f4_conversion_per_cohort_within_n_days() -> None:
    # given
    _windows("30,60,180")
    shop = Shop()
    a, b, c, dd, e, f, g = (shop.customer() for _ in range(7))
    # January cohort
    shop.buy(a, d(2025, 1, 10))
    shop.buy(a, d(2025, 1, 20))  # 2nd after 10 days
    shop.buy(a, d(2025, 3, 1))  # 3rd after 50 days
    shop.buy(a, d(2025, 5, 1))  # 4th after 111 days
    shop.buy(b, d(2025, 1, 15))
    shop.buy(b, d(2025, 1, 15))  # a second order the same day is the 2nd purchase (0 days)
    shop.buy(c, d(2025, 1, 31))  # never again
    shop.buy(dd, d(2025, 1, 5))
    shop.buy(dd, d(2025, 1, 6), status=OrderStatus.CANCELLED)  # not a purchase
    shop.buy(dd, d(2025, 2, 4))  # 2nd after exactly 30 days: counts within 30
    # June cohort: too young for any window
    shop.buy(e, d(2025, 6, 10))
    shop.buy(e, d(2025, 6, 20))
    shop.buy(f, d(2025, 6, 25))
    # October 2024 cohort: 2nd, 3rd and 4th on the following days
    for day in (1, 2, 3, 4):
        shop.buy(g, d(2024, 10, day))
    # when
    rows = kpi(run(AS_OF), "f_conversion")
    # then, window 30, January: all 4 observed ≥ 30 days; a (10), b (0), dd (30) converted
    jan30 = _by(rows, cohort="2025-01", window_days=30)
    assert (jan30["customers"], jan30["eligible"], jan30["complete"]) == (4, 4, True)
    assert (jan30["f2"], jan30["f3"], jan30["f4"]) == (3, 0, 0)
    assert jan30["f2_rate"] == 0.75
    # window 60: a's 3rd purchase (50 days) now counts
    jan60 = _by(rows, cohort="2025-01", window_days=60)
    assert (jan60["f2"], jan60["f3"], jan60["f4"], jan60["f3_rate"]) == (3, 1, 0, 0.25)
    # window 180: the earliest January customer (Jan 5) has had only 176 days → none eligible;
    # the cohort is incomplete and has no rate rather than a rate of 0
    jan180 = _by(rows, cohort="2025-01", window_days=180)
    assert (jan180["eligible"], jan180["complete"], jan180["f2_rate"]) == (0, False, None)
    # June: 20 and 5 days observed → not eligible for 30 days, not failures
    jun30 = _by(rows, cohort="2025-06", window_days=30)
    assert (jun30["customers"], jun30["eligible"], jun30["f2"], jun30["f2_rate"]) == (2, 0, 0, None)
    # October: everything within 3 days
    oct180 = _by(rows, cohort="2024-10", window_days=180)
    assert (oct180["f2_rate"], oct180["f3_rate"], oct180["f4_rate"]) == (1.0, 1.0, 1.0)
    # overall, window 30: eligible 4 (Jan) + 1 (Oct) = 5; converted 3 + 1 = 4
    overall = _by(kpi(run(AS_OF), "f_conversion_overall"), window_days=30)
    assert (overall["customers"], overall["eligible"], overall["f2"]) == (7, 5, 4)
    assert overall["f2_rate"] == 0.8


def test_headline_counts_every_customer_who_ever_bought_again() -> None:
    # given three customers: one buys once, one twice, one four times
    shop = Shop()
    once, twice, four = shop.customer(), shop.customer(), shop.customer()
    shop.buy(once, d(2025, 1, 1), 1000)
    shop.buy(twice, d(2025, 1, 1), 2000)
    shop.buy(twice, d(2025, 6, 1), 3000)
    for month in (2, 3, 4, 5):
        shop.buy(four, d(2025, month, 1), 500)
    # when
    headline = kpi(run(AS_OF), "headline")
    # then 2 of 3 became F2, 1 of 3 F3 and F4; 7 purchases, ¥8,000 in all
    assert headline == {
        "customers": 3,
        "purchases": 7,
        "revenue": 8000,
        "revenue_per_customer": 2666.67,
        "f2_customers": 2,
        "f3_customers": 1,
        "f4_customers": 1,
        "f2_share": 0.666667,
        "f3_share": 0.333333,
        "f4_share": 0.333333,
    }


def test_both_repeat_rate_definitions() -> None:
    # given
    shop = Shop()
    p, q, r, s = (shop.customer() for _ in range(4))
    shop.buy(p, d(2025, 3, 1))
    shop.buy(p, d(2025, 3, 15))  # p: new in March, bought twice in March
    shop.buy(q, d(2025, 1, 10))
    shop.buy(q, d(2025, 3, 20))  # q: came back in March, once
    shop.buy(r, d(2025, 3, 5))  # r: new in March, once
    shop.buy(s, d(2024, 12, 20))
    shop.buy(s, d(2025, 3, 10))  # s: a 2024 customer, once in March
    # when
    analytics = run(AS_OF)
    months = kpi(analytics, "repeat_rate_month")
    years = kpi(analytics, "repeat_rate_year")
    # then March: 4 buyers; (a) 2+ purchases in March: p → 1/4; (b) first purchase before
    # March: q and s → 2/4
    march = _by(months, period="2025-03")
    assert (march["buyers"], march["repeat_in_period"], march["bought_before"]) == (4, 1, 2)
    assert (march["rate_a"], march["rate_b"]) == (0.25, 0.5)
    # January: q alone, a first purchase
    assert _by(months, period="2025-01")["rate_a"] == 0.0
    # 2025: 4 buyers; (a) p and q bought twice within 2025 → 2/4; (b) only s started before
    y2025 = _by(years, period="2025")
    assert (y2025["buyers"], y2025["rate_a"], y2025["rate_b"]) == (4, 0.5, 0.25)
    assert _by(years, period="2024")["buyers"] == 1


def test_upgrade_rate_from_trial_to_main_or_subscription() -> None:
    # given
    _windows("30,60,90")
    shop = Shop()
    t1, t2, t3, t4, m1, t5 = (shop.customer() for _ in range(6))
    shop.buy(t1, d(2025, 1, 10), 980, kind=ProductKind.TRIAL)
    shop.buy(t1, d(2025, 2, 1), 4980, kind=ProductKind.MAIN)  # upgraded after 22 days
    shop.buy(t2, d(2025, 1, 12), 980, kind=ProductKind.TRIAL)
    shop.buy(t2, d(2025, 4, 1), 3980, kind=ProductKind.SUBSCRIPTION)  # after 79 days
    shop.buy(t3, d(2025, 1, 15), 980, kind=ProductKind.TRIAL)
    shop.buy(t3, d(2025, 1, 20), 980, kind=ProductKind.TRIAL)  # another trial: no upgrade
    # first order with a trial AND a main product: not a trial-first customer
    shop.buy(t4, d(2025, 1, 20), 980, kind=ProductKind.TRIAL, extra_kind=ProductKind.MAIN)
    shop.buy(m1, d(2025, 1, 5), 4980, kind=ProductKind.MAIN)  # main first: not trial-first
    shop.buy(t5, d(2025, 6, 20), 980, kind=ProductKind.TRIAL)  # June: too young
    # when
    analytics = run(AS_OF)
    rows = kpi(analytics, "upgrade")
    # then January has 3 trial-first customers (t1, t2, t3), all observed ≥ 90 days
    assert [(_by(rows, cohort="2025-01", window_days=n)["upgraded"], n) for n in (30, 60, 90)] == [
        (1, 30),
        (1, 60),
        (2, 90),
    ]
    jan90 = _by(rows, cohort="2025-01", window_days=90)
    assert (jan90["trial_first"], jan90["eligible"], jan90["rate"]) == (3, 3, 0.666667)
    jun30 = _by(rows, cohort="2025-06", window_days=30)
    assert (jun30["trial_first"], jun30["eligible"], jun30["rate"], jun30["complete"]) == (
        1,
        0,
        None,
        False,
    )
    overall90 = _by(kpi(analytics, "upgrade_overall"), window_days=90)
    assert (overall90["trial_first"], overall90["eligible"], overall90["upgraded"]) == (4, 3, 2)


def test_subscription_continuation_by_delivery_and_monthly_churn() -> None:
    # given five subscriptions started on 2025-01-01
    shop = Shop()
    start = d(2025, 1, 1)
    shop.subscribe(shop.customer(), started_on=start, boxes=3)  # S1: still running at 3
    shop.subscribe(shop.customer(), started_on=start, boxes=3, cancelled_on=d(2025, 4, 10))
    shop.subscribe(shop.customer(), started_on=start, boxes=1, cancelled_on=d(2025, 2, 10))
    shop.subscribe(shop.customer(), started_on=start, boxes=5, skipped=1)  # a skip is no box
    shop.subscribe(shop.customer(), started_on=start, boxes=0, cancelled_on=d(2025, 1, 5))
    # when
    analytics = run(AS_OF)
    rows = [row for row in kpi(analytics, "continuation") if row["group"] is None]
    # then box 1 reached by 4; 3 went on to box 2, 1 (S3) cancelled at 1 → 3/4
    # box 2: 3 reached, all 3 reached box 3 → 1.0
    # box 3: S2 cancelled there, S4 went on, S1 is still running (not counted) → 1/2
    # box 4: S4 went on → 1.0; box 5: S4 still running → no rate yet
    assert [(r["delivery"], r["reached"], r["continued"], r["stopped"]) for r in rows] == [
        (1, 4, 3, 1),
        (2, 3, 3, 0),
        (3, 3, 1, 1),
        (4, 1, 1, 0),
        (5, 1, 0, 0),
    ]
    assert [r["rate"] for r in rows] == [0.75, 1.0, 0.5, 1.0, None]
    assert [r["survival"] for r in rows] == [1.0, 0.75, 0.75, 0.375, 0.375]
    assert [r["churn"] for r in rows][:3] == [0.25, 0.0, 0.5]
    # monthly churn: 5 started in January (one cancelled within January: not in the rate);
    # February: 4 running at the start, S3 cancelled → 1/4; April: 3 running, S2 → 1/3
    churn = {row["month"]: row for row in kpi(analytics, "churn_month")}
    assert (churn["2025-01"]["started"], churn["2025-01"]["cancelled"]) == (5, 1)
    assert churn["2025-01"]["churn_rate"] is None
    assert (churn["2025-02"]["running_at_start"], churn["2025-02"]["churn_rate"]) == (4, 0.25)
    assert churn["2025-03"]["churn_rate"] == 0.0
    assert (churn["2025-04"]["running_at_start"], churn["2025-04"]["churn_rate"]) == (3, 0.333333)
    assert churn["2025-06"]["running_at_start"] == 2


def test_cohort_retention_and_cumulative_ltv_by_channel_and_first_product() -> None:
    # given a January cohort of three
    shop = Shop()
    u1 = shop.customer(AcquisitionChannel.WEB_AD)
    u2 = shop.customer(AcquisitionChannel.WEB_AD)
    v1 = shop.customer(AcquisitionChannel.SNS)
    shop.buy(u1, d(2025, 1, 10), 1000)
    shop.buy(u1, d(2025, 2, 5), 2000)
    shop.buy(u1, d(2025, 2, 20), 500)
    shop.buy(u2, d(2025, 1, 20), 3000)
    shop.buy(u2, d(2025, 4, 1), 1000)
    shop.buy(v1, d(2025, 1, 15), 5000, kind=ProductKind.TRIAL)
    # when
    analytics = run(AS_OF)
    everyone = [r for r in kpi(analytics, "cohorts:all") if r["cohort"] == "2025-01"]
    # then months 0–5 (January to June) are all there, June marked as not yet complete
    assert [r["months_since_first"] for r in everyone] == [0, 1, 2, 3, 4, 5]
    assert [r["complete"] for r in everyone] == [True] * 5 + [False]
    # month 0: all 3, ¥9,000; month 1: u1 (¥2,500); month 3: u2 (¥1,000)
    assert [r["active"] for r in everyone] == [3, 1, 0, 1, 0, 0]
    assert [r["retention"] for r in everyone][:4] == [1.0, 0.333333, 0.0, 0.333333]
    assert [r["cumulative_revenue"] for r in everyone] == [9000, 11500, 11500, 12500, 12500, 12500]
    assert [r["ltv"] for r in everyone][:4] == [3000.0, 3833.333333, 3833.333333, 4166.666667]
    web = [r for r in kpi(analytics, "cohorts:channel") if r["group"] == "web"]
    assert [(r["customers"], r["active"], r["ltv"]) for r in web][:4] == [
        (2, 2, 2000.0),
        (2, 1, 3250.0),
        (2, 0, 3250.0),
        (2, 1, 3750.0),
    ]
    sns = [r for r in kpi(analytics, "cohorts:channel") if r["group"] == "sns"]
    assert sns[0]["ltv"] == 5000.0
    by_product = kpi(analytics, "cohorts:first_product")
    assert {r["group"] for r in by_product} == {"本品商品", "トライアル商品"}
    assert _by(by_product, group="トライアル商品", months_since_first=0)["customers"] == 1
    assert _by(by_product, group="本品商品", months_since_first=0)["customers"] == 2


def test_per_customer_snapshot_and_segment_counts_add_up() -> None:
    # given two customers and a cancelled-only customer
    shop = Shop()
    keen, once, cancelled = shop.customer(), shop.customer(), shop.customer()
    shop.buy(keen, d(2024, 6, 1), 40_000)
    shop.buy(keen, d(2025, 6, 1), 40_000)
    shop.buy(once, d(2025, 6, 29), 1001)
    shop.buy(once, d(2025, 6, 29), 1000)
    shop.buy(cancelled, d(2025, 6, 1), 9000, status=OrderStatus.CANCELLED)
    # when
    analytics = run(AS_OF)
    got = scores(analytics)
    # then only buyers get a row; the keen one is 優良 (365 days, ¥80,000)
    assert set(got) == {keen.pk, once.pk}
    assert got[keen.pk].cpm_segment == "loyal_active"
    assert (got[keen.pk].tenure_days, got[keen.pk].days_since_last) == (365, 29)
    assert got[keen.pk].first_purchase_on == d(2024, 6, 1)
    # two orders the same day: count 2, average ¥1,000.5 rounds half up to ¥1,001
    assert (got[once.pk].purchase_count, got[once.pk].avg_spend) == (2, 1001)
    assert got[once.pk].cpm_segment == "toddler_active"
    assert analytics.customers == 2
    cpm = {s.segment: s.customers for s in analytics.segments.filter(kind="cpm")}
    assert cpm == {"loyal_active": 1, "toddler_active": 1}
    assert sum(s.revenue for s in analytics.segments.filter(kind="rfm")) == 82_001
