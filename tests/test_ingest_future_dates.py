"""Orders dated in the future are refused on every route, naming the date the route sent.

A year typed wrong (2062 for 2026) would otherwise be stored and then count as the newest
purchase in every analysis. A day's slack keeps a fast cart clock or another time zone fine.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from kizuna.commerce.importers import ImportOptions, ImportResult, run_import
from kizuna.commerce.models import Order, OrderStatus
from kizuna.commerce.services import LineInput, OrderInput, UpsertOutcome, order_upsert
from kizuna.core import webhooks
from kizuna.core.audit import Actor
from kizuna.customers.models import Customer, Identity, IdentityKind
from tests.factories import make_customer
from tests.test_api_common import assert_error, full_access_client
from tests.test_webhooks import customer_event, deliver, order_event

pytestmark = pytest.mark.django_db
IMPORT = Actor.system("test-import")
DATA = Path(__file__).parent / "data" / "ingest"


def _order(**overrides: object) -> OrderInput:
    values: dict[str, object] = {
        "number": "1001",
        "ordered_at": timezone.now() - dt.timedelta(days=3),
        "lines": (LineInput("SK-TR-01", "美容液トライアル", 980, 1),),
    }
    values.update(overrides)
    return OrderInput(**values)  # type: ignore[arg-type]


def _refusal(data: OrderInput) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as excinfo:
        order_upsert(customer=make_customer(), data=data, acting_user=IMPORT)
    return excinfo.value.message_dict


def _in_days(days: int) -> dt.date:
    return timezone.localdate() + dt.timedelta(days=days)


# --- the shared validation ----------------------------------------------------------------------


def test_an_order_dated_years_ahead_is_refused_and_nothing_is_stored() -> None:
    refused = _refusal(_order(ordered_at=timezone.now() + dt.timedelta(days=3 * 365)))
    assert refused == {"ordered_at": ["受注日が未来の日付です"]}
    assert not Order.objects.exists()


def test_shipping_and_delivery_dates_ahead_are_refused() -> None:
    refused = _refusal(_order(shipped_on=_in_days(2), delivered_on=_in_days(3)))
    assert refused == {
        "shipped_on": ["出荷日が未来の日付です"],
        "delivered_on": ["お届け日が未来の日付です(届いた日だけを登録できます)"],
    }


def test_a_day_ahead_is_within_the_slack_for_clock_skew_and_time_zones() -> None:
    # a cart whose clock runs fast, or a date written in another time zone
    data = _order(
        ordered_at=timezone.now() + dt.timedelta(hours=20),
        shipped_on=_in_days(1),
        delivered_on=_in_days(1),
    )
    _, outcome = order_upsert(customer=make_customer(), data=data, acting_user=IMPORT)
    assert outcome == UpsertOutcome.CREATED


def test_an_update_of_a_stored_order_to_a_future_date_is_refused_too() -> None:
    customer = make_customer()
    order, _ = order_upsert(customer=customer, data=_order(), acting_user=IMPORT)
    with pytest.raises(ValidationError) as excinfo:
        order_upsert(customer=customer, data=_order(delivered_on=_in_days(5)), acting_user=IMPORT)
    assert list(excinfo.value.message_dict) == ["delivered_on"]
    assert not order.shipments.exists()


# --- the API and webhooks: 422 with the field, not 500 ------------------------------------------


def _api_body(ordered_at: dt.datetime) -> dict[str, object]:
    return {
        "customer": {
            "identities": {"email": "hanako@example.jp"},
            "profile": {"family_name": "山田"},
        },
        "ordered_at": ordered_at.isoformat(),
        "lines": [
            {"product_code": "SK-TR-01", "product_name": "トライアル", "unit_price": 980,
             "quantity": 1}
        ],
    }  # fmt: skip


def test_the_api_answers_422_naming_ordered_at() -> None:
    api = full_access_client()
    future = timezone.now() + dt.timedelta(days=400)
    error = assert_error(api.put("/api/v1/orders/1001", _api_body(future)), 422)
    assert error["fields"] == {"ordered_at": "受注日が未来の日付です"}
    body = {**_api_body(timezone.now()), "delivered_on": _in_days(10).isoformat()}
    error = assert_error(api.put("/api/v1/orders/1001", body), 422)
    assert error["fields"] == {
        "delivered_on": "お届け日が未来の日付です(届いた日だけを登録できます)"
    }
    assert not Order.objects.exists()


def test_a_batch_refuses_only_the_future_order() -> None:
    api = full_access_client()
    orders = [
        {"number": "1001", **_api_body(timezone.now() + dt.timedelta(days=400))},
        {"number": "1002", **_api_body(timezone.now() - dt.timedelta(days=1))},
    ]
    answer = api.post("/api/v1/orders/batch", {"orders": orders})
    assert answer.status_code == 200, answer.content
    first, second = answer.json()["results"]
    assert first["error"]["fields"] == {"ordered_at": "受注日が未来の日付です"}
    assert second["ok"] is True
    assert list(Order.objects.values_list("number", flat=True)) == ["1002"]


def test_a_webhook_answers_422_naming_data_ordered_at() -> None:
    _, secret = webhooks.webhook_source_create(
        name="EC-CUBE本店", slug="eccube", acting_user=IMPORT
    )
    future = (timezone.now() + dt.timedelta(days=400)).isoformat()
    response = deliver(secret, order_event(ordered_at=future, updated_at=future))
    error = assert_error(response, 422)
    assert error["fields"] == {"data.ordered_at": "受注日が未来の日付です"}
    assert not Order.objects.exists()


# --- CSV imports: a row error with its line and the file's own column ------------------------


def _rewritten(tmp_path: Path, name: str, old: str, new: str, encoding: str) -> Path:
    text = (DATA / name).read_text(encoding=encoding)
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1), encoding=encoding)
    return path


def _errors(result: ImportResult) -> list[tuple[int, str, str, str]]:
    return [(e.line, e.column, e.order, e.reason) for e in result.errors if e.column]


def test_an_eccube_row_dated_ahead_is_reported_with_its_line_and_column(tmp_path: Path) -> None:
    ahead = f"{timezone.localdate().year + 3}-05-01 10:23:45"
    path = _rewritten(
        tmp_path, "eccube_orders_cp932.csv", "2026-05-01 10:23:45", ahead, encoding="cp932"
    )
    result = run_import(path, ImportOptions(kind="orders"))
    assert result.status == "rejected_rows"
    assert _errors(result) == [(2, "受注日", "1001", "受注日が未来の日付です")]
    assert not Order.objects.filter(number="1001").exists()
    assert Order.objects.exists()  # the other orders are imported (lenient mode)


@pytest.mark.parametrize(
    ("stored", "column", "message"),
    [
        ("2026-05-01 10:23:45 +0900", "Created at", "受注日が未来の日付です"),
        ("2026-05-02 15:00:00 +0900", "Fulfilled at", "出荷日が未来の日付です"),
    ],
)
def test_a_shopify_row_dated_ahead_names_its_column(
    tmp_path: Path, stored: str, column: str, message: str
) -> None:
    ahead = f"{timezone.localdate().year + 3}{stored[4:]}"
    path = _rewritten(tmp_path, "shopify_orders_bom.csv", stored, ahead, encoding="utf-8-sig")
    result = run_import(path, ImportOptions(kind="orders"))
    assert _errors(result) == [(2, column, "#1001", message)]


def test_a_generic_row_shipped_ahead_names_its_shipping_column(tmp_path: Path) -> None:
    ahead = _in_days(30).strftime("%Y/%m/%d")
    path = _rewritten(tmp_path, "generic_orders.csv", '"2026/05/02"', f'"{ahead}"', "utf-8")
    result = run_import(
        path,
        ImportOptions(kind="orders", format="generic", mapping=DATA / "generic_orders.yml"),
    )
    assert _errors(result) == [(2, "出荷日", "W-0001", "出荷日が未来の日付です")]


# --- an order's cancellation date ----------------------------------------------------------------


def test_a_cancellation_dated_ahead_is_refused_and_a_day_ahead_is_not() -> None:
    ahead = timezone.now() + dt.timedelta(days=3)
    refused = _refusal(_order(status=OrderStatus.CANCELLED, cancelled_at=ahead))
    assert refused == {"cancelled_at": ["キャンセル・返品日が未来の日付です"]}
    assert not Order.objects.exists()
    soon = timezone.now() + dt.timedelta(hours=20)
    data = _order(status=OrderStatus.CANCELLED, cancelled_at=soon)
    _, outcome = order_upsert(customer=make_customer(), data=data, acting_user=IMPORT)
    assert outcome == UpsertOutcome.CREATED


def test_the_api_and_the_webhook_name_cancelled_at() -> None:
    api = full_access_client()
    ahead = (timezone.now() + dt.timedelta(days=400)).isoformat()
    body = {**_api_body(timezone.now()), "status": "cancelled", "cancelled_at": ahead}
    error = assert_error(api.put("/api/v1/orders/1001", body), 422)
    assert error["fields"] == {"cancelled_at": "キャンセル・返品日が未来の日付です"}
    _, secret = webhooks.webhook_source_create(
        name="EC-CUBE本店", slug="eccube", acting_user=IMPORT
    )
    event = order_event(status="cancelled", cancelled_at=ahead)
    error = assert_error(deliver(secret, event), 422)
    assert error["fields"] == {"data.cancelled_at": "キャンセル・返品日が未来の日付です"}
    assert not Order.objects.exists()


def test_a_shopify_row_cancelled_ahead_names_its_cancelled_at_column(tmp_path: Path) -> None:
    stored = "2026-05-04 12:00:00 +0900"
    ahead = f"{timezone.localdate().year + 3}{stored[4:]}"
    path = _rewritten(tmp_path, "shopify_orders_bom.csv", stored, ahead, encoding="utf-8-sig")
    result = run_import(path, ImportOptions(kind="orders"))
    assert _errors(result) == [(5, "Cancelled at", "#1003", "キャンセル・返品日が未来の日付です")]
    assert not Order.objects.filter(number="#1003").exists()


# --- a customer's registration date --------------------------------------------------------------


def test_a_member_row_registered_ahead_names_its_column(tmp_path: Path) -> None:
    ahead = f"{timezone.localdate().year + 3}-12-01 09:30:00"
    path = _rewritten(
        tmp_path, "eccube_members_cp932.csv", "2025-12-01 09:30:00", ahead, encoding="cp932"
    )
    result = run_import(path, ImportOptions(kind="customers"))
    assert _errors(result) == [(2, "登録日", "101", "登録日が未来の日付です")]
    assert not Identity.objects.filter(kind=IdentityKind.CART_MEMBER, value="101").exists()
    assert Identity.objects.filter(kind=IdentityKind.CART_MEMBER, value="102").exists()


def test_a_generic_customer_registered_ahead_names_its_column(tmp_path: Path) -> None:
    mapping = tmp_path / "customers.yml"
    mapping.write_text(
        "kind: customers\ncolumns:\n  email: メール\n  full_name: 氏名\n  registered_at: 入会日\n",
        encoding="utf-8",
    )
    ahead = (timezone.localtime() + dt.timedelta(days=30)).strftime("%Y-%m-%d %H:%M")
    soon = (timezone.localtime() + dt.timedelta(hours=20)).strftime("%Y-%m-%d %H:%M")
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(
        f"氏名,メール,入会日\n髙橋 花子,hanako@example.jp,{ahead}\n"
        f"佐藤 一郎,ichiro@example.jp,{soon}\n",
        encoding="utf-8",
    )
    result = run_import(
        csv_file, ImportOptions(kind="customers", format="generic", mapping=mapping)
    )
    assert [(e.line, e.column, e.reason) for e in result.errors] == [
        (2, "入会日", "登録日が未来の日付です")
    ]
    assert result.customers["created"] == 1  # a day ahead is within the slack


def test_the_customers_api_names_registered_at() -> None:
    api = full_access_client()
    ahead = (timezone.now() + dt.timedelta(days=400)).isoformat()
    body = {
        "identities": {"email": "hanako@example.jp"},
        "profile": {"family_name": "山田", "registered_at": ahead},
    }
    error = assert_error(api.post("/api/v1/customers", body), 422)
    assert error["fields"] == {"profile.registered_at": "登録日が未来の日付です"}
    assert not Customer.objects.exists()
    soon = (timezone.now() + dt.timedelta(hours=20)).isoformat()
    body["profile"] = {"family_name": "山田", "registered_at": soon}
    created = api.post("/api/v1/customers", body)
    assert created.status_code == 201, created.content
    customer_id = created.json()["id"]
    answer = api.patch(f"/api/v1/customers/{customer_id}", {"registered_at": ahead})
    error = assert_error(answer, 422)
    assert error["fields"] == {"registered_at": "登録日が未来の日付です"}
    assert Customer.objects.get().registered_at < timezone.now() + dt.timedelta(days=1)
    # an order's new customer, too
    order = _api_body(timezone.now())
    order["customer"]["profile"]["registered_at"] = ahead  # type: ignore[index]
    error = assert_error(api.put("/api/v1/orders/1001", order), 422)
    assert error["fields"] == {"customer.profile.registered_at": "登録日が未来の日付です"}


def test_a_customer_webhook_names_data_profile_registered_at() -> None:
    _, secret = webhooks.webhook_source_create(
        name="EC-CUBE本店", slug="eccube", acting_user=IMPORT
    )
    ahead = (timezone.now() + dt.timedelta(days=400)).isoformat()
    event = customer_event("c1", timezone.now().isoformat(), registered_at=ahead)
    error = assert_error(deliver(secret, event, topic="customers"), 422)
    assert error["fields"] == {"data.profile.registered_at": "登録日が未来の日付です"}
    assert not Customer.objects.exists()
