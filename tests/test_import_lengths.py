"""A value too long or too large for where Kizuna stores it is a bad cell like any other —
named by line, column and reason, reported in lenient mode, refusing the file in strict mode —
and never cut short or rounded to fit (RELIABILITY I5)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from kizuna.commerce.importers import ImportOptions, ImportResult, UsageError, run_import
from kizuna.commerce.importers.generic import parse_mapping
from kizuna.commerce.models import Order, OrderLine
from kizuna.customers.models import Customer, Identity, IdentityKind

pytestmark = pytest.mark.django_db

ORDERS_MAPPING = """\
kind: orders
columns:
  order_number: 受注番号
  ordered_at: 受注日時
  product_code: 商品番号
  product_name: 商品名
  unit_price: 単価
  quantity: 数量
  full_name: 氏名
  email: メール
  payment_method: 支払方法
  carrier: 配送業者
  tracking_number: 伝票番号
"""
ORDER_HEADER = ["受注番号", "受注日時", "商品番号", "商品名", "単価", "数量", "氏名", "メール",
                "支払方法", "配送業者", "伝票番号"]  # fmt: skip


def _order(number: str, **changes: str) -> dict[str, str]:
    row = {
        "受注番号": number,
        "受注日時": "2026-05-01 10:00",
        "商品番号": "SK-01",
        "商品名": "美容液",
        "単価": "3980",
        "数量": "1",
        "氏名": "山田 花子",
        "メール": f"{number.lower()}@example.jp",
        "支払方法": "クレジットカード",
        "配送業者": "ヤマト運輸",
        "伝票番号": "1234-5678-9012",
    }
    return {**row, **changes}


def _write(tmp_path: Path, name: str, header: list[str], rows: list[dict[str, str]]) -> Path:
    path = tmp_path / name
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows([row.get(column, "") for column in header] for row in rows)
    return path


def _import_orders(tmp_path: Path, rows: list[dict[str, str]], **options: object) -> ImportResult:
    mapping = tmp_path / "orders.yml"
    mapping.write_text(ORDERS_MAPPING, encoding="utf-8")
    path = _write(tmp_path, "orders.csv", ORDER_HEADER, rows)
    return run_import(
        path,
        ImportOptions(kind="orders", format="generic", mapping=mapping, **options),  # type: ignore[arg-type]
    )


def _errors(result: ImportResult) -> list[tuple[int, str, str]]:
    return [(error.line, error.column, error.reason) for error in result.errors]


def test_a_product_name_too_long_is_a_row_error_not_a_shortened_name(tmp_path: Path) -> None:
    # given an order whose product name is 100,000 characters, between two good ones
    rows = [_order("W-1"), _order("W-2", 商品名="美" * 100_000), _order("W-3")]
    # when it is imported
    result = _import_orders(tmp_path, rows)
    # then that row is reported, in the API's limit and our words, and nothing of it stored
    assert _errors(result) == [(3, "商品名", "商品名は200文字以内にしてください(いま100,000文字)")]
    assert (result.status, result.orders["created"], result.rows_rejected) == (
        "rejected_rows",
        2,
        1,
    )
    assert not Order.objects.filter(number="W-2").exists()
    assert not OrderLine.objects.filter(product_name__startswith="美美").exists()


def test_a_name_of_exactly_the_limit_is_stored_whole(tmp_path: Path) -> None:
    result = _import_orders(tmp_path, [_order("W-1", 商品名="美" * 200)])
    assert result.status == "ok"
    assert OrderLine.objects.get().product_name == "美" * 200


def test_strict_mode_refuses_the_file_for_a_value_too_long(tmp_path: Path) -> None:
    result = _import_orders(
        tmp_path, [_order("W-1"), _order("W-2", 商品名="美" * 201)], strict=True
    )
    assert result.status == "refused"
    assert _errors(result) == [(3, "商品名", "商品名は200文字以内にしてください(いま201文字)")]
    assert not Order.objects.exists()


def test_order_texts_too_long_are_named_by_their_own_columns(tmp_path: Path) -> None:
    # the API refuses these lengths too (支払方法 32, 配送業者 and 伝票番号 50 characters)
    row = _order("W-1", 支払方法="カ" * 33, 配送業者="ヤ" * 51, 伝票番号="1" * 51)
    result = _import_orders(tmp_path, [row])
    assert _errors(result) == [
        (2, "支払方法", "支払方法は32文字以内にしてください(いま33文字)"),
        (2, "配送業者", "配送業者は50文字以内にしてください(いま51文字)"),
        (2, "伝票番号", "伝票番号は50文字以内にしてください(いま51文字)"),
    ]
    assert not Order.objects.exists()


def test_an_email_too_long_to_deliver_is_a_row_error_on_every_database(tmp_path: Path) -> None:
    # 255 characters: once refused only by PostgreSQL's column, mid-import
    too_long = "a" * 244 + "@example.jp"
    result = _import_orders(tmp_path, [_order("W-1"), _order("W-2", メール=too_long)])
    assert _errors(result) == [(3, "メール", "メールアドレスが長すぎます(254文字まで)")]
    assert list(Order.objects.values_list("number", flat=True)) == ["W-1"]
    assert not Identity.objects.filter(value=too_long).exists()


def test_a_family_name_too_long_is_named_by_the_files_column_in_our_words(
    tmp_path: Path,
) -> None:
    # given a customer CSV with a 500-character 姓, and an order CSV whose one-column 氏名
    # splits into a 60-character family name
    mapping = tmp_path / "customers.yml"
    mapping.write_text(
        "kind: customers\ncolumns:\n  member_id: 会員ID\n  family_name: 姓\n  given_name: 名\n",
        encoding="utf-8",
    )
    members = _write(
        tmp_path,
        "customers.csv",
        ["会員ID", "姓", "名"],
        [{"会員ID": "M-1", "姓": "長" * 500, "名": "花子"}, {"会員ID": "M-2", "姓": "山田"}],
    )
    # when both are imported
    customers = run_import(
        members, ImportOptions(kind="customers", format="generic", mapping=mapping)
    )
    orders = _import_orders(tmp_path, [_order("W-1", 氏名=f"{'長' * 60} 花子")])
    # then each names the column the value came from, and says the limit and the length
    assert _errors(customers) == [(2, "姓", "姓は50文字以内にしてください(いま500文字)")]
    assert _errors(orders) == [(2, "氏名", "姓は50文字以内にしてください(いま60文字)")]
    assert list(Customer.objects.values_list("family_name", flat=True)) == ["山田"]


def test_eccube_columns_are_measured_as_stored(tmp_path: Path) -> None:
    # given EC-CUBE members: one whose half-width フリガナ is 60 characters but 36 once stored
    # (ﾀﾞ is two half-width characters, ダ one), one whose 住所2 is too long
    header = ["会員ID", "お名前(姓)", "お名前(セイ)", "住所2"]
    path = tmp_path / "会員.csv"
    with path.open("w", encoding="cp932", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerow(["1", "濱田", "ﾊﾏﾀﾞ" * 12, ""])
        writer.writerow(["2", "山田", "ﾔﾏﾀﾞ", "ビル" * 101])
    # when imported
    result = run_import(path, ImportOptions(kind="customers"))
    # then the first is stored whole, the second is refused naming 住所2
    assert _errors(result) == [
        (3, "住所2", "住所2(建物名・部屋番号)は200文字以内にしてください(いま202文字)")
    ]
    kana = Identity.objects.get(kind=IdentityKind.CART_MEMBER, value="1").customer.family_kana
    assert kana == "ハマダ" * 12


def test_an_eccube_product_name_is_counted_with_its_variants(tmp_path: Path) -> None:
    # given an item whose name fits alone but not with its 規格, which is stored with it
    header = [
        "注文番号",
        "受注日",
        "お名前(姓)",
        "商品コード",
        "商品名",
        "規格分類名1",
        "価格",
        "個数",
    ]
    path = tmp_path / "受注.csv"
    with path.open("w", encoding="cp932", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerow(
            ["1001", "2026-05-01 10:00:00", "髙橋", "SK-01", "美" * 198, "赤", "1800", "1"]
        )
        writer.writerow(
            ["1002", "2026-05-01 10:00:00", "髙橋", "SK-02", "美" * 200, "", "1800", "1"]
        )
    # when imported
    result = run_import(path, ImportOptions(kind="orders"))
    # then the first is refused, saying what was counted; the second is stored whole
    assert _errors(result) == [
        (2, "商品名", "商品名(規格を含めて)は200文字以内にしてください(いま201文字)")
    ]
    assert list(OrderLine.objects.values_list("product_name", flat=True)) == ["美" * 200]


def test_a_shopify_line_item_name_too_long_is_refused(tmp_path: Path) -> None:
    header = ["Name", "Created at", "Lineitem quantity", "Lineitem name", "Lineitem price",
              "Lineitem sku", "Billing Name", "Payment Method"]  # fmt: skip
    path = _write(
        tmp_path,
        "orders_export.csv",
        header,
        [
            {"Name": "#1001", "Created at": "2026-05-01 10:23:45 +0900", "Lineitem quantity": "1",
             "Lineitem name": "Soaps" * 41, "Lineitem price": "980", "Lineitem sku": "BS-01",
             "Billing Name": "Hanako Yamada", "Payment Method": "Shopify Payments"},
            {"Name": "#1002", "Created at": "2026-05-01 10:23:45 +0900", "Lineitem quantity": "1",
             "Lineitem name": "Soap", "Lineitem price": "980", "Lineitem sku": "BS-01",
             "Billing Name": "Hanako Yamada", "Payment Method": "Cash on Delivery (COD)" * 2},
        ],
    )  # fmt: skip
    result = run_import(path, ImportOptions(kind="orders"))
    assert _errors(result) == [
        (2, "Lineitem name", "商品名は200文字以内にしてください(いま205文字)"),
        (3, "Payment Method", "支払方法は32文字以内にしてください(いま44文字)"),
    ]
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    ("cells", "column", "reason"),
    [
        # the tester's odd1.csv line 4: a price no order can hold, once blamed on 数量
        ({"単価": "99999999999999999999999"}, "単価", "金額が大きすぎます(上限は2,147,483,647円)"),
        ({"数量": "99999999999999"}, "数量", "数量が大きすぎます(上限は2,147,483,647)"),
        # price × quantity too large is the line's amount, as the API says it
        (
            {"単価": "2000000000", "数量": "2"},
            "数量",
            "明細の金額(単価×数量)が上限の2,147,483,647円を超えます",
        ),
        # Python reads these as numbers; they stopped the whole import
        ({"単価": "Infinity"}, "単価", "金額として読めません"),
        ({"単価": "NaN"}, "単価", "金額として読めません"),
    ],
)
def test_a_number_too_large_is_blamed_on_its_own_column(
    tmp_path: Path, cells: dict[str, str], column: str, reason: str
) -> None:
    result = _import_orders(tmp_path, [_order("W-1", **cells), _order("W-2")])
    assert _errors(result) == [(2, column, reason)]
    assert list(Order.objects.values_list("number", flat=True)) == ["W-2"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("source", "自" * 33, "source は32文字までです(いま33文字)"),
        ("consent_form", "フ" * 101, "consent_form は100文字までです(いま101文字)"),
    ],
)
def test_a_mapping_name_too_long_to_record_is_a_usage_error(
    key: str, value: str, message: str
) -> None:
    raw = {"kind": "customers", "columns": {"family_name": "姓"}, key: value}
    with pytest.raises(UsageError) as caught:
        parse_mapping(raw, kind="customers")
    assert caught.value.message == message
