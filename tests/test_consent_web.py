"""Changing a channel's consent from the customer page: a confirmation, the evidence a grant
needs, a one-time form, and erased or merged-away records refused."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role, User
from kizuna.campaigns.models import SuppressionKind, SuppressionReason
from kizuna.campaigns.suppression import suppression_add
from kizuna.core.models import AuditLog
from kizuna.customers.models import (
    Consent,
    ConsentChannel,
    ConsentEvent,
    ConsentMethod,
    Customer,
    IdentityKind,
    TimelineEvent,
    TimelineKind,
)
from kizuna.customers.privacy import customer_erase
from kizuna.customers.services import consent_grant
from tests.factories import add_identity, make_customer
from tests.pages import form_token

pytestmark = pytest.mark.django_db


def _consents_card(client: Client, customer: Customer) -> str:
    html = client.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    match = re.search(r'<section class="card" id="consents">(.*?)</section>', html, re.S)
    assert match
    return match.group(1)


def _granted(customer: Customer, user: User) -> None:
    consent_grant(
        customer=customer,
        channel=ConsentChannel.EMAIL,
        method=ConsentMethod.WEB_FORM,
        source_form="会員登録",
        wording_version="v1",
        acting_user=user,
    )


def test_operator_withdraws_consent_after_confirming(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    customer = make_customer()
    _granted(customer, users[Role.ADMIN])
    operator = client_for(Role.OPERATOR)
    url = reverse("web:consent_change", args=[customer.pk, "email", "withdraw"])
    assert f'href="{url}"' in _consents_card(operator, customer)
    page = operator.get(url).content.decode()
    assert "配信停止にする" in page
    assert Consent.objects.get(customer=customer).granted  # a GET changes nothing
    response = operator.post(url, {"form_token": form_token(operator, url)}, follow=True)
    assert "メールの配信停止にしました。" in response.content.decode()
    consent = Consent.objects.get(customer=customer)
    assert not consent.granted
    assert consent.opted_out_at is not None
    event = ConsentEvent.objects.filter(customer=customer).latest("id")
    assert event.method == ConsentMethod.STAFF
    assert AuditLog.objects.filter(action="consent.withdraw", customer_id=customer.pk).exists()
    assert TimelineEvent.objects.filter(customer=customer, kind=TimelineKind.CONSENT).exists()
    assert "同意を記録する" in _consents_card(operator, customer)


def test_a_grant_records_how_the_customer_agreed(client_for: Callable[[Role], Client]) -> None:
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    url = reverse("web:consent_change", args=[customer.pk, "postal", "grant"])
    token = form_token(operator, url)
    refused = operator.post(url, {"form_token": token, "method": ""})
    assert refused.status_code == 422
    html = refused.content.decode()
    assert "お客様がどのように同意されたかを選んでください" in html
    assert "案内した同意文言(版)を入力してください" in html
    assert not Consent.objects.filter(customer=customer).exists()
    response = operator.post(
        url, {"form_token": token, "method": "phone", "wording_version": "電話案内 2026年4月版"}
    )
    assert response.status_code == 302
    consent = Consent.objects.get(customer=customer, channel="postal")
    assert consent.granted
    assert consent.method == ConsentMethod.PHONE
    assert consent.source_form == "コールセンター(電話)"
    assert consent.wording_version == "電話案内 2026年4月版"


def test_a_second_send_changes_once(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    customer = make_customer()
    _granted(customer, users[Role.ADMIN])
    operator = client_for(Role.OPERATOR)
    url = reverse("web:consent_change", args=[customer.pk, "email", "withdraw"])
    data = {"form_token": form_token(operator, url)}
    operator.post(url, data)
    again = operator.post(url, data, follow=True)
    assert "すでに送信済み" in again.content.decode()
    assert ConsentEvent.objects.filter(customer=customer, action="withdraw").count() == 1


def test_change_needs_a_post_and_a_known_channel(client_for: Callable[[Role], Client]) -> None:
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    assert (
        operator.get(reverse("web:consent_change", args=[customer.pk, "fax", "grant"])).status_code
        == 404
    )
    assert (
        operator.get(
            reverse("web:consent_change", args=[customer.pk, "email", "delete"])
        ).status_code
        == 404
    )


def test_erased_and_merged_records_are_refused(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    erased = make_customer()
    customer_erase(customer=erased, acting_user=users[Role.ADMIN], reason="受付番号 1")
    operator = client_for(Role.OPERATOR)
    url = reverse("web:consent_change", args=[erased.pk, "email", "grant"])
    assert "削除(匿名化)済み" in operator.get(url).content.decode()
    before = ConsentEvent.objects.filter(customer=erased).count()
    operator.post(url, {"form_token": "x", "method": "phone", "wording_version": "v"})
    assert ConsentEvent.objects.filter(customer=erased).count() == before

    survivor = make_customer()
    absorbed = make_customer(family_name="佐藤")
    Customer.objects.filter(pk=absorbed.pk).update(merged_into=survivor)
    url = reverse("web:consent_change", args=[absorbed.pk, "email", "withdraw"])
    response = operator.post(url, {"form_token": "x"})
    assert response["Location"] == reverse(
        "web:consent_change", args=[survivor.pk, "email", "withdraw"]
    )
    assert not ConsentEvent.objects.filter(customer=absorbed).exists()


def test_marketers_and_analysts_cannot_change_consent(
    client_for: Callable[[Role], Client],
) -> None:
    customer = make_customer()
    url = reverse("web:consent_change", args=[customer.pk, "email", "grant"])
    marketer = client_for(Role.MARKETER)
    assert url not in _consents_card(marketer, customer)
    assert marketer.get(url).status_code == 403
    assert client_for(Role.ANALYST).post(url, {}).status_code == 403


def test_a_grant_that_would_reach_nobody_is_flagged_before_it_is_saved(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    """Recorded anyway (it is the customer's word), but the send-time checks would skip every
    message: the operator is told so on the page."""
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    line = reverse("web:consent_change", args=[customer.pk, "line", "grant"])
    assert "LINEの宛先がありません" in operator.get(line).content.decode()
    add_identity(customer, IdentityKind.EMAIL, "hanako@example.jp")
    email = reverse("web:consent_change", args=[customer.pk, "email", "grant"])
    assert "今はメールを送れません" not in operator.get(email).content.decode()
    suppression_add(
        kind=SuppressionKind.EMAIL,
        address="hanako@example.jp",
        reason=SuppressionReason.BOUNCE,
        acting_user=users[Role.ADMIN],
    )
    page = operator.get(email).content.decode()
    assert "今はメールを送れません。配信停止アドレスです(不達(バウンス))。" in page
