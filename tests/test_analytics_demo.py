"""End to end on the demo shop: build 1,000 customers, run the analytics, and check that the
snapshot agrees with the operational tables and tells the demo's story."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db.models import Sum

from kizuna.analytics.models import CustomerScore, KpiTable, RunStatus, SegmentCount
from kizuna.analytics.pipeline.segments import CPM_SEGMENTS
from kizuna.commerce.models import Order, OrderStatus
from kizuna.demo.build import build_demo
from tests.analytics_shop import run

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
AS_OF = dt.date(2025, 6, 30)


def test_the_demo_shops_snapshot_is_coherent() -> None:
    # given the demo shop
    build_demo(customers=1_000, seed=11, as_of=AS_OF)
    purchases = Order.objects.exclude(
        status__in=[OrderStatus.CANCELLED, OrderStatus.RETURNED]
    ).filter(subtotal__gt=0)
    buyers = purchases.values("customer_id").distinct().count()
    # when
    analytics = run(AS_OF)
    # then every customer with a purchase has one row and a CPM segment
    assert analytics.status == RunStatus.DONE
    scores = CustomerScore.objects.filter(run=analytics)
    assert scores.count() == analytics.customers == buyers
    assert set(scores.values_list("cpm_segment", flat=True)) <= set(CPM_SEGMENTS)
    # the counts and the money add up to the operational tables
    cpm = SegmentCount.objects.filter(run=analytics, kind="cpm")
    assert sum(s.customers for s in cpm) == buyers
    revenue = purchases.aggregate(total=Sum("total"))["total"]
    assert sum(s.revenue for s in cpm) == revenue
    assert scores.aggregate(n=Sum("purchase_count"))["n"] == purchases.count()
    headline = KpiTable.objects.get(run=analytics, name="headline").rows
    assert (headline["purchases"], headline["revenue"]) == (purchases.count(), revenue)
    # the demo's story: about 30% of customers buy a second time
    assert 0.2 <= headline["f2_share"] <= 0.4
    # and the models produced predictions for everyone
    assert not scores.filter(p_alive__isnull=True).exists()
    assert analytics.predictions["params"]["converged"]
