"""A marketer opens a scenario in a real browser: the page comes at once and its lift table
follows (it is loaded after the page, as it can take seconds on a large shop)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.scheduler import tick
from tests.factories import make_customer, make_order, make_user
from tests.test_browser import browser, log_in, page, page_problems, shot  # noqa: F401 - fixtures
from tests.test_scenarios_kit import jst, scenario

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_scenario_page_loads_its_lift_after_the_page(
    live_server: LiveServer,
    page: Page,  # noqa: F811 - the fixture imported above
) -> None:
    # given: a running scenario with an enrolled customer
    welcome = scenario("welcome", trigger={"kind": "first_purchase"}, activated_at=jst(2026, 5, 1))
    make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    log_in(page, live_server, make_user(Role.MARKETER, username="browser-marketer"))
    # when
    page.goto(f"{live_server.url}/scenarios/{welcome.pk}/")
    # then: the lift table replaces the placeholder
    effect = page.locator("section", has=page.get_by_role("heading", name="効果"))
    expect(effect.get_by_role("row", name="90日LTV")).to_be_visible()
    expect(effect).not_to_contain_text("集計しています")
    expect(effect).to_contain_text("データ不足")
    shot(page, "20-scenario-lift.png", full_page=True)
