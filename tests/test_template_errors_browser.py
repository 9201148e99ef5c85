"""A marketer meets a template that cannot be rendered in a real browser: the preview says why
(it used to answer 500, and htmx showed nothing), 保存する refuses it keeping the input, and a
scenario whose template fails at the scheduler says so on its page."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import MessageTemplate
from kizuna.campaigns.automation.scheduler import tick
from tests.factories import make_customer, make_order, make_user
from tests.test_browser import browser, log_in, page, page_problems, shot  # noqa: F401 - fixtures
from tests.test_scenarios_kit import jst, scenario, step, template

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WITH_TIME = '{{ name }} 様 最終購入: {{ last_order_date|date:"Y年n月j日 H:i" }}'


def test_the_preview_and_the_save_say_why_a_template_cannot_be_used(
    live_server: LiveServer,
    page: Page,  # noqa: F811 - the fixture imported above
    page_problems: list[str],  # noqa: F811 - the fixture imported above
) -> None:
    # given: a marketer writing a new template with a time format on a date
    log_in(page, live_server, make_user(Role.MARKETER, username="browser-marketer"))
    page.goto(f"{live_server.url}/scenarios/templates/new/")
    page.get_by_label("名前", exact=True).fill("最終購入のお礼")
    page.get_by_label("識別名").fill("last-order")
    page.locator("#t-subject").fill("{{ name }} 様へ")
    page.locator("#t-text").fill(WITH_TIME)
    # when: the preview is asked for
    page.get_by_role("button", name="プレビュー").click()
    # then: the preview area says what is wrong, in Japanese
    preview = page.locator("#template-preview")
    expect(preview).to_contain_text("このままでは保存できません")
    expect(preview).to_contain_text("日付だけの項目なので、時刻の書式(H・i)は使えません")
    shot(page, "30-template-preview-error.png", full_page=True)
    # when: it is saved all the same
    page.get_by_role("button", name="保存する").click()
    # then: it is refused, the input kept
    expect(page.locator(".alert-error").first).to_contain_text("保存できませんでした")
    expect(page.locator(".alert-error").first).to_contain_text("時刻の書式(H・i)は使えません")
    expect(page.locator("#t-text")).to_have_value(WITH_TIME)
    assert not MessageTemplate.objects.filter(key="last-order").exists()
    assert [p for p in page_problems if "/scenarios/templates/new/" in p and p.startswith("400")]
    page_problems.clear()  # the refused save answers 400 on purpose
    # when: the format is fixed, previewed and saved
    page.locator("#t-text").fill('{{ name }} 様 最終購入: {{ last_order_date|date:"Y年n月j日" }}')
    page.get_by_role("button", name="プレビュー").click()
    # (the made-up customer last ordered 30 days before today)
    last_order = timezone.localdate() - dt.timedelta(days=30)
    expected = f"山田 花子 様 最終購入: {last_order.year}年{last_order.month}月{last_order.day}日"
    expect(preview).to_contain_text(expected)
    expect(preview).not_to_contain_text("保存できません")
    page.get_by_role("button", name="保存する").click()
    expect(page.get_by_text("テンプレート「最終購入のお礼」を保存しました。")).to_be_visible()


def test_the_scenario_page_says_its_template_failed_at_the_last_tick(
    live_server: LiveServer,
    page: Page,  # noqa: F811 - the fixture imported above
) -> None:
    # given: a running scenario whose template (saved before templates were rendered when
    # saved) fails for every customer, and a tick that ran it
    dated = template("dated", text="{{ name }} 様")
    first = scenario(
        "first", trigger={"kind": "first_purchase"}, steps=[step(template="dated")],
        activated_at=jst(2026, 5, 1),
    )  # fmt: skip
    MessageTemplate.objects.filter(pk=dated.pk).update(text=WITH_TIME)
    make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    log_in(page, live_server, make_user(Role.MARKETER, username="browser-marketer"))
    # when: the scenario list, then the scenario's page, is opened
    page.goto(f"{live_server.url}/scenarios/")
    page.get_by_role("link", name="直近の実行でエラー").click()
    # then: the page says what failed, when, and what to do, above everything else
    expect(page).to_have_url(f"{live_server.url}/scenarios/{first.pk}/")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("直近の実行でエラー(")  # when the tick ran, by the clock
    expect(alert).to_contain_text("テンプレートを表示できないため")
    expect(alert).to_contain_text("時刻の書式(H・i)は使えません")
    box = alert.bounding_box()
    effect = page.get_by_role("heading", name="効果").bounding_box()
    assert box is not None
    assert effect is not None
    assert box["y"] < effect["y"]
    shot(page, "31-scenario-tick-error.png", full_page=True)
