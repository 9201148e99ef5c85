"""The customer page's 定期 changes besides 解約: pause, resume, next delivery date, cycle — each
on a confirmation page — and the cancel page's gentler options, その他 needing a note, and one
date style in the messages and timeline."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import Role
from kizuna.core.models import AuditLog
from kizuna.customers.models import Customer
from kizuna.subscriptions.models import (
    CancelReason,
    CycleKind,
    DeliveryStatus,
    Subscription,
    SubscriptionDelivery,
    SubscriptionStatus,
)
from kizuna.subscriptions.services import subscription_cancel, subscription_pause
from tests.factories import make_customer, make_order, make_subscription

pytestmark = pytest.mark.django_db

Login = Callable[[Role], Client]


def _jday(day: dt.date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def _url(name: str, sub: Subscription) -> str:
    return reverse(f"web:{name}", args=[sub.customer_id, sub.pk])


def _card(client: Client, customer: Customer) -> str:
    html = client.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    match = re.search(r'<section class="card" id="subscriptions">(.*?)</section>', html, re.S)
    assert match
    return match.group(1)


def _titles(customer: Customer) -> list[str]:
    return list(customer.timeline.order_by("pk").values_list("title", flat=True))


def test_card_offers_the_actions_of_each_state(client_for: Login) -> None:
    # given a running, a paused and a cancelled subscription
    customer = make_customer()
    running = make_subscription(customer)
    paused = make_subscription(
        customer,
        status=SubscriptionStatus.PAUSED,
        paused_until=timezone.localdate() + dt.timedelta(days=20),
    )
    ended = make_subscription(customer, status=SubscriptionStatus.CANCELLED)
    # when the operator opens the page
    html = _card(client_for(Role.OPERATOR), customer)
    # then each has the actions that apply to it
    for name in ("pause", "next_delivery", "cycle", "cancel"):
        assert _url(f"subscription_{name}", running) in html
    assert _url("subscription_resume", running) not in html
    for name in ("resume", "pause", "cycle", "cancel"):
        assert _url(f"subscription_{name}", paused) in html
    assert _url("subscription_next_delivery", paused) not in html
    assert f"/subscriptions/{ended.pk}/" not in html
    assert ">再開する</a>" in html
    # a marketer sees none of them
    assert _url("subscription_pause", running) not in _card(client_for(Role.MARKETER), customer)


def test_pause_then_resume(client_for: Login) -> None:
    # given
    customer = make_customer()
    sub = make_subscription(customer)
    operator = client_for(Role.OPERATOR)
    today = timezone.localdate()
    until = today + dt.timedelta(days=40)
    page = operator.get(_url("subscription_pause", sub))
    assert page.status_code == 200
    assert "受注済みのお届けは、この変更では変わりません" in page.content.decode()
    # when a past date is typed, the service's refusal is shown and the input kept
    bad = operator.post(_url("subscription_pause", sub), {"until": today.isoformat()})
    assert bad.status_code == 422
    assert "休止期限は明日以降の日付にしてください" in bad.content.decode()
    assert f'value="{today.isoformat()}"' in bad.content.decode()
    # when a good date is given
    done = operator.post(_url("subscription_pause", sub), {"until": until.isoformat()}, follow=True)
    # then
    assert f"{_jday(until)}まで休止しました" in done.content.decode()
    assert done.redirect_chain[-1][0].endswith("#subscriptions")
    sub.refresh_from_db()
    assert (sub.status, sub.paused_until, sub.next_delivery_on) == ("paused", until, until)
    assert AuditLog.objects.filter(action="subscription.pause", customer_id=customer.pk).exists()
    assert f"({_jday(until)}まで)" in _titles(customer)[-1]
    # and resume
    back = today + dt.timedelta(days=3)
    done = operator.post(
        _url("subscription_resume", sub), {"next_delivery_on": back.isoformat()}, follow=True
    )
    assert f"再開しました(次回お届け予定日 {_jday(back)})" in done.content.decode()
    sub.refresh_from_db()
    assert (sub.status, sub.paused_until, sub.next_delivery_on) == ("active", None, back)
    assert _titles(customer)[-1].endswith(f"(次回 {_jday(back)})")
    # a running one is not resumed
    refused = operator.post(_url("subscription_resume", sub), {"next_delivery_on": back})
    assert refused.status_code == 409
    assert "休止中ではない" in refused.content.decode()


def test_next_delivery_and_cycle(client_for: Login) -> None:
    # given a subscription with a box already ordered
    customer = make_customer()
    sub = make_subscription(customer)
    order = make_order(customer)
    SubscriptionDelivery.objects.create(
        subscription=sub,
        sequence=1,
        scheduled_on=timezone.localdate(),
        status=DeliveryStatus.SCHEDULED,
        order=order,
    )
    operator = client_for(Role.OPERATOR)
    page = operator.get(_url("subscription_next_delivery", sub)).content.decode()
    assert f"1回目(注文 {order.number})はすでに受注済みのため、この変更に関係なく" in page
    later = timezone.localdate() + dt.timedelta(days=45)
    # when
    done = operator.post(
        _url("subscription_next_delivery", sub), {"next_delivery_on": later}, follow=True
    )
    # then
    assert f"次回お届け予定日を{_jday(later)}に変更しました" in done.content.decode()
    sub.refresh_from_db()
    assert sub.next_delivery_on == later
    # a cycle out of range is refused in Japanese, input kept
    bad = operator.post(_url("subscription_cycle", sub), {"cycle_kind": "days", "cycle_days": 3})
    assert bad.status_code == 422
    assert "周期(日)は7〜180日で指定してください" in bad.content.decode()
    assert 'value="3"' in bad.content.decode()
    done = operator.post(
        _url("subscription_cycle", sub),
        {"cycle_kind": "monthly_day", "monthly_day": 10},
        follow=True,
    )
    assert "周期を「毎月10日」に変更しました" in done.content.decode()
    sub.refresh_from_db()
    assert (sub.cycle_kind, sub.monthly_day, sub.cycle_days) == (CycleKind.MONTHLY_DAY, 10, None)
    assert (
        AuditLog.objects.filter(action="subscription.update", customer_id=customer.pk).count() == 2
    )


def test_changes_refused_once_cancelled_and_for_marketers(client_for: Login) -> None:
    customer = make_customer()
    ended = make_subscription(customer, status=SubscriptionStatus.CANCELLED)
    operator = client_for(Role.OPERATOR)
    page = operator.get(_url("subscription_cycle", ended)).content.decode()
    assert "解約済みです" in page
    assert f'action="{_url("subscription_cycle", ended)}"' not in page
    assert (
        operator.post(_url("subscription_pause", ended), {"until": "2099-01-01"}).status_code == 409
    )
    running = make_subscription(customer)
    assert client_for(Role.MARKETER).get(_url("subscription_pause", running)).status_code == 403


def test_cancel_page_offers_pause_and_next_delivery(client_for: Login) -> None:
    customer = make_customer()
    sub = make_subscription(customer, commitment_count=3)
    page = client_for(Role.OPERATOR).get(_url("subscription_cancel", sub)).content.decode()
    pause_at = page.index(_url("subscription_pause", sub))
    assert page.index(_url("subscription_next_delivery", sub)) < page.index(
        "この定期購入を解約する"
    )
    assert pause_at < page.index("この定期購入を解約する")
    assert "休止にする" in page


def test_other_reason_needs_a_note(client_for: Login) -> None:
    customer = make_customer()
    sub = make_subscription(customer)
    operator = client_for(Role.OPERATOR)
    refused = operator.post(_url("subscription_cancel", sub), {"reason": "other", "note": "  "})
    assert refused.status_code == 422
    assert "「その他」を選んだときは、解約メモに理由を書いてください" in refused.content.decode()
    sub.refresh_from_db()
    assert sub.status == SubscriptionStatus.ACTIVE
    done = operator.post(_url("subscription_cancel", sub), {"reason": "other", "note": "転居"})
    assert done.status_code == 302


def test_cancelled_after_pause_hides_the_pause_end(client_for: Login, users) -> None:  # type: ignore[no-untyped-def]
    customer = make_customer()
    sub = make_subscription(customer)
    until = timezone.localdate() + dt.timedelta(days=10)
    subscription_pause(subscription=sub, until=until, acting_user=users[Role.OPERATOR])
    subscription_cancel(
        subscription=sub, reason=CancelReason.PRICE, acting_user=users[Role.OPERATOR]
    )
    sub.refresh_from_db()
    assert sub.paused_until is None
    # and a row written before this change (paused_until kept) is not shown either
    Subscription.objects.filter(pk=sub.pk).update(paused_until=until)
    card = _card(client_for(Role.OPERATOR), customer)
    assert "休止期限" not in card
    assert "解約日" in card


def test_cancelling_twice_says_it_once_in_japanese_dates(client_for: Login) -> None:
    customer = make_customer()
    sub = make_subscription(customer, status=SubscriptionStatus.CANCELLED)
    again = client_for(Role.OPERATOR).post(_url("subscription_cancel", sub), {"reason": "price"})
    assert again.status_code == 409
    html = again.content.decode()
    assert html.count("解約済みです") == 1
    assert f"{_jday(sub.cancelled_on)}に解約済みです" in html  # type: ignore[arg-type]
    assert not re.search(r"\d{4}-\d{2}-\d{2}に解約済み", html)
