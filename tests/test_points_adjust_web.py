"""ポイントを調整する: the contact center grants goodwill points or corrects a balance from the
customer page — within the operator's limit, with a reason, once per click, audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import Role, User
from kizuna.core.models import AuditLog
from kizuna.customers.merge import customer_merge
from kizuna.customers.models import Customer
from kizuna.loyalty.models import PointEntry, PointKind
from kizuna.loyalty.selectors import points_balance
from kizuna.loyalty.services import points_earn, points_expiry
from tests.factories import make_customer
from tests.pages import form_token

pytestmark = pytest.mark.django_db
ClientFor = Callable[[Role], Client]


def url(customer: Customer) -> str:
    return reverse("web:points_adjust", args=[customer.pk])


def adjust(client: Client, customer: Customer, amount: object, reason: str = "配送遅延のお詫び",  # type: ignore[no-untyped-def]
           expires_on: str = ""):  # fmt: skip
    data = {"amount": amount, "reason": reason, "expires_on": expires_on,
            "form_token": form_token(client, url(customer))}  # fmt: skip
    return client.post(url(customer), data, follow=True), data


def test_an_operator_grants_goodwill_points_from_the_customer_page(client_for: ClientFor) -> None:
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    page = operator.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    assert url(customer) in page
    response, _ = adjust(operator, customer, 500)
    assert "ポイントを+500pt調整しました(残高 500pt)" in response.content.decode()
    entry = PointEntry.objects.get(customer=customer)
    assert (entry.kind, entry.amount, entry.reason) == (PointKind.ADJUST, 500, "配送遅延のお詫び")
    assert AuditLog.objects.filter(action="points.adjust", customer_id=customer.pk).exists()


def test_granted_points_expire_on_the_date_the_form_offers_or_the_one_chosen(
    client_for: ClientFor,
) -> None:
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    usual = points_expiry()
    page = operator.get(url(customer)).content.decode()
    assert f'name="expires_on" value="{usual.isoformat()}"' in page
    assert "付与(プラス)のときだけ使います" in page
    chosen = timezone.localdate() + dt.timedelta(days=90)
    adjust(operator, customer, 300, expires_on=usual.isoformat())
    adjust(operator, customer, 200, expires_on=chosen.isoformat())
    # a deduction posts the prefilled date too; it is not applied there
    adjust(operator, customer, -100, reason="誤付与の取り消し", expires_on=usual.isoformat())
    entries = PointEntry.objects.filter(customer=customer).order_by("seq")
    assert [(e.amount, e.expires_on) for e in entries] == [
        (300, usual),
        (200, chosen),
        (-100, None),
    ]
    history = operator.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    assert f"{chosen.year}年{chosen.month}月{chosen.day}日" in history


def test_an_expiry_of_today_is_refused_with_the_input_kept(client_for: ClientFor) -> None:
    customer = make_customer()
    today = timezone.localdate().isoformat()
    response, _ = adjust(client_for(Role.OPERATOR), customer, 500, reason="お詫び(特別対応)",
                         expires_on=today)  # fmt: skip
    page = response.content.decode()
    assert response.status_code == 400
    assert "有効期限は明日以降の日付を指定してください" in page
    assert 'value="お詫び(特別対応)"' in page
    assert 'name="amount" value="500"' in page
    assert f'name="expires_on" value="{today}"' in page
    assert not PointEntry.objects.exists()


def test_a_double_click_adjusts_once(client_for: ClientFor) -> None:
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    _, data = adjust(operator, customer, 300)
    again = operator.post(url(customer), data, follow=True).content.decode()
    assert "ポイントは一度だけ調整されています" in again
    assert points_balance(customer) == 300


def test_the_operator_limit_and_bad_input_are_refused_with_the_input_kept(
    client_for: ClientFor, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.KIZUNA_OPERATOR_POINTS_LIMIT = 1000
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    for amount, message in (
        (1001, "一度に調整できるのは±1,000ptまでです"),
        (0, "0は入力できません"),
        ("五百", "整数で入力してください"),
    ):
        response, _ = adjust(operator, customer, amount, reason="お詫び(特別対応)")
        page = response.content.decode()
        assert response.status_code == 400
        assert message in page
        assert 'value="お詫び(特別対応)"' in page
    response, _ = adjust(operator, customer, 100, reason="")
    assert "調整の理由を入力してください" in response.content.decode()
    assert not PointEntry.objects.exists()


def test_an_admin_may_adjust_beyond_the_operator_limit(client_for: ClientFor) -> None:
    customer = make_customer()
    adjust(client_for(Role.ADMIN), customer, 5000, reason="移行時の残高訂正")
    assert points_balance(customer) == 5000


def test_a_deduction_larger_than_the_balance_is_refused(
    client_for: ClientFor, users: dict[Role, User]
) -> None:
    customer = make_customer()
    points_earn(customer=customer, amount=200, acting_user=users[Role.ADMIN], reason="購入")
    response, _ = adjust(client_for(Role.OPERATOR), customer, -300, reason="誤付与の取り消し")
    assert "ポイント残高が足りません(残高 200 pt、必要 300 pt)" in response.content.decode()
    assert points_balance(customer) == 200


def test_a_merged_away_record_sends_the_operator_to_its_survivor(
    client_for: ClientFor, users: dict[Role, User]
) -> None:
    survivor, absorbed = make_customer(), make_customer(given_name="はな")
    customer_merge(survivor=survivor, absorbed=absorbed, acting_user=users[Role.ADMIN])
    response = client_for(Role.OPERATOR).get(url(absorbed))
    assert response["Location"] == url(survivor)


def test_marketers_see_points_but_do_not_adjust(client_for: ClientFor) -> None:
    customer = make_customer()
    marketer = client_for(Role.MARKETER)
    page = marketer.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    assert url(customer) not in page
    assert marketer.get(url(customer)).status_code == 403
