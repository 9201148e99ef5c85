"""What a cart really sends in a webhook: bodies that are not objects, fields of its own."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.test import Client

from kizuna.commerce.models import Order
from kizuna.core import webhooks
from kizuna.core.audit import Actor
from kizuna.core.models import WebhookEvent
from kizuna.customers.models import Customer, DuplicateCandidate, IdentityKind
from tests.factories import add_identity, make_customer
from tests.test_api_common import assert_error, full_access_client
from tests.test_webhooks import customer_event, deliver, order_event

pytestmark = pytest.mark.django_db
TOPICS = ("orders", "customers", "email-events")


@pytest.fixture
def secret(db: None) -> str:
    _, secret = webhooks.webhook_source_create(
        name="EC-CUBE本店", slug="eccube", acting_user=Actor.system("test-admin")
    )
    return secret


def signed_post(secret: str, topic: str, raw: bytes) -> Any:
    now = int(time.time())
    headers = {
        webhooks.TIMESTAMP_HEADER: str(now),
        webhooks.SIGNATURE_HEADER: webhooks.sign(secret=secret, timestamp=now, body=raw),
    }
    return Client().post(
        f"/api/v1/webhooks/eccube/{topic}", raw, content_type="application/json", headers=headers
    )


# --- a body or a `data` that is not a JSON object ------------------------------------------


@pytest.mark.parametrize("topic", TOPICS)
@pytest.mark.parametrize("body", [[1, 2], [], "evt", 3, None])
def test_a_body_that_is_not_an_object_says_so(secret: str, topic: str, body: Any) -> None:
    # not "id, type and data are required": the cart sent an array, not an event
    error = assert_error(signed_post(secret, topic, json.dumps(body).encode()), 422)
    assert error["fields"] == {"body": "オブジェクトで指定してください"}
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize("topic", TOPICS)
def test_data_that_is_not_an_object_says_so(secret: str, topic: str) -> None:
    event = {"id": "evt_1", "type": "customer.updated", "data": [1, 2]}
    if topic == "orders":
        event["type"] = "order.updated"
    error = assert_error(signed_post(secret, topic, json.dumps(event).encode()), 422)
    assert error["fields"] == {"data": "オブジェクトで指定してください"}


# --- fields of the cart's own, inside `data` (F12) -----------------------------------------


def with_cart_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The event as a real cart sends it: its own fields at every level of `data`."""
    data = event["data"]
    data["shop_id"] = 3
    data["cart"] = {"plugin": "kizuna-connector", "version": "1.2"}
    customer = data.get("customer", data)
    customer["point_rank"] = "gold"
    customer["identities"]["cart_login"] = "hanako"
    customer["profile"]["fax"] = "03-1234-9999"
    customer["profile"]["customer_note"] = None
    for line in data.get("lines", []):
        line["tax_rate"] = 10
        line["options"] = [{"name": "ギフト包装"}]
    return event


def test_an_order_event_with_the_carts_own_fields_in_data_is_applied(secret: str) -> None:
    event = with_cart_fields(
        order_event(lines=[order_event()["data"]["lines"][0] | {"quantity": 2}])
    )
    response = deliver(secret, event)
    assert response.status_code == 200, response.content
    assert response.json()["outcome"] == "created"
    order = Order.objects.get()
    assert (order.number, order.lines.get().quantity) == ("1001", 2)
    assert Customer.objects.get().family_name == "山田"


def test_a_customer_event_with_the_carts_own_fields_in_data_is_applied(secret: str) -> None:
    event = with_cart_fields(
        customer_event("c1", "2026-05-01T10:00:00+09:00", address1="港区南青山1-1-1")
    )
    response = deliver(secret, event, topic="customers")
    assert response.status_code == 200, response.content
    assert response.json()["outcome"] == "created"
    customer = Customer.objects.get()
    assert customer.address1 == "港区南青山1-1-1"
    assert customer.identities.get().kind == IdentityKind.CART_MEMBER


def test_known_fields_next_to_the_carts_own_are_checked_as_strictly_as_before(
    secret: str,
) -> None:
    event = with_cart_fields(order_event())
    event["data"]["lines"][0]["quantity"] = "1"  # a string: still a type error
    event["data"]["customer"]["profile"]["postal_code"] = 1500002
    event["data"]["status"] = "paid"
    error = assert_error(deliver(secret, event), 422, "invalid_request")
    assert set(error["fields"]) == {
        "data.lines.0.quantity",
        "data.customer.profile.postal_code",
        "data.status",
    }
    customer = with_cart_fields(customer_event("c1", "2026-05-01T10:00:00+09:00"))
    customer["data"]["identities"] = {"cart_login": "hanako"}  # no identity Kizuna knows
    error = assert_error(deliver(secret, customer, topic="customers"), 422, "invalid_request")
    assert list(error["fields"]) == ["data.identities"]
    assert not WebhookEvent.objects.exists()


def test_the_rest_api_still_refuses_an_unknown_field(db: None) -> None:
    # there a misspelt field must be caught, not dropped
    body = order_event()["data"]
    del body["number"]  # in the URL
    body["lines"][0]["tax_rate"] = 10
    body["customer"]["profile"]["fax"] = "03-1234-9999"
    response = full_access_client().put("/api/v1/orders/1001", body)
    error = assert_error(response, 422, "invalid_request")
    assert error["fields"] == {
        "lines.0.tax_rate": "この項目は指定できません",
        "customer.profile.fax": "この項目は指定できません",
    }


# --- what a customer event did to the customer's identities (F11) --------------------------


def member_event(event_id: str, day: int, **identities: str) -> dict[str, Any]:
    event = customer_event(event_id, f"2026-05-{day:02d}T10:00:00+09:00")
    event["data"]["identities"] |= identities
    return event


def test_an_event_that_adds_an_email_to_a_member_is_an_update(secret: str) -> None:
    # given member M000123, registered without an e-mail
    first = deliver(secret, member_event("c1", 1), topic="customers").json()
    # when the cart sends the member again with an e-mail and nothing else changed
    response = deliver(secret, member_event("c2", 2, email="hanako@example.jp"), topic="customers")
    # then the answer says the customer was updated, and the e-mail is the member's
    assert response.json() == {
        "event_id": "c2",
        "duplicate": False,
        "outcome": "updated",
        "customer_id": first["customer_id"],
        "order_number": None,
        "identities_not_attached": [],
    }
    customer = Customer.objects.get()
    assert customer.identities.filter(kind=IdentityKind.EMAIL).exists()
    # and sending the same again changes nothing, and says so
    again = deliver(secret, member_event("c3", 3, email="hanako@example.jp"), topic="customers")
    assert again.json()["outcome"] == "unchanged"


def test_an_email_held_by_another_customer_is_reported_not_dropped_silently(secret: str) -> None:
    # given member M000123 and another customer who holds hanako@example.jp
    member_id = deliver(secret, member_event("c1", 1), topic="customers").json()["customer_id"]
    other = make_customer(family_name="佐藤")
    add_identity(other, IdentityKind.EMAIL, "hanako@example.jp")
    # when the cart sends the member with that e-mail
    event = member_event("c2", 2, email="Hanako@Example.jp")
    response = deliver(secret, event, topic="customers")
    # then the e-mail stays with the other customer, the answer says so, and staff get a
    # duplicate candidate to review
    body = response.json()
    assert (body["customer_id"], body["identities_not_attached"]) == (member_id, ["email"])
    assert body["outcome"] == "unchanged"
    assert other.identities.get().kind == IdentityKind.EMAIL
    assert not Customer.objects.get(pk=member_id).identities.filter(kind=IdentityKind.EMAIL)
    candidate = DuplicateCandidate.objects.get()
    assert {candidate.customer_a_id, candidate.customer_b_id} == {member_id, other.pk}
    # a redelivery is a duplicate that changes nothing
    assert deliver(secret, event, topic="customers").json()["duplicate"] is True


def test_an_order_whose_email_is_another_customers_says_so(secret: str) -> None:
    other = make_customer(family_name="佐藤")
    add_identity(other, IdentityKind.EMAIL, "hanako@example.jp")
    add_identity(other, IdentityKind.CART_MEMBER, "M000999")
    event = order_event()
    event["data"]["customer"]["identities"] = {
        "cart_member_id": "M000123",
        "email": "hanako@example.jp",
    }
    body = deliver(secret, event).json()
    assert body["identities_not_attached"] == ["email"]
    assert body["customer_id"] != other.pk
    assert DuplicateCandidate.objects.count() == 1
