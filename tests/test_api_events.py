"""Behaviour events in batches: good ones stored, bad ones reported by position."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from kizuna.customers.models import BehaviourEvent, Customer, IdentityKind
from tests.factories import add_identity, make_customer, make_product
from tests.test_api_common import ApiClient, assert_error, full_access_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(db: None) -> ApiClient:
    return full_access_client()


URL = "/api/v1/events"


@pytest.fixture
def hanako() -> Customer:
    customer = make_customer()
    add_identity(customer, IdentityKind.EMAIL, "hanako@example.jp")
    add_identity(customer, IdentityKind.CART_MEMBER, "M000123")
    return customer


def event(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "customer": {"email": "hanako@example.jp"},
        "kind": "product_view",
        "occurred_at": "2026-05-01T10:00:00+09:00",
        "url": "https://shop.example.jp/items/1",
        "payload": {"ref": "lp-a"},
    }
    item.update(overrides)
    return item


def test_a_batch_is_stored_with_products_matched(api: ApiClient, hanako: Customer) -> None:
    product = make_product()
    batch = [
        event(product_code=product.code),
        event(kind="cart_add", customer={"cart_member_id": "Ｍ000123"}),
    ]
    response = api.post(URL, {"events": batch})
    assert response.status_code == 200, response.content
    assert response.json() == {"accepted": 2, "rejected": 0, "errors": []}
    stored = BehaviourEvent.objects.order_by("id")
    assert [(e.customer_id, e.kind, e.product_id) for e in stored] == [
        (hanako.pk, "product_view", product.pk),
        (hanako.pk, "cart_add", None),
    ]


def test_bad_events_are_reported_and_good_ones_kept(api: ApiClient, hanako: Customer) -> None:
    batch = [
        event(),
        event(kind="teleport"),
        event(customer={"email": "nobody@example.jp"}),
        event(occurred_at="yesterday"),
        event(customer={}),
        "not an object",
        event(payload={"x": "\u0000"}),
    ]
    body = api.post(URL, {"events": batch}).json()
    assert (body["accepted"], body["rejected"]) == (1, 6)
    by_index = {e["index"]: e["fields"] for e in body["errors"]}
    assert set(by_index) == {1, 2, 3, 4, 5, 6}
    assert "kind" in by_index[1]
    assert by_index[2] == {"customer": "この識別子の顧客が登録されていません"}
    assert "occurred_at" in by_index[3]
    assert "customer" in by_index[4]
    assert "payload" in by_index[6]
    assert "nobody@example.jp" not in str(body)
    assert BehaviourEvent.objects.count() == 1


def test_unknown_product_code_is_kept_in_the_payload(api: ApiClient, hanako: Customer) -> None:
    api.post(URL, {"events": [event(product_code="NEW-01")]})
    stored = BehaviourEvent.objects.get()
    assert stored.product_id is None
    assert stored.payload == {"ref": "lp-a", "product_code": "NEW-01"}


def test_a_full_batch_costs_a_handful_of_queries(api: ApiClient, hanako: Customer) -> None:
    batch = [event(customer={"email": "hanako@example.jp", "phone": "090-1234-5678"})] * 1000
    with CaptureQueriesContext(connection) as queries:
        body = api.post(URL, {"events": batch}).json()
    assert body["accepted"] == 1000
    statements = [q["sql"].split()[0] for q in queries]
    # the key lookup and its last-used stamp, one identity lookup per kind sent, and bulk
    # inserts (SQLite's variable limit splits them more finely than PostgreSQL's)
    assert len([s for s in statements if s != "INSERT"]) <= 4
    assert statements.count("INSERT") <= 10
    assert BehaviourEvent.objects.count() == 1000


def test_more_than_1000_events_are_refused_whole(api: ApiClient, hanako: Customer) -> None:
    error = assert_error(api.post(URL, {"events": [event()] * 1001}), 422)
    assert error["fields"] == {"events": "1000件以内で指定してください"}
    assert not BehaviourEvent.objects.exists()


def test_an_empty_batch_is_refused(api: ApiClient) -> None:
    assert_error(api.post(URL, {"events": []}), 422)


def test_events_dated_in_the_future_are_refused_one_by_one(
    api: ApiClient, hanako: Customer
) -> None:
    # A year typed wrong would make the event the customer's latest activity and could start
    # a cart-abandonment scenario; a day's slack (a cart's clock, another time zone) is kept,
    # as for an order's ordered_at.
    soon = (timezone.now() + dt.timedelta(hours=20)).isoformat()
    batch = [
        event(occurred_at="2030-01-01T10:00:00+09:00"),
        event(occurred_at=soon),
        event(occurred_at="2030-01-01T10:00:00+09:00", customer={"email": "nobody@example.jp"}),
    ]
    body = api.post(URL, {"events": batch}).json()
    assert (body["accepted"], body["rejected"]) == (1, 2)
    assert body["errors"] == [
        {"index": 0, "fields": {"occurred_at": "発生日時が未来の日付です"}},
        {
            "index": 2,
            "fields": {
                "occurred_at": "発生日時が未来の日付です",
                "customer": "この識別子の顧客が登録されていません",
            },
        },
    ]
    assert list(BehaviourEvent.objects.values_list("customer_id", flat=True)) == [hanako.pk]
