"""Customers merged into another (名寄せ, customers.merge) through the API.

A cart that stored a Kizuna customer id keeps sending it after staff merged that record into
another. Every write naming a merged-away customer is refused with 409 `customer_merged` and
the id to use instead (the final survivor, through merges of merges), and writes nothing to
either record; reads still answer, saying `merged_into`; search leaves merged records out;
undoing the merge makes the record writable again. The merges here go through the project's
own merge service, as staff's 「統合する」 does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, models, transaction
from django.test import Client

from kizuna.commerce.models import Order, Product
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from kizuna.customers.merge import customer_merge, customer_merge_undo
from kizuna.customers.models import (
    BehaviourEvent,
    Consent,
    Customer,
    CustomerMerge,
    Identity,
    IdentityKind,
    MemberStatus,
    TimelineEvent,
)
from kizuna.loyalty.models import PointEntry
from kizuna.loyalty.selectors import points_balance
from kizuna.loyalty.services import points_earn
from kizuna.subscriptions.models import Subscription
from kizuna.support.models import Contact
from tests.factories import add_identity, make_customer, make_order
from tests.test_api_common import ApiClient, full_access_client

pytestmark = pytest.mark.django_db

STAFF = Actor(user_id=None, label="operator-1")
SYSTEM = Actor.system("test")


@pytest.fixture
def api(db: None) -> ApiClient:
    return full_access_client()


def merge(survivor: Customer, absorbed: Customer) -> CustomerMerge:
    return customer_merge(survivor=survivor, absorbed=absorbed, acting_user=STAFF)


@pytest.fixture
def merged() -> tuple[Customer, Customer]:
    """(survivor, absorbed): 山田花子 registered twice, the second record (with its own cart
    member ID, an order and 300 points) merged into the first."""
    survivor = make_customer(family_kana="ヤマダ")
    add_identity(survivor, IdentityKind.EMAIL, "hanako@example.jp")
    absorbed = make_customer(family_kana="ヤマモト", address1="港区南青山1-1-1")
    add_identity(absorbed, IdentityKind.CART_MEMBER, "M000123")
    order = make_order(absorbed)
    points_earn(customer=absorbed, amount=300, acting_user=SYSTEM, reason="購入", order=order)
    merge(survivor, absorbed)
    return survivor, absorbed


# Every table holding a customer's rows that one of these writes could add to or change.
_TABLES: tuple[type[models.Model], ...] = (
    Identity,
    Order,
    Subscription,
    PointEntry,
    TimelineEvent,
    Consent,
    BehaviourEvent,
    Contact,
)


def snapshot(*customers: Customer) -> dict[str, Any]:
    """Row counts per table for each customer and overall, and the customers' own rows."""
    ids = [c.pk for c in customers]
    rows: dict[str, Any] = {
        model._meta.label: (
            [model._default_manager.filter(customer_id=pk).count() for pk in ids],
            model._default_manager.count(),
        )
        for model in _TABLES
    }
    rows["audit"] = [AuditLog.objects.filter(customer_id=pk).count() for pk in ids]
    rows["products"] = Product.objects.count()
    rows["customers"] = list(
        Customer.objects.filter(pk__in=ids).order_by("pk").values()  # every column
    )
    return rows


def assert_merged(response: Any, survivor: Customer, fields: dict[str, str] | None = None) -> None:
    assert response.status_code == 409, response.content.decode()
    assert response.json() == {
        "error": {
            "code": "customer_merged",
            "message": (
                f"この顧客は顧客 {survivor.pk} に統合されています。統合先の ID を使ってください"
            ),
            "fields": fields or {},
            "merged_into": survivor.pk,
        }
    }


# --- writes are refused, naming the survivor ----------------------------------------------------


@pytest.mark.parametrize("idempotency_key", [None, "addr-change-1"])
def test_changing_a_merged_customer_is_409_and_changes_neither_record(
    api: ApiClient, merged: tuple[Customer, Customer], idempotency_key: str | None
) -> None:
    # given
    survivor, absorbed = merged
    before = snapshot(survivor, absorbed)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    # when
    response = api.patch(
        f"/api/v1/customers/{absorbed.pk}",
        {"family_name": "X", "address1": "新宿区西新宿2-8-1"},
        headers=headers,
    )
    # then
    assert_merged(response, survivor)
    assert snapshot(survivor, absorbed) == before


def test_points_for_a_merged_customer_are_409_and_land_nowhere(
    api: ApiClient, merged: tuple[Customer, Customer]
) -> None:
    # given
    survivor, absorbed = merged
    before = snapshot(survivor, absorbed)
    # when
    for body in (
        {"kind": "earn", "amount": 100, "reason": "購入ポイント"},
        {"kind": "redeem", "amount": 100},
        {"kind": "adjust", "amount": -100, "reason": "調整"},
    ):
        assert_merged(api.post(f"/api/v1/customers/{absorbed.pk}/points", body), survivor)
    # then
    assert snapshot(survivor, absorbed) == before
    assert (points_balance(survivor), points_balance(absorbed)) == (300, 0)


def test_a_subscription_for_a_merged_customer_is_409_and_nothing_is_created(
    api: ApiClient, merged: tuple[Customer, Customer]
) -> None:
    # given
    survivor, absorbed = merged
    before = snapshot(survivor, absorbed)
    # when
    response = api.post(
        "/api/v1/subscriptions",
        {
            "customer_id": absorbed.pk,
            "product_code": "SK-SUB-NEW",
            "product_name": "美容液 定期便",
            "unit_price": 3980,
            "cycle_kind": "days",
            "cycle_days": 30,
            "started_on": "2026-05-01",
        },
    )
    # then
    assert_merged(
        response, survivor, {"customer_id": f"統合先の顧客 {survivor.pk} を指定してください"}
    )
    assert snapshot(survivor, absorbed) == before  # not even the new product


def test_privacy_export_and_erase_of_a_merged_customer_name_the_survivor(
    api: ApiClient, merged: tuple[Customer, Customer]
) -> None:
    # given
    survivor, absorbed = merged
    before = snapshot(survivor, absorbed)
    # when
    export = api.get(f"/api/v1/customers/{absorbed.pk}/export")
    erase = api.post(
        f"/api/v1/customers/{absorbed.pk}/erase",
        {"reason": "受付 1", "confirm_customer_id": absorbed.pk},
    )
    # then
    for response in (export, erase):
        assert response.status_code == 409, response.content.decode()
        error = response.json()["error"]
        assert (error["code"], error["merged_into"]) == ("customer_merged", survivor.pk)
        assert error["message"].startswith(f"この顧客は顧客 {survivor.pk} に統合されています。")
    assert snapshot(survivor, absorbed) == before
    assert not AuditLog.objects.filter(action__in=["customer.export", "customer.erase"]).exists()


# --- reads say where the customer went ----------------------------------------------------------


def test_reading_a_merged_customer_says_where_it_was_merged(
    api: ApiClient, merged: tuple[Customer, Customer]
) -> None:
    survivor, absorbed = merged
    gone = api.get(f"/api/v1/customers/{absorbed.pk}")
    assert gone.status_code == 200
    assert (gone.json()["merged_into"], gone.json()["identities"]) == (survivor.pk, [])
    assert gone.json()["member_status"] == MemberStatus.WITHDRAWN
    live = api.get(f"/api/v1/customers/{survivor.pk}")
    assert live.json()["merged_into"] is None
    assert {i["value"] for i in live.json()["identities"]} == {"hanako@example.jp", "M000123"}


def test_search_leaves_merged_customers_out_and_finds_the_survivor(
    api: ApiClient, merged: tuple[Customer, Customer]
) -> None:
    survivor, _ = merged
    # The absorbed record kept its own kana; its identities moved to the survivor.
    assert api.get("/api/v1/customers", {"kana": "ヤマモト"}).json()["results"] == []
    by_member_id = api.get("/api/v1/customers", {"cart_member_id": "M000123"}).json()
    assert [c["id"] for c in by_member_id["results"]] == [survivor.pk]
    assert by_member_id["results"][0]["merged_into"] is None


@pytest.mark.django_db(transaction=True)
def test_a_write_during_a_merge_waits_for_it_and_is_refused() -> None:
    # given: staff's merge has moved everything but not yet committed
    api = full_access_client()
    survivor, absorbed = make_customer(), make_customer(family_kana="ヤマモト")
    # Loaded before the race starts: a process's first request imports the URL conf, slow
    # enough to outlast the merge and hide the race.
    assert api.get(f"/api/v1/customers/{absorbed.pk}").status_code == 200
    moved = threading.Event()
    failures: list[BaseException] = []

    def staff_merges() -> None:
        try:
            with transaction.atomic():
                merge(survivor, absorbed)
                moved.set()
                time.sleep(0.5)  # the API call below must wait out this
        except BaseException as exc:  # reported to the test thread below
            failures.append(exc)
            moved.set()
        finally:
            connection.close()

    thread = threading.Thread(target=staff_merges)
    thread.start()
    assert moved.wait(timeout=30)
    # when: the cart's address change arrives meanwhile
    response = api.patch(f"/api/v1/customers/{absorbed.pk}", {"family_name": "X"})
    thread.join(timeout=60)
    # then: it waited for the merge, saw it, and wrote nothing to the dead record
    assert not failures, failures
    assert_merged(response, survivor)
    assert Customer.objects.get(pk=absorbed.pk).family_name == "山田"


# --- merges of merges, undo, and 退会 without a merge -------------------------------------------


def test_a_chain_of_merges_names_the_final_survivor(api: ApiClient) -> None:
    # given: A merged into B, then B into C
    a, b, c = make_customer(), make_customer(), make_customer()
    merge(b, a)
    merge(c, b)
    before = snapshot(a, b, c)
    # when
    calls: list[Callable[[], Any]] = [
        lambda: api.patch(f"/api/v1/customers/{a.pk}", {"family_name": "X"}),
        lambda: api.post(f"/api/v1/customers/{a.pk}/points", {"kind": "earn", "amount": 1}),
        lambda: api.patch(f"/api/v1/customers/{b.pk}", {"family_name": "X"}),
    ]
    # then
    for call in calls:
        assert_merged(call(), c)
    assert snapshot(a, b, c) == before
    for record in (a, b):
        assert api.get(f"/api/v1/customers/{record.pk}").json()["merged_into"] == c.pk


def test_undoing_the_merge_makes_the_record_writable_again(
    api: ApiClient, merged: tuple[Customer, Customer]
) -> None:
    # given
    survivor, absorbed = merged
    customer_merge_undo(merge=CustomerMerge.objects.get(absorbed=absorbed), acting_user=STAFF)
    # when
    changed = api.patch(f"/api/v1/customers/{absorbed.pk}", {"address1": "新宿区西新宿2-8-1"})
    earned = api.post(f"/api/v1/customers/{absorbed.pk}/points", {"kind": "earn", "amount": 10})
    # then
    assert changed.status_code == 200, changed.content.decode()
    assert changed.json()["merged_into"] is None
    assert earned.status_code == 201, earned.content.decode()
    assert (points_balance(absorbed), points_balance(survivor)) == (310, 0)


def test_a_withdrawn_customer_never_merged_is_still_written(api: ApiClient) -> None:
    # 退会 alone is a member status the cart itself may set and change back; only a merge
    # moves the person to another record.
    withdrawn = make_customer(member_status=MemberStatus.WITHDRAWN)
    response = api.patch(f"/api/v1/customers/{withdrawn.pk}", {"address1": "新宿区西新宿2-8-1"})
    assert response.status_code == 200, response.content.decode()
    assert response.json()["merged_into"] is None


# --- the OpenAPI document -----------------------------------------------------------------------


def test_the_openapi_document_lists_the_merged_customer_answers(db: None) -> None:
    document = Client().get("/api/v1/openapi.json").json()
    conflict = "#/components/schemas/CustomerConflictOut"
    for path, method in [
        ("/api/v1/customers/{customer_id}", "patch"),
        ("/api/v1/customers/{customer_id}/points", "post"),
        ("/api/v1/subscriptions", "post"),
        ("/api/v1/customers/{customer_id}/export", "get"),
        ("/api/v1/customers/{customer_id}/erase", "post"),
    ]:
        response = document["paths"][path][method]["responses"]["409"]
        assert response["content"]["application/json"]["schema"]["$ref"] == conflict, path
    schemas = document["components"]["schemas"]
    assert "merged_into" in schemas["CustomerConflictDetail"]["properties"]
    assert "merged_into" in schemas["CustomerOut"]["required"]
