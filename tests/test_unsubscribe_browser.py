"""The customer's path in a real browser: open the opt-out link from a mail the local SMTP
server received, press 配信停止, read the confirmation (RELIABILITY S5)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from pytest_django.fixtures import Settings
from pytest_django.live_server_helper import LiveServer

from kizuna.campaigns.delivery import DeliveryWorker
from kizuna.customers.models import Consent, ConsentChannel
from tests.delivery_support import SENDER_ENV, SmtpServer, consenting_customer, mail, open_all_day
from tests.test_browser import browser, page, page_problems, shot  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_link_in_a_received_mail_unsubscribes(
    page: Page,  # noqa: F811 - the fixture imported above
    live_server: LiveServer,
    settings: Settings,
) -> None:
    with SmtpServer() as smtp:
        # given a marketing mail delivered over SMTP with the shop's public URL in its links
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
        settings.KIZUNA_PUBLIC_URL = live_server.url
        settings.KIZUNA_SENDER_NAME = SENDER_ENV["KIZUNA_SENDER_NAME"]
        settings.KIZUNA_SENDER_ADDRESS = SENDER_ENV["KIZUNA_SENDER_ADDRESS"]
        settings.KIZUNA_SENDER_CONTACT = SENDER_ENV["KIZUNA_SENDER_CONTACT"]
        open_all_day()
        customer = consenting_customer()
        mail(customer, "newsletter-1")
        DeliveryWorker().drain()
        [received] = smtp.handler.received
    body = received.message.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    link = re.search(r"配信停止: (\S+)", text)
    assert link is not None
    # when the customer opens it: a confirmation, nothing changed yet
    page.goto(link.group(1))
    expect(page.get_by_role("heading", name="配信停止の確認")).to_be_visible()
    assert Consent.objects.get(customer=customer, channel=ConsentChannel.EMAIL).granted
    shot(page, "unsubscribe-confirm.png")
    # and presses 配信停止
    page.get_by_role("button", name="配信停止").click()
    # then the page confirms in Japanese, and the consent is withdrawn
    expect(page.get_by_role("heading", name="配信を停止しました")).to_be_visible()
    expect(page.get_by_text("メールでのお知らせの配信を停止しました")).to_be_visible()
    shot(page, "unsubscribe-done.png")
    consent = Consent.objects.get(customer=customer, channel=ConsentChannel.EMAIL)
    assert not consent.granted
    assert consent.opted_out_at is not None
