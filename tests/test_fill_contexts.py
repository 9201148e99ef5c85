"""Template contexts for many customers at once: read in customer-id order for speed, but each
message must still carry its own customer's details, whatever order a tick asks in."""

from __future__ import annotations

import datetime as dt

import pytest

from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.automation.templating import customer_contexts
from kizuna.campaigns.models import OutboxMessage
from kizuna.customers.models import Customer
from tests.factories import make_customer, make_order, make_product
from tests.test_scenarios_kit import jst, scenario, step, template

START = jst(2026, 5, 1)


def _buyers() -> list[tuple[Customer, str]]:
    buyers = []
    for family, given in (("佐藤", "一郎"), ("鈴木", "二郎"), ("高橋", "三子")):
        customer = make_customer(family_name=family, given_name=given)
        product = make_product()
        make_order(customer, product=product, ordered_at=jst(2026, 5, 2, 9))
        buyers.append((customer, product.name))
    return buyers


@pytest.mark.django_db
def test_contexts_asked_out_of_order_and_twice_are_each_customers_own() -> None:
    # given: three buyers, asked for last first and one of them twice
    buyers = _buyers()
    asked = [buyers[2][0].pk, buyers[0][0].pk, buyers[1][0].pk, buyers[0][0].pk]
    # when
    contexts = customer_contexts(asked, today=dt.date(2026, 5, 3))
    # then: one context per customer, with that customer's name and last product
    assert set(contexts) == {c.pk for c, _ in buyers}
    for customer, product_name in buyers:
        context = contexts[customer.pk]
        assert context["name"] == f"{customer.family_name} {customer.given_name}"
        assert context["last_product"] == product_name
        assert context["last_order_date"] == dt.date(2026, 5, 2)
        assert list(context["recommendations"]) == []


@pytest.mark.django_db
def test_a_tick_sends_each_buyer_a_message_with_their_own_name_and_product() -> None:
    # given: a first-purchase scenario whose message names the customer and what they bought
    template(key="thanks", subject="{{ name }} 様", text="{{ name }} 様、{{ last_product }}")
    scenario(
        trigger={"kind": "first_purchase"},
        holdout_percent=0,
        activated_at=START,
        steps=[step("thanks", template="thanks")],
    )
    buyers = _buyers()
    # when
    tick(jst(2026, 5, 2, 10))
    # then
    for customer, product_name in buyers:
        content = OutboxMessage.objects.get(customer=customer).content
        name = f"{customer.family_name} {customer.given_name}"
        assert content == {"subject": f"{name} 様", "text": f"{name} 様、{product_name}"}
