"""A tiny shop for the analytics tests: customers, orders on chosen JST days, subscriptions.

Rows are written with the ORM directly (no services): the analytics read the tables, and the
tests want exact days and amounts with nothing else in the way.
"""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

from kizuna.analytics.models import AnalyticsRun, CustomerScore, KpiTable
from kizuna.analytics.pipeline.run import run_analytics
from kizuna.commerce.models import Order, OrderLine, OrderStatus, Product, ProductKind
from kizuna.core.audit import Actor
from kizuna.customers.models import AcquisitionChannel, Customer
from kizuna.subscriptions.models import (
    CycleKind,
    DeliveryStatus,
    Subscription,
    SubscriptionDelivery,
    SubscriptionStatus,
)

JST = ZoneInfo("Asia/Tokyo")
ROBOT = Actor.system("analytics-test")


class Shop:
    def __init__(self) -> None:
        self._n = itertools.count(1)
        self.products = {
            kind: Product.objects.create(
                code=f"AN-{kind.value}", name=f"{kind.label}商品", kind=kind, price=1000
            )
            for kind in ProductKind
        }

    def customer(self, channel: AcquisitionChannel = AcquisitionChannel.WEB_AD) -> Customer:
        n = next(self._n)
        return Customer.objects.create(
            family_name="分析",
            given_name=f"{n}",
            acquisition_channel=channel,
            registered_at=dt.datetime(2020, 1, 1, tzinfo=JST),
        )

    def buy(
        self,
        customer: Customer,
        on: dt.date | dt.datetime,
        amount: int = 1000,
        *,
        kind: ProductKind = ProductKind.MAIN,
        status: OrderStatus = OrderStatus.DELIVERED,
        extra_kind: ProductKind | None = None,
    ) -> Order:
        """One order of `amount` yen placed on `on` (a JST date → noon JST, or an aware time)."""
        at = on if isinstance(on, dt.datetime) else dt.datetime.combine(on, dt.time(12), JST)
        order = Order.objects.create(
            number=f"AN{next(self._n):08d}",
            customer=customer,
            ordered_at=at,
            status=status,
            subtotal=amount,
            total=amount,
        )
        kinds = [kind] if extra_kind is None else [kind, extra_kind]
        for index, line_kind in enumerate(kinds):
            # The first line carries the amount; an extra line is a free add-on.
            line_amount = amount if index == 0 else 0
            OrderLine.objects.create(
                order=order,
                product=self.products[line_kind],
                product_name=self.products[line_kind].name,
                unit_price=line_amount,
                quantity=1,
                amount=line_amount,
            )
        return order

    def subscribe(
        self,
        customer: Customer,
        *,
        started_on: dt.date,
        boxes: int,
        skipped: int = 0,
        cancelled_on: dt.date | None = None,
    ) -> Subscription:
        """A subscription with `boxes` delivered boxes (and `skipped` skips after the first)."""
        sub = Subscription.objects.create(
            customer=customer,
            product=self.products[ProductKind.SUBSCRIPTION],
            unit_price=3000,
            cycle_kind=CycleKind.DAYS,
            cycle_days=30,
            started_on=started_on,
            delivery_count=boxes,
            status=SubscriptionStatus.CANCELLED if cancelled_on else SubscriptionStatus.ACTIVE,
            cancelled_on=cancelled_on,
        )
        statuses = [DeliveryStatus.DELIVERED] * min(boxes, 1)
        statuses += [DeliveryStatus.SKIPPED] * skipped
        statuses += [DeliveryStatus.DELIVERED] * max(boxes - 1, 0)
        SubscriptionDelivery.objects.bulk_create(
            SubscriptionDelivery(
                subscription=sub,
                sequence=n,
                scheduled_on=started_on + dt.timedelta(days=30 * (n - 1)),
                status=status,
            )
            for n, status in enumerate(statuses, start=1)
        )
        return sub


def run(as_of: dt.date, backend: str = "duckdb") -> AnalyticsRun:
    return run_analytics(acting_user=ROBOT, as_of=as_of, backend=backend, trigger="test")


def scores(analytics_run: AnalyticsRun) -> dict[int, CustomerScore]:
    return {s.customer_id: s for s in CustomerScore.objects.filter(run=analytics_run)}


def kpi(analytics_run: AnalyticsRun, name: str) -> object:
    return KpiTable.objects.get(run=analytics_run, name=name).rows


def build_varied_shop() -> Shop:
    """A little of everything the pipeline reads: trial → main → subscription paths, same-day
    orders, cancellations and returns, free orders, several channels and cohorts, and orders
    a second either side of midnight JST (15:00 UTC)."""
    shop = Shop()
    d = dt.date
    channels = list(AcquisitionChannel)
    for n in range(24):
        c = shop.customer(channels[n % len(channels)])
        first = d(2024, 1 + n % 12, 1 + (n * 3) % 27)
        shop.buy(c, first, 980 + 10 * n, kind=ProductKind.TRIAL if n % 3 else ProductKind.MAIN)
        if n % 2 == 0:
            shop.buy(c, first + dt.timedelta(days=5 + n), 4980, kind=ProductKind.MAIN)
        if n % 4 == 0:
            shop.buy(c, first + dt.timedelta(days=95 + 7 * n), 40_000 + n)
            shop.buy(c, first + dt.timedelta(days=220 + n), 3980, kind=ProductKind.SUBSCRIPTION)
        if n % 5 == 0:
            shop.buy(c, first + dt.timedelta(days=40), 2000, status=OrderStatus.CANCELLED)
            shop.buy(c, first + dt.timedelta(days=41), 2000, status=OrderStatus.RETURNED)
            shop.buy(c, first + dt.timedelta(days=42), 0, kind=ProductKind.SAMPLE)
        if n % 6 == 0:
            shop.subscribe(
                c,
                started_on=first,
                boxes=1 + n // 6,
                skipped=n % 2,
                cancelled_on=first + dt.timedelta(days=200) if n % 12 == 0 else None,
            )
    late = shop.customer(AcquisitionChannel.LINE)
    shop.buy(late, dt.datetime(2025, 3, 31, 23, 59, 59, tzinfo=JST), 1500)
    shop.buy(late, dt.datetime(2025, 4, 1, 0, 0, 0, tzinfo=JST), 1500)
    shop.buy(late, dt.datetime(2025, 6, 30, 23, 59, 59, tzinfo=JST), 1500)
    shop.buy(late, dt.datetime(2025, 7, 1, 0, 0, 0, tzinfo=JST), 1500)  # after as-of
    return shop
