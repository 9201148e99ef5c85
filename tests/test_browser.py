"""The operator's path through a real browser: log in, type a caller's number, open the customer.

Drives Debian's Chromium (/usr/bin/chromium) through Playwright; `playwright install` is never
used. Screenshots land in test-results/ (git-ignored) so a person can look at the pages.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, expect, sync_playwright
from pytest_django.live_server_helper import LiveServer

from kizuna.accounts.models import Role, User
from kizuna.commerce.models import Order, OrderReversal, OrderStatus, Shipment
from kizuna.customers.models import Customer, IdentityKind, TimelineEvent, TimelineKind
from kizuna.loyalty.models import PointKind
from kizuna.subscriptions.models import (
    DeliveryStatus,
    SubscriptionDelivery,
)
from kizuna.support.models import Contact, ContactChannel, Direction
from tests.factories import (
    PASSWORD,
    add_identity,
    make_customer,
    make_order,
    make_product,
    make_subscription,
    make_user,
)
from tests.test_web_customer import add_points, build_full_customer, jst

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
RESULTS = Path(__file__).resolve().parent.parent / "test-results"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = (
            f"{CHROMIUM} not found: install Debian's Chromium and Japanese fonts with "
            "`apt-get install chromium fonts-noto-cjk`"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide Chromium for the browser tests. {message}")
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page_problems() -> list[str]:
    """Console errors and failed requests seen by `page`; a test may drop the ones it caused."""
    return []


@pytest.fixture
def page(browser: Browser, page_problems: list[str]) -> Iterator[Page]:
    # The browser's own language stays English on purpose: the screens must be Japanese anyway.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems = page_problems

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            problems.append(f"{response.status} {response.url}")

    page.on("console", on_console)
    page.on("response", on_response)
    yield page
    context.close()
    assert problems == [], "the page loaded with errors"


def shot(page: Page, name: str, *, full_page: bool = False) -> None:
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=str(RESULTS / name), full_page=full_page)


def log_in(page: Page, live_server: LiveServer, user: User) -> None:
    page.goto(f"{live_server.url}/login/")
    expect(page.get_by_role("heading", name="ログイン")).to_be_visible()
    page.get_by_label("ユーザー名").fill(user.username)
    page.get_by_label("パスワード").fill(PASSWORD)
    page.get_by_role("button", name="ログイン").click()
    expect(page).to_have_url(f"{live_server.url}/")


def busy_history(customer: Customer, operator: User) -> None:
    """Years of history, so pages and pagers are seen the way long-time customers fill them."""
    product = make_product(price=3980)
    gift = make_product(price=980)
    for i in range(24):
        order = make_order(
            customer,
            number=f"KZ-{2023_000 + i}",
            product=product,
            quantity=1 + i % 2,
            ordered_at=jst(2023, 1, 5, 10, 30) + dt.timedelta(days=30 * i),
        )
        order.lines.create(
            product=gift, product_name="ミニサイズ化粧水", unit_price=0, quantity=1, amount=0
        )
        shipped = order.ordered_at.date() + dt.timedelta(days=1)
        Shipment.objects.create(
            order=order,
            shipped_on=shipped,
            delivered_on=shipped + dt.timedelta(days=2),
            carrier="佐川急便",
            tracking_number=f"4000-{i:04d}-7777",
        )
        status = OrderStatus.DELIVERED
        if i % 7 == 3:
            status = OrderStatus.RETURNED
            OrderReversal.objects.create(
                order=order,
                kind=OrderReversal.Kind.RETURN,
                occurred_at=order.ordered_at + dt.timedelta(days=9),
                reason="肌に合わなかった",
                refund_amount=order.total,
            )
        Order.objects.filter(pk=order.pk).update(status=status)
    subscription = make_subscription(
        customer,
        product=make_product(price=5980),
        unit_price=4980,
        monthly_day=5,
        started_on=dt.date(2024, 6, 5),
        next_delivery_on=dt.date(2025, 7, 5),
        delivery_count=13,
        commitment_count=6,
    )
    for n in range(1, 14):
        SubscriptionDelivery.objects.create(
            subscription=subscription,
            sequence=n,
            scheduled_on=dt.date(2024, 6, 5) + dt.timedelta(days=30 * (n - 1)),
            status=DeliveryStatus.SKIPPED if n == 7 else DeliveryStatus.DELIVERED,
        )
    add_points(customer, [(PointKind.EARN, 400), (PointKind.REDEEM, -150)] * 14)
    for i in range(45):
        TimelineEvent.objects.create(
            customer=customer,
            occurred_at=jst(2023, 1, 5, 10, 30) + dt.timedelta(days=20 * i),
            kind=[TimelineKind.ORDER, TimelineKind.SHIPMENT, TimelineKind.POINTS][i % 3],
            title=f"タイムライン記録 {i + 1:02d}",
        )
    for i in range(6):
        Contact.objects.create(
            customer=customer,
            occurred_at=jst(2024, 3, 1, 11, 0) + dt.timedelta(days=40 * i),
            channel=ContactChannel.PHONE,
            direction=Direction.INBOUND,
            operator=operator,
            reason="お届け日の変更",
            summary="次回のお届けを1週間遅らせたい",
        )


@pytest.mark.django_db(transaction=True)
def test_operator_finds_caller_by_phone_and_opens_customer(
    live_server: LiveServer, page: Page, page_problems: list[str]
) -> None:
    operator = make_user(Role.OPERATOR, username="browser-operator")
    customer = build_full_customer(operator)  # phone +819012345678, shown as 090-1234-5678
    busy_history(customer, operator)
    other = make_customer(given_name="太郎", given_kana="タロウ")
    add_identity(other, IdentityKind.PHONE, "+819087654321", "090-8765-4321")

    page.goto(f"{live_server.url}/customers/{customer.pk}/")  # deep link before logging in
    expect(page).to_have_url(re.compile(r"/login/\?next="))
    page.get_by_label("パスワード").fill("wrong")
    page.get_by_label("ユーザー名").fill(operator.username)
    page.get_by_role("button", name="ログイン").click()
    expect(page.get_by_role("alert")).to_have_text("ユーザー名またはパスワードが正しくありません。")
    shot(page, "00-login-error.png")

    log_in(page, live_server, operator)
    shot(page, "01-home.png")

    page.locator("#search-q").press_sequentially("０９０－１２３４－５６７８")
    rows = page.locator("#search-results .result-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("山田 花子")
    expect(rows.first).to_contain_text("090-1234-5678")
    expect(page).to_have_url(re.compile(r"/customers/\?q="))  # reload keeps the results
    shot(page, "02-search-by-phone.png")

    page.get_by_role("link", name="山田 花子").click()
    expect(page).to_have_url(f"{live_server.url}/customers/{customer.pk}/")
    expect(page.locator("h1")).to_contain_text("山田 花子")
    for heading in ["基本情報", "識別子", "配信同意", "注文履歴", "定期購入", "ポイント"]:
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="タイムライン")).to_be_visible()
    expect(page.get_by_role("heading", name=re.compile("^問い合わせ"))).to_be_visible()
    shot(page, "03-customer-top.png")
    shot(page, "04-customer-full.png", full_page=True)
    # A tall viewport keeps the sticky header from covering the section being captured.
    page.set_viewport_size({"width": 1280, "height": 6000})
    for n, anchor in enumerate(["orders", "subscriptions", "points", "timeline", "contacts"]):
        page.locator(f"#{anchor}").screenshot(path=str(RESULTS / f"04{'abcde'[n]}-{anchor}.png"))

    page.set_viewport_size({"width": 1280, "height": 900})
    response = page.goto(f"{live_server.url}/customers/999999/")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_role("heading", name="ページが見つかりません")).to_be_visible()
    shot(page, "08-not-found.png")
    assert all("404" in problem for problem in page_problems)
    page_problems.clear()  # the 404 was the point of this step


@pytest.mark.django_db(transaction=True)
def test_sections_page_in_place_with_htmx(live_server: LiveServer, page: Page) -> None:
    operator = make_user(Role.OPERATOR, username="browser-pager")
    customer = build_full_customer(operator)
    busy_history(customer, operator)
    log_in(page, live_server, operator)
    detail_url = f"{live_server.url}/customers/{customer.pk}/"
    page.goto(detail_url)

    orders = page.locator("#orders-panel")
    expect(orders).to_contain_text("1 / 3ページ")
    orders.get_by_role("link", name="古い注文 ›").click()
    expect(orders).to_contain_text("2 / 3ページ")
    expect(page).to_have_url(detail_url)  # swapped in place, the page stayed
    expect(page.get_by_role("heading", name="注文履歴")).to_be_in_viewport()  # back to its top
    shot(page, "05-orders-page-2.png")

    timeline = page.locator("#timeline-panel")
    expect(timeline).to_contain_text("タイムライン記録 45")
    timeline.get_by_role("link", name="古い記録 ›").click()
    expect(timeline).to_contain_text("2ページ目")
    expect(timeline).to_contain_text("タイムライン記録 25")
    expect(timeline).not_to_contain_text("タイムライン記録 45")

    points = page.locator("#points-panel")
    points.get_by_role("link", name="古い履歴 ›").click()
    expect(points).to_contain_text("2 / 2ページ")
    expect(page).to_have_url(detail_url)


@pytest.mark.django_db(transaction=True)
def test_many_matches_ask_to_narrow(live_server: LiveServer, page: Page) -> None:
    operator = make_user(Role.OPERATOR, username="browser-many")
    given = [("花子", "ハナコ"), ("太郎", "タロウ"), ("美咲", "ミサキ"), ("健太", "ケンタ")]
    for i in range(60):
        name, kana = given[i % len(given)]
        customer = make_customer(
            given_name=name, given_kana=kana, prefecture=1 + i % 47, address1="中央1-1"
        )
        add_identity(customer, IdentityKind.PHONE, f"+8190{i:08d}", f"090-{i:04d}-{i:04d}")
        add_identity(customer, IdentityKind.EMAIL, f"yamada{i}@example.jp")
        if i % 3:
            make_order(customer, ordered_at=jst(2025, 1, 1 + i % 28))
    log_in(page, live_server, operator)
    page.locator("#search-q").press_sequentially("やまだ")
    expect(page.locator(".result-more")).to_have_text("50件以上あります。条件を絞り込んでください")
    expect(page.locator("#search-results .result-row")).to_have_count(50)
    shot(page, "06-search-many.png")

    page.locator("#search-q").fill("")
    page.locator("#search-q").press_sequentially("すずき")
    expect(page.locator("#search-results")).to_contain_text("該当する顧客が見つかりません")
    shot(page, "07-search-none.png")


@pytest.mark.django_db(transaction=True)
def test_search_works_without_javascript(live_server: LiveServer, browser: Browser) -> None:
    operator = make_user(Role.OPERATOR, username="browser-nojs")
    build_full_customer(operator)
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    try:
        log_in(page, live_server, operator)
        page.locator("#search-q").fill("ﾔﾏﾀﾞ ﾊﾅｺ")
        page.locator("#search-q").press("Enter")
        expect(page).to_have_url(re.compile(r"/customers/\?q="))
        page.get_by_role("link", name="山田 花子").click()
        page.locator("#orders").get_by_text("KZ-0002").wait_for()
    finally:
        context.close()
