"""Where messages go when a customer has several e-mail addresses: the one the shop's data
said last (Identity.observed_at), not the one stored last — an order history imported after
the cart was connected brings the customer's old addresses, and they must not take over."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from kizuna.accounts.models import Role
from kizuna.campaigns.consent_checks import Audience
from kizuna.campaigns.models import Channel
from kizuna.commerce.importers import ImportOptions, run_import
from kizuna.core import webhooks
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from kizuna.customers.models import Customer, Identity, IdentityKind
from kizuna.customers.selectors import identity_groups
from kizuna.customers.services import identity_add
from tests.factories import make_user
from tests.test_api_common import ApiClient, full_access_client
from tests.test_api_orders import order_body
from tests.test_import_lengths import ORDER_HEADER, ORDERS_MAPPING, _write
from tests.test_webhooks import deliver, member_event

pytestmark = pytest.mark.django_db

MEMBER = "M000123"
CURRENT = "hanako.new@example.jp"  # the address the customer gave the cart this year
OLD = "hanako.old@example.jp"  # the one on last year's orders


@pytest.fixture
def api(db: None) -> ApiClient:
    return full_access_client()


def sent_to(customer: Customer) -> str:
    """Where an e-mail goes (the send-time check) — and the customer page agrees."""
    address = Audience.load([customer.pk]).address(customer, Channel.EMAIL, {})
    (group,) = [g for g in identity_groups(customer) if g.kind == IdentityKind.EMAIL]
    assert group.identities[0].value == address
    if len(group.identities) > 1:
        assert group.sent_to is not None  # the 送信先 badge
        assert group.sent_to.value == address
    return address


def member() -> Customer:
    return Identity.objects.get(kind=IdentityKind.CART_MEMBER, value=MEMBER).customer


def create_by_api(api: ApiClient) -> Customer:
    body = {
        "identities": {"email": CURRENT, "cart_member_id": MEMBER},
        "profile": {"family_name": "山田", "given_name": "花子", "family_kana": "ヤマダ"},
    }
    response = api.post("/api/v1/customers", body)
    assert response.status_code == 201, response.content
    return member()


def order(ordered_at: str, email: str) -> dict[str, Any]:
    body = copy.deepcopy(order_body(ordered_at=ordered_at, updated_at=ordered_at))
    body["customer"]["identities"] = {"email": email, "cart_member_id": MEMBER}
    return body


def import_orders(tmp_path: Path, rows: list[tuple[str, str, str]]) -> None:
    """An order CSV with the cart's member ID: (order number, ordered at, e-mail)."""
    mapping = tmp_path / "orders.yml"
    mapping.write_text(ORDERS_MAPPING + "  member_id: 会員ID\n", encoding="utf-8")
    lines = [
        {
            "受注番号": number,
            "受注日時": at,
            "商品番号": "SK-01",
            "商品名": "美容液",
            "単価": "3980",
            "数量": "1",
            "氏名": "山田 花子",
            "メール": email,
            "会員ID": MEMBER,
        }
        for number, at, email in rows
    ]
    path = _write(tmp_path, "orders.csv", [*ORDER_HEADER, "会員ID"], lines)
    result = run_import(
        path,
        ImportOptions(kind="orders", format="generic", mapping=mapping),  # type: ignore[arg-type]
    )
    assert (result.status, result.orders["created"]) == ("ok", len(rows)), result.errors


def test_last_years_order_csv_imported_after_the_cart_keeps_the_current_address(
    api: ApiClient, tmp_path: Path
) -> None:
    # given a customer the cart's API created with their current address
    customer = create_by_api(api)
    # when the shop imports last year's orders, which carry the member ID and the old address
    import_orders(tmp_path, [("H-1", "2025-06-01 10:00", OLD)])
    # then the old address is the customer's (history, search) but mail still goes to the new
    assert member() == customer
    assert set(
        customer.identities.filter(kind=IdentityKind.EMAIL).values_list("value", flat=True)
    ) == {CURRENT, OLD}
    assert sent_to(customer) == CURRENT


@pytest.mark.parametrize("route", ["put", "batch"])
def test_an_old_order_sent_by_api_after_the_customer_keeps_the_current_address(
    api: ApiClient, route: str
) -> None:
    customer = create_by_api(api)
    body = order("2025-06-01T10:00:00+09:00", OLD)
    if route == "put":
        response = api.put("/api/v1/orders/H-1", body)
    else:
        response = api.post("/api/v1/orders/batch", {"orders": [{"number": "H-1", **body}]})
    assert response.status_code in (200, 201), response.content
    assert customer.identities.filter(kind=IdentityKind.EMAIL, value=OLD).exists()
    assert sent_to(customer) == CURRENT


def test_a_newer_order_with_a_new_address_takes_over_and_an_older_one_does_not(
    api: ApiClient,
) -> None:
    assert api.put("/api/v1/orders/O-1", order("2026-05-01T10:00:00+09:00", OLD)).status_code == 201
    customer = member()
    assert (
        api.put("/api/v1/orders/O-2", order("2026-06-01T10:00:00+09:00", CURRENT)).status_code
        == 201
    )
    assert sent_to(customer) == CURRENT
    # an order from before both, sent late, with yet another address
    older = order("2026-04-01T10:00:00+09:00", "hanako.oldest@example.jp")
    assert api.put("/api/v1/orders/O-0", older).status_code == 201
    assert sent_to(customer) == CURRENT


def test_a_newer_order_with_an_address_the_customer_changed_back_to_takes_over(
    api: ApiClient, tmp_path: Path
) -> None:
    # given orders with A, then B: B is where mail goes
    import_orders(
        tmp_path, [("O-1", "2026-05-01 10:00", OLD), ("O-2", "2026-06-01 10:00", CURRENT)]
    )
    customer = member()
    assert sent_to(customer) == CURRENT
    # when a later order carries A again (the customer went back to it)
    assert api.put("/api/v1/orders/O-3", order("2026-07-01T10:00:00+09:00", OLD)).status_code == 201
    # then A is where mail goes, and no second identity was stored for it
    assert sent_to(customer) == OLD
    assert customer.identities.filter(kind=IdentityKind.EMAIL).count() == 2


def test_an_address_staff_add_takes_over_and_an_old_order_imported_later_does_not_undo_it(
    api: ApiClient, tmp_path: Path
) -> None:
    import_orders(tmp_path, [("O-1", "2026-05-01 10:00", OLD)])
    customer = member()
    # the customer phones in a new address
    operator = make_user(Role.OPERATOR)
    identity_add(customer=customer, kind=IdentityKind.EMAIL, value=CURRENT, acting_user=operator)
    assert sent_to(customer) == CURRENT
    # then an order from before the call, with an address the record did not have yet
    late = order("2026-05-02T10:00:00+09:00", "hanako.work@example.jp")
    assert api.put("/api/v1/orders/O-2", late).status_code == 201
    assert sent_to(customer) == CURRENT


def test_a_cart_event_counts_as_of_its_time_not_as_of_its_delivery(api: ApiClient) -> None:
    # given a June order with the member's address A
    assert api.put("/api/v1/orders/O-1", order("2026-06-01T10:00:00+09:00", OLD)).status_code == 201
    customer = member()
    _, secret = webhooks.webhook_source_create(
        name="EC-CUBE本店", slug="eccube", acting_user=Actor.system("test-admin")
    )
    # when the cart's member event from May, with address B, is delivered only now
    may = member_event("c1", "2026-05-15T10:00:00+09:00", CURRENT)
    assert deliver(secret, may, topic="customers").json()["outcome"] == "updated"
    # then B is the member's, but June's order said A since: mail goes to A
    assert customer.identities.filter(kind=IdentityKind.EMAIL, value=CURRENT).exists()
    assert sent_to(customer) == OLD
    # and a member event from July with B takes over
    july = member_event("c2", "2026-07-01T10:00:00+09:00", CURRENT)
    assert deliver(secret, july, topic="customers").json()["outcome"] in ("updated", "unchanged")
    assert sent_to(customer) == CURRENT


def test_one_file_with_an_address_changed_away_and_back_sends_to_the_last_ones(
    tmp_path: Path,
) -> None:
    # the same address twice in one import (one batch): its later order counts
    rows = [
        ("O-1", "2026-05-01 10:00", OLD),
        ("O-2", "2026-06-01 10:00", CURRENT),
        ("O-3", "2026-07-01 10:00", OLD),
    ]
    import_orders(tmp_path, rows)
    assert sent_to(member()) == OLD


def test_an_address_the_record_has_given_again_by_phone_takes_over(tmp_path: Path) -> None:
    # given orders with A, then B
    import_orders(
        tmp_path, [("O-1", "2026-05-01 10:00", OLD), ("O-2", "2026-06-01 10:00", CURRENT)]
    )
    customer = member()
    assert sent_to(customer) == CURRENT
    # when the customer phones to say mail should go to A again, and the operator enters A
    operator = make_user(Role.OPERATOR)
    identity_add(customer=customer, kind=IdentityKind.EMAIL, value=OLD, acting_user=operator)
    # then A is where mail goes; the record still has the two addresses, and it is audited
    assert sent_to(customer) == OLD
    assert customer.identities.filter(kind=IdentityKind.EMAIL).count() == 2
    (changes,) = AuditLog.objects.filter(
        action="identity.add", actor_label=operator.get_username()
    ).values_list("changes", flat=True)
    assert set(changes) == {"observed_at"}
