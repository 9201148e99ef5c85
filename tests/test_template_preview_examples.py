"""The template preview says which values are examples whoever the customer is."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from tests.factories import make_customer

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


def test_a_preview_with_a_real_customer_marks_the_offer_and_product_as_examples(
    client_for: Callable[[Role], Client],
) -> None:
    # given: a template printing the step's offer, previewed with a real customer
    customer = make_customer(family_name="髙橋", given_name="花子")
    fields = {
        "subject": "{{ name }} 様",
        "text": "{{ product }} をお使いの方へ: {{ offer.code }} で {{ offer }}",
        "customer": str(customer.pk),
    }
    # when
    html = (
        client_for(Role.MARKETER)
        .post(reverse("scenarios:template_preview"), fields, headers=HTMX)
        .content.decode()
    )
    # then: the customer's own name, and the made-up coupon said to be an example (it is in
    # no offer list), with what is put there when sending
    assert "髙橋 花子 様" in html
    assert "WELCOME1000" in html
    assert "特典({{ offer }})は例です" in html
    assert "ステップに設定した特典が入ります" in html
