"""同梱物 (inserts): a leaflet the warehouse packs into the customer's next parcel. It can only
go into a parcel that has not left yet, so the worker puts it on the warehouse list with an
order that is not cancelled or returned and has not shipped, and skips it, with the reason,
when there is none."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from kizuna.accounts.models import Role
from kizuna.campaigns.consent_checks import Audience
from kizuna.campaigns.delivery import DeliveryWorker
from kizuna.campaigns.models import Channel, DeliveryList, OutboxMessage, OutboxStatus
from kizuna.commerce.models import Order, OrderStatus, Shipment
from kizuna.customers.models import Customer
from tests.delivery_support import mail, open_all_day
from tests.factories import make_customer, make_order

pytestmark = pytest.mark.django_db
LEAFLET = {"title": "次回のお届けに同封", "text": "使い方ガイドとサンプルのご案内"}


@pytest.fixture(autouse=True)
def _setup() -> None:
    open_all_day()


def delivered_order(customer: Customer, number: str, *, days_ago: int) -> Order:
    """An order that was shipped and delivered `days_ago` days ago, with its tracking number."""
    ordered_at = timezone.now() - dt.timedelta(days=days_ago + 2)
    order = make_order(customer, number=number, ordered_at=ordered_at)
    shipped_on = timezone.localdate() - dt.timedelta(days=days_ago + 1)
    Shipment.objects.create(
        order=order,
        shipped_on=shipped_on,
        delivered_on=shipped_on + dt.timedelta(days=1),
        tracking_number=f"4000-{number[-4:]}-0000",
    )
    Order.objects.filter(pk=order.pk).update(status=OrderStatus.DELIVERED)
    return order


def warehouse_rows(client: Client) -> list[list[str]]:
    delivery_list = DeliveryList.objects.get(channel=Channel.INSERT)
    response = client.get(f"/delivery/lists/{delivery_list.pk}.csv")
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))[1:]


def test_a_scenario_insert_goes_only_into_a_parcel_not_yet_shipped(client_for) -> None:  # type: ignore[no-untyped-def]
    # given: a customer whose latest order was delivered 22 months ago
    lapsed = make_customer(family_name="休眠")
    delivered_order(lapsed, "KZ-0001", days_ago=670)
    # and one whose latest order was cancelled (an older one was delivered)
    cancelled = make_customer(family_name="取消")
    delivered_order(cancelled, "KZ-0002", days_ago=90)
    Order.objects.filter(pk=make_order(cancelled, number="KZ-0003").pk).update(
        status=OrderStatus.CANCELLED
    )
    # and one who ordered yesterday, not shipped yet (after an order delivered last month)
    waiting = make_customer(family_name="出荷待ち")
    delivered_order(waiting, "KZ-0004", days_ago=30)
    make_order(waiting, number="KZ-0005", ordered_at=timezone.now() - dt.timedelta(days=1))
    # when: a scenario step queues an insert (no order number) for each and the worker runs
    for customer in (lapsed, cancelled, waiting):
        mail(customer, f"insert-{customer.pk}", channel="insert", content=LEAFLET)
    DeliveryWorker().drain()
    # then: the warehouse list has one row, the parcel still to be packed, with no tracking
    # number yet
    rows = warehouse_rows(client_for(Role.MARKETER))
    assert [row[:3] for row in rows] == [[str(waiting.pk), "KZ-0005", ""]]
    # and the other two are skipped with the reason, not marked sent into a list
    for customer in (lapsed, cancelled):
        message = OutboxMessage.objects.get(customer=customer)
        assert message.status == OutboxStatus.SKIPPED
        assert message.reason == "同梱できる未出荷の注文がありません"
        assert message.delivery_list_id is None


def test_an_insert_for_a_named_order_needs_the_customers_own_unshipped_order(client_for) -> None:  # type: ignore[no-untyped-def]
    # given: a customer with an order to be packed, a cancelled one, one already shipped and
    # one the cart reports shipped before the warehouse's shipment file arrived
    buyer = make_customer(family_name="指定")
    make_order(buyer, number="KZ-1001")
    Order.objects.filter(pk=make_order(buyer, number="KZ-1002").pk).update(
        status=OrderStatus.CANCELLED
    )
    delivered_order(buyer, "KZ-1003", days_ago=3)
    Order.objects.filter(pk=make_order(buyer, number="KZ-1004").pk).update(
        status=OrderStatus.SHIPPED
    )
    # and another customer's unshipped order
    make_order(make_customer(family_name="他人"), number="KZ-1005")
    # when: inserts name each of those orders, and one that does not exist
    numbers = ["KZ-1001", "KZ-1002", "KZ-1003", "KZ-1004", "KZ-1005", "KZ-9999"]
    for number in numbers:
        mail(
            buyer, f"insert-{number}", channel="insert", content={**LEAFLET, "order_number": number}
        )
    DeliveryWorker().drain()
    # then: only the customer's own unshipped order gets the leaflet
    rows = warehouse_rows(client_for(Role.MARKETER))
    assert [row[:3] for row in rows] == [[str(buyer.pk), "KZ-1001", ""]]
    refused = OutboxMessage.objects.exclude(dedupe_key="insert-KZ-1001")
    assert set(refused.values_list("status", "reason")) == {
        (OutboxStatus.SKIPPED, "同梱できる未出荷の注文がありません")
    }


def test_the_orders_of_a_batch_of_inserts_are_read_in_one_query() -> None:
    # given: customers with an unshipped order each (the worker claims hundreds at a time)
    customers = [make_customer() for _ in range(12)]
    for customer in customers:
        make_order(customer)

    def queries(batch: list[Customer]) -> int:
        with CaptureQueriesContext(connection) as captured:
            audience = Audience.load([c.pk for c in batch], with_orders=[c.pk for c in batch])
            for customer in batch:
                # one message without an order number, one naming the order
                assert audience.address(customer, Channel.INSERT, dict(LEAFLET))
                number = audience.address(customer, Channel.INSERT, dict(LEAFLET))
                assert audience.address(customer, Channel.INSERT, {"order_number": number})
        return len(captured)

    # when / then: twelve customers cost the queries two do
    assert queries(customers) == queries(customers[:2])


def test_a_batch_with_only_named_orders_still_checks_them() -> None:
    # given: a batch whose only insert names its order (the worker then asks for no orders)
    customer = make_customer()
    make_order(customer, number="KZ-3001")
    Order.objects.filter(pk=make_order(customer, number="KZ-3002").pk).update(
        status=OrderStatus.CANCELLED
    )
    audience = Audience.load([customer.pk])
    # when / then: the named orders are checked all the same
    assert audience.address(customer, Channel.INSERT, {"order_number": "KZ-3001"}) == "KZ-3001"
    assert audience.address(customer, Channel.INSERT, {"order_number": "KZ-3002"}) == ""
    problem = audience.problem(customer, Channel.INSERT, marketing=True, address="")
    assert problem == "同梱できる未出荷の注文がありません"
