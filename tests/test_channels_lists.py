"""Paper and people channels: postal DM and 同梱物 lists for the printer and the warehouse,
call lists for the contact center, on-site messages for the shop's site, and the "best
channel" that follows the customer."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from openpyxl import load_workbook

from kizuna.accounts.apikeys import api_key_create
from kizuna.accounts.models import ApiScope, Role
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.delivery import DeliveryWorker
from kizuna.campaigns.models import DeliveryList, OutboxMessage, OutboxStatus, SuppressionKind
from kizuna.campaigns.services import delivery_list_close
from kizuna.campaigns.suppression import suppression_add
from kizuna.commerce.models import Shipment
from kizuna.core.models import AuditLog
from kizuna.customers.models import AcquisitionChannel, ConsentChannel, Customer, IdentityKind
from tests.delivery_support import STAFF, channel_shop, consenting_customer, mail
from tests.factories import add_identity, make_customer, make_order
from tests.test_scenarios_kit import jst, scenario, step

pytestmark = pytest.mark.django_db
DM = {"title": "春の感謝祭のご案内", "text": "いつもありがとうございます。"}


@pytest.fixture(autouse=True)
def _setup(settings) -> None:  # type: ignore[no-untyped-def]
    channel_shop(settings)


def postal_customer(**profile: Any) -> Customer:
    return consenting_customer(email_address=None, channels=(ConsentChannel.POSTAL,), **profile)


def download(client: Client, delivery_list: DeliveryList, file_format: str) -> bytes:
    response = client.get(f"/delivery/lists/{delivery_list.pk}.{file_format}")
    assert response.status_code == 200
    return bytes(response.content)


def test_postal_dm_lands_on_a_print_list_with_the_address_fields(client_for) -> None:  # type: ignore[no-untyped-def]
    # given two customers who agreed to postal DM and one who did not
    first = postal_customer(
        family_name="髙橋",
        given_name="﨑子",
        postal_code="0600001",
        prefecture=1,
        address1="札幌市中央区北一条西1-1",
        address2="きずなハイツ101",
    )
    second = postal_customer(family_name="佐藤")
    refused = make_customer(family_name="鈴木")
    for customer in (first, second, refused):
        mail(customer, f"dm-{customer.pk}", channel="postal", content=DM)
    DeliveryWorker().drain()
    # then one open list holds the two who agreed, in the order they were added
    delivery_list = DeliveryList.objects.get()
    assert delivery_list.closed_at is None
    assert list(delivery_list.messages.values_list("customer_id", flat=True).order_by("id")) == [
        first.pk,
        second.pk,
    ]
    assert OutboxMessage.objects.get(customer=refused).reason == "配信同意がありません"
    # and the CSV opens in Excel (UTF-8 with BOM) with 〒, 都道府県, 住所1, 住所2, 氏名, 様
    client = client_for(Role.MARKETER)
    raw = download(client, delivery_list, "csv")
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0][:8] == [
        "顧客ID",
        "郵便番号",
        "都道府県",
        "住所1",
        "住所2",
        "会社名",
        "氏名",
        "敬称",
    ]
    assert rows[1][:8] == [
        str(first.pk),
        "060-0001",
        "北海道",
        "札幌市中央区北一条西1-1",
        "きずなハイツ101",
        "",
        "髙橋 﨑子",
        "様",
    ]
    assert rows[1][8] == "春の感謝祭のご案内"
    # and the Excel file has the same rows, postal codes kept as text
    book = load_workbook(io.BytesIO(download(client, delivery_list, "xlsx")))
    sheet = book.active
    assert sheet is not None
    values = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert values[1][1] == "060-0001"
    assert len(values) == 3
    # and each download is audited (names and addresses left the system)
    assert AuditLog.objects.filter(action="delivery_list.export").count() == 2


def test_the_queue_says_a_postal_dm_is_on_a_list_not_sent(client_for) -> None:  # type: ignore[no-untyped-def]
    # given: a postal DM the worker put on the open print list (its row is finished: "sent")
    customer = postal_customer(family_name="髙橋")
    mail(customer, "dm-listed", channel="postal", content=DM)
    DeliveryWorker().drain()
    delivery_list = DeliveryList.objects.get()
    # when: the queue's history is read
    page = client_for(Role.MARKETER).get("/delivery/queue/", {"status": "sent"}).content.decode()
    # then: it reads as added to that list (printed and mailed only once the list is handed
    # over), not as 送信済
    assert '<span class="badge outbox-sent">リストに追加済</span>' in page
    assert f"リスト #{delivery_list.pk}" in page
    assert '<span class="badge outbox-sent">送信済</span>' not in page


def test_the_customer_page_says_a_scenarios_dm_is_on_a_list(client_for) -> None:  # type: ignore[no-untyped-def]
    # given: a first-purchase scenario whose step is a postal DM, and a buyer who agreed to DM
    scenario(
        "dm-thanks",
        trigger={"kind": "first_purchase"},
        steps=[step("dm", channel="postal")],
        activated_at=jst(2026, 5, 1),
    )
    customer = postal_customer(family_name="髙橋")
    make_order(customer, ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    DeliveryWorker().drain()
    delivery_list = DeliveryList.objects.get()
    # when: an operator opens the customer
    html = client_for(Role.OPERATOR).get(f"/customers/{customer.pk}/").content.decode()
    # then: the step is on the print list, not said to be sent
    card = html[html.index('id="scenarios"') :]
    assert f"リストに追加済(郵送DM #{delivery_list.pk})" in card
    assert "送信済(郵送DM)" not in card


def test_closing_a_list_starts_a_new_one(client_for) -> None:  # type: ignore[no-untyped-def]
    customer = postal_customer()
    mail(customer, "dm-a", channel="postal", content=DM)
    DeliveryWorker().drain()
    first_list = DeliveryList.objects.get()
    client = client_for(Role.MARKETER)
    response = client.post(f"/delivery/lists/{first_list.pk}/close/")
    assert response.status_code == 302
    first_list.refresh_from_db()
    assert first_list.closed_at is not None
    # a message sent after the close goes to a new list, never into the closed one
    mail(customer, "dm-b", channel="postal", content=DM)
    DeliveryWorker().drain()
    assert first_list.messages.count() == 1
    second_list = DeliveryList.objects.exclude(pk=first_list.pk).get()
    assert second_list.messages.get().dedupe_key == "dm-b"
    delivery_list_close(delivery_list=second_list, acting_user=STAFF)
    assert DeliveryList.objects.filter(closed_at=None).count() == 0


def test_an_insert_goes_into_the_customers_next_parcel_with_its_shipment(client_for) -> None:  # type: ignore[no-untyped-def]
    # given: two orders not shipped yet (a pre-order from 40 days ago and today's)
    customer = postal_customer()
    make_order(customer, number="KZ-1001", ordered_at=timezone.now() - dt.timedelta(days=40))
    latest = make_order(customer, number="KZ-1002")
    # when: one insert names no order and one names the pre-order
    mail(
        customer,
        "insert-1",
        channel="insert",
        content={"title": "2回目のお届けに同封", "text": "使い方ガイド"},
    )
    mail(
        customer,
        "insert-2",
        channel="insert",
        content={"title": "指定注文", "text": "x", "order_number": "KZ-1001"},
    )
    DeliveryWorker().drain()
    # and the warehouse records today's parcel as shipped before the list is downloaded
    Shipment.objects.create(
        order=latest, shipped_on=timezone.localdate(), tracking_number="4000-1111-2222"
    )
    delivery_list = DeliveryList.objects.get(channel="insert")
    rows = list(
        csv.reader(
            io.StringIO(
                download(client_for(Role.MARKETER), delivery_list, "csv").decode("utf-8-sig")
            )
        )
    )
    # then: the first goes into the newest unshipped order, the second into the one named,
    # each with its tracking number once there is one
    assert rows[0][:3] == ["顧客ID", "注文番号", "出荷伝票番号"]
    assert [row[1:3] for row in rows[1:]] == [["KZ-1002", "4000-1111-2222"], ["KZ-1001", ""]]


def test_an_insert_respects_a_postal_opt_out_and_needs_an_order() -> None:
    from kizuna.customers.models import ConsentMethod
    from kizuna.customers.services import consent_withdraw

    no_order = postal_customer(family_name="無注文")
    opted_out = postal_customer(family_name="停止")
    make_order(opted_out)
    consent_withdraw(
        customer=opted_out,
        channel=ConsentChannel.POSTAL,
        method=ConsentMethod.PHONE,
        acting_user=STAFF,
    )
    a = mail(no_order, "i-a", channel="insert", content={"title": "t", "text": "x"})
    b = mail(opted_out, "i-b", channel="insert", content={"title": "t", "text": "x"})
    DeliveryWorker().drain()
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.reason == "同梱できる未出荷の注文がありません"
    assert b.reason == "配信停止済みです"


def test_call_list_is_for_the_contact_center(client_for) -> None:  # type: ignore[no-untyped-def]
    customer = consenting_customer(email_address=None, channels=(ConsentChannel.PHONE,))
    add_identity(customer, IdentityKind.PHONE, "+81312345678")
    mail(
        customer,
        "call-1",
        channel="call",
        content={"reason": "定期3回目の前のご確認", "script": "いつもご利用ありがとうございます…"},
    )
    postal = postal_customer()
    mail(postal, "dm-x", channel="postal", content=DM)
    DeliveryWorker().drain()
    call_list = DeliveryList.objects.get(channel="call")
    postal_list = DeliveryList.objects.get(channel="postal")
    operator = client_for(Role.OPERATOR)
    rows = list(csv.reader(io.StringIO(download(operator, call_list, "csv").decode("utf-8-sig"))))
    assert rows[0] == ["顧客ID", "電話番号", "氏名", "フリガナ", "理由", "トークスクリプト"]
    assert rows[1][1:5] == ["03-1234-5678", "山田 花子", "ヤマダ ハナコ", "定期3回目の前のご確認"]
    # operators get call lists only; the address lists are the marketers'
    assert operator.get(f"/delivery/lists/{postal_list.pk}.csv").status_code == 403
    assert client_for(Role.ANALYST).get(f"/delivery/lists/{call_list.pk}.csv").status_code == 403


def test_call_list_shows_phone_numbers_the_way_operators_dial_them(client_for) -> None:  # type: ignore[no-untyped-def]
    # given a call to a mobile and a call to a landline (stored as E.164)
    for key, number in (("call-mobile", "+819014766918"), ("call-landline", "+81663451234")):
        customer = consenting_customer(email_address=None, channels=(ConsentChannel.PHONE,))
        add_identity(customer, IdentityKind.PHONE, number)
        mail(customer, key, channel="call", content={"reason": "ご確認", "script": "…"})
    DeliveryWorker().drain()
    call_list = DeliveryList.objects.get(channel="call")
    operator = client_for(Role.OPERATOR)
    # when the contact center downloads the list as CSV and as Excel
    text = download(operator, call_list, "csv").decode("utf-8-sig")
    csv_rows = list(csv.reader(io.StringIO(text)))
    sheet = load_workbook(io.BytesIO(download(operator, call_list, "xlsx"))).active
    assert sheet is not None
    excel_rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    # then both show the numbers the domestic way, as on the delivery page
    expected = ["090-1476-6918", "06-6345-1234"]
    assert [row[1] for row in csv_rows[1:]] == expected
    assert [row[1] for row in excel_rows[1:]] == expected


def test_onsite_messages_are_served_to_the_shops_site_by_member_id(client) -> None:  # type: ignore[no-untyped-def]
    customer = make_customer()
    add_identity(customer, IdentityKind.CART_MEMBER, "M-000123")
    mail(
        customer,
        "onsite-1",
        channel="onsite",
        content={
            "title": "ポイント2倍デー",
            "text": "本日限定",
            "url": "https://shop.example.jp/p2",
        },
    )
    pending = mail(
        customer,
        "onsite-later",
        channel="onsite",
        content={"title": "明日", "text": "x"},
        send_after=timezone.now() + dt.timedelta(days=1),
    )
    DeliveryWorker().drain()
    _, key = api_key_create(name="ショップ", scopes=[ApiScope.ONSITE_READ], acting_user=STAFF)
    _, wrong = api_key_create(name="別用途", scopes=[ApiScope.EVENTS_WRITE], acting_user=STAFF)
    url = "/api/v1/onsite/messages?member_id=M-000123"
    response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200
    [shown] = response.json()["messages"]
    assert (shown["title"], shown["url"]) == ("ポイント2倍デー", "https://shop.example.jp/p2")
    assert pending.pk != shown["id"]
    # an unknown member gets an empty list; a key without the scope or no key is refused
    assert client.get(
        "/api/v1/onsite/messages?member_id=nobody", HTTP_AUTHORIZATION=f"Bearer {key}"
    ).json() == {"messages": []}
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {wrong}").status_code == 403
    assert client.get(url).status_code == 401


@pytest.mark.parametrize(
    ("acquired", "consents", "identities", "expected"),
    [
        (
            AcquisitionChannel.SNS,
            (ConsentChannel.LINE, ConsentChannel.EMAIL),
            ("line", "email"),
            "line",
        ),
        (
            AcquisitionChannel.WEB_AD,
            (ConsentChannel.LINE, ConsentChannel.EMAIL),
            ("line", "email"),
            "email",
        ),
        (
            AcquisitionChannel.PHONE,
            (ConsentChannel.POSTAL, ConsentChannel.EMAIL),
            ("email",),
            "postal",
        ),
        (AcquisitionChannel.PAPER, (ConsentChannel.PHONE,), ("phone",), "call"),
        # an SNS customer without LINE consent falls back to e-mail
        (AcquisitionChannel.SNS, (ConsentChannel.EMAIL,), ("line", "email"), "email"),
    ],
)
def test_best_channel_follows_the_customer(
    acquired, consents, identities, expected, settings
) -> None:  # type: ignore[no-untyped-def]
    # The shop has a LINE provider (without one, LINE is passed over: see the test below).
    settings.KIZUNA_LINE_CHANNEL_TOKEN = "line-token"
    customer = consenting_customer(
        email_address=None, channels=consents, acquisition_channel=acquired
    )
    values = {
        "line": (IdentityKind.LINE_USER, "Uabc"),
        "email": (IdentityKind.EMAIL, "a@example.jp"),
        "phone": (IdentityKind.PHONE, "+81312345678"),
    }
    for name in identities:
        add_identity(customer, *values[name])
    message = mail(
        customer,
        "best",
        channel="best",
        content={"subject": "お久しぶりです", "text": "新商品のご案内です"},
    )
    sent_on: list[str] = []

    class Recorder:
        def open(self) -> None: ...
        def close(self) -> None: ...
        def send(self, envelope):  # type: ignore[no-untyped-def]
            from kizuna.campaigns.channels import Receipt

            sent_on.append(envelope.channel)
            return Receipt(to_list=envelope.channel in {"postal", "call"})

    DeliveryWorker(transports=lambda kind: Recorder()).drain()
    message.refresh_from_db()
    assert sent_on == [expected]
    assert (message.status, message.channel, message.sent_channel) == (
        OutboxStatus.SENT,
        "best",
        expected,
    )


@pytest.mark.parametrize(("line_token", "expected"), [("", "email"), ("line-token", "line")])
def test_best_channel_passes_over_line_when_the_shop_has_no_line_provider(
    line_token: str, expected: str, settings: Any
) -> None:
    # given: a customer who came through SNS, consents to LINE and e-mail, and has both
    settings.KIZUNA_LINE_CHANNEL_TOKEN = line_token
    customer = consenting_customer(
        email_address="sns@example.jp",
        channels=(ConsentChannel.LINE, ConsentChannel.EMAIL),
        acquisition_channel=AcquisitionChannel.SNS,
    )
    add_identity(customer, IdentityKind.LINE_USER, "Uabc")
    message = mail(customer, "best-line", channel="best", content={"title": "ご案内", "text": "x"})
    sent_on: list[str] = []

    class Recorder:
        def open(self) -> None: ...
        def close(self) -> None: ...
        def send(self, envelope: Any) -> Any:
            from kizuna.campaigns.channels import Receipt

            sent_on.append(envelope.channel)
            return Receipt()

    # when
    DeliveryWorker(transports=lambda kind: Recorder()).drain()
    # then: without a LINE provider the message goes by e-mail instead of waiting to fail
    message.refresh_from_db()
    assert sent_on == [expected]
    assert message.sent_channel == expected


def test_best_channel_skips_a_channel_whose_address_bounced() -> None:
    from kizuna.campaigns.models import SuppressionReason

    customer = consenting_customer(
        email_address="gone@example.jp",
        channels=(ConsentChannel.EMAIL, ConsentChannel.POSTAL),
        acquisition_channel=AcquisitionChannel.WEB_AD,
    )
    suppression_add(
        kind=SuppressionKind.EMAIL,
        address="gone@example.jp",
        reason=SuppressionReason.BOUNCE,
        acting_user=STAFF,
    )
    message = mail(
        customer, "best-bounced", channel="best", content={"title": "ご案内", "text": "x"}
    )
    DeliveryWorker().drain()
    message.refresh_from_db()
    assert message.sent_channel == "postal"


def test_best_channel_with_nowhere_to_go_is_skipped_with_a_reason() -> None:
    customer = make_customer()
    message = mail(customer, "best-none", channel="best", content={"title": "ご案内", "text": "x"})
    DeliveryWorker().drain()
    message.refresh_from_db()
    assert message.status == OutboxStatus.SKIPPED
    assert message.reason.startswith("送信できるチャネルがありません")


def test_excel_list_keeps_text_that_starts_with_equals_as_text(client_for) -> None:  # type: ignore[no-untyped-def]
    # given: a name from the shop's cart and a message body that start like spreadsheet formulas
    customer = postal_customer(family_name='=HYPERLINK("http://x.example","a")')
    content = {"title": "=1+1", "text": "-2+3 ご案内"}
    mail(customer, "dm-formula", channel="postal", content=content)
    DeliveryWorker().drain()
    delivery_list = DeliveryList.objects.get()
    # when: the printer's Excel file is downloaded
    book = load_workbook(io.BytesIO(download(client_for(Role.MARKETER), delivery_list, "xlsx")))
    sheet = book.active
    assert sheet is not None
    cells = {cell.value: cell.data_type for cell in next(sheet.iter_rows(min_row=2, max_row=2))}
    # then: Excel shows the text as written and runs nothing
    assert cells["=1+1"] == "s"
    assert cells["-2+3 ご案内"] == "s"
    assert all(kind == "s" for value, kind in cells.items() if value)
    # and the CSV of the same list hands Excel no formula either: such cells start with '
    text = download(client_for(Role.MARKETER), delivery_list, "csv").decode("utf-8-sig")
    row = next(csv.reader(io.StringIO(text.splitlines()[1])))
    assert any(cell.startswith("'=HYPERLINK(") for cell in row)  # the name, as text
    assert "'=1+1" in row
    assert "'-2+3 ご案内" in row
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row)
