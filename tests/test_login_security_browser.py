"""2FA in a real browser: enrol from セキュリティ設定 by reading the secret off the page, log out,
log in again with password and code (RELIABILITY D4). Screenshots land in test-results/."""

from __future__ import annotations

import base64

import pytest
from django_otp.oath import TOTP
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from kizuna.accounts.models import Role
from tests.factories import PASSWORD, make_user
from tests.test_browser import browser, log_in, page, page_problems, shot  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def code_from(secret: str, steps_ahead: int = 0) -> str:
    compact = secret.replace(" ", "")
    totp = TOTP(base64.b32decode(compact + "=" * (-len(compact) % 8)))
    totp.time += 30 * steps_ahead
    return f"{totp.token():06d}"


def test_enrol_then_log_in_with_password_and_code(
    page: Page,  # noqa: F811 - the fixture imported above
    live_server: LiveServer,
) -> None:
    user = make_user(Role.OPERATOR)
    log_in(page, live_server, user)

    page.get_by_role("link", name="セキュリティ設定").click()
    expect(page.get_by_role("heading", name="セキュリティ設定")).to_be_visible()
    expect(page.locator(".security-qr svg")).to_be_visible()
    secret = page.locator("#totp-secret").inner_text()
    shot(page, "security-enrol.png", full_page=True)
    page.get_by_label("確認コード(6桁)").fill(code_from(secret))
    page.get_by_role("button", name="有効にする").click()
    expect(page.get_by_text("2段階認証を有効にしました")).to_be_visible()

    page.get_by_role("button", name="ログアウト").click()
    page.get_by_label("ユーザー名").fill(user.username)
    page.get_by_label("パスワード").fill(PASSWORD)
    page.get_by_role("button", name="ログイン").click()
    expect(page.get_by_role("heading", name="確認コードの入力")).to_be_visible()
    expect(page.locator("nav.main-menu")).to_have_count(0)  # nothing else opens yet
    shot(page, "security-verify.png")

    # The code used to enrol cannot be replayed; the next one is accepted.
    page.get_by_label("確認コード(6桁)").fill(code_from(secret, steps_ahead=1))
    page.get_by_role("button", name="確認する").click()
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_role("navigation", name="メニュー")).to_be_visible()
