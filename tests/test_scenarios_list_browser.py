"""A marketer opens the scenario list in a real browser: the page comes at once and each row's
two enrollment counts follow (counting them takes most of a second on a large shop). A draft
made by mistake is deleted from its page once 「削除してよい」 is ticked."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import Scenario
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.automation.services import scenario_save
from tests.factories import make_customer, make_order, make_user
from tests.test_browser import browser, log_in, page, page_problems, shot  # noqa: F401 - fixtures
from tests.test_scenarios_kit import STAFF, jst, scenario, step

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_list_loads_its_counts_and_a_draft_is_deleted(
    live_server: LiveServer,
    page: Page,  # noqa: F811 - the fixture imported above
) -> None:
    # given: a running scenario with two customers entered (none held out), and a draft
    welcome = scenario("welcome", trigger={"kind": "first_purchase"}, activated_at=jst(2026, 5, 1))
    for _ in range(2):
        make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    draft = scenario_save(
        scenario=None,
        spec={
            "key": "mistake",
            "name": "間違えたシナリオ",
            "trigger": {"kind": "signup"},
            "steps": [step()],
        },
        acting_user=STAFF,
    )
    log_in(page, live_server, make_user(Role.MARKETER, username="browser-marketer"))
    # when: the list is opened
    page.goto(f"{live_server.url}/scenarios/")
    # then: each row's placeholder becomes its two counts, under their own headings
    expect(page.locator("table")).not_to_contain_text("数えています")
    for row, treated in (("シナリオ welcome", "2"), ("間違えたシナリオ", "0")):
        cells = page.get_by_role("row", name=row).get_by_role("cell")
        expect(cells).to_have_count(6)
        expect(cells.nth(4)).to_have_text(treated)
        expect(cells.nth(5)).to_have_text("0")
    shot(page, "23-scenario-list-counts.png", full_page=True)
    # when: the draft's 削除 is pressed without, then with, 「削除してよい」 ticked
    page.goto(f"{live_server.url}/scenarios/{draft.pk}/")
    shot(page, "24-scenario-delete-draft.png", full_page=True)
    delete = page.get_by_role("button", name="このシナリオを削除する")
    delete.click()  # the browser asks for the box first; nothing is sent
    assert Scenario.objects.filter(pk=draft.pk).exists()
    page.get_by_label("削除してよい").check()
    delete.click()
    # then: back on the list, which says so and no longer shows the draft
    expect(page.get_by_role("status")).to_contain_text("シナリオ「間違えたシナリオ」を削除しました")
    expect(page.locator("table")).not_to_contain_text("間違えたシナリオ")
    assert not Scenario.objects.filter(pk=draft.pk).exists()
    assert Scenario.objects.filter(pk=welcome.pk).exists()
