"""Recording a contact from the customer page (「問い合わせを記録」): the service's checks, the
form's one-time token, erased and merged-away records, and who may do it."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import Role, User
from kizuna.customers.models import Customer, TimelineEvent, TimelineKind
from kizuna.customers.privacy import customer_erase
from kizuna.support.models import Contact, ContactChannel, Direction
from kizuna.support.services import contact_record
from tests.factories import make_customer
from tests.pages import form_token

pytestmark = pytest.mark.django_db


def _data(token: str, **fields: str) -> dict[str, str]:
    now = timezone.localtime().strftime("%Y-%m-%dT%H:%M")
    return {
        "form_token": token,
        "channel": "phone",
        "direction": "inbound",
        "occurred_at": now,
        "reason": "配送の問い合わせ",
        "summary": "お届け日の確認",
        "body": "来週の火曜に届くか確認したいとのこと。",
        **fields,
    }


def _contacts_card(client: Client, customer: Customer) -> str:
    html = client.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    match = re.search(r'<section class="card" id="contacts">(.*?)</section>', html, re.S)
    assert match
    return match.group(1)


def test_operator_records_a_contact_seen_on_the_customer_page(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    url = reverse("web:contact_new", args=[customer.pk])
    assert f'href="{url}"' in _contacts_card(operator, customer)
    response = operator.post(url, _data(form_token(operator, url)), follow=True)
    assert response.redirect_chain[-1][0].endswith(
        reverse("web:customer_detail", args=[customer.pk]) + "#contacts"
    )
    html = response.content.decode()
    assert "問い合わせを記録しました。" in html
    contact = Contact.objects.get(customer=customer)
    assert contact.operator == users[Role.OPERATOR]
    assert contact.reason == "配送の問い合わせ"
    assert "お届け日の確認" in _contacts_card(operator, customer)
    assert TimelineEvent.objects.filter(customer=customer, kind=TimelineKind.CONTACT).count() == 1


def test_a_second_send_of_the_form_records_one_contact(
    client_for: Callable[[Role], Client],
) -> None:
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    url = reverse("web:contact_new", args=[customer.pk])
    data = _data(form_token(operator, url))
    assert operator.post(url, data).status_code == 302
    again = operator.post(url, data, follow=True)
    assert "すでに送信済み" in again.content.decode()
    assert Contact.objects.filter(customer=customer).count() == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"summary": "  "}, "要約を入力してください"),
        ({"summary": "あ" * 201}, "要約は200文字以内で入力してください"),
        ({"reason": "あ" * 101}, "問い合わせ理由は100文字以内で入力してください"),
        ({"body": "あ" * 5001}, "内容は5,000文字以内で入力してください"),
        ({"occurred_at": "2099-01-01T10:00"}, "日時が未来になっています"),
        ({"occurred_at": "1999-12-31T10:00"}, "日時は2000年1月1日以降を入力してください"),
        ({"occurred_at": "きのう"}, "日時は「2024-04-01 10:30」の形で入力してください"),
        ({"channel": "fax"}, "チャネルを一覧から選んでください"),
    ],
)
def test_a_refused_contact_says_why_and_keeps_the_input(
    client_for: Callable[[Role], Client], fields: dict[str, str], message: str
) -> None:
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    url = reverse("web:contact_new", args=[customer.pk])
    response = operator.post(url, _data(form_token(operator, url), **fields))
    assert response.status_code == 422
    html = response.content.decode()
    assert message in html
    kept = "お届け日の確認" if "body" in fields else "来週の火曜に届くか確認したいとのこと。"
    assert kept in html
    assert not Contact.objects.filter(customer=customer).exists()


def test_the_service_checks_every_caller() -> None:
    customer = make_customer()
    with pytest.raises(ValidationError) as refused:
        contact_record(
            customer=customer,
            channel=ContactChannel.PHONE,
            direction=Direction.INBOUND,
            summary="x" * 201,
            at=timezone.now() + dt.timedelta(hours=2),
            acting_user=None,
        )
    assert set(refused.value.error_dict) == {"summary", "occurred_at"}
    # A few minutes ahead (a clock a little fast) is taken.
    contact_record(
        customer=customer,
        channel=ContactChannel.PHONE,
        direction=Direction.INBOUND,
        summary="ok",
        at=timezone.now() + dt.timedelta(minutes=3),
        acting_user=None,
    )


def test_reasons_used_in_the_shop_are_offered(client_for: Callable[[Role], Client]) -> None:
    other = make_customer(family_name="佐藤")
    contact_record(
        customer=other,
        channel=ContactChannel.EMAIL,
        direction=Direction.INBOUND,
        summary="s",
        reason="返品・交換",
        acting_user=None,
    )
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    html = operator.get(reverse("web:contact_new", args=[customer.pk])).content.decode()
    assert re.search(r'<datalist id="contact-reasons"><option value="返品・交換">', html)
    assert 'list="contact-reasons"' in html


def test_an_erased_customer_takes_no_contact(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    customer = make_customer()
    customer_erase(customer=customer, acting_user=users[Role.ADMIN], reason="受付番号 1")
    operator = client_for(Role.OPERATOR)
    url = reverse("web:contact_new", args=[customer.pk])
    assert "削除(匿名化)済み" in operator.get(url).content.decode()
    response = operator.post(url, _data("x"))
    assert response.status_code == 422
    assert not Contact.objects.filter(customer=customer).exists()
    with pytest.raises(ValidationError, match="削除"):
        contact_record(
            customer=Customer.objects.get(pk=customer.pk),
            channel=ContactChannel.PHONE,
            direction=Direction.INBOUND,
            summary="s",
            acting_user=None,
        )


def test_a_merged_away_record_sends_the_operator_to_the_survivor(
    client_for: Callable[[Role], Client],
) -> None:
    survivor = make_customer()
    absorbed = make_customer(family_name="佐藤")
    Customer.objects.filter(pk=absorbed.pk).update(merged_into=survivor)
    operator = client_for(Role.OPERATOR)
    url = reverse("web:contact_new", args=[absorbed.pk])
    response = operator.post(url, _data("x"))
    assert response.status_code == 302
    assert response["Location"] == reverse("web:contact_new", args=[survivor.pk])
    assert not Contact.objects.exists()
    with pytest.raises(ValidationError, match="統合済み"):
        contact_record(
            customer=absorbed,
            channel=ContactChannel.PHONE,
            direction=Direction.INBOUND,
            summary="s",
            acting_user=None,
        )


def test_marketers_see_no_button_and_cannot_record(
    client_for: Callable[[Role], Client],
) -> None:
    customer = make_customer()
    marketer = client_for(Role.MARKETER)
    url = reverse("web:contact_new", args=[customer.pk])
    assert url not in _contacts_card(marketer, customer)
    assert marketer.get(url).status_code == 403


def test_a_form_this_session_never_issued_records_nothing(
    client_for: Callable[[Role], Client],
) -> None:
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    url = reverse("web:contact_new", args=[customer.pk])
    response = operator.post(url, _data("not-issued"))
    assert response.status_code == 422
    html = response.content.decode()
    assert "このフォームは古くなっています" in html
    assert "お届け日の確認" in html
    assert not Contact.objects.exists()
