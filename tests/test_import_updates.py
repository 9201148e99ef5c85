"""Re-importing: unchanged orders are recognised in bulk, every real change still goes through.

The importer compares a whole batch with what is stored in a few queries (the bulk upsert).
These tests make sure that comparison never swallows a change a later export carries.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pytest_django import DjangoAssertNumQueries

from kizuna.commerce.importers import ImportOptions, ImportResult, run_import
from kizuna.commerce.models import Order, OrderStatus
from kizuna.commerce.services import LineInput, OrderInput, order_upsert
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from kizuna.customers.models import ConsentChannel, Customer

pytestmark = pytest.mark.django_db

MAPPING = """\
kind: orders
date_formats: ["%Y-%m-%d %H:%M", "%Y-%m-%d"]
columns:
  order_number: 注文番号
  ordered_at: 注文日時
  status: 状態
  email: メール
  full_name: 氏名
  product_code: 商品コード
  unit_price: 単価
  quantity: 数量
  payment_method: 支払方法
  shipped_on: 出荷日
  delivered_on: 配達日
  tracking_number: 伝票番号
  email_opt_in: メルマガ
"""
HEADER = "注文番号,注文日時,状態,メール,氏名,商品コード,単価,数量,支払方法,出荷日,配達日,伝票番号,メルマガ"
BASE = {
    "注文番号": "A-1",
    "注文日時": "2026-05-01 10:00",
    "状態": "received",
    "メール": "a@example.jp",
    "氏名": "山田 花子",
    "商品コード": "P-1",
    "単価": "1000",
    "数量": "1",
    "支払方法": "カード",
    "出荷日": "",
    "配達日": "",
    "伝票番号": "",
    "メルマガ": "いいえ",
}


def write(tmp_path: Path, name: str, rows: list[dict[str, str]]) -> Path:
    path = tmp_path / name
    body = [",".join(row[column] for column in HEADER.split(",")) for row in rows]
    path.write_text("\n".join([HEADER, *body]) + "\n", encoding="utf-8")
    return path


def run(tmp_path: Path, rows: list[dict[str, str]]) -> ImportResult:
    mapping = tmp_path / "mapping.yml"
    mapping.write_text(MAPPING, encoding="utf-8")
    csv_file = write(tmp_path, f"orders-{len(list(tmp_path.iterdir()))}.csv", rows)
    return run_import(csv_file, ImportOptions(kind="orders", format="generic", mapping=mapping))


@pytest.mark.parametrize(
    "change",
    [
        {"単価": "1200"},
        {"数量": "2"},
        {"支払方法": "代金引換"},
        {"状態": "shipped"},
        {"状態": "shipped", "出荷日": "2026-05-02"},
        {"状態": "cancelled"},
        {"注文日時": "2026-05-01 11:00"},
    ],
)
def test_every_change_in_a_later_export_is_applied(tmp_path: Path, change: dict[str, str]) -> None:
    run(tmp_path, [BASE])
    result = run(tmp_path, [{**BASE, **change}])
    assert result.orders["updated"] == 1
    assert result.orders["unchanged"] == 0


def test_a_new_line_and_delivery_facts_are_applied(tmp_path: Path) -> None:
    shipped = {**BASE, "状態": "shipped", "出荷日": "2026-05-02", "伝票番号": "111"}
    run(tmp_path, [shipped])
    later = {**shipped, "状態": "delivered", "配達日": "2026-05-03", "伝票番号": "222"}
    result = run(tmp_path, [later, {**later, "商品コード": "P-2"}])
    assert result.orders["updated"] == 1
    order = Order.objects.get(number="A-1")
    assert order.status == OrderStatus.DELIVERED
    shipment = order.shipments.get()
    assert (shipment.delivered_on, shipment.tracking_number) == (dt.date(2026, 5, 3), "222")
    assert order.lines.count() == 2


def test_a_later_export_moves_an_order_the_cart_sent_with_its_time(tmp_path: Path) -> None:
    # given an order the cart also sent through the API with its update time
    run(tmp_path, [BASE])
    order = Order.objects.get(number="A-1")
    dated = OrderInput(
        number="A-1",
        ordered_at=order.ordered_at,
        lines=(LineInput("P-1", "P-1", 1000, 1),),
        payment_method="カード",
        source_updated_at=order.ordered_at + dt.timedelta(hours=1),
    )
    order_upsert(customer=order.customer, data=dated, acting_user=Actor.system("api"))
    # when the shop's export (no update time) reports it shipped, with another price
    shipped = {**BASE, "状態": "shipped", "出荷日": "2026-05-02", "単価": "1200"}
    result = run(tmp_path, [shipped])
    # then the shipping is taken, the amounts the cart sent are not
    assert result.orders["updated"] == 1
    order.refresh_from_db()
    assert (order.status, order.total) == (OrderStatus.SHIPPED, 1000)
    assert order.shipments.get().shipped_on == dt.date(2026, 5, 2)
    # and an export that moves nothing forward is counted stale, not applied
    result = run(tmp_path, [{**shipped, "状態": "received", "単価": "1500"}])
    assert (result.orders["stale"], result.orders["updated"]) == (1, 0)
    order.refresh_from_db()
    assert (order.status, order.total) == (OrderStatus.SHIPPED, 1000)


def test_consent_given_later_is_recorded_on_an_unchanged_order(tmp_path: Path) -> None:
    run(tmp_path, [BASE])
    result = run(tmp_path, [{**BASE, "メルマガ": "はい"}])
    assert result.consents_granted == 1
    assert result.orders["unchanged"] == 1
    customer = Order.objects.get(number="A-1").customer
    assert customer.consents.get(channel=ConsentChannel.EMAIL).granted


def test_an_existing_order_keeps_its_customer_and_creates_none(tmp_path: Path) -> None:
    # given an order, and a later export where the buyer's e-mail was corrected
    run(tmp_path, [BASE])
    owner = Order.objects.get(number="A-1").customer_id
    result = run(tmp_path, [{**BASE, "メール": "new@example.jp", "支払方法": "代金引換"}])
    # then the order is updated for its customer; no customer nobody uses is created
    assert result.orders["updated"] == 1
    assert Order.objects.get(number="A-1").customer_id == owner
    assert Customer.objects.count() == 1


def test_reimporting_many_unchanged_orders_takes_a_few_queries_per_batch(
    tmp_path: Path, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    rows = [{**BASE, "注文番号": f"A-{n}", "メール": f"c{n % 7}@example.jp"} for n in range(120)]
    run(tmp_path, rows)
    audit = AuditLog.objects.count()
    # 120 orders through the services would take well over a thousand queries
    with django_assert_max_num_queries(20):
        result = run(tmp_path, rows)
    assert result.orders["unchanged"] == 120
    assert AuditLog.objects.count() == audit


def test_repeat_customers_in_one_file_are_one_customer(tmp_path: Path) -> None:
    rows = [{**BASE, "注文番号": f"B-{n}"} for n in range(5)]
    result = run(tmp_path, rows)
    assert (result.customers["created"], result.customers["matched"]) == (1, 4)
    assert Customer.objects.count() == 1
