"""Cancelling a 定期: what it leaves of its deliveries, its audit row, and the customer page."""

from __future__ import annotations

import datetime as dt
import importlib
import re
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import Role, User
from kizuna.commerce.models import Order
from kizuna.core.append_only import REDACTED
from kizuna.core.models import AuditLog
from kizuna.customers.models import Customer
from kizuna.customers.privacy import customer_erase
from kizuna.subscriptions.models import (
    DeliveryStatus,
    Subscription,
    SubscriptionDelivery,
    SubscriptionStatus,
)
from tests.factories import make_customer, make_order, make_subscription

pytestmark = pytest.mark.django_db


def _deliver(
    sub: Subscription, sequence: int, status: DeliveryStatus, order: Order | None = None
) -> SubscriptionDelivery:
    return SubscriptionDelivery.objects.create(
        subscription=sub,
        sequence=sequence,
        scheduled_on=dt.date(2026, 9, 1) + dt.timedelta(days=30 * (sequence - 1)),
        status=status,
        order=order,
    )


def _section(client: Client, customer: Customer) -> str:
    response = client.get(reverse("web:customer_detail", args=[customer.pk]))
    assert response.status_code == 200
    match = re.search(
        r'<section class="card" id="subscriptions">(.*?)</section>', response.content.decode(), re.S
    )
    assert match
    return match.group(1)


def _row(html: str, sequence: int) -> str:
    match = re.search(rf"<tr><td[^>]*>{sequence}回目</td>.*?</tr>", html, re.S)
    assert match, f"{sequence}回目 missing"
    return match.group(0)


def test_cancel_stops_the_deliveries_not_yet_ordered(
    client_for: Callable[[Role], Client],
) -> None:
    """After a cancellation the page must not list a box as 予定 that will never come (an
    operator would tell the caller it is still coming); one already ordered still ships."""
    customer = make_customer()
    sub = make_subscription(customer, delivery_count=1)
    _deliver(sub, 1, DeliveryStatus.DELIVERED)
    ordered = make_order(customer, number="KZ-ORDERED")
    _deliver(sub, 2, DeliveryStatus.SCHEDULED, ordered)
    _deliver(sub, 3, DeliveryStatus.SCHEDULED)
    operator = client_for(Role.OPERATOR)
    assert "予定" in _row(_section(operator, customer), 3)
    # when
    url = reverse("web:subscription_cancel", args=[customer.pk, sub.pk])
    assert operator.post(url, {"reason": "price"}).status_code == 302
    # then
    statuses = dict(sub.deliveries.values_list("sequence", "status"))
    assert statuses == {
        1: DeliveryStatus.DELIVERED,
        2: DeliveryStatus.SCHEDULED,  # ordered: it ships unless the order is cancelled
        3: DeliveryStatus.CANCELLED,
    }
    html = _section(operator, customer)
    assert "中止(解約)" in _row(html, 3)
    assert "予定" not in _row(html, 3)
    assert "KZ-ORDERED" in _row(html, 2)
    row = AuditLog.objects.get(action="subscription.cancel", customer_id=customer.pk)
    assert row.changes["cancelled_deliveries"] == [None, "3"]


def test_migration_marks_leftover_deliveries_of_cancelled_subscriptions() -> None:
    customer = make_customer()
    gone = make_subscription(customer, status=SubscriptionStatus.CANCELLED)
    _deliver(gone, 1, DeliveryStatus.DELIVERED)
    _deliver(gone, 2, DeliveryStatus.SCHEDULED, make_order(customer))
    _deliver(gone, 3, DeliveryStatus.SCHEDULED)
    running = make_subscription(customer, next_delivery_on=timezone.localdate())
    _deliver(running, 1, DeliveryStatus.SCHEDULED)
    migration = importlib.import_module(
        "kizuna.subscriptions.migrations.0002_delivery_cancelled_status"
    )

    # The function reads only the editor's connection (a schema editor cannot open inside
    # the test's transaction on SQLite).
    migration.cancel_leftover_deliveries(apps, SimpleNamespace(connection=connection))

    assert dict(gone.deliveries.values_list("sequence", "status")) == {
        1: DeliveryStatus.DELIVERED,
        2: DeliveryStatus.SCHEDULED,
        3: DeliveryStatus.CANCELLED,
    }
    assert running.deliveries.get().status == DeliveryStatus.SCHEDULED


def _ordered_then_planned(customer: Customer) -> tuple[Subscription, Order]:
    """2 boxes delivered (one skip between), the 4th ordered and not shipped, the 5th planned."""
    sub = make_subscription(
        customer, delivery_count=2, next_delivery_on=dt.date(2026, 12, 27), commitment_count=0
    )
    _deliver(sub, 1, DeliveryStatus.DELIVERED)
    _deliver(sub, 2, DeliveryStatus.SKIPPED)
    _deliver(sub, 3, DeliveryStatus.DELIVERED)
    order = make_order(customer, number="KZ00002991")
    coming = _deliver(sub, 4, DeliveryStatus.SCHEDULED, order)
    SubscriptionDelivery.objects.filter(pk=coming.pk).update(scheduled_on=dt.date(2026, 11, 27))
    _deliver(sub, 5, DeliveryStatus.SCHEDULED)
    SubscriptionDelivery.objects.filter(subscription=sub, sequence=5).update(
        scheduled_on=dt.date(2026, 12, 27)
    )
    return sub, order


def test_next_delivery_is_the_box_already_ordered(client_for: Callable[[Role], Client]) -> None:
    """Asked 「次はいつ届く?」 the operator reads 次回: the box already ordered (4回目, 11/27)
    comes before the next one to be ordered (5回目, 12/27), in the summary and in the table."""
    customer = make_customer()
    _ordered_then_planned(customer)

    html = _section(client_for(Role.OPERATOR), customer)

    assert "2回(次回 4回目)" in html
    assert "2026年11月27日" in html.split("<table")[0]
    assert "受注済・未出荷" in html.split("<table")[0]
    assert "その次は2026年12月27日" in html
    assert "受注済・未出荷" in _row(html, 4)
    assert "次回" in _row(html, 4)
    assert "次回" not in _row(html, 5)
    assert "予定" in _row(html, 5)


def test_a_box_ordered_before_the_cancellation_still_shows_as_coming(
    client_for: Callable[[Role], Client],
) -> None:
    customer = make_customer()
    sub, _ = _ordered_then_planned(customer)
    operator = client_for(Role.OPERATOR)
    url = reverse("web:subscription_cancel", args=[customer.pk, sub.pk])
    # the confirmation page warns that the ordered box ships anyway, and how to stop it
    confirm = operator.get(url).content.decode()
    assert "4回目(注文 KZ00002991)はすでに受注済みのため、解約してもお届けされます" in confirm
    assert "カートで注文をキャンセルしてください" in confirm

    assert operator.post(url, {"reason": "surplus"}).status_code == 302

    html = _section(operator, customer)
    assert "2回(次回 4回目)" in html
    assert "解約前の注文のためお届けされます" in html
    assert "中止(解約)" in _row(html, 5)
    assert "次回" not in _row(html, 5)


def test_cancel_audit_records_the_note_and_erasure_redacts_it(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    """RELIABILITY D3: the cancellation's audit row says what changed, old → new, the note
    too; the note may name the person (家族の介護で…), so an erasure redacts it there."""
    customer = make_customer()
    sub = make_subscription(customer)
    url = reverse("web:subscription_cancel", args=[customer.pk, sub.pk])
    note = "山田様、母の介護のため"
    client_for(Role.OPERATOR).post(url, {"reason": "moving", "note": note})

    row = AuditLog.objects.get(action="subscription.cancel", customer_id=customer.pk)
    assert row.changes["cancel_note"] == ["", note]
    assert row.changes["cancel_reason"] == ["", "moving"]

    customer_erase(customer=customer, acting_user=users[Role.ADMIN], reason="受付番号 1")

    row.refresh_from_db()
    assert row.changes["cancel_note"] == [REDACTED, REDACTED]
    assert note not in str(AuditLog.objects.filter(customer_id=customer.pk).values("changes"))
