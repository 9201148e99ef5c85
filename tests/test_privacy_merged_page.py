"""The APPI buttons and the erase page on a merged-away (absorbed) record, and the wording of
the running-subscription refusal on the erase page (docs/privacy.md: "The erase page says before
anything is sent what would stop it")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.core.audit import Actor
from kizuna.customers.models import Customer
from kizuna.subscriptions.services import subscription_create
from tests.factories import make_customer, make_product

pytestmark = pytest.mark.django_db

STAFF = Actor.system("test-staff")


def absorbed_into_chain() -> tuple[Customer, Customer]:
    """first → middle → survivor (a merge of a merge): the absorbed record and its survivor."""
    survivor, middle, first = make_customer(), make_customer(), make_customer()
    Customer.objects.filter(pk=middle.pk).update(merged_into=survivor)
    Customer.objects.filter(pk=first.pk).update(merged_into=middle)
    return first, survivor


def test_the_erase_page_of_an_absorbed_record_says_so_up_front_with_no_form(
    client_for: Callable[[Role], Client],
) -> None:
    absorbed, survivor = absorbed_into_chain()
    page = client_for(Role.ADMIN).get(reverse("web:customer_erase", args=[absorbed.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert f"顧客ID {survivor.pk}</a>に統合されています" in html
    assert reverse("web:customer_detail", args=[survivor.pk]) in html
    assert reverse("web:customer_erase", args=[survivor.pk]) in html
    assert "個人データを削除(匿名化)する</button>" not in html
    assert 'name="confirm"' not in html


def test_the_customer_page_of_an_absorbed_record_offers_no_export_or_erase(
    client_for: Callable[[Role], Client],
) -> None:
    absorbed, survivor = absorbed_into_chain()
    html = client_for(Role.ADMIN).get(reverse("web:customer_detail", args=[absorbed.pk]))
    text = html.content.decode()
    assert reverse("web:customer_export", args=[absorbed.pk]) not in text
    assert reverse("web:customer_erase", args=[absorbed.pk]) not in text
    # sent to the end of the chain, where the export and erasure are done
    assert f'統合先の<a href="{reverse("web:customer_detail", args=[survivor.pk])}">' in text


def test_a_refused_erase_for_a_running_subscription_tells_staff_the_button_not_the_api(
    client_for: Callable[[Role], Client],
) -> None:
    customer = make_customer()
    subscription_create(
        customer=customer,
        product=make_product(),
        terms={"unit_price": 3980, "cycle_kind": "days", "cycle_days": 30},
        started_on=dt.date(2026, 5, 1),
        acting_user=STAFF,
    )
    # A POST sent from a page opened before the subscription started (the page shows no form).
    response = client_for(Role.ADMIN).post(
        reverse("web:customer_erase", args=[customer.pk]),
        {"reason": "受付番号 1", "confirm": str(customer.pk)},
    )
    html = response.content.decode()
    assert response.status_code == 422
    assert "定期購入が1件" in html
    assert "「解約する」から行えます" in html
    assert "PATCH" not in html
    assert "/api/v1/" not in html
