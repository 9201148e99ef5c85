"""Erased (APPI, anonymised) and merged-away customers on paper lists and in segment exports:
a record that identifies no one, or that is no longer the person's record, must never reach
the printer, the warehouse, the callers or a marketer's spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from openpyxl import load_workbook

from kizuna.accounts.models import Role
from kizuna.campaigns.delivery import DeliveryWorker
from kizuna.campaigns.models import DeliveryList, OutboxMessage, OutboxStatus
from kizuna.campaigns.outbox import Purpose
from kizuna.campaigns.selectors import delivery_lists
from kizuna.campaigns.services import delivery_list_close
from kizuna.core.models import AuditLog
from kizuna.customers.merge import customer_merge
from kizuna.customers.models import ConsentChannel, Customer
from tests.delivery_support import STAFF, channel_shop, consenting_customer, mail
from tests.factories import make_customer, make_order
from tests.test_scenarios_kit import one, segment

pytestmark = pytest.mark.django_db
Login = Callable[[Role], Client]
DM = {"title": "春の感謝祭のご案内", "text": "いつもありがとうございます。"}


@pytest.fixture(autouse=True)
def _setup(settings) -> None:  # type: ignore[no-untyped-def]
    channel_shop(settings)


def erase(customer: Customer) -> None:
    """The DPO runs the erasure command for a request received by phone."""
    call_command(
        "customers",
        "erase",
        str(customer.pk),
        "--reason",
        "受付番号 2025-0042",
        "--confirm",
        str(customer.pk),
        stdout=io.StringIO(),
    )


def csv_rows(client: Client, delivery_list: DeliveryList) -> list[list[str]]:
    response = client.get(f"/delivery/lists/{delivery_list.pk}.csv")
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))[1:]


def test_an_erased_customer_leaves_the_postal_dm_list(client_for: Login) -> None:
    # given: two customers on the open 郵送DM list
    kept = consenting_customer(
        email_address=None, channels=(ConsentChannel.POSTAL,), family_name="佐藤"
    )
    gone = consenting_customer(
        email_address=None, channels=(ConsentChannel.POSTAL,), family_name="鈴木"
    )
    for customer in (kept, gone):
        mail(customer, f"dm-{customer.pk}", channel="postal", content=DM)
    DeliveryWorker().drain()
    delivery_list = DeliveryList.objects.get(channel="postal")
    assert delivery_list.messages.count() == 2
    # when: one of them has their personal data erased before the list goes to the printer
    erase(gone)
    # then: the CSV and the Excel file hold only the other one: no label without an address
    # and no 「削除済み(匿名化) 様」 goes to the printer
    client = client_for(Role.MARKETER)
    rows = csv_rows(client, delivery_list)
    assert [row[0] for row in rows] == [str(kept.pk)]
    assert rows[0][6:8] == ["佐藤 花子", "様"]
    response = client.get(f"/delivery/lists/{delivery_list.pk}.xlsx")
    sheet = load_workbook(io.BytesIO(response.content)).active
    assert sheet is not None
    assert [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)] == [str(kept.pk)]
    # and the delivery page counts the rows the download holds
    [listed] = [row for row in delivery_lists() if row.pk == delivery_list.pk]
    assert listed.size == 1
    # and the audit rows count what left the system
    exports = AuditLog.objects.filter(action="delivery_list.export")
    assert [audit.changes["rows"] for audit in exports] == [[None, 1], [None, 1]]
    # and the same once the list is closed and downloaded for the printer
    delivery_list_close(delivery_list=delivery_list, acting_user=STAFF)
    assert [row[0] for row in csv_rows(client, delivery_list)] == [str(kept.pk)]
    # while the outbox still records that the message was sent on that list
    message = OutboxMessage.objects.get(customer=gone)
    assert (message.status, message.delivery_list_id) == (OutboxStatus.SENT, delivery_list.pk)


def test_an_erased_customer_leaves_the_insert_list(client_for: Login) -> None:
    # given: two customers whose next parcel gets a leaflet
    kept, gone = make_customer(family_name="佐藤"), make_customer(family_name="鈴木")
    for customer in (kept, gone):
        make_order(customer)
        mail(customer, f"insert-{customer.pk}", channel="insert", content=DM)
    DeliveryWorker().drain()
    delivery_list = DeliveryList.objects.get(channel="insert")
    # when: one of them is erased
    erase(gone)
    # then: the warehouse list names only the other one
    rows = csv_rows(client_for(Role.MARKETER), delivery_list)
    assert [row[0] for row in rows] == [str(kept.pk)]


def test_the_worker_never_lists_an_erased_or_merged_away_customer() -> None:
    # given: an erased customer whose order (kept, as the law requires) has not shipped yet
    erased = make_customer(family_name="鈴木")
    order = make_order(erased, number="KZ-5001")
    erase(erased)
    # and a record merged into another (its order moved to the survivor)
    survivor = make_customer(family_name="田中")
    absorbed = make_customer(family_name="田中")
    make_order(absorbed, number="KZ-5002")
    customer_merge(survivor=survivor, absorbed=absorbed, acting_user=STAFF)
    # when: messages for them are queued afterwards, e.g. a leaflet for the kept order
    queued = [
        mail(erased, "insert-erased", channel="insert", content=DM, purpose=Purpose.TRANSACTIONAL),
        mail(
            erased,
            "insert-erased-named",
            channel="insert",
            content={**DM, "order_number": order.number},
            purpose=Purpose.TRANSACTIONAL,
        ),
        mail(erased, "dm-erased", channel="postal", content=DM, purpose=Purpose.TRANSACTIONAL),
        mail(
            absorbed,
            "insert-absorbed",
            channel="insert",
            content={**DM, "order_number": "KZ-5002"},
            purpose=Purpose.TRANSACTIONAL,
        ),
        mail(absorbed, "dm-absorbed", channel="postal", content=DM, purpose=Purpose.TRANSACTIONAL),
    ]
    DeliveryWorker().drain()
    # then: no list was started, and each is skipped saying why
    assert not DeliveryList.objects.exists()
    reasons = {}
    for message in queued:
        message.refresh_from_db()
        assert message.status == OutboxStatus.SKIPPED
        reasons[message.dedupe_key] = message.reason
    assert reasons == {
        "insert-erased": "個人データを削除(匿名化)済みの顧客です",
        "insert-erased-named": "個人データを削除(匿名化)済みの顧客です",
        "dm-erased": "個人データを削除(匿名化)済みの顧客です",
        "insert-absorbed": "他の顧客に統合済みの記録です",
        "dm-absorbed": "他の顧客に統合済みの記録です",
    }


def test_the_segment_export_leaves_out_erased_and_merged_away_customers(
    client_for: Login,
) -> None:
    # given: a segment of buyers; an erased buyer keeps the order the law requires
    buyers = segment("buyers", one("order_count", "gte", 1))
    kept = make_customer(family_name="佐藤")
    erased = make_customer(family_name="鈴木")
    survivor = make_customer(family_name="田中")
    absorbed = make_customer(family_name="田中")
    for customer in (kept, erased, survivor, absorbed):
        make_order(customer)
    erase(erased)
    customer_merge(survivor=survivor, absorbed=absorbed, acting_user=STAFF)
    client = client_for(Role.MARKETER)
    # when: the marketer exports it as CSV and as Excel
    response = client.post(reverse("segments:export", args=[buyers.pk]))
    body = b"".join(response.streaming_content).decode("utf-8")  # type: ignore[attr-defined]
    workbook = client.post(reverse("segments:export", args=[buyers.pk]), {"format": "xlsx"})
    sheet = load_workbook(io.BytesIO(workbook.content)).active
    assert sheet is not None
    # then: both hold the two live people, the erased record in neither
    expected = [str(kept.pk), str(survivor.pk)]
    assert [row[0] for row in list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))[1:]] == expected
    assert [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)] == expected
    # and the audit rows count the rows exported
    audits = AuditLog.objects.filter(action="segment.export").order_by("id")
    assert [audit.changes["rows"] for audit in audits] == [[None, 2], [None, 2]]
