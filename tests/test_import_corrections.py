"""A later export that corrects what an earlier one said: a member's new address, a shipping
date typed wrong, and the same export re-saved in Excel (which changes nothing)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from kizuna.commerce.importers import ImportOptions, ImportResult, run_import
from kizuna.commerce.models import Order, OrderStatus
from kizuna.commerce.services import UpsertOutcome, order_upsert
from kizuna.core.models import AuditLog
from kizuna.customers.models import Customer, Identity, IdentityKind, TimelineKind
from tests.factories import make_customer
from tests.test_ingest_core import IMPORT, T0, _order

pytestmark = pytest.mark.django_db
DATA = Path(__file__).parent / "data" / "ingest"
ORDERS = DATA / "eccube_orders_cp932.csv"
LATER = DATA / "eccube_orders_later_cp932.csv"
MEMBERS = DATA / "eccube_members_cp932.csv"
HOUR = dt.timedelta(hours=1)


def run(path: Path, kind: str = "orders", **options: object) -> ImportResult:
    return run_import(path, ImportOptions(kind=kind, **options))  # type: ignore[arg-type]


def edited(source: Path, target: Path, key: tuple[str, str], cells: dict[str, str]) -> Path:
    """`source` as the shop's staff would edit it: the rows whose `key` column holds the value
    get `cells`, and the file is written back in the cart's CP932 with CRLF."""
    column, value = key
    rows = list(csv.reader(io.StringIO(source.read_bytes().decode("cp932"), newline="")))
    header = rows[0]
    for row in rows[1:]:
        if row[header.index(column)] == value:
            for name, text in cells.items():
                row[header.index(name)] = text
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_ALL).writerows(rows)
    target.write_bytes(buffer.getvalue().encode("cp932"))
    return target


def member(member_id: str) -> Customer:
    return Identity.objects.get(kind=IdentityKind.CART_MEMBER, value=member_id).customer


def address(customer: Customer) -> tuple[str, int | None, str, str]:
    customer.refresh_from_db()
    return (customer.postal_code, customer.prefecture, customer.address1, customer.address2)


HANAKO_MOVED = {
    "郵便番号": "530-0001",
    "都道府県(ID)": "27",
    "都道府県(名称)": "大阪府",
    "住所1": "大阪市北区梅田9-9-9",
    "住所2": "",
}


def test_a_member_who_moved_gets_the_new_address_whole(tmp_path: Path) -> None:
    # given member 101 imported with her building (髙﨑ビル①号室)
    run(MEMBERS, kind="customers")
    hanako = member("101")
    assert address(hanako)[3] == "髙﨑ビル1号室"
    # when a later 会員CSV gives her new address, which has no building, and leaves her
    # birthday empty
    moved = edited(
        MEMBERS, tmp_path / "members.csv", ("会員ID", "101"), {**HANAKO_MOVED, "誕生日": ""}
    )
    result = run(moved, kind="customers")
    # then her address is the new one only: no building from the old street
    assert (result.customers["matched"], result.customers["updated"]) == (4, 1)
    assert address(hanako) == ("5300001", 27, "大阪市北区梅田9-9-9", "")
    # an empty cell of a field of its own still keeps what is stored
    assert (hanako.company, hanako.birthday) == ("(株)髙﨑商事", dt.date(1985, 4, 1))
    audit = AuditLog.objects.filter(action="customer.update", customer_id=hanako.pk).get()
    assert audit.changes["address2"] == ["髙﨑ビル1号室", ""]


def test_a_member_row_without_any_address_keeps_the_stored_one(tmp_path: Path) -> None:
    run(MEMBERS, kind="customers")
    hanako = member("101")
    before = address(hanako)
    blank = edited(
        MEMBERS, tmp_path / "members.csv", ("会員ID", "101"), dict.fromkeys(HANAKO_MOVED, "")
    )
    result = run(blank, kind="customers")
    assert result.customers["updated"] == 0
    assert address(hanako) == before


def test_a_file_without_a_building_column_empties_the_building_only_on_a_move(
    tmp_path: Path,
) -> None:
    # given member 101 with her building, and a home-made export that has no 住所2 column
    run(MEMBERS, kind="customers")
    hanako = member("101")
    mapping = tmp_path / "members.yml"
    mapping.write_text(
        "kind: customers\ncolumns:\n  member_id: 会員番号\n  full_name: 氏名\n"
        "  postal_code: 郵便番号\n  prefecture: 都道府県\n  address1: 住所\n",
        encoding="utf-8",
    )
    export = tmp_path / "members.csv"

    def import_address(postal: str, prefecture: str, street: str) -> ImportResult:
        export.write_text(
            f"会員番号,氏名,郵便番号,都道府県,住所\n101,髙橋 花子,{postal},{prefecture},{street}\n",
            encoding="utf-8",
        )
        return run(export, kind="customers", format="generic", mapping=mapping)

    # when it gives her stored address: the file says nothing about the building, which stays
    assert import_address("150-0002", "東京都", "渋谷区渋谷1-2-3").customers["updated"] == 0
    assert address(hanako)[3] == "髙﨑ビル1号室"
    # when it gives a new address: the old building belonged to the old street
    assert import_address("530-0001", "大阪府", "大阪市北区梅田9-9-9").customers["updated"] == 1
    assert address(hanako) == ("5300001", 27, "大阪市北区梅田9-9-9", "")


def test_a_later_export_correcting_a_shipping_date_updates_the_shipment(tmp_path: Path) -> None:
    # given order 1002 imported as shipped on 2026-05-03
    run(LATER)
    order = Order.objects.get(number="1002")
    shipment = order.shipments.get()
    assert shipment.shipped_on == dt.date(2026, 5, 3)
    # when the shop corrects the date to 2026-05-06 and exports again
    corrected = edited(
        LATER, tmp_path / "orders.csv", ("注文番号", "1002"), {"発送日": "2026-05-06 10:00:00"}
    )
    result = run(corrected)
    # then the one shipment carries the new date, counted and audited as an update
    assert (result.orders["updated"], result.orders["unchanged"]) == (1, 3)
    shipment = order.shipments.get()
    assert (shipment.shipped_on, shipment.tracking_number) == (
        dt.date(2026, 5, 6),
        "4455-6677-8899",
    )
    audit = AuditLog.objects.filter(action="order.update", entity_id=str(order.pk)).get()
    assert audit.changes == {"shipped_on": ["2026-05-03", "2026-05-06"]}
    # and the customer's history shows the shipment once, on its real day
    (event,) = order.customer.timeline.filter(kind=TimelineKind.SHIPMENT)
    assert timezone.localdate(event.occurred_at) == dt.date(2026, 5, 6)
    # the same corrected file again changes nothing
    again = run(corrected)
    assert again.orders["unchanged"] == 4


def test_an_export_without_the_shipping_date_keeps_the_recorded_one(tmp_path: Path) -> None:
    # Facts only accumulate: a cell left empty is not "no longer shipped".
    run(LATER)
    emptied = edited(LATER, tmp_path / "orders.csv", ("注文番号", "1002"), {"発送日": ""})
    result = run(emptied)
    assert result.orders["unchanged"] == 4
    assert Order.objects.get(number="1002").shipments.get().shipped_on == dt.date(2026, 5, 3)


EXCEL_MOMENT = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):\d{2}$")


def test_the_same_export_re_saved_in_excel_changes_nothing(tmp_path: Path) -> None:
    # given the export imported
    run(LATER)
    ordered_at = Order.objects.get(number="1001").ordered_at
    assert ordered_at.second == 45
    # when it is opened in Excel and saved again: its moments lose their seconds and their
    # zero padding (2026-05-01 10:23:45 becomes 2026/5/1 10:23) and the quotes go
    rows = list(csv.reader(io.StringIO(LATER.read_bytes().decode("cp932"), newline="")))
    for row in rows:
        for index, cell in enumerate(row):
            moment = EXCEL_MOMENT.match(cell)
            if moment:
                y, m, d, hh, mm = moment.groups()
                row[index] = f"{y}/{int(m)}/{int(d)} {int(hh)}:{mm}"
    resaved = tmp_path / "受注_Excel.csv"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    resaved.write_bytes(buffer.getvalue().encode("cp932"))
    assert "2026/5/1 10:23," in resaved.read_bytes().decode("cp932")
    audit = AuditLog.objects.count()
    result = run(resaved)
    # then nothing is counted as changed and the order keeps its seconds
    assert (result.orders["unchanged"], result.orders["updated"]) == (4, 0)
    assert Order.objects.get(number="1001").ordered_at == ordered_at
    assert AuditLog.objects.count() == audit


def test_a_newer_update_corrects_the_delivery_date_and_an_older_one_does_not() -> None:
    # given an order delivered on 5/4, as the cart said at T0+1h
    customer = make_customer()
    delivered = {"status": OrderStatus.DELIVERED, "shipped_on": dt.date(2026, 5, 2)}
    first = _order(**delivered, delivered_on=dt.date(2026, 5, 4), source_updated_at=T0 + HOUR)
    order, _ = order_upsert(customer=customer, data=first, acting_user=IMPORT)
    # when the cart's later version says 5/5
    later = _order(**delivered, delivered_on=dt.date(2026, 5, 5), source_updated_at=T0 + 2 * HOUR)
    _, outcome = order_upsert(customer=customer, data=later, acting_user=IMPORT)
    # then the delivery moves, on the timeline too
    assert outcome == UpsertOutcome.UPDATED
    assert order.shipments.get().delivered_on == dt.date(2026, 5, 5)
    (event,) = customer.timeline.filter(kind=TimelineKind.DELIVERY)
    assert timezone.localdate(event.occurred_at) == dt.date(2026, 5, 5)
    # and a version older than that one, delivered late, changes nothing (RELIABILITY I3)
    older = _order(**delivered, delivered_on=dt.date(2026, 5, 3), source_updated_at=T0 + HOUR)
    _, outcome = order_upsert(customer=customer, data=older, acting_user=IMPORT)
    assert outcome == UpsertOutcome.STALE
    assert order.shipments.get().delivered_on == dt.date(2026, 5, 5)


def test_a_shipping_date_moved_past_the_recorded_delivery_is_refused() -> None:
    # given an order shipped on 5/2 and delivered on 5/3
    customer = make_customer()
    shipped = {"status": OrderStatus.DELIVERED, "shipped_on": dt.date(2026, 5, 2)}
    order, _ = order_upsert(
        customer=customer,
        data=_order(**shipped, delivered_on=dt.date(2026, 5, 3)),
        acting_user=IMPORT,
    )
    audit = AuditLog.objects.count()
    # when a later input moves the shipping to 5/6 without saying when it arrived
    moved = _order(status=OrderStatus.DELIVERED, shipped_on=dt.date(2026, 5, 6))
    # then it is refused, saying which date, and nothing changes
    with pytest.raises(ValidationError) as refused:
        order_upsert(customer=customer, data=moved, acting_user=IMPORT)
    assert "記録済みのお届け日(2026-05-03)より後です" in refused.value.message_dict["shipped_on"][0]
    shipment = order.shipments.get()
    assert (shipment.shipped_on, shipment.delivered_on) == (
        dt.date(2026, 5, 2),
        dt.date(2026, 5, 3),
    )
    assert AuditLog.objects.count() == audit
