"""Webhooks from the cart: signature and freshness (I1), once per event id (I2), order (I3)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.test import Client, override_settings

from kizuna.campaigns.consent_checks import Audience
from kizuna.campaigns.models import Channel
from kizuna.commerce.models import Order, OrderStatus
from kizuna.core import webhooks
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog, WebhookEvent, WebhookSource
from kizuna.customers.models import Customer, DuplicateCandidate, IdentityKind
from tests.factories import add_identity, make_customer
from tests.test_api_common import assert_error

pytestmark = pytest.mark.django_db
ADMIN = Actor.system("test-admin")


@pytest.fixture
def source() -> tuple[WebhookSource, str]:
    return webhooks.webhook_source_create(name="EC-CUBE本店", slug="eccube", acting_user=ADMIN)


def order_event(event_id: str = "evt_1", **data: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "number": "1001",
        "customer": {
            "identities": {"email": "hanako@example.jp"},
            "profile": {"family_name": "山田", "given_name": "花子"},
        },
        "ordered_at": "2026-05-01T10:00:00+09:00",
        "lines": [
            {
                "product_code": "SK-TR-01",
                "product_name": "トライアル",
                "unit_price": 980,
                "quantity": 1,
            }
        ],
        "updated_at": "2026-05-01T10:00:00+09:00",
    }
    payload.update(data)
    return {"id": event_id, "type": "order.updated", "data": payload, "cart_extra": "ignored"}


def deliver(
    secret: str,
    event: dict[str, Any],
    *,
    topic: str = "orders",
    slug: str = "eccube",
    timestamp: int | None = None,
    signature: str | None = None,
    client: Client | None = None,
) -> Any:
    raw = json.dumps(event, ensure_ascii=False).encode()
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {
        webhooks.TIMESTAMP_HEADER: str(ts),
        webhooks.SIGNATURE_HEADER: signature
        or webhooks.sign(secret=secret, timestamp=ts, body=raw),
    }
    return (client or Client()).post(
        f"/api/v1/webhooks/{slug}/{topic}", raw, content_type="application/json", headers=headers
    )


def snapshot() -> tuple[int, int, int, int]:
    return (
        Order.objects.count(),
        Customer.objects.count(),
        WebhookEvent.objects.count(),
        AuditLog.objects.exclude(action__startswith="webhook_source").count(),
    )


# --- I1: signature and freshness --------------------------------------------------------------


def test_a_signed_fresh_event_creates_the_order(source: tuple[WebhookSource, str]) -> None:
    _, secret = source
    response = deliver(secret, order_event())
    assert response.status_code == 200, response.content
    assert response.json() == {
        "event_id": "evt_1",
        "duplicate": False,
        "outcome": "created",
        "customer_id": Customer.objects.get().pk,
        "order_number": "1001",
        "identities_not_attached": [],
    }
    order = Order.objects.get()
    assert order.source == "webhook:eccube"
    assert AuditLog.objects.get(action="order.create").actor_label == "system:webhook:eccube"


def _raw_post(headers: dict[str, str], body: bytes, slug: str = "eccube") -> Any:
    return Client().post(
        f"/api/v1/webhooks/{slug}/orders", body, content_type="application/json", headers=headers
    )


@pytest.mark.parametrize(
    "case", ["no headers", "no signature", "wrong secret", "tampered body", "stale", "future"]
)
def test_forged_or_stale_events_are_401_and_change_nothing(
    source: tuple[WebhookSource, str], case: str
) -> None:
    _, secret = source
    raw = json.dumps(order_event()).encode()
    now = int(time.time())
    headers = {
        webhooks.TIMESTAMP_HEADER: str(now),
        webhooks.SIGNATURE_HEADER: webhooks.sign(secret=secret, timestamp=now, body=raw),
    }
    if case == "no headers":
        headers = {}
    elif case == "no signature":
        del headers[webhooks.SIGNATURE_HEADER]
    elif case == "wrong secret":
        headers[webhooks.SIGNATURE_HEADER] = webhooks.sign(
            secret="whsec_guess", timestamp=now, body=raw
        )
    elif case == "tampered body":
        raw = raw.replace(b'"unit_price": 980', b'"unit_price": 1')
    else:
        # Well past the 5-minute window both ways: at exactly +301 s, a request that took a
        # second to reach the check (a loaded machine) was inside it again.
        skew = -360 if case == "stale" else 360
        ts = now + skew
        headers = {
            webhooks.TIMESTAMP_HEADER: str(ts),
            webhooks.SIGNATURE_HEADER: webhooks.sign(secret=secret, timestamp=ts, body=raw),
        }
    before = snapshot()
    assert_error(_raw_post(headers, raw), 401)
    assert snapshot() == before


def test_the_signature_covers_the_raw_bytes_not_the_parsed_json(
    source: tuple[WebhookSource, str],
) -> None:
    _, secret = source
    event = order_event()
    now = int(time.time())
    signed = json.dumps(event).encode()
    sent = json.dumps(event, indent=2).encode()  # same JSON, other bytes
    headers = {
        webhooks.TIMESTAMP_HEADER: str(now),
        webhooks.SIGNATURE_HEADER: webhooks.sign(secret=secret, timestamp=now, body=signed),
    }
    assert_error(_raw_post(headers, sent), 401)
    assert not Order.objects.exists()


def test_unknown_or_revoked_sources_are_401(source: tuple[WebhookSource, str]) -> None:
    sender, secret = source
    assert_error(deliver(secret, order_event(), slug="someone-else"), 401, "unknown_source")
    webhooks.webhook_source_revoke(source=sender, acting_user=ADMIN)
    assert_error(deliver(secret, order_event()), 401, "unknown_source")
    assert not Order.objects.exists()


def test_a_bad_body_with_a_good_signature_is_422_and_can_be_resent(
    source: tuple[WebhookSource, str],
) -> None:
    _, secret = source
    error = assert_error(deliver(secret, order_event(lines=[])), 422)
    assert "data.lines" in error["fields"]
    assert not WebhookEvent.objects.exists()
    assert deliver(secret, order_event()).json()["duplicate"] is False


def test_a_refused_order_names_its_fields_inside_data(source: tuple[WebhookSource, str]) -> None:
    # Where the sender put them: the order is the event's `data`.
    _, secret = source
    event = order_event(
        customer={
            "identities": {"email": "new@example.jp"},
            "profile": {"family_name": "佐藤", "postal_code": "12"},
        }
    )
    error = assert_error(deliver(secret, event), 422, "invalid_data")
    assert error["fields"] == {
        "data.customer.profile.postal_code": "郵便番号は7桁の数字で入力してください"
    }
    error = assert_error(deliver(secret, order_event(discount=5000)), 422, "invalid_data")
    assert error["fields"] == {"data.total": "合計金額がマイナスになります"}
    assert not WebhookEvent.objects.exists()


def test_a_signed_event_not_sent_as_json_is_415_and_can_be_resent(
    source: tuple[WebhookSource, str],
) -> None:
    # carts send application/json (as the docs' example does); anything else is refused
    # after the signature check, and the event is not recorded
    _, secret = source
    raw = json.dumps(order_event(), ensure_ascii=False).encode()
    now = int(time.time())
    headers = {
        webhooks.TIMESTAMP_HEADER: str(now),
        webhooks.SIGNATURE_HEADER: webhooks.sign(secret=secret, timestamp=now, body=raw),
    }
    response = Client().post(
        "/api/v1/webhooks/eccube/orders", raw, content_type="text/plain", headers=headers
    )
    assert_error(response, 415, "unsupported_media_type")
    assert snapshot() == (0, 0, 0, 0)
    assert deliver(secret, order_event()).json()["outcome"] == "created"


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024 * 1024)
def test_a_body_over_the_size_limit_is_413_not_500(source: tuple[WebhookSource, str]) -> None:
    _, secret = source
    response = deliver(secret, order_event(cart_note="x" * 2 * 1024 * 1024))
    assert_error(response, 413, "payload_too_large")
    assert not WebhookEvent.objects.exists()


# --- I2: once per event id --------------------------------------------------------------------


def test_the_same_event_delivered_again_is_a_duplicate(source: tuple[WebhookSource, str]) -> None:
    _, secret = source
    deliver(secret, order_event())
    before = snapshot()
    for _ in range(3):
        response = deliver(secret, order_event())
        assert response.status_code == 200
        assert response.json()["duplicate"] is True
        assert response.json()["order_number"] == "1001"
    assert snapshot() == before


def test_a_later_event_for_the_same_order_updates_it(source: tuple[WebhookSource, str]) -> None:
    _, secret = source
    deliver(secret, order_event("evt_1"))
    response = deliver(
        secret,
        order_event("evt_2", status="shipped", updated_at="2026-05-02T09:00:00+09:00"),
    )
    assert response.json()["outcome"] == "updated"
    assert Order.objects.get().status == OrderStatus.SHIPPED
    assert WebhookEvent.objects.count() == 2


# --- I3: out of order -------------------------------------------------------------------------


def test_an_older_order_event_arriving_late_changes_nothing(
    source: tuple[WebhookSource, str],
) -> None:
    _, secret = source
    deliver(
        secret, order_event("evt_2", status="delivered", updated_at="2026-05-03T09:00:00+09:00")
    )
    response = deliver(secret, order_event("evt_1", updated_at="2026-05-01T10:00:00+09:00"))
    assert response.json()["outcome"] == "stale"
    assert Order.objects.get().status == OrderStatus.DELIVERED


def test_an_order_event_without_updated_at_does_not_overwrite_a_dated_one(
    source: tuple[WebhookSource, str],
) -> None:
    _, secret = source
    deliver(secret, order_event("evt_1", status="shipped", updated_at="2026-11-22T10:00:00+09:00"))
    undated = order_event("evt_2", shipping_fee=700)
    del undated["data"]["updated_at"]
    response = deliver(secret, undated)
    assert response.status_code == 200
    assert response.json()["outcome"] == "stale"
    order = Order.objects.get()
    assert (order.status, order.shipping_fee, order.total) == (OrderStatus.SHIPPED, 0, 980)
    # the event is recorded as applied (ignored): a redelivery is a duplicate
    assert deliver(secret, undated).json() == {**response.json(), "duplicate": True}


# --- event types ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["order.exploded", "order.deleted", "customer.updated", ""])
def test_an_order_event_of_an_unknown_type_is_refused_and_stores_nothing(
    source: tuple[WebhookSource, str], kind: str
) -> None:
    _, secret = source
    event = order_event()
    event["type"] = kind
    error = assert_error(deliver(secret, event), 422, "invalid_request")
    assert error["fields"] == {
        "type": "次のいずれかを指定してください: 'order.created'、'order.updated'"
    }
    assert snapshot() == (0, 0, 0, 0)
    # fixed and sent again, it is applied
    assert deliver(secret, order_event()).json()["outcome"] == "created"


def test_an_event_without_a_type_is_refused(source: tuple[WebhookSource, str]) -> None:
    _, secret = source
    event = order_event()
    del event["type"]
    error = assert_error(deliver(secret, event), 422, "invalid_request")
    assert error["fields"] == {"type": "必須項目です"}
    assert not WebhookEvent.objects.exists()


def test_order_created_is_applied_like_order_updated(source: tuple[WebhookSource, str]) -> None:
    _, secret = source
    event = order_event()
    event["type"] = "order.created"
    assert deliver(secret, event).json()["outcome"] == "created"


def test_a_customer_event_of_an_unknown_type_is_refused(source: tuple[WebhookSource, str]) -> None:
    _, secret = source
    event = customer_event("c1", "2026-05-01T10:00:00+09:00")
    event["type"] = "customer.deleted"
    error = assert_error(deliver(secret, event, topic="customers"), 422, "invalid_request")
    assert list(error["fields"]) == ["type"]
    assert snapshot() == (0, 0, 0, 0)


# --- customer events --------------------------------------------------------------------------


def customer_event(event_id: str, updated_at: str, **profile: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "customer.updated",
        "data": {
            "identities": {"cart_member_id": "M000123"},
            "profile": {"family_name": "山田", **profile},
            "updated_at": updated_at,
        },
    }


def test_customer_events_create_then_update(source: tuple[WebhookSource, str]) -> None:
    _, secret = source
    created = deliver(secret, customer_event("c1", "2026-05-01T10:00:00+09:00"), topic="customers")
    assert created.json()["outcome"] == "created"
    updated = deliver(
        secret,
        customer_event("c2", "2026-05-02T10:00:00+09:00", address1="港区南青山1-1-1"),
        topic="customers",
    )
    assert updated.json()["outcome"] == "updated"
    customer = Customer.objects.get()
    assert customer.address1 == "港区南青山1-1-1"
    assert customer.identities.get().kind == IdentityKind.CART_MEMBER


def moved_member(secret: str) -> Customer:
    """Member M000123, whose dated event (c2, 2 May) moved them from 旧住所 to 新住所."""
    customer = make_customer(address1="旧住所")
    add_identity(customer, IdentityKind.CART_MEMBER, "M000123")
    deliver(
        secret,
        customer_event("c2", "2026-05-02T10:00:00+09:00", address1="新住所"),
        topic="customers",
    )
    return customer


def test_an_older_customer_event_arriving_late_is_ignored(
    source: tuple[WebhookSource, str],
) -> None:
    _, secret = source
    customer = moved_member(secret)
    late = deliver(
        secret,
        customer_event("c1", "2026-05-01T10:00:00+09:00", address1="旧住所"),
        topic="customers",
    )
    assert late.json()["outcome"] == "stale"
    customer.refresh_from_db()
    assert customer.address1 == "新住所"


def undated(event: dict[str, Any]) -> dict[str, Any]:
    del event["data"]["updated_at"]
    return event


def test_a_customer_event_without_updated_at_does_not_overwrite_a_dated_one(
    source: tuple[WebhookSource, str],
) -> None:
    # given the customer as the cart last sent it, with its time
    _, secret = source
    customer = moved_member(secret)
    # when an event without updated_at arrives (older or newer: nothing says)
    late = undated(customer_event("c1", "", address1="旧住所", family_name="田中"))
    response = deliver(secret, late, topic="customers")
    # then it is ignored, as an older one would be, and recorded: a redelivery is a duplicate
    assert response.json()["outcome"] == "stale"
    customer.refresh_from_db()
    assert (customer.address1, customer.family_name) == ("新住所", "山田")
    assert deliver(secret, late, topic="customers").json() == {
        **response.json(),
        "duplicate": True,
    }


def test_customer_events_never_dated_take_the_last_one(
    source: tuple[WebhookSource, str],
) -> None:
    # a cart that never sends updated_at keeps "last write wins"
    _, secret = source
    customer = make_customer(address1="旧住所")
    add_identity(customer, IdentityKind.CART_MEMBER, "M000123")
    for event_id, address in (("c1", "一番目"), ("c2", "二番目")):
        event = undated(customer_event(event_id, "", address1=address))
        assert deliver(secret, event, topic="customers").json()["outcome"] == "updated"
    customer.refresh_from_db()
    assert customer.address1 == "二番目"
    # another customer's dated event does not hold this one back
    other = make_customer()
    add_identity(other, IdentityKind.CART_MEMBER, "M000999")
    dated = customer_event("c3", "2026-05-02T10:00:00+09:00")
    dated["data"]["identities"] = {"cart_member_id": "M000999"}
    deliver(secret, dated, topic="customers")
    event = undated(customer_event("c4", "", address1="三番目"))
    assert deliver(secret, event, topic="customers").json()["outcome"] == "updated"


def member_event(event_id: str, updated_at: str, email: str) -> dict[str, Any]:
    event = customer_event(event_id, updated_at)
    event["data"]["identities"] = {"cart_member_id": "M000123", "email": email}
    return event


def sent_to(customer: Customer) -> str:
    return Audience.load([customer.pk]).address(customer, Channel.EMAIL, {})


def test_an_older_customer_event_arriving_late_does_not_bring_back_the_old_address(
    source: tuple[WebhookSource, str],
) -> None:
    # given the member's change to a new address (2 May) delivered first
    _, secret = source
    newer = member_event("c2", "2026-05-02T10:00:00+09:00", "new@example.jp")
    assert deliver(secret, newer, topic="customers").json()["outcome"] == "created"
    customer = Customer.objects.get()
    assert sent_to(customer) == "new@example.jp"
    before = sorted(customer.identities.values_list("kind", "value"))
    audited = AuditLog.objects.count()
    # when the registration with the old address (1 May) arrives late
    older = member_event("c1", "2026-05-01T10:00:00+09:00", "old@example.jp")
    response = deliver(secret, older, topic="customers")
    # then it is ignored whole: the old address is not attached and messages still go to the new
    assert response.json()["outcome"] == "stale"
    assert response.json()["customer_id"] == customer.pk
    assert sorted(customer.identities.values_list("kind", "value")) == before
    assert sent_to(customer) == "new@example.jp"
    assert AuditLog.objects.count() == audited
    # and a later change still attaches its address, which takes over
    latest = member_event("c3", "2026-05-03T10:00:00+09:00", "latest@example.jp")
    assert deliver(secret, latest, topic="customers").json()["outcome"] == "updated"
    assert sent_to(customer) == "latest@example.jp"


def test_an_older_customer_event_proposes_no_duplicate_for_an_address_now_elsewhere(
    source: tuple[WebhookSource, str],
) -> None:
    # given the member's newer event, and their old address now another customer's
    _, secret = source
    deliver(
        secret, member_event("c2", "2026-05-02T10:00:00+09:00", "new@example.jp"), topic="customers"
    )
    other = make_customer(family_name="佐藤")
    add_identity(other, IdentityKind.EMAIL, "old@example.jp")
    # when the older event with that address arrives late
    older = member_event("c1", "2026-05-01T10:00:00+09:00", "old@example.jp")
    response = deliver(secret, older, topic="customers")
    # then the two are not proposed as the same person on the strength of outdated data
    assert response.json()["outcome"] == "stale"
    assert response.json()["identities_not_attached"] == []
    assert not DuplicateCandidate.objects.exists()


def member_order(event_id: str, number: str, ordered_at: str, email: str) -> dict[str, Any]:
    event = order_event(event_id, number=number, ordered_at=ordered_at, updated_at=ordered_at)
    event["data"]["customer"]["identities"] = {"cart_member_id": "M000123", "email": email}
    return event


def test_an_order_placed_before_the_customer_changed_address_does_not_bring_it_back(
    source: tuple[WebhookSource, str],
) -> None:
    # given the member's change to a new address (2 May) delivered first
    _, secret = source
    deliver(
        secret, member_event("c2", "2026-05-02T10:00:00+09:00", "new@example.jp"), topic="customers"
    )
    customer = Customer.objects.get()
    before = sorted(customer.identities.values_list("kind", "value"))
    # when an order placed on 1 May, with the address given at checkout then, arrives late
    late = member_order("o1", "1001", "2026-05-01T10:00:00+09:00", "old@example.jp")
    response = deliver(secret, late)
    # then the order is the member's, but its old address is not attached: messages still go
    # to the new one
    assert response.json()["outcome"] == "created"
    assert Order.objects.get(number="1001").customer_id == customer.pk
    assert sorted(customer.identities.values_list("kind", "value")) == before
    assert sent_to(customer) == "new@example.jp"
    # and an order placed after the change still attaches the address given with it
    later = member_order("o2", "1002", "2026-05-03T10:00:00+09:00", "order@example.jp")
    assert deliver(secret, later).json()["outcome"] == "created"
    assert Order.objects.get(number="1002").customer_id == customer.pk
    assert sent_to(customer) == "order@example.jp"


def test_a_late_order_proposes_no_duplicate_for_an_old_address_now_elsewhere(
    source: tuple[WebhookSource, str],
) -> None:
    # given the member's newer event, and their old address now another customer's
    _, secret = source
    deliver(
        secret, member_event("c2", "2026-05-02T10:00:00+09:00", "new@example.jp"), topic="customers"
    )
    other = make_customer(family_name="佐藤")
    add_identity(other, IdentityKind.EMAIL, "old@example.jp")
    # when an order placed before the change, with the old address, arrives late
    response = deliver(
        secret, member_order("o1", "1001", "2026-05-01T10:00:00+09:00", "old@example.jp")
    )
    # then it is the member's order, and the two are not proposed on outdated data
    assert response.json()["outcome"] == "created"
    assert response.json()["customer_id"] != other.pk
    assert response.json()["identities_not_attached"] == []
    assert not DuplicateCandidate.objects.exists()


def test_a_new_customer_event_without_family_name_is_422(
    source: tuple[WebhookSource, str],
) -> None:
    _, secret = source
    event = customer_event("c1", "2026-05-01T10:00:00+09:00")
    del event["data"]["profile"]["family_name"]
    error = assert_error(deliver(secret, event, topic="customers"), 422, "invalid_data")
    assert error["fields"] == {"data.profile.family_name": "姓は必須です"}
    assert not WebhookEvent.objects.exists()


def test_sources_and_secrets_are_audited_and_secret_is_not_in_the_audit(db: None) -> None:
    sender, secret = webhooks.webhook_source_create(
        name="Shopify", slug="shopify", acting_user=ADMIN
    )
    audit = AuditLog.objects.get(action="webhook_source.create")
    assert audit.entity_id == str(sender.pk)
    assert secret not in json.dumps(audit.changes)
