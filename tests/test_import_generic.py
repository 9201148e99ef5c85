"""Any CSV with a YAML mapping file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from kizuna.commerce.importers import ImportOptions, ImportResult, UsageError, run_import
from kizuna.commerce.importers.decoding import WAVE_DASH
from kizuna.commerce.importers.generic import load_mapping, parse_mapping
from kizuna.commerce.models import Order, OrderStatus
from kizuna.customers.models import ConsentChannel, Identity, IdentityKind
from tests.test_import_lengths import _errors, _import_orders, _order

pytestmark = pytest.mark.django_db
DATA = Path(__file__).parent / "data" / "ingest"
CSV = DATA / "generic_orders.csv"
MAPPING = DATA / "generic_orders.yml"
DOCS_EXAMPLE = Path(__file__).parents[1] / "src/kizuna/web/static/web/examples/generic-orders.yml"
CUSTOMERS_EXAMPLE = DOCS_EXAMPLE.with_name("generic-customers.yml")


def run(path: Path = CSV, mapping: Path = MAPPING, **options: object) -> ImportResult:
    return run_import(
        path,
        ImportOptions(kind="orders", format="generic", mapping=mapping, **options),  # type: ignore[arg-type]
    )


def test_a_mapped_csv_imports_orders_lines_and_customers() -> None:
    result = run()
    assert (result.status, result.format, result.encoding) == ("ok", "generic", "utf-8")
    assert (result.orders["created"], result.orders["skipped"]) == (2, 1)  # 仮受注 is skipped
    order = Order.objects.get(number="W-0001")
    lines = sorted(
        order.lines.values_list("product__code", "product_name", "unit_price", "quantity")
    )
    assert lines == [
        ("G-1", f"美容液{WAVE_DASH}夜用{WAVE_DASH}", 3980, 1),  # price written "3,980"
        ("G-2", f"化粧水{WAVE_DASH}朝用{WAVE_DASH}", 2980, 2),
    ]
    assert (order.status, order.shipping_fee, order.source) == (
        OrderStatus.SHIPPED,
        660,
        "自社カート",
    )
    assert order.shipments.get().shipped_on == dt.date(2026, 5, 2)
    assert Order.objects.get(number="W-0003").status == OrderStatus.RECEIVED


def test_one_column_names_are_split_and_consent_follows_the_mapping() -> None:
    run()
    hanako = Identity.objects.get(kind=IdentityKind.CART_MEMBER, value="M-9").customer
    assert (hanako.family_name, hanako.given_name) == ("髙橋", "花子")
    assert (hanako.family_kana, hanako.given_kana) == ("タカハシ", "ハナコ")
    consent = hanako.consents.get(channel=ConsentChannel.EMAIL)
    assert (consent.source_form, consent.wording_version) == ("自社カート購入フォーム", "import")
    yukari = Order.objects.get(number="W-0003").customer
    assert yukari.family_name == "﨑山"
    assert not yukari.consents.exists()  # メルマガ: いいえ


def test_the_documented_example_mapping_is_valid() -> None:
    mapping = load_mapping(DOCS_EXAMPLE, kind="orders")
    assert mapping.columns["order_number"] == "受注番号"
    assert mapping.status_map["配達完了"] == OrderStatus.DELIVERED
    assert mapping.status_map["仮受注"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"columns": {"order_no": "受注番号"}}, "使えない項目"),
        ({"columns": {"order_number": "受注番号"}}, "必須の項目"),
        ({"status_map": {"出荷済": "sent"}}, "status_map"),
        ({"kind": "customers"}, "kind: customers"),
        ({"colums": {}}, "知らない項目"),
    ],
)
def test_a_wrong_mapping_is_a_usage_error_naming_the_problem(
    change: dict[str, object], message: str
) -> None:
    raw = yaml.safe_load(MAPPING.read_text(encoding="utf-8"))
    raw.update(change)
    with pytest.raises(UsageError) as excinfo:
        parse_mapping(raw, kind="orders")
    assert message in excinfo.value.message


def test_a_mapped_column_missing_from_the_file_refuses_the_file(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yml"
    mapping.write_text(
        MAPPING.read_text(encoding="utf-8").replace("quantity: 数量", "quantity: 個数"),
        encoding="utf-8",
    )
    result = run(mapping=mapping)
    assert result.status == "refused"
    assert "個数" in result.message
    assert not Order.objects.exists()


def test_a_missing_column_message_lists_every_column_the_file_has(tmp_path: Path) -> None:
    # given: a wide export (as carts write them) whose 数量 comes after its 30th column
    wide = tmp_path / "wide.csv"
    header, *rows = CSV.read_text(encoding="utf-8").splitlines()
    extra = ",".join(f"予備{n}" for n in range(30))
    blanks = "," * 29
    wide.write_text(
        "\n".join([f"{extra},{header}", *(f"{blanks},{row}" for row in rows)]) + "\n",
        encoding="utf-8",
    )
    mapping = tmp_path / "m.yml"
    mapping.write_text(
        MAPPING.read_text(encoding="utf-8").replace("quantity: 数量", "quantity: 個数"),
        encoding="utf-8",
    )
    # when
    result = run(wide, mapping=mapping)
    # then: the file's 数量 is among the columns shown, so nobody takes it for missing
    assert result.status == "refused"
    assert "数量" in result.message.split("ファイルの見出し")[1]


def test_generic_customers_with_a_mapping(tmp_path: Path) -> None:
    mapping = tmp_path / "customers.yml"
    mapping.write_text(
        "kind: customers\nsource: 店頭\nconsent_form: 店頭申込書\n"
        "columns:\n  email: メール\n  full_name: 氏名\n  phone: 電話\n  email_opt_in: DM希望\n",
        encoding="utf-8",
    )
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(
        "氏名,メール,電話,DM希望\n髙橋 花子,hanako@example.jp,０９０１２３４５６７８,はい\n"
        "名無し,,,はい\n",
        encoding="utf-8",
    )
    result = run_import(
        csv_file, ImportOptions(kind="customers", format="generic", mapping=mapping)
    )
    assert result.customers["created"] == 1
    assert [(error.line, error.reason) for error in result.errors] == [
        (3, "会員ID・メールアドレス・電話番号のいずれもありません")
    ]
    hanako = Identity.objects.get(kind=IdentityKind.EMAIL, value="hanako@example.jp").customer
    assert hanako.consents.get(channel=ConsentChannel.EMAIL).source_form == "店頭申込書"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # the first columns entry would silently lose to the second
        (
            "kind: orders\ncolumns:\n  order_number: 受注番号\n  order_number: 注文番号\n",
            "4行目・3文字目: 「order_number」は3行目にも書かれています",
        ),
        (
            "kind: orders\ncolumns:\n\torder_number: 受注番号\n",
            "3行目・1文字目: タブ文字は使えません",
        ),
        ("kind: orders\ncolumns:\n  order_number: 受注番号\n unit_price: 単価\n", "4行目"),
    ],
)
def test_a_mistyped_mapping_file_names_line_column_and_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    mapping = tmp_path / "m.yml"
    mapping.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError) as excinfo:
        load_mapping(mapping, kind="orders")
    assert message in excinfo.value.message


def test_an_unreadable_mapping_file_is_explained_in_japanese(tmp_path: Path) -> None:
    # Notepad's "ANSI" on Japanese Windows is CP932
    mapping = tmp_path / "m.yml"
    mapping.write_bytes(MAPPING.read_text(encoding="utf-8").encode("cp932"))
    with pytest.raises(UsageError) as excinfo:
        load_mapping(mapping, kind="orders")
    assert excinfo.value.message == "マッピングファイルは文字コード UTF-8 で保存してください"
    with pytest.raises(UsageError) as excinfo:
        load_mapping(tmp_path, kind="orders")
    assert "フォルダ" in excinfo.value.message


def test_an_unreadable_email_is_a_row_error_and_a_carriers_legacy_address_is_kept(
    tmp_path: Path,
) -> None:
    rows = [
        _order("W-1"),
        _order("W-2", メール="a@b@example.jp"),
        _order("W-3", メール="<script>@example.jp"),
        _order("W-4", メール="taro..yamada@docomo.ne.jp"),
    ]
    result = _import_orders(tmp_path, rows)
    assert _errors(result) == [
        (3, "メール", "メールアドレスとして読めません(@ が2つ以上あります)"),
        (4, "メール", "メールアドレスとして読めません(@ の前に使えない文字があります)"),
    ]
    assert sorted(Order.objects.values_list("number", flat=True)) == ["W-1", "W-4"]
    assert Identity.objects.filter(kind=IdentityKind.EMAIL).count() == 2
    legacy = Order.objects.get(number="W-4").customer.identities.get(kind=IdentityKind.EMAIL)
    assert legacy.value == "taro..yamada@docomo.ne.jp"


# -- a new customer's 登録日 and 会員ステータス from an order file -----------------------------

CUSTOMER_DATES_MAPPING = """\
kind: orders
columns:
  order_number: 受注番号
  ordered_at: 受注日時
  product_code: 商品番号
  unit_price: 単価
  quantity: 数量
  member_id: 会員番号
  full_name: 氏名
  registered_at: 会員登録日
  member_status: 会員状態
"""


def _orders_with_customer_dates(tmp_path: Path, *rows: str) -> ImportResult:
    mapping = tmp_path / "orders.yml"
    mapping.write_text(CUSTOMER_DATES_MAPPING, encoding="utf-8")
    path = tmp_path / "orders.csv"
    header = "受注番号,受注日時,商品番号,単価,数量,会員番号,氏名,会員登録日,会員状態\n"
    path.write_text(header + "".join(f"{row}\n" for row in rows), encoding="utf-8")
    return run(path, mapping)


def test_an_order_files_registration_date_dates_its_new_customer(tmp_path: Path) -> None:
    # given orders whose file says when each customer registered (one cell left empty)
    result = _orders_with_customer_dates(
        tmp_path,
        "R-1,2026-05-01 10:00,P-1,1000,1,M-1,山田 花子,2024-04-01 09:00,退会",
        "R-2,2026-05-02 10:00,P-1,1000,1,M-2,佐藤 一郎,,",
    )
    assert result.status == "ok"
    # then the new customer is registered on that day, not on the order's
    first = Order.objects.get(number="R-1").customer
    jst = dt.timezone(dt.timedelta(hours=9))
    assert first.registered_at == dt.datetime(2024, 4, 1, 9, 0, tzinfo=jst)
    assert first.member_status == "withdrawn"
    # and without one, on the order's day, as before
    second = Order.objects.get(number="R-2").customer
    assert second.registered_at == dt.datetime(2026, 5, 2, 10, 0, tzinfo=jst)
    assert second.member_status == "member"


def test_an_order_files_registration_date_ahead_is_the_rows_error(tmp_path: Path) -> None:
    ahead = f"{dt.date.today().year + 3}-04-01 09:00"
    result = _orders_with_customer_dates(
        tmp_path, f"R-1,2026-05-01 10:00,P-1,1000,1,M-1,山田 花子,{ahead},"
    )
    assert _errors(result) == [(2, "会員登録日", "登録日が未来の日付です")]
    assert not Order.objects.exists()


def test_the_customers_example_imports_a_member_file_with_its_headers(tmp_path: Path) -> None:
    # given a member file with the headers the example offered on the import page names
    mapping = load_mapping(CUSTOMERS_EXAMPLE, kind="customers")
    headers = list(mapping.columns.values())
    row = {
        "会員ID": "M-77", "メールアドレス": "hanako@example.jp", "電話番号": "090-1234-5678",
        "姓": "髙橋", "名": "花子", "セイ": "タカハシ", "メイ": "ハナコ", "会社名": "",
        "郵便番号": "060-0001", "都道府県": "北海道", "住所1": "札幌市中央区北一条西", "住所2": "",
        "生年月日": "1990/04/01", "性別": "女性", "登録日": "2024/05/01", "メルマガ希望": "はい",
    }  # fmt: skip
    assert sorted(row) == sorted(headers)
    path = tmp_path / "会員.csv"
    path.write_text(
        ",".join(headers) + "\n" + ",".join(row[h] for h in headers) + "\n", encoding="utf-8"
    )
    # when it is imported with the example as its mapping
    result = run_import(
        path,
        ImportOptions(kind="customers", format="generic", mapping=CUSTOMERS_EXAMPLE),
    )
    # then the member is there, with the example's form as the consent's evidence
    assert (result.status, result.customers["created"]) == ("ok", 1)
    hanako = Identity.objects.get(kind=IdentityKind.CART_MEMBER, value="M-77").customer
    assert (hanako.family_name, hanako.postal_code) == ("髙橋", "0600001")
    consent = hanako.consents.get(channel=ConsentChannel.EMAIL)
    assert consent.source_form == "自社カート会員登録フォーム"
