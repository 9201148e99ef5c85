"""Rows QA found reported in words that did not fit them, or silently half-imported: an order
whose rows name two customers, a count written with a fraction, a header row repeated where two
exports were joined, and a member file's errors named by an order number."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from kizuna.commerce.importers import ImportOptions, ImportResult, run_import
from kizuna.commerce.models import Order
from kizuna.customers.models import Customer, Identity, IdentityKind
from tests.test_import_command import kizuna_import
from tests.test_import_lengths import ORDER_HEADER, ORDERS_MAPPING, _errors, _order, _write

pytestmark = pytest.mark.django_db
DATA = Path(__file__).parent / "data" / "ingest"
ECCUBE = DATA / "eccube_orders_cp932.csv"
MEMBERS = DATA / "eccube_members_cp932.csv"
SHOPIFY = DATA / "shopify_orders_bom.csv"
REPEATED_HEADER = (
    "見出し行が重複しています(ファイルを連結した場合は、2つ目以降の見出し行を削除してください)"
)


def _rows(path: Path, encoding: str) -> tuple[list[str], list[dict[str, str]]]:
    """A golden file's header and its rows by column name (line n of the file is rows[n - 2])."""
    header, *rows = list(csv.reader(io.StringIO(path.read_bytes().decode(encoding))))
    return header, [dict(zip(header, row, strict=True)) for row in rows]


def _csv_text(header: list[str], rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([row[column] for column in header] for row in rows)
    return out.getvalue()


def _eccube(tmp_path: Path, changes: dict[int, dict[str, str]], **options: object) -> ImportResult:
    """The golden EC-CUBE 受注CSV with some cells changed, by line, imported."""
    header, rows = _rows(ECCUBE, "cp932")
    for line, cells in changes.items():
        rows[line - 2] = {**rows[line - 2], **cells}
    path = tmp_path / "受注.csv"
    path.write_bytes(_csv_text(header, rows).encode("cp932"))
    return run_import(path, ImportOptions(kind="orders", **options))  # type: ignore[arg-type]


def _orders() -> set[str]:
    return set(Order.objects.values_list("number", flat=True))


def _other_customer(first_line: int, what: str) -> str:
    return (
        f"同じ注文番号の{first_line}行目と顧客({what})が異なります。"
        "どちらの顧客の注文か分からないため、この注文は取り込みません"
        "(正しい顧客に直してから取り込み直してください)"
    )


# -- one order, one customer ------------------------------------------------------------------


def test_an_eccube_order_whose_rows_name_two_members_is_not_imported(tmp_path: Path) -> None:
    # given order 1001 (lines 2-5, member 101) with its second row written for member 205
    result = _eccube(tmp_path, {3: {"会員ID": "205"}})
    # then the row is reported against 会員ID, the rest of the order with it
    assert _errors(result) == [
        (2, "", "同じ注文の3行目に誤りがあるため、この行も取り込みません"),
        (3, "会員ID", _other_customer(2, "会員ID")),
        (4, "", "同じ注文の3行目に誤りがあるため、この行も取り込みません"),
        (5, "", "同じ注文の3行目に誤りがあるため、この行も取り込みません"),
    ]
    assert {error.order for error in result.errors} == {"1001"}
    assert (result.rows_rejected, result.orders["rejected"]) == (4, 1)
    # and neither customer got order 1001; member 205 was not made up from it
    assert _orders() == {"1002", "1003", "1005"}
    assert not Identity.objects.filter(kind=IdentityKind.CART_MEMBER, value="205").exists()


def test_a_member_row_in_a_guest_order_is_another_customer(tmp_path: Path) -> None:
    # given guest order 1002 (lines 6-7, no 会員ID) whose second row names member 101
    result = _eccube(tmp_path, {7: {"会員ID": "101"}})
    assert [(line, column) for line, column, _ in _errors(result)] == [(6, ""), (7, "会員ID")]
    assert "1002" not in _orders()


@pytest.mark.parametrize(
    ("cells", "column", "what"),
    [
        ({"メールアドレス": "jiro.sato@example.com"}, "メールアドレス", "メールアドレス"),
        ({"お名前(名)": "次郎"}, "お名前(名)", "氏名"),
    ],
)
def test_a_guest_order_whose_rows_name_two_people_is_not_imported(
    tmp_path: Path, cells: dict[str, str], column: str, what: str
) -> None:
    # given guest order 1002 (lines 6-7) whose second row is someone else's
    result = _eccube(tmp_path, {7: cells})
    assert _errors(result) == [
        (6, "", "同じ注文の7行目に誤りがあるため、この行も取り込みません"),
        (7, column, _other_customer(6, what)),
    ]
    assert "1002" not in _orders()
    assert not Identity.objects.filter(value="jiro.sato@example.com").exists()
    assert not Customer.objects.filter(given_name="次郎").exists()


def test_the_same_guest_written_differently_is_one_customer(tmp_path: Path) -> None:
    # given guest order 1002 whose second row writes the address in capitals, the name in
    # full-width spacing: the services would match them as the same person
    result = _eccube(tmp_path, {7: {"メールアドレス": "Ichiro.Sato@Example.com"}})
    assert (result.status, result.orders["created"]) == ("ok", 4)


def test_strict_mode_imports_nothing_when_an_order_names_two_members(tmp_path: Path) -> None:
    result = _eccube(tmp_path, {3: {"会員ID": "205"}}, strict=True)
    assert result.status == "refused"
    assert [(line, column) for line, column, _ in _errors(result) if column] == [(3, "会員ID")]
    assert not Order.objects.exists()
    assert not Customer.objects.exists()


def test_a_shopify_row_with_another_email_is_another_customer(tmp_path: Path) -> None:
    # given Shopify's export, whose #1001 line items (lines 2-3) carry the customer on the
    # first row only, with an address on the second row too
    header, rows = _rows(SHOPIFY, "utf-8-sig")
    rows[1]["Email"] = "someone.else@example.jp"
    path = tmp_path / "orders_export.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _csv_text(header, rows).encode("utf-8"))
    result = run_import(path, ImportOptions(kind="orders"))
    # then that row is reported, #1001 is left out and the other orders are imported
    assert _errors(result) == [
        (2, "", "同じ注文の3行目に誤りがあるため、この行も取り込みません"),
        (3, "Email", _other_customer(2, "メールアドレス")),
    ]
    assert _orders() == {"#1002", "#1003"}
    assert not Identity.objects.filter(value="someone.else@example.jp").exists()


def test_a_generic_order_whose_rows_name_two_addresses_is_not_imported(tmp_path: Path) -> None:
    mapping = tmp_path / "orders.yml"
    mapping.write_text(ORDERS_MAPPING, encoding="utf-8")
    rows = [_order("W-1"), _order("W-1", 商品番号="SK-02", メール="b@example.jp"), _order("W-2")]
    path = _write(tmp_path, "orders.csv", ORDER_HEADER, rows)
    result = run_import(path, ImportOptions(kind="orders", format="generic", mapping=mapping))
    assert _errors(result) == [
        (2, "", "同じ注文の3行目に誤りがあるため、この行も取り込みません"),
        (3, "メール", _other_customer(2, "メールアドレス")),
    ]
    assert _orders() == {"W-2"}


# -- counts are not yen ---------------------------------------------------------------------


def test_a_fractional_eccube_quantity_speaks_of_a_count(tmp_path: Path) -> None:
    result = _eccube(tmp_path, {2: {"個数": "1.5"}})
    assert _errors(result)[0] == (2, "個数", "個数は整数で入力してください(小数は使えません)")
    assert "1001" not in _orders()


def test_integer_cells_name_their_own_unit(tmp_path: Path) -> None:
    # given a mapped CSV with a fractional quantity, price and points on three orders
    mapping = tmp_path / "orders.yml"
    mapping.write_text(ORDERS_MAPPING + "  points_used: 使用ポイント\n", encoding="utf-8")
    rows = [
        _order("W-1", 数量="1.5"),
        _order("W-2", 単価="1980.5"),
        _order("W-3", 使用ポイント="10.5"),
        _order("W-4", 使用ポイント="10"),
    ]
    path = _write(tmp_path, "orders.csv", [*ORDER_HEADER, "使用ポイント"], rows)
    result = run_import(path, ImportOptions(kind="orders", format="generic", mapping=mapping))
    # then each is told in its unit: a count and points are whole numbers, yen has no sen
    assert _errors(result) == [
        (2, "数量", "数量は整数で入力してください(小数は使えません)"),
        (3, "単価", "金額に小数があります(1円未満は扱えません)"),
        (4, "使用ポイント", "ポイントは整数で入力してください(小数は使えません)"),
    ]
    assert _orders() == {"W-4"}


# -- two exports joined into one file -------------------------------------------------------


def _joined_eccube(tmp_path: Path) -> Path:
    """Two EC-CUBE exports joined: order 1001 (lines 2-5), then the second file's header
    (line 6) and the other orders."""
    raw = ECCUBE.read_bytes()
    header, rest = raw.split(b"\r\n", 1)
    rows = rest.split(b"\r\n")
    joined = tmp_path / "受注_連結.csv"
    joined.write_bytes(b"\r\n".join([header, *rows[:4], header, *rows[4:]]))
    return joined


def test_a_repeated_header_row_is_one_error_and_the_rest_is_imported(tmp_path: Path) -> None:
    result = run_import(_joined_eccube(tmp_path), ImportOptions(kind="orders"))
    # then the header line is one error saying what it is, not three unreadable cells
    assert _errors(result) == [(6, "", REPEATED_HEADER)]
    assert [error.order for error in result.errors] == [""]
    # and every order of both files is imported; the header is no rejected order
    assert _orders() == {"1001", "1002", "1003", "1005"}
    assert (result.rows_read, result.rows_rejected, result.rows_skipped) == (13, 1, 2)
    assert (result.orders["created"], result.orders["rejected"]) == (4, 0)


def test_a_repeated_header_row_refuses_a_strict_import(tmp_path: Path) -> None:
    result = run_import(_joined_eccube(tmp_path), ImportOptions(kind="orders", strict=True))
    assert result.status == "refused"
    assert _errors(result) == [(6, "", REPEATED_HEADER)]
    assert not Order.objects.exists()


def test_a_joined_shopify_export_keeps_its_second_byte_order_mark(tmp_path: Path) -> None:
    # given two Shopify exports (UTF-8 with BOM) joined byte for byte: the second header
    # (line 4) starts with its own BOM
    raw = SHOPIFY.read_bytes()
    header, rest = raw.split(b"\n", 1)
    rows = rest.split(b"\n")
    joined = tmp_path / "orders_export_joined.csv"
    joined.write_bytes(b"\n".join([header, *rows[:2], header, *rows[2:]]))
    result = run_import(joined, ImportOptions(kind="orders"))
    assert _errors(result) == [(4, "", REPEATED_HEADER)]
    assert _orders() == {"#1001", "#1002", "#1003"}


def test_a_repeated_header_in_a_member_file_is_one_error(tmp_path: Path) -> None:
    raw = MEMBERS.read_bytes()
    header, rest = raw.split(b"\r\n", 1)
    rows = rest.split(b"\r\n")
    joined = tmp_path / "会員_連結.csv"
    joined.write_bytes(b"\r\n".join([header, rows[0], header, *rows[1:]]))
    result = run_import(joined, ImportOptions(kind="customers"))
    assert _errors(result) == [(3, "", REPEATED_HEADER)]
    assert result.customers["created"] == 4


# -- a member file's rows are named by member ID --------------------------------------------


def _members_with_a_bad_postal_code(tmp_path: Path) -> Path:
    header, rows = _rows(MEMBERS, "cp932")
    rows[1]["郵便番号"] = "812"  # member 102, line 3
    path = tmp_path / "会員.csv"
    path.write_bytes(_csv_text(header, rows).encode("cp932"))
    return path


def test_the_command_names_a_bad_member_row_by_its_member_id(tmp_path: Path) -> None:
    code, out, _ = kizuna_import("customers", str(_members_with_a_bad_postal_code(tmp_path)))
    assert code == 1
    assert "  3行目 [郵便番号] 郵便番号は7桁の数字で入力してください(会員ID 102)" in out
    assert "注文" not in out


def test_a_six_digit_postal_code_shows_its_value_and_the_likely_cause(tmp_path: Path) -> None:
    # given member 102's postal code as Excel saves 0600001, and member 103's cut short
    header, rows = _rows(MEMBERS, "cp932")
    rows[1]["郵便番号"] = "600001"  # line 3
    rows[2]["郵便番号"] = "0600"  # line 4
    path = tmp_path / "会員.csv"
    path.write_bytes(_csv_text(header, rows).encode("cp932"))
    code, out, _ = kizuna_import("customers", str(path))
    assert code == 1
    # then the six digits are named with what probably happened, and nothing is padded
    assert (
        "  3行目 [郵便番号] 郵便番号は7桁の数字で入力してください"
        "(「600001」:Excelで先頭の0が消えた可能性があります)(会員ID 102)"
    ) in out
    # and any other wrong postal code still says only the rule, without its value
    line4 = next(line for line in out.splitlines() if line.startswith("  4行目"))
    assert line4.endswith("[郵便番号] 郵便番号は7桁の数字で入力してください(会員ID 103)")


def test_a_generic_member_row_is_named_by_its_member_id(tmp_path: Path) -> None:
    mapping = tmp_path / "customers.yml"
    mapping.write_text(
        "kind: customers\ncolumns:\n  member_id: 会員番号\n  full_name: 氏名\n"
        "  postal_code: 郵便番号\n",
        encoding="utf-8",
    )
    path = _write(
        tmp_path,
        "customers.csv",
        ["会員番号", "氏名", "郵便番号"],
        [{"会員番号": "M-1", "氏名": "山田 花子", "郵便番号": "123"}],
    )
    result = run_import(path, ImportOptions(kind="customers", format="generic", mapping=mapping))
    assert [(error.line, error.column, error.order) for error in result.errors] == [
        (2, "郵便番号", "M-1")
    ]


def test_a_member_row_refused_only_when_written_is_named_by_its_member_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a customer service that refuses member 102 when writing (as it does a profile
    # that passed the file's checks but not the stored record's)
    from django.core.exceptions import ValidationError

    from kizuna.commerce.importers import pipeline

    resolve = pipeline.customers_resolve_many

    def refusing_102(requests, **kwargs):  # type: ignore[no-untyped-def]
        results = resolve(requests, **kwargs)
        return [
            ValidationError({"postal_code": "この顧客には登録できません"})
            if request.identities.get(IdentityKind.CART_MEMBER) == "102"
            else result
            for request, result in zip(requests, results, strict=True)
        ]

    monkeypatch.setattr(pipeline, "customers_resolve_many", refusing_102)
    # when the member file is imported
    result = run_import(MEMBERS, ImportOptions(kind="customers"))
    # then the refused row is named by its line, column and member ID, like a bad cell
    assert [(e.line, e.column, e.reason, e.order) for e in result.errors] == [
        (3, "郵便番号", "この顧客には登録できません", "102")
    ]
