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
from kizuna.customers.models import Customer, IdentityKind
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
