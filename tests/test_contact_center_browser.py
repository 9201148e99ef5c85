"""The contact center in a real browser: an operator records a call and a customer's opt-out
from the customer page, double-clicking as people do."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from kizuna.accounts.models import Role
from kizuna.customers.models import Consent, ConsentChannel, ConsentMethod
from kizuna.customers.services import consent_grant
from kizuna.support.models import Contact
from tests.factories import make_customer, make_user
from tests.test_browser import browser, log_in, page, page_problems, shot  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_operator_records_a_call_and_an_opt_out(
    live_server: LiveServer,
    page: Page,  # noqa: F811 - the fixture imported above
) -> None:
    operator = make_user(Role.OPERATOR)
    customer = make_customer()
    consent_grant(
        customer=customer,
        channel=ConsentChannel.EMAIL,
        method=ConsentMethod.WEB_FORM,
        source_form="会員登録",
        wording_version="v1",
        acting_user=operator,
    )
    log_in(page, live_server, operator)
    page.goto(f"{live_server.url}/customers/{customer.pk}/")
    page.get_by_role("link", name="問い合わせを記録").click()
    expect(page.get_by_role("heading", name="問い合わせを記録")).to_be_visible()
    page.get_by_label("問い合わせ理由(任意)").fill("配送の問い合わせ")
    page.get_by_label("要約").fill("お届け日の確認")
    page.get_by_label("内容(任意)").fill("来週の火曜に届くか確認したいとのこと。")
    shot(page, "contact-new.png", full_page=True)
    page.get_by_role("button", name="記録する").dblclick()
    expect(page.get_by_text("問い合わせを記録しました。")).to_be_visible()
    expect(page.locator("#contacts")).to_contain_text("お届け日の確認")
    assert Contact.objects.filter(customer=customer).count() == 1

    page.locator("#consents").get_by_role("link", name="配信停止にする").click()
    expect(page.get_by_role("heading", name="メールの配信を停止する")).to_be_visible()
    shot(page, "consent-withdraw.png", full_page=True)
    page.get_by_role("button", name="配信停止にする").click()
    expect(page.get_by_text("メールの配信停止にしました。")).to_be_visible()
    shot(page, "customer-after-contact-center.png", full_page=True)
    assert not Consent.objects.get(customer=customer, channel="email").granted
