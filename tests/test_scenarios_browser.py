"""A marketer opens a scenario in a real browser: the page comes at once and its lift table
follows (it is loaded after the page, as it can take seconds on a large shop). The offers and
template pages fit a phone and a desktop."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.automation.services import offer_save
from tests.factories import make_customer, make_order, make_user
from tests.test_browser import browser, log_in, page, page_problems, shot  # noqa: F401 - fixtures
from tests.test_scenarios_kit import STAFF, jst, scenario, template

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_scenario_page_loads_its_lift_after_the_page(
    live_server: LiveServer,
    page: Page,  # noqa: F811 - the fixture imported above
) -> None:
    # given: a running scenario with a holdout and an enrolled customer
    welcome = scenario(
        "welcome",
        trigger={"kind": "first_purchase"},
        holdout_percent=10,
        activated_at=jst(2026, 5, 1),
    )
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


def test_offers_and_template_help_fit_a_phone_and_a_desktop(
    live_server: LiveServer,
    page: Page,  # noqa: F811 - the fixture imported above
) -> None:
    # given: an offer whose table is wider than a phone, and a template
    offer_save(
        offer=None,
        key="birthday-300",
        name="お誕生日 300ポイント進呈",
        kind="points",
        value=300,
        code="HAPPYBIRTHDAY2026",
        valid_days=30,
        acting_user=STAFF,
    )
    thanks = template()
    log_in(page, live_server, make_user(Role.MARKETER, username="browser-marketer"))
    # when: the offers page is opened on a phone
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/scenarios/offers/")
    # then: the table scrolls in its card, and the form below it is as wide as the screen
    for part in (".auto-columns", "#o-name"):
        box = page.locator(part).bounding_box()
        assert box is not None
        assert box["x"] + box["width"] <= 390, part
    # and the header (user name, role, links, ログアウト) wraps rather than widening the page
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "21-offers-phone.png", full_page=True)
    # when: a template is opened on a desktop
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/scenarios/templates/{thanks.pk}/")
    # then: each variable's meaning is readable, not squeezed to a character a line
    meaning = page.locator(".auto-vars dd", has_text="おすすめ商品(併買)")
    box = meaning.bounding_box()
    assert box is not None
    assert box["height"] < 40
    expect(page.locator(".auto-vars")).to_contain_text("offer.expires_on")
    shot(page, "22-template-variables.png", full_page=True)
