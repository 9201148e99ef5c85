"""The customer page: every section with realistic data, empty states, pagination, query bounds."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries

from kizuna.accounts.models import Role, User
from kizuna.commerce.models import Order, OrderReversal, OrderStatus, Shipment
from kizuna.core.models import AuditLog
from kizuna.customers.models import (
    AcquisitionChannel,
    Consent,
    ConsentChannel,
    ConsentMethod,
    Customer,
    Gender,
    IdentityKind,
    MemberStatus,
    Tag,
    TimelineEvent,
    TimelineKind,
)
from kizuna.customers.privacy import customer_erase
from kizuna.customers.selectors import (
    ORDERS_PER_PAGE,
    next_delivery_sequence,
    subscriptions_for,
)
from kizuna.loyalty.models import PointEntry, PointKind
from kizuna.subscriptions.models import (
    CancelReason,
    DeliveryStatus,
    Subscription,
    SubscriptionDelivery,
    SubscriptionStatus,
)
from kizuna.support.models import Contact, ContactChannel, Direction
from kizuna.web.templatetags.kizuna import age, jdate, jdatetime, phone, postal, yen
from tests.factories import (
    add_identity,
    make_customer,
    make_order,
    make_product,
    make_subscription,
)

pytestmark = pytest.mark.django_db

JST = dt.timezone(dt.timedelta(hours=9))


def jst(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=JST)  # type: ignore[misc]


# --- builders for what the factories do not cover ---------------------------------------------


def add_points(customer: Customer, movements: list[tuple[PointKind, int]]) -> list[PointEntry]:
    """Ledger entries appended with the seq and running balance the constraints demand."""
    last = PointEntry.objects.filter(customer=customer).order_by("-seq").first()
    balance = last.balance_after if last else 0
    entries = []
    for seq, (kind, amount) in enumerate(movements, start=last.seq + 1 if last else 1):
        balance += amount
        entries.append(
            PointEntry.objects.create(
                customer=customer,
                seq=seq,
                kind=kind,
                amount=amount,
                balance_after=balance,
                occurred_at=jst(2025, 1, 1, 10, 0) + dt.timedelta(days=seq),
                expires_on=dt.date(2026, 1, seq % 28 + 1) if kind == PointKind.EARN else None,
                reason=f"理由{seq:02d}",
                recorded_by="test",
            )
        )
    return entries


def add_timeline(customer: Customer, count: int) -> None:
    for i in range(1, count + 1):
        TimelineEvent.objects.create(
            customer=customer,
            occurred_at=jst(2025, 2, 1, 9, 0) + dt.timedelta(hours=i),
            kind=TimelineKind.PROFILE,
            title=f"記録{i:02d}",
        )


@pytest.fixture
def operator(client_for: Callable[[Role], Client]) -> Client:
    return client_for(Role.OPERATOR)


@pytest.fixture
def full_customer(users: dict[Role, User]) -> Customer:
    return build_full_customer(users[Role.OPERATOR])


def build_full_customer(operator: User) -> Customer:
    """山田 花子 with something in every section of her page."""
    customer = make_customer(
        company="株式会社絆商事",
        address2="絆ビル301",
        birthday=dt.date(1980, 5, 17),
        gender=Gender.FEMALE,
        acquisition_channel=AcquisitionChannel.LINE,
        registered_at=jst(2023, 4, 1, 12, 0),
        member_status=MemberStatus.MEMBER,
        notes="午前中の配達希望。",
    )
    customer.tags.add(Tag.objects.create(name="優良顧客"), Tag.objects.create(name="敏感肌"))
    add_identity(customer, IdentityKind.PHONE, "+819012345678", "090-1234-5678")
    add_identity(customer, IdentityKind.EMAIL, "hanako@example.jp", "Hanako@example.jp")
    add_identity(customer, IdentityKind.CART_MEMBER, "M-000123")

    Consent.objects.create(
        customer=customer,
        channel=ConsentChannel.EMAIL,
        granted=True,
        granted_at=jst(2023, 4, 1, 12, 5),
        method=ConsentMethod.WEB_FORM,
        source_form="会員登録フォーム",
        wording_version="v2023-04",
    )
    Consent.objects.create(
        customer=customer,
        channel=ConsentChannel.LINE,
        granted=False,
        method=ConsentMethod.UNSUBSCRIBE,
        opted_out_at=jst(2024, 8, 9, 18, 30),
    )

    serum = make_product(price=4980)
    first = make_order(customer, number="KZ-0001", product=serum, ordered_at=jst(2024, 1, 10, 9))
    Shipment.objects.create(
        order=first,
        shipped_on=dt.date(2024, 1, 11),
        delivered_on=dt.date(2024, 1, 13),
        carrier="ヤマト運輸",
        tracking_number="1234-5678-9012",
    )
    Order.objects.filter(pk=first.pk).update(status=OrderStatus.DELIVERED)
    second = make_order(customer, number="KZ-0002", quantity=2, ordered_at=jst(2024, 2, 3, 14, 5))
    OrderReversal.objects.create(
        order=second,
        kind=OrderReversal.Kind.CANCEL,
        occurred_at=jst(2024, 2, 3, 15, 0),
        reason="注文間違い",
        refund_amount=9960,
    )
    Order.objects.filter(pk=second.pk).update(status=OrderStatus.CANCELLED)

    active = make_subscription(
        customer,
        product=serum,
        unit_price=3980,
        started_on=dt.date(2024, 1, 10),
        next_delivery_on=dt.date(2025, 4, 10),
        delivery_count=2,
        commitment_count=3,
    )
    SubscriptionDelivery.objects.create(
        subscription=active,
        sequence=1,
        scheduled_on=dt.date(2024, 1, 10),
        status=DeliveryStatus.DELIVERED,
        order=first,
    )
    SubscriptionDelivery.objects.create(
        subscription=active,
        sequence=2,
        scheduled_on=dt.date(2024, 2, 9),
        status=DeliveryStatus.SKIPPED,
    )
    make_subscription(
        customer,
        product=make_product(price=2980),
        unit_price=2480,
        monthly_day=15,
        started_on=dt.date(2023, 5, 15),
        delivery_count=5,
        status=SubscriptionStatus.CANCELLED,
        cancelled_on=dt.date(2023, 10, 1),
        cancel_reason=CancelReason.SURPLUS,
        cancel_note="3か月分余っているとのこと",
    )

    add_points(customer, [(PointKind.EARN, 498), (PointKind.REDEEM, -100), (PointKind.EARN, 50)])
    TimelineEvent.objects.create(
        customer=customer,
        occurred_at=jst(2024, 1, 10, 9, 0),
        kind=TimelineKind.ORDER,
        title="注文 KZ-0001 を受け付けました",
    )
    Contact.objects.create(
        customer=customer,
        occurred_at=jst(2024, 2, 3, 14, 30),
        channel=ContactChannel.PHONE,
        direction=Direction.INBOUND,
        operator=operator,
        reason="キャンセル依頼",
        summary="2個注文してしまったのでキャンセルしたい",
        order=second,
    )
    return customer


def page(client: Client, customer: Customer) -> str:
    response = client.get(reverse("web:customer_detail", args=[customer.pk]))
    assert response.status_code == 200
    return response.content.decode()


def section(html: str, anchor: str) -> str:
    """The HTML of one <section id=…> of the customer page."""
    match = re.search(rf'<section class="card" id="{anchor}">(.*?)</section>', html, re.S)
    assert match, f"section {anchor} missing"
    return match.group(1)


# --- sections ---------------------------------------------------------------------------------


def test_headings_are_all_there(operator: Client, full_customer: Customer) -> None:
    html = page(operator, full_customer)
    for heading in ["基本情報", "識別子", "配信同意", "注文履歴", "定期購入", "ポイント"]:
        assert f"<h2>{heading}</h2>" in html
    assert "<h2>タイムライン</h2>" in html
    assert "<h2>問い合わせ" in html


def test_basic_information(operator: Client, full_customer: Customer) -> None:
    html = section(page(operator, full_customer), "profile")
    assert "山田 花子" in html
    assert "ヤマダ ハナコ" in html
    assert "株式会社絆商事" in html
    assert "〒150-0002" in html
    assert "東京都渋谷区渋谷2-1-1 絆ビル301" in html
    assert "1980年5月17日" in html
    assert f"({age(dt.date(1980, 5, 17))})" in html
    assert "女性" in html
    assert "LINE" in html
    assert "2023年4月1日" in html
    assert "会員" in html
    assert "優良顧客" in html
    assert "敏感肌" in html
    assert "午前中の配達希望。" in html


def test_identities_by_kind(operator: Client, full_customer: Customer) -> None:
    html = section(page(operator, full_customer), "identities")
    assert "電話番号" in html
    assert "090-1234-5678" in html
    assert "Hanako@example.jp" in html
    assert "カート会員ID" in html
    assert "M-000123" in html


def test_the_address_messages_go_to_is_marked_when_there_are_several(
    operator: Client, full_customer: Customer
) -> None:
    assert "送信先" not in section(page(operator, full_customer), "identities")
    add_identity(full_customer, IdentityKind.EMAIL, "hanako.new@example.jp")
    html = section(page(operator, full_customer), "identities")
    # Newest first, and marked: it is the one campaigns.consent_checks sends to.
    assert html.index("hanako.new@example.jp") < html.index("Hanako@example.jp")
    assert re.search(r"hanako\.new@example\.jp</span>.*?送信先", html, re.S)
    assert html.count("送信先") == 1


def test_consents_with_evidence(operator: Client, full_customer: Customer) -> None:
    html = section(page(operator, full_customer), "consents")
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r'<th scope="row">(.*?)</th>(.*?)</tr>', html, re.S)
    }
    assert "同意" in rows["メール"]
    assert "2023-04-01 12:05" in rows["メール"]
    assert "Webフォーム" in rows["メール"]
    assert "会員登録フォーム" in rows["メール"]
    assert "v2023-04" in rows["メール"]
    assert "配信停止" in rows["LINE"]
    assert "2024-08-09 18:30" in rows["LINE"]
    assert "未同意" in rows["SMS"]
    assert "未同意" in rows["郵送DM"]
    assert "未同意" in rows["電話"]


def test_orders_newest_first_with_lines_shipments_reversals(
    operator: Client, full_customer: Customer
) -> None:
    html = section(page(operator, full_customer), "orders")
    assert html.index("KZ-0002") < html.index("KZ-0001")
    assert "2024-02-03 14:05" in html
    assert "× 2" in html
    assert "¥9,960" in html
    assert "¥4,980" in html
    assert "キャンセル" in html
    assert "注文間違い" in html
    assert "返金 ¥9,960" in html
    assert "お届け済" in html
    assert "出荷 2024年1月11日" in html
    assert "お届け 2024年1月13日" in html
    assert "ヤマト運輸" in html
    assert "定期 1回目" in html


def test_subscriptions_with_deliveries(operator: Client, full_customer: Customer) -> None:
    html = section(page(operator, full_customer), "subscriptions")
    assert html.index("継続中") < html.index("解約")  # running ones first
    assert "30日ごと" in html
    assert "毎月15日" in html
    assert "¥3,980 × 1" in html
    assert "2025年4月10日" in html  # 次回お届け予定日
    assert "次回 3回目" in html
    assert "3回(あと1回)" in html  # 縛り
    assert "2023年10月1日" in html  # 解約日
    assert "商品が余っている" in html
    assert "3か月分余っているとのこと" in html
    assert "1回目" in html
    assert "スキップ" in html
    assert "KZ-0001" in html


def test_staff_cancel_a_subscription_from_the_page_after_confirming(
    operator: Client, client_for: Callable[[Role], Client]
) -> None:
    """Erasure is refused while a subscription delivers, and no screen could cancel one: the
    customer page now can, behind a confirmation page, audited and on the timeline."""
    customer = make_customer()
    running = make_subscription(customer, commitment_count=3)
    ended = make_subscription(customer, status=SubscriptionStatus.CANCELLED)
    url = reverse("web:subscription_cancel", args=[customer.pk, running.pk])
    html = section(page(operator, customer), "subscriptions")
    assert html.count("解約する</a>") == 1
    assert url in html
    # marketers read the page; cancelling is the contact center's
    assert "解約する</a>" not in section(page(client_for(Role.MARKETER), customer), "subscriptions")
    assert client_for(Role.MARKETER).post(url, {"reason": "price"}).status_code == 403
    # the confirmation page changes nothing and asks for the reason
    confirm = operator.get(url).content.decode()
    assert "この定期購入を解約する" in confirm
    assert "縛りの回数に達していません" in confirm
    missing = operator.post(url, {"reason": ""})
    assert missing.status_code == 422
    assert "解約理由を選んでください" in missing.content.decode()
    running.refresh_from_db()
    assert running.status == SubscriptionStatus.ACTIVE
    # when
    done = operator.post(url, {"reason": "price", "note": "  年金生活のため  "}, follow=True)
    # then
    assert f"定期購入 #{running.pk}({running.product.name})を解約しました" in (
        done.content.decode()
    )
    running.refresh_from_db()
    assert (running.status, running.cancel_reason, running.cancel_note) == (
        SubscriptionStatus.CANCELLED,
        CancelReason.PRICE,
        "年金生活のため",
    )
    row = AuditLog.objects.get(action="subscription.cancel", customer_id=customer.pk)
    assert row.actor_label == "operator-user"
    assert customer.timeline.filter(title__startswith="定期解約").exists()
    # a second try says it is done; another customer's subscription is not found
    assert "解約済みです" in operator.get(url).content.decode()
    assert operator.post(url, {"reason": "price"}).status_code == 409
    other = reverse("web:subscription_cancel", args=[make_customer().pk, ended.pk])
    assert operator.get(other).status_code == 404


def test_next_delivery_number_is_the_one_the_deliveries_show(operator: Client) -> None:
    # A skipped delivery keeps its number but is no box delivered: 2 boxes delivered, and the
    # next one is the 4th (4回目), as its row, its order and the timeline call it.
    customer = make_customer()
    sub = make_subscription(
        customer,
        started_on=dt.date(2025, 1, 10),
        next_delivery_on=dt.date(2025, 4, 10),
        delivery_count=2,
    )
    statuses = [
        DeliveryStatus.DELIVERED,
        DeliveryStatus.SKIPPED,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.SCHEDULED,
    ]
    for sequence, status in enumerate(statuses, start=1):
        SubscriptionDelivery.objects.create(
            subscription=sub,
            sequence=sequence,
            scheduled_on=dt.date(2025, 1, 10) + dt.timedelta(days=30 * (sequence - 1)),
            status=status,
        )
    html = section(page(operator, customer), "subscriptions")
    assert "2回(次回 4回目)" in html

    # Nothing scheduled yet (paused): the next one follows the last number used.
    sub.deliveries.filter(sequence=4).delete()
    assert "2回(次回 4回目)" in section(page(operator, customer), "subscriptions")


@pytest.mark.parametrize(
    ("latest", "expected"),
    [
        pytest.param(None, 3, id="no-delivery-yet"),
        pytest.param(
            SubscriptionDelivery(sequence=4, status=DeliveryStatus.SCHEDULED), 4, id="scheduled"
        ),
        pytest.param(
            SubscriptionDelivery(sequence=4, status=DeliveryStatus.SKIPPED), 5, id="skipped"
        ),
        pytest.param(
            SubscriptionDelivery(sequence=4, status=DeliveryStatus.DELIVERED), 5, id="delivered"
        ),
    ],
)
def test_next_delivery_sequence(latest: SubscriptionDelivery | None, expected: int) -> None:
    # 2 boxes delivered: only a subscription without deliveries counts on from them.
    assert next_delivery_sequence(2, latest) == expected


def _deliveries(sub: Subscription, *statuses: DeliveryStatus) -> None:
    for sequence, status in enumerate(statuses, start=1):
        SubscriptionDelivery.objects.create(
            subscription=sub,
            sequence=sequence,
            scheduled_on=sub.started_on + dt.timedelta(days=30 * (sequence - 1)),
            status=status,
        )


def test_subscriptions_for_numbers_the_next_delivery_from_the_prefetch(
    operator: Client, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    customer = make_customer()
    fresh = make_subscription(customer, started_on=dt.date(2025, 3, 1))
    skipped = make_subscription(customer, started_on=dt.date(2025, 2, 1), delivery_count=1)
    _deliveries(skipped, DeliveryStatus.DELIVERED, DeliveryStatus.SKIPPED)
    scheduled = make_subscription(customer, started_on=dt.date(2025, 1, 1), delivery_count=1)
    _deliveries(scheduled, DeliveryStatus.DELIVERED, DeliveryStatus.SCHEDULED)

    with django_assert_num_queries(2):  # the subscriptions with their products; the deliveries
        subscriptions = subscriptions_for(customer)
    numbers = {s.pk: s.next_delivery_sequence for s in subscriptions}  # type: ignore[attr-defined]
    assert numbers == {fresh.pk: 1, skipped.pk: 3, scheduled.pk: 2}

    html = section(page(operator, customer), "subscriptions")
    assert "0回(次回 1回目)" in html
    assert "1回(次回 3回目)" in html
    assert "1回(次回 2回目)" in html


def test_points_balance_and_ledger(operator: Client, full_customer: Customer) -> None:
    html = page(operator, full_customer)
    points = section(html, "points")
    assert "ポイント残高 <strong>448</strong> pt" in points
    assert "+498" in points
    assert "-100" in points
    assert "2026年1月2日" in points  # 有効期限 of the first accrual
    assert points.index("理由03") < points.index("理由01")  # newest first


def test_timeline_and_contacts(operator: Client, full_customer: Customer) -> None:
    html = page(operator, full_customer)
    assert "注文 KZ-0001 を受け付けました" in section(html, "timeline")
    contacts = section(html, "contacts")
    assert "2個注文してしまったのでキャンセルしたい" in contacts
    assert "キャンセル依頼" in contacts
    assert "電話(受信)" in contacts
    assert "KZ-0002" in contacts
    assert "operator-user" in contacts


def test_personal_data_is_not_kept_by_the_browser(operator: Client) -> None:
    customer = make_customer()
    for url in [
        reverse("web:customer_detail", args=[customer.pk]),
        reverse("web:customer_orders", args=[customer.pk]),
        reverse("web:customer_search") + "?q=山田",
    ]:
        response = operator.get(url)
        assert "no-store" in response["Cache-Control"]
        assert 'hx-history="false"' in response.content.decode()


def test_empty_states(operator: Client) -> None:
    html = page(operator, make_customer())
    assert "識別子は登録されていません" in html
    assert section(html, "consents").count("未同意") == len(ConsentChannel)
    assert "注文はまだありません" in html
    assert "定期購入はありません" in html
    assert "ポイントの履歴はまだありません" in html
    assert "ポイント残高 <strong>0</strong> pt" in html
    assert "記録はまだありません" in html
    assert "問い合わせの記録はありません" in html


def test_a_merged_record_is_not_shown_as_withdrawn(operator: Client) -> None:
    # The merge marks the absorbed record 退会 so that nothing is sent to it; the customer did
    # not withdraw, and the operator must not tell them so.
    survivor = make_customer()
    absorbed = make_customer(member_status=MemberStatus.WITHDRAWN, merged_into=survivor)
    html = page(operator, absorbed)
    head = html[html.index('class="customer-head"') : html.index('id="profile"')]
    assert "統合済み" in head
    assert "退会" not in head
    assert f"統合済み(顧客ID {survivor.pk} に統合)" in section(html, "profile")
    assert "退会" not in section(html, "profile")


def test_an_erased_record_is_not_addressed_as_a_person(
    operator: Client, users: dict[Role, User]
) -> None:
    customer = make_customer()
    customer_erase(customer=customer, acting_user=users[Role.ADMIN], reason="受付番号 1")
    html = page(operator, customer)
    assert "<title>削除済み(匿名化) | Kizuna 絆</title>" in html
    assert 'class="honorific"' not in html


# --- pagination -------------------------------------------------------------------------------


def test_orders_page_two_as_htmx_fragment_and_as_page(operator: Client) -> None:
    customer = make_customer()
    product = make_product()
    for day in range(1, 13):  # 12 orders: 10 on page 1, the 2 oldest on page 2
        make_order(customer, number=f"N{day:02d}", product=product, ordered_at=jst(2025, 1, day))
    first = page(operator, customer)
    assert "N12" in first
    assert "N03" in first
    assert "N02" not in first
    assert "1 / 2ページ" in first

    url = reverse("web:customer_orders", args=[customer.pk])
    fragment = operator.get(url, {"page": 2}, headers={"HX-Request": "true"})
    html = fragment.content.decode()
    assert "<html" not in html
    assert html.strip().startswith('<div id="orders-panel"')
    assert "N02" in html
    assert "N01" in html
    assert "N03" not in html
    assert "HX-Request" in fragment["Vary"]

    full = operator.get(url, {"page": 2}).content.decode()
    assert "<html" in full
    assert "N01" in full
    assert "顧客ページに戻る" in full
    assert f'href="{url}?page=1"' in full  # the pager works without JavaScript


def test_timeline_page_two(operator: Client) -> None:
    customer = make_customer()
    add_timeline(customer, 25)
    first = section(page(operator, customer), "timeline")
    assert "記録25" in first
    assert "記録06" in first
    assert "記録05" not in first

    url = reverse("web:customer_timeline", args=[customer.pk])
    html = operator.get(url, {"page": 2}, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in html
    assert [f"記録{i:02d}" for i in range(5, 0, -1)] == re.findall(r"記録\d\d", html)
    assert "古い記録" in html
    assert f'href="{url}?page=1"' in html

    full = operator.get(url, {"page": 2}).content.decode()
    assert "<html" in full
    assert "記録01" in full


def test_a_timeline_page_past_the_end_shows_the_last_page(operator: Client) -> None:
    customer = make_customer()
    add_timeline(customer, 25)
    url = reverse("web:customer_timeline", args=[customer.pk])
    html = operator.get(url, {"page": 99999}).content.decode()
    assert [f"記録{i:02d}" for i in range(5, 0, -1)] == re.findall(r"記録\d\d", html)
    assert "このページに記録はありません" not in html


def test_same_moment_timeline_rows_are_not_lost_between_pages(operator: Client) -> None:
    customer = make_customer()
    moment = jst(2025, 2, 1, 9, 0)
    for i in range(1, 23):
        TimelineEvent.objects.create(
            customer=customer, occurred_at=moment, kind=TimelineKind.ORDER, title=f"同時{i:02d}"
        )
    url = reverse("web:customer_timeline", args=[customer.pk])
    seen = re.findall(r"同時\d\d", operator.get(url, {"page": 1}).content.decode())
    seen += re.findall(r"同時\d\d", operator.get(url, {"page": 2}).content.decode())
    assert sorted(seen) == sorted(f"同時{i:02d}" for i in range(1, 23))


def test_points_page_two(operator: Client) -> None:
    customer = make_customer()
    add_points(customer, [(PointKind.EARN, 10)] * 25)
    url = reverse("web:customer_points", args=[customer.pk])
    html = operator.get(url, {"page": 2}, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in html
    assert re.findall(r"理由\d\d", html) == [f"理由{i:02d}" for i in range(5, 0, -1)]
    assert "ポイント残高 <strong>250</strong> pt" in html
    full = operator.get(url, {"page": 2}).content.decode()
    assert "<html" in full
    assert "理由01" in full


@pytest.mark.parametrize("value", ["abc", "0", "-3", ""])
def test_unreadable_page_numbers_fall_back_to_page_one(operator: Client, value: str) -> None:
    customer = make_customer()
    add_timeline(customer, 3)
    for name in ["web:customer_orders", "web:customer_points", "web:customer_timeline"]:
        response = operator.get(reverse(name, args=[customer.pk]), {"page": value})
        assert response.status_code == 200


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_page_number_below_one_opens_the_newest_orders(operator: Client, value: str) -> None:
    # given two pages of orders
    customer = make_customer()
    start = timezone.now() - dt.timedelta(days=ORDERS_PER_PAGE + 1)
    for day in range(ORDERS_PER_PAGE + 1):
        make_order(customer, number=f"N{day:03d}", ordered_at=start + dt.timedelta(days=day))
    # when ?page=0 or a negative page is opened (typed, or a stale bookmark)
    html = operator.get(
        reverse("web:customer_orders", args=[customer.pk]), {"page": value}
    ).content.decode()
    # then it is the first page, the newest orders, not the oldest
    assert f"N{ORDERS_PER_PAGE:03d}" in html
    assert "N000" not in html


def test_page_past_the_end(operator: Client) -> None:
    customer = make_customer()
    make_order(customer, number="ONLY")
    html = operator.get(
        reverse("web:customer_orders", args=[customer.pk]), {"page": 99}
    ).content.decode()
    assert "ONLY" in html  # Paginator shows the last page
    html = operator.get(
        reverse("web:customer_timeline", args=[customer.pk]), {"page": 99}
    ).content.decode()
    assert "記録はまだありません" in html  # the last page of an empty history: the first


def test_a_page_number_too_large_for_the_database(operator: Client) -> None:
    customer = make_customer()
    add_timeline(customer, 3)
    response = operator.get(
        reverse("web:customer_timeline", args=[customer.pk]), {"page": "9" * 20}
    )
    assert response.status_code == 200
    assert "記録03" in response.content.decode()  # the last page


# --- query bounds -----------------------------------------------------------------------------


def _busy_customer(orders: int) -> Customer:
    customer = make_customer()
    product = make_product()
    for i in range(orders):
        order = make_order(customer, product=product, ordered_at=jst(2025, 1, 1) + dt.timedelta(i))
        # The factory gives one line; a second line, a shipment and a reversal exercise every
        # prefetch of the orders section.
        order.lines.create(
            product=product, product_name="おまけ", unit_price=0, quantity=1, amount=0
        )
        Shipment.objects.create(order=order, shipped_on=dt.date(2025, 1, 2) + dt.timedelta(i))
        OrderReversal.objects.create(
            order=order, kind=OrderReversal.Kind.RETURN, occurred_at=timezone.now()
        )
        subscription = make_subscription(customer, product=product, started_on=dt.date(2024, 1, 1))
        SubscriptionDelivery.objects.create(
            subscription=subscription,
            sequence=1,
            scheduled_on=dt.date(2024, 1, 1),
            status=DeliveryStatus.DELIVERED,
            order=order,
        )
        Contact.objects.create(
            customer=customer,
            occurred_at=timezone.now(),
            channel=ContactChannel.PHONE,
            direction=Direction.INBOUND,
            operator=User.objects.first(),
            summary="お問い合わせ",
            order=order,
        )
    customer.tags.add(*(Tag.objects.get_or_create(name=f"タグ{i}")[0] for i in range(orders)))
    add_points(customer, [(PointKind.EARN, 10)] * orders)
    add_timeline(customer, orders * 2)
    return customer


def test_query_count_does_not_grow_with_the_page(operator: Client) -> None:
    few, many = _busy_customer(2), _busy_customer(10)
    url = "web:customer_detail"
    with CaptureQueriesContext(connection) as small:
        operator.get(reverse(url, args=[few.pk]))
    with CaptureQueriesContext(connection) as large:
        operator.get(reverse(url, args=[many.pk]))
    assert len(large.captured_queries) == len(small.captured_queries)
    # 18 before the シナリオ card, which reads at most 3 more (enrollments, their step records,
    # their messages)
    assert len(large.captured_queries) <= 21, [q["sql"][:90] for q in large.captured_queries]


@pytest.mark.parametrize(
    "name", ["web:customer_orders", "web:customer_points", "web:customer_timeline"]
)
def test_section_query_counts_are_bounded(operator: Client, name: str) -> None:
    few, many = _busy_customer(2), _busy_customer(10)
    with CaptureQueriesContext(connection) as small:
        operator.get(reverse(name, args=[few.pk]), headers={"HX-Request": "true"})
    with CaptureQueriesContext(connection) as large:
        operator.get(reverse(name, args=[many.pk]), headers={"HX-Request": "true"})
    assert len(large.captured_queries) == len(small.captured_queries)
    assert len(large.captured_queries) <= 12


# --- formatting -------------------------------------------------------------------------------


def test_yen() -> None:
    assert yen(4980) == "¥4,980"
    assert yen(0) == "¥0"
    assert yen(1234567) == "¥1,234,567"
    assert yen(-500) == "-¥500"
    assert yen(None) == ""
    # averages and predictions are floats: rounded, not cut
    assert yen(3456.7) == "¥3,457"
    assert yen(-0.4) == "¥0"


def test_dates_in_jst() -> None:
    moment = dt.datetime(2025, 3, 4, 5, 5, tzinfo=dt.UTC)  # 14:05 in Tokyo
    assert jdatetime(moment) == "2025-03-04 14:05"
    assert jdate(moment) == "2025年3月4日"
    late = dt.datetime(2025, 3, 4, 16, 0, tzinfo=dt.UTC)  # already the 5th in Tokyo
    assert jdate(late) == "2025年3月5日"
    assert jdate(dt.date(2025, 12, 31)) == "2025年12月31日"
    assert jdate(None) == ""


def test_age_counts_full_years_in_tokyo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timezone, "localdate", lambda: dt.date(2025, 5, 17))
    assert age(dt.date(1980, 5, 17)) == "45歳"
    assert age(dt.date(1980, 5, 18)) == "44歳"
    assert age(None) == ""


def test_postal_and_phone() -> None:
    assert postal("1500002") == "〒150-0002"
    assert phone("+819012345678") == "090-1234-5678"
    assert phone("+81312345678") == "03-1234-5678"
