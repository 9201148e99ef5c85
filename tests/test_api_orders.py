"""Orders through the API: the upsert by order number, customer resolution, ordering (I3)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kizuna.accounts.models import ApiScope
from kizuna.commerce.models import Order, OrderStatus
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from kizuna.customers.merge import customer_merge
from kizuna.customers.models import Customer, IdentityKind, TimelineKind
from tests.factories import add_identity, make_customer
from tests.test_api_common import ApiClient, assert_error, full_access_client, make_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(db: None) -> ApiClient:
    return full_access_client()


URL = "/api/v1/orders/1001"


def order_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer": {
            "identities": {"email": "hanako@example.jp", "cart_member_id": "M000123"},
            "profile": {"family_name": "山田", "given_name": "花子", "family_kana": "ヤマダ"},
        },
        "ordered_at": "2026-05-01T10:00:00+09:00",
        "lines": [
            {
                "product_code": "SK-TR-01",
                "product_name": "美容液トライアル",
                "unit_price": 980,
                "quantity": 2,
                "product_kind": "trial",
            }
        ],
        "shipping_fee": 500,
        "discount": 100,
        "updated_at": "2026-05-01T10:00:00+09:00",
    }
    body.update(overrides)
    return body


def test_a_new_order_creates_the_customer_and_the_order(api: ApiClient) -> None:
    # when
    response = api.put(URL, order_body())
    # then
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["outcome"] == "created"
    assert body["customer_created"] is True
    assert (body["subtotal"], body["total"]) == (1960, 2360)
    order = Order.objects.get(number="1001")
    assert order.customer.identities.filter(kind=IdentityKind.CART_MEMBER).exists()
    assert order.customer.timeline.filter(kind=TimelineKind.ORDER).count() == 1
    assert AuditLog.objects.filter(action="order.create", entity_id=str(order.pk)).exists()


def test_the_same_order_again_is_200_unchanged(api: ApiClient) -> None:
    api.put(URL, order_body())
    response = api.put(URL, order_body())
    assert response.status_code == 200
    assert response.json()["outcome"] == "unchanged"
    assert Order.objects.count() == 1
    assert Customer.objects.count() == 1


def test_a_known_customer_is_matched_by_identity(api: ApiClient) -> None:
    known = make_customer(family_name="佐藤")
    add_identity(known, IdentityKind.EMAIL, "hanako@example.jp")
    body = order_body()
    body["customer"]["identities"] = {"email": "ＨＡＮＡＫＯ@example.jp"}
    response = api.put(URL, body)
    assert response.json()["customer_id"] == known.pk
    assert response.json()["customer_created"] is False


def test_a_later_update_moves_the_order_forward(api: ApiClient) -> None:
    api.put(URL, order_body())
    response = api.put(
        URL,
        order_body(
            status="delivered",
            shipped_on="2026-05-02",
            delivered_on="2026-05-03",
            tracking_number="1234-5678-9012",
            updated_at="2026-05-03T18:00:00+09:00",
        ),
    )
    assert response.json()["outcome"] == "updated"
    order = Order.objects.get(number="1001")
    assert order.status == OrderStatus.DELIVERED
    assert order.shipments.get().tracking_number == "1234-5678-9012"


def test_an_older_update_arriving_late_is_ignored(api: ApiClient) -> None:
    # given: the cart's newest state arrived first
    api.put(URL, order_body(status="shipped", updated_at="2026-05-02T09:00:00+09:00"))
    # when: an older version arrives late
    response = api.put(
        URL, order_body(status="received", shipping_fee=0, updated_at="2026-05-01T11:00:00+09:00")
    )
    # then
    assert response.json()["outcome"] == "stale"
    order = Order.objects.get(number="1001")
    assert (order.status, order.shipping_fee) == (OrderStatus.SHIPPED, 500)


def test_ordered_at_is_answered_in_japan_time_whatever_the_outcome(api: ApiClient) -> None:
    # a stale answer reads the order back from the database (UTC); it was "…01:00:00Z"
    sent_in_utc = order_body(ordered_at="2026-05-01T01:00:00Z")
    answers = [
        api.put(URL, sent_in_utc),  # created
        api.put(URL, sent_in_utc),  # unchanged
        api.put(URL, order_body(shipping_fee=0, updated_at="2026-05-02T10:00:00+09:00")),
        api.put(URL, order_body(updated_at="2026-05-01T09:00:00+09:00")),  # stale
    ]
    assert [a.json()["outcome"] for a in answers] == ["created", "unchanged", "updated", "stale"]
    assert {a.json()["ordered_at"] for a in answers} == {"2026-05-01T10:00:00+09:00"}


def test_an_update_without_updated_at_does_not_overwrite_a_dated_order(api: ApiClient) -> None:
    # given: the order as the cart last changed it, with its time
    api.put(URL, order_body(status="shipped", updated_at="2026-05-02T09:00:00+09:00"))
    # when: a version without updated_at arrives (older or newer: nothing says)
    body = order_body(shipping_fee=700)
    del body["updated_at"]
    response = api.put(URL, body)
    # then: like an older one, it is ignored, as webhooks and batches ignore it
    assert response.status_code == 200
    assert response.json()["outcome"] == "stale"
    order = Order.objects.get(number="1001")
    assert (order.status, order.shipping_fee, order.total) == (OrderStatus.SHIPPED, 500, 2360)
    results = api.post(BATCH, {"orders": [{"number": "1001", **body}]}).json()
    assert (results["stale"], results["updated"]) == (1, 0)


def test_an_update_without_updated_at_still_moves_status_and_dates_forward(
    api: ApiClient,
) -> None:
    # given: the order as the cart last changed it, with its time
    api.put(URL, order_body(updated_at="2026-05-02T09:00:00+09:00"))
    # when: a version without updated_at says it was delivered, with another shipping fee
    body = order_body(
        status="delivered", shipped_on="2026-05-02", delivered_on="2026-05-03", shipping_fee=700
    )
    del body["updated_at"]
    response = api.put(URL, body)
    # then: the status and the dates move on; the amounts stay as the dated version had them
    assert response.status_code == 200
    assert (response.json()["outcome"], response.json()["total"]) == ("updated", 2360)
    order = Order.objects.get(number="1001")
    assert (order.status, order.shipping_fee) == (OrderStatus.DELIVERED, 500)
    shipment = order.shipments.get()
    assert (str(shipment.shipped_on), str(shipment.delivered_on)) == ("2026-05-02", "2026-05-03")
    # sent again, nothing moves any more
    results = api.post(BATCH, {"orders": [{"number": "1001", **body}]}).json()
    assert (results["stale"], results["updated"]) == (1, 0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lines": []}, "lines"),
        ({"ordered_at": "2026-05-01T10:00:00"}, "ordered_at"),
        ({"ordered_at": "0001-01-01T00:00:00+01:00"}, "ordered_at"),
        ({"status": "lost"}, "status"),
        ({"discount": -1}, "discount"),
        ({"shipping_fee": 10**12}, "shipping_fee"),
        ({"payment_method": "a\u0000b"}, "payment_method"),
    ],
)
def test_bad_orders_are_422_with_the_field(
    api: ApiClient, change: dict[str, Any], field: str
) -> None:
    response = api.put(URL, order_body(**change))
    error = assert_error(response, 422)
    assert field in error["fields"]
    assert not Order.objects.exists()


def test_bad_line_fields_are_located(api: ApiClient) -> None:
    body = order_body()
    body["lines"][0]["quantity"] = 0
    error = assert_error(api.put(URL, body), 422)
    assert error["fields"] == {"lines.0.quantity": "1以上で指定してください"}


def test_an_order_without_identities_is_refused(api: ApiClient) -> None:
    body = order_body()
    body["customer"]["identities"] = {}
    error = assert_error(api.put(URL, body), 422)
    assert "customer.identities" in error["fields"]
    assert not Customer.objects.exists()


@pytest.mark.parametrize(
    ("lines", "field"),
    [
        # one line whose price × quantity passes what an amount column holds
        ([(99_999_999, 10_000)], "quantity"),
        # lines each within it whose sum does not
        ([(99_999_999, 20)] * 2, "total"),
    ],
)
def test_amounts_beyond_what_an_order_holds_are_refused_not_a_500(
    api: ApiClient, lines: list[tuple[int, int]], field: str
) -> None:
    body = order_body(
        lines=[
            {"product_code": f"BIG-{n}", "product_name": "高額品", "unit_price": price,
             "quantity": quantity}
            for n, (price, quantity) in enumerate(lines)
        ]
    )  # fmt: skip
    error = assert_error(api.put(URL, body), 422, "invalid_data")
    assert "2,147,483,647円" in error["fields"][field]
    assert not Order.objects.exists()


def test_a_new_customers_unreadable_email_refuses_the_order(api: ApiClient) -> None:
    body = order_body()
    body["customer"]["identities"] = {"email": "bad@@example.jp"}
    error = assert_error(api.put(URL, body), 422)
    assert error["fields"] == {
        "customer.identities.email": "メールアドレスとして読めません(@ が2つ以上あります)"
    }
    assert not Order.objects.exists()
    assert not Customer.objects.exists()


def test_a_new_customer_needs_a_family_name(api: ApiClient) -> None:
    body = copy.deepcopy(order_body())
    del body["customer"]["profile"]["family_name"]
    error = assert_error(api.put(URL, body), 422)
    assert error["fields"] == {"customer.profile.family_name": "必須項目です"}


def test_a_discount_larger_than_the_order_is_refused_by_the_service(api: ApiClient) -> None:
    error = assert_error(api.put(URL, order_body(discount=100_000)), 422, "invalid_data")
    assert error["fields"] == {"total": "合計金額がマイナスになります"}
    assert not Order.objects.exists()
    assert not Customer.objects.exists()  # the customer created on the way was rolled back


# -- POST /orders/batch --------------------------------------------------------------------------

BATCH = "/api/v1/orders/batch"


def batch_item(number: str, email: str = "hanako@example.jp", **overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(order_body(**overrides))
    body["customer"]["identities"] = {"email": email}
    return {"number": number, **body}


def test_a_batch_stores_each_order_and_answers_for_each_in_order(api: ApiClient) -> None:
    orders = [
        batch_item("B-1"),
        batch_item("B-2", discount=100_000),  # refused by the service: only this one
        batch_item("B-3", email="ichiro@example.jp"),
        batch_item("B-1", status="shipped", shipped_on="2026-05-02"),  # then updated in turn
    ]
    response = api.post(BATCH, {"orders": orders})
    assert response.status_code == 200, response.content
    body = response.json()
    assert [(r["number"], r["ok"]) for r in body["results"]] == [
        ("B-1", True),
        ("B-2", False),
        ("B-3", True),
        ("B-1", True),
    ]
    first, refused, third, again = body["results"]
    assert (first["order"]["outcome"], again["order"]["outcome"]) == ("created", "updated")
    assert first["order"]["customer_created"]
    assert third["order"]["customer_created"]
    assert refused["order"] is None
    assert refused["error"]["code"] == "invalid_data"
    assert refused["error"]["fields"] == {"total": "合計金額がマイナスになります"}
    assert (body["created"], body["updated"], body["failed"]) == (2, 1, 1)
    assert sorted(Order.objects.values_list("number", flat=True)) == ["B-1", "B-3"]
    assert Order.objects.get(number="B-1").status == OrderStatus.SHIPPED
    assert Customer.objects.count() == 2

    # the same batch again changes nothing
    again_body = api.post(BATCH, {"orders": orders[:1] + orders[2:]}).json()
    assert [r["order"]["outcome"] for r in again_body["results"]] == [
        "unchanged",
        "unchanged",
        "unchanged",
    ]


def test_a_batch_names_a_new_customers_profile_error_on_its_item(api: ApiClient) -> None:
    item = batch_item("B-1", email="new@example.jp")
    item["customer"]["profile"]["postal_code"] = "12"  # no such postal code
    result = api.post(BATCH, {"orders": [item, batch_item("B-2")]}).json()["results"]
    assert list(result[0]["error"]["fields"]) == ["customer.profile.postal_code"]
    assert result[1]["ok"]
    assert list(Order.objects.values_list("number", flat=True)) == ["B-2"]


def test_a_malformed_batch_is_refused_whole_with_the_place_named(api: ApiClient) -> None:
    bad = batch_item("B-2")
    bad["lines"][0]["quantity"] = 0
    error = assert_error(api.post(BATCH, {"orders": [batch_item("B-1"), bad]}), 422)
    assert error["fields"] == {"orders.1.lines.0.quantity": "1以上で指定してください"}
    assert not Order.objects.exists()


def test_a_batch_holds_at_most_500_orders(api: ApiClient) -> None:
    orders = [batch_item(f"B-{n}") for n in range(501)]
    error = assert_error(api.post(BATCH, {"orders": orders}), 422)
    assert error["fields"] == {"orders": "500件以内で指定してください"}
    assert not Order.objects.exists()


def test_a_batch_needs_the_orders_write_scope(db: None) -> None:
    _, secret = make_key(ApiScope.CUSTOMERS_READ)
    error = assert_error(ApiClient(secret).post(BATCH, {"orders": [batch_item("B-1")]}), 403)
    assert error["code"] == "missing_scope"
    assert not Order.objects.exists()


def test_a_batch_resent_with_its_idempotency_key_is_replayed(api: ApiClient) -> None:
    body = {"orders": [batch_item("B-1"), batch_item("B-2")]}
    headers = {"Idempotency-Key": "sync-2026-05-01"}
    first = api.post(BATCH, body, headers=headers)
    second = api.post(BATCH, body, headers=headers)
    assert second.status_code == first.status_code == 200
    assert second.has_header("Idempotent-Replayed")
    assert second.content == first.content
    assert AuditLog.objects.filter(action="order.create").count() == 2


# -- an order's customer cannot change ---------------------------------------------------------


def test_an_order_sent_again_for_another_known_customer_is_409(api: ApiClient) -> None:
    first = api.put(URL, order_body()).json()["customer_id"]
    other = make_customer(family_name="佐藤")
    add_identity(other, IdentityKind.EMAIL, "ichiro@example.jp")
    body = order_body()
    body["customer"]["identities"] = {"email": "ichiro@example.jp"}
    # when
    response = api.put(URL, body)
    # then
    error = assert_error(response, 409, "conflict")
    assert error["message"] == (
        f"この注文は別の顧客(顧客ID {first})に登録済みです。注文の顧客は変更できません"
    )
    assert "ichiro" not in response.content.decode()
    assert Order.objects.get(number="1001").customer_id == first


def test_an_order_sent_again_for_the_customer_it_was_merged_into_is_accepted(
    api: ApiClient,
) -> None:
    absorbed = api.put(URL, order_body()).json()["customer_id"]
    survivor = make_customer(family_name="山田")
    add_identity(survivor, IdentityKind.EMAIL, "hanako.new@example.jp")
    customer_merge(
        survivor=survivor,
        absorbed=Customer.objects.get(pk=absorbed),
        acting_user=Actor(user_id=None, label="operator-1"),
    )
    body = order_body()
    body["customer"]["identities"] = {"email": "hanako.new@example.jp"}
    response = api.put(URL, body)
    assert response.status_code == 200, response.content
    assert response.json()["customer_id"] == survivor.pk


def test_a_batch_refuses_only_the_order_sent_for_another_customer(api: ApiClient) -> None:
    api.post(BATCH, {"orders": [batch_item("B-1"), batch_item("B-2")]})
    owner = Order.objects.get(number="B-1").customer_id
    api.post(BATCH, {"orders": [batch_item("B-9", email="ichiro@example.jp")]})
    # when
    orders = [batch_item("B-1", email="ichiro@example.jp"), batch_item("B-2", status="shipped")]
    body = api.post(BATCH, {"orders": orders}).json()
    # then
    refused, shipped = body["results"]
    assert refused["ok"] is False
    assert refused["error"] == {
        "code": "conflict",
        "message": f"この注文は別の顧客(顧客ID {owner})に登録済みです。注文の顧客は変更できません",
        "fields": {},
    }
    assert shipped["order"]["outcome"] == "updated"
    assert (body["failed"], body["updated"]) == (1, 1)
    assert Order.objects.get(number="B-1").customer_id == owner
