"""EC-CUBE 4 受注CSV and 会員CSV, as exported in CP932 (RELIABILITY I5, I6)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.utils import timezone

from kizuna.commerce.importers import ImportOptions, ImportResult, run_import
from kizuna.commerce.importers.decoding import WAVE_DASH
from kizuna.commerce.models import Order, OrderReversal, OrderStatus, Product
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from kizuna.customers.models import (
    Consent,
    ConsentChannel,
    ConsentEvent,
    ConsentMethod,
    Customer,
    Identity,
    IdentityKind,
    MemberStatus,
    TimelineEvent,
)
from kizuna.customers.services import consent_withdraw

pytestmark = pytest.mark.django_db
DATA = Path(__file__).parent / "data" / "ingest"
ORDERS = DATA / "eccube_orders_cp932.csv"
LATER = DATA / "eccube_orders_later_cp932.csv"
MEMBERS = DATA / "eccube_members_cp932.csv"
BAD_ROWS = DATA / "eccube_orders_bad_rows.csv"
BAD_BYTE = DATA / "eccube_orders_bad_byte_cp932.csv"


def run(path: Path, kind: str = "orders", **options: object) -> ImportResult:
    return run_import(path, ImportOptions(kind=kind, **options))  # type: ignore[arg-type]


def errors_of(result: ImportResult) -> list[tuple[int, str, str]]:
    return [(error.line, error.column, error.order) for error in result.errors]


def everything() -> dict[str, int]:
    """Row counts of every table an import writes, to prove what it did not write."""
    return {
        "orders": Order.objects.count(),
        "customers": Customer.objects.count(),
        "identities": Identity.objects.count(),
        "products": Product.objects.count(),
        "timeline": TimelineEvent.objects.count(),
        "audit": AuditLog.objects.count(),
        "consents": Consent.objects.count(),
    }


def test_the_golden_files_are_real_cp932_bytes() -> None:
    raw = ORDERS.read_bytes()
    assert b"\x81\x60" in raw  # the wave dash as CP932 writes it
    assert "髙﨑".encode("cp932") in raw
    assert raw.count(b"\r\n") == len(raw.decode("cp932").splitlines())
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")


def test_an_eccube_export_imports_with_every_character_intact() -> None:
    # when the admin's 受注CSV is imported as exported (CP932, one row per order item)
    result = run(ORDERS)
    # then every order is created, the unfinished checkout (購入処理中) is left out
    assert (result.status, result.format, result.encoding) == ("ok", "eccube", "cp932")
    assert result.orders["created"] == 4
    assert result.orders["skipped"] == 1
    assert set(Order.objects.values_list("number", flat=True)) == {"1001", "1002", "1003", "1005"}
    # and prices are read with tax (EC-CUBE exports 価格 without it), 送料/ポイント rows as fees
    order = Order.objects.get(number="1001")
    lines = sorted(
        order.lines.values_list("product__code", "product_name", "unit_price", "quantity")
    )
    assert lines == [
        ("SK-LT-02", "化粧水 ㈱髙﨑ｺﾗﾎﾞ", 3960, 2),
        ("SK-TR-01", f"薬用美容液①{WAVE_DASH}お試しサイズ{WAVE_DASH}", 1980, 1),
    ]
    assert (order.subtotal, order.shipping_fee, order.points_used, order.total) == (
        9900,
        550,
        100,
        10350,
    )
    assert (order.status, order.payment_method, order.source) == (
        OrderStatus.RECEIVED,
        "クレジットカード",
        "EC-CUBE",
    )
    assert order.ordered_at == timezone.make_aware(dt.datetime(2026, 5, 1, 10, 23, 45))


def test_the_customer_is_created_from_the_order_with_normalised_identities() -> None:
    run(ORDERS)
    hanako = Order.objects.get(number="1001").customer
    assert (hanako.family_name, hanako.given_name) == ("髙橋", "花子")
    assert (hanako.family_kana, hanako.given_kana) == ("タカハシ", "ハナコ")  # from ﾀｶﾊｼ ﾊﾅｺ
    assert "髙﨑" in hanako.company
    assert "髙﨑" in hanako.address2
    assert (hanako.postal_code, hanako.prefecture, hanako.birthday) == (
        "1500002",
        13,
        dt.date(1985, 4, 1),
    )
    assert hanako.member_status == MemberStatus.MEMBER
    identities = dict(hanako.identities.values_list("kind", "value"))
    assert identities == {
        IdentityKind.CART_MEMBER: "101",
        IdentityKind.EMAIL: "hanako.takahashi@example.jp",
        IdentityKind.PHONE: "+819012345678",  # typed as ０９０－１２３４－５６７８
    }
    # the repeat purchase (1005) is the same customer, matched on the member ID
    assert Order.objects.get(number="1005").customer_id == hanako.pk
    guest = Order.objects.get(number="1002").customer
    assert guest.member_status == MemberStatus.GUEST
    assert Customer.objects.count() == 3


def test_shipping_and_cancellation_are_recorded() -> None:
    run(ORDERS)
    shipped = Order.objects.get(number="1002")
    shipment = shipped.shipments.get()
    assert shipped.status == OrderStatus.SHIPPED
    assert (shipment.shipped_on, shipment.tracking_number, shipment.carrier) == (
        dt.date(2026, 5, 3),
        "4455-6677-8899",
        "ヤマト運輸",
    )
    cancelled = Order.objects.get(number="1003")
    assert cancelled.status == OrderStatus.CANCELLED
    assert cancelled.reversals.get().kind == OrderReversal.Kind.CANCEL


def test_importing_the_same_file_again_creates_nothing() -> None:
    run(ORDERS)
    before = everything()
    again = run(ORDERS)
    assert again.orders["created"] == 0
    assert again.orders["unchanged"] == 4
    assert again.customers["created"] == 0
    assert everything() == before


def test_a_later_export_updates_status_and_shipping() -> None:
    # given the orders imported when 1001 was new
    run(ORDERS)
    # when the export made after it shipped is imported
    later = run(LATER)
    # then the order moves on, with its shipment, and nothing else changes
    assert (later.orders["updated"], later.orders["unchanged"], later.orders["created"]) == (
        1,
        3,
        0,
    )
    order = Order.objects.get(number="1001")
    assert order.status == OrderStatus.SHIPPED
    shipment = order.shipments.get()
    assert (shipment.shipped_on, shipment.tracking_number) == (
        dt.date(2026, 5, 2),
        "1234-5678-9012",
    )
    assert order.customer.timeline.filter(kind="shipment").count() == 1


def test_an_undecodable_byte_stops_the_import_with_its_line_and_offset() -> None:
    # given a CP932 export with one byte no Shift_JIS table defines
    raw = BAD_BYTE.read_bytes()
    offset = raw.index(b"\xff")
    line = raw[:offset].count(b"\n") + 1
    # when it is imported
    result = run(BAD_BYTE)
    # then it is refused, the place is named, and nothing at all was imported
    assert result.status == "refused"
    assert result.exit_code == 1
    assert (result.refused_line, result.refused_byte_offset) == (line, offset)
    assert f"{line}行目" in result.message
    assert "0xFF" in result.message
    assert everything() == dict.fromkeys(everything(), 0)


def test_lenient_mode_imports_the_good_orders_and_reports_every_bad_row() -> None:
    result = run(BAD_ROWS)
    assert result.status == "rejected_rows"
    assert result.exit_code == 1
    assert set(Order.objects.values_list("number", flat=True)) == {"2001", "2005"}
    # each bad cell with its line and column; the rest of a bad order with it
    assert errors_of(result) == [
        (4, "", "2002"),
        (5, "個数", "2002"),
        (6, "", "2002"),
        (7, "受注日", "2003"),
        (8, "", "2003"),
        (9, "郵便番号", "2004"),
        (10, "", "2004"),
    ]
    reasons = {error.line: error.reason for error in result.errors}
    assert "5行目に誤りがある" in reasons[4]
    assert "日時として読めません" in reasons[7]
    assert "7桁" in reasons[9]
    assert (result.rows_rejected, result.orders["rejected"]) == (7, 3)


def test_strict_mode_imports_nothing_when_any_row_is_bad() -> None:
    result = run(BAD_ROWS, strict=True)
    assert result.status == "refused"
    assert result.exit_code == 1
    assert "何も取り込みませんでした" in result.message
    assert [line for line, column, _ in errors_of(result) if column] == [5, 7, 9]
    assert everything() == dict.fromkeys(everything(), 0)


def test_strict_mode_imports_everything_when_every_row_is_good() -> None:
    result = run(ORDERS, strict=True)
    assert result.status == "ok"
    assert Order.objects.count() == 4


def test_a_dry_run_writes_nothing_and_says_what_would_happen() -> None:
    result = run(ORDERS, dry_run=True)
    assert result.dry_run
    assert (result.orders["created"], result.customers["created"]) == (4, 3)
    assert "試行" in result.message
    assert everything() == dict.fromkeys(everything(), 0)


def test_a_dry_run_of_a_later_export_reports_the_updates_it_would_make() -> None:
    run(ORDERS)
    before = everything()
    result = run(LATER, dry_run=True)
    assert result.orders["updated"] == 1
    assert everything() == before
    assert Order.objects.get(number="1001").status == OrderStatus.RECEIVED


def test_rows_of_one_order_must_be_together(tmp_path: Path) -> None:
    # given an export re-sorted so that order 1001's rows are split by another order
    rows = ORDERS.read_bytes().split(b"\r\n")
    shuffled = tmp_path / "sorted.csv"
    shuffled.write_bytes(b"\r\n".join([rows[0], rows[1], rows[6], rows[2], *rows[7:]]))
    # when imported
    result = run(shuffled)
    # then the split-off rows are refused with a way to fix the file, and the order is not
    # stored with half of its lines (its first part no longer adds up to 小計 either)
    reasons = [error.reason for error in result.errors if error.order == "1001" and error.column]
    assert any("連続していません" in reason for reason in reasons)
    assert not Order.objects.filter(number="1001").exists()


def test_the_members_csv_creates_customers_with_consent_evidence() -> None:
    # when EC-CUBE's 会員CSV is imported with the consent wording in force at the time
    result = run(MEMBERS, kind="customers", consent_wording="2025-10")
    assert (result.status, result.customers["created"]) == ("ok", 4)
    # then a member who asked for the mail magazine has e-mail consent with its evidence
    hanako = Identity.objects.get(kind=IdentityKind.CART_MEMBER, value="101").customer
    consent = hanako.consents.get(channel=ConsentChannel.EMAIL)
    assert consent.granted
    assert (consent.method, consent.source_form, consent.wording_version) == (
        ConsentMethod.IMPORT,
        "EC-CUBE会員CSV",
        "2025-10",
    )
    assert consent.granted_at == timezone.make_aware(dt.datetime(2025, 12, 1, 9, 30))
    assert hanako.registered_at == consent.granted_at
    # those who declined (2 = 受け取らない, 0) have none
    for member_id in ("102", "104"):
        customer = Identity.objects.get(kind=IdentityKind.CART_MEMBER, value=member_id).customer
        assert not customer.consents.exists()
    assert result.consents_granted == 2


def test_member_fields_are_normalised() -> None:
    run(MEMBERS, kind="customers")
    taro = Identity.objects.get(kind=IdentityKind.CART_MEMBER, value="103").customer
    assert (taro.family_kana, taro.given_kana) == ("ヤマダ", "タロウ")
    assert taro.postal_code == "1000001"  # written 〒１００－０００１
    assert taro.identities.get(kind=IdentityKind.PHONE).value == "+81311112222"
    withdrawn = Identity.objects.get(kind=IdentityKind.CART_MEMBER, value="104").customer
    assert withdrawn.member_status == MemberStatus.WITHDRAWN


def test_members_already_known_from_orders_are_matched_not_duplicated() -> None:
    run(ORDERS)
    result = run(MEMBERS, kind="customers")
    assert (result.customers["created"], result.customers["matched"]) == (2, 2)
    assert Identity.objects.filter(kind=IdentityKind.CART_MEMBER, value="101").count() == 1


def test_an_old_export_never_resubscribes_a_customer_who_opted_out() -> None:
    # given a member who consented through the import and then unsubscribed
    run(MEMBERS, kind="customers")
    hanako = Identity.objects.get(kind=IdentityKind.CART_MEMBER, value="101").customer
    consent_withdraw(
        customer=hanako,
        channel=ConsentChannel.EMAIL,
        method=ConsentMethod.UNSUBSCRIBE,
        acting_user=Actor.system("test"),
    )
    events = ConsentEvent.objects.count()
    # when the same export is imported again
    result = run(MEMBERS, kind="customers")
    # then the opt-out stands
    assert result.consents_granted == 0
    assert not hanako.consents.get(channel=ConsentChannel.EMAIL).granted
    assert ConsentEvent.objects.count() == events


@pytest.mark.parametrize(("ours", "theirs"), [("個数", "数量"), ("受注日", "受注日時")])
def test_the_documented_header_aliases_are_detected_too(
    tmp_path: Path, ours: str, theirs: str
) -> None:
    # given an EC-CUBE export whose header uses another name docs/ingest.md accepts
    header, rest = ORDERS.read_bytes().split(b"\r\n", 1)
    renamed = tmp_path / "renamed.csv"
    renamed.write_bytes(
        header.replace(f'"{ours}"'.encode("cp932"), f'"{theirs}"'.encode("cp932")) + b"\r\n" + rest
    )
    # when imported with the format left to detection (the default)
    result = run(renamed)
    # then it is read as EC-CUBE, as with --format eccube
    assert (result.status, result.format, result.orders["created"]) == ("ok", "eccube", 4)


def test_a_file_cut_off_in_its_last_line_imports_nothing(tmp_path: Path) -> None:
    # given the export, with its last line cut off by an interrupted copy
    cut = tmp_path / "cut.csv"
    cut.write_bytes(ORDERS.read_bytes()[:-40])  # ends after a whole cell
    # when imported (leniently, as by default)
    result = run(cut)
    # then the file is refused before anything is written
    assert result.status == "refused"
    assert "13行目(ファイルの最後の行)が途中で切れています" in result.message
    assert everything() == dict.fromkeys(everything(), 0)


def test_an_eccube_file_with_one_column_renamed_names_the_missing_column(tmp_path: Path) -> None:
    # given: an EC-CUBE export whose 個数 column someone renamed to 購入数 in Excel
    source = (DATA / "eccube_orders_cp932.csv").read_bytes().decode("cp932")
    header, rest = source.split("\n", 1)
    assert "個数" in header
    path = tmp_path / "受注_編集済み.csv"
    path.write_bytes((header.replace("個数", "購入数") + "\n" + rest).encode("cp932"))
    # when
    result = run_import(path, ImportOptions(kind="orders"))
    # then
    assert result.refused
    assert "EC-CUBE の受注CSVに必要な列が見つかりません: 個数(または 数量)" in result.message
