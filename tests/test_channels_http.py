"""LINE push and SMS against stub HTTP servers on 127.0.0.1 (never the real hosts)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kizuna.campaigns.channels.line.transport import retry_key_for
from kizuna.campaigns.delivery import DeliveryWorker
from kizuna.campaigns.models import OutboxStatus, Suppression
from kizuna.campaigns.outbox import Purpose
from kizuna.customers.models import ConsentChannel, Customer, IdentityKind, TimelineKind
from tests.delivery_support import StubHttp, channel_shop, consenting_customer, mail
from tests.factories import add_identity

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _setup(settings) -> None:  # type: ignore[no-untyped-def]
    channel_shop(settings)
    settings.KIZUNA_PUBLIC_URL = "https://crm.kizuna.example"


@pytest.fixture
def line_api(settings) -> Iterator[StubHttp]:  # type: ignore[no-untyped-def]
    with StubHttp() as stub:
        settings.KIZUNA_LINE_API_BASE = stub.url
        settings.KIZUNA_LINE_CHANNEL_TOKEN = "test-channel-token"
        yield stub


@pytest.fixture
def sms_api(settings) -> Iterator[StubHttp]:  # type: ignore[no-untyped-def]
    with StubHttp() as stub:
        settings.KIZUNA_SMS_API_URL = stub.url + "/v1/messages"
        settings.KIZUNA_SMS_API_TOKEN = "sms-token"
        settings.KIZUNA_SMS_SENDER = "KIZUNA"
        yield stub


def line_customer() -> Customer:
    customer = consenting_customer(email_address=None, channels=(ConsentChannel.LINE,))
    add_identity(customer, IdentityKind.LINE_USER, "U4af4980629abcdef0123456789abcdef")
    return customer


def test_line_push_goes_to_the_messaging_api_with_token_and_retry_key(line_api) -> None:  # type: ignore[no-untyped-def]
    customer = line_customer()
    message = mail(
        customer, "line-1", channel="line", content={"text": "お誕生日おめでとうございます"}
    )
    DeliveryWorker().drain()
    [request] = line_api.requests
    assert request["path"] == "/v2/bot/message/push"
    assert request["headers"]["Authorization"] == "Bearer test-channel-token"
    assert request["headers"]["X-Line-Retry-Key"] == retry_key_for(message.pk)
    assert request["body"]["to"] == "U4af4980629abcdef0123456789abcdef"
    [text] = [m["text"] for m in request["body"]["messages"]]
    assert text.startswith("お誕生日おめでとうございます")
    # the marketing sender block travels with it (S8), with the LINE opt-out link
    assert "きずな化粧品" in text
    assert "配信を停止できます" in text
    assert "https://crm.kizuna.example/u/" in text
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert customer.timeline.filter(
        kind=TimelineKind.MESSAGE, title__startswith="LINE送信"
    ).exists()


def test_line_throttling_is_retried_and_a_bad_request_fails(line_api) -> None:  # type: ignore[no-untyped-def]
    customer = line_customer()
    throttled = mail(customer, "line-429", channel="line", content={"text": "a"})
    rejected = mail(customer, "line-400", channel="line", content={"text": "b"})
    line_api.statuses = [429, 400]
    DeliveryWorker().drain()
    throttled.refresh_from_db()
    rejected.refresh_from_db()
    assert (throttled.status, throttled.attempts) == (OutboxStatus.PENDING, 1)
    assert rejected.status == OutboxStatus.FAILED
    assert "HTTP 400" in rejected.reason


def test_a_line_retry_the_api_already_accepted_counts_as_sent(line_api) -> None:  # type: ignore[no-untyped-def]
    customer = line_customer()
    message = mail(customer, "line-409", channel="line", content={"text": "a"})
    line_api.statuses = [409]
    DeliveryWorker().drain()
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT


def test_sms_goes_to_the_provider_with_the_mobile_number(sms_api) -> None:  # type: ignore[no-untyped-def]
    customer = consenting_customer(email_address=None, channels=(ConsentChannel.SMS,))
    add_identity(customer, IdentityKind.PHONE, "+81312345678")  # landline: no SMS
    add_identity(customer, IdentityKind.PHONE, "+819012345678")
    message = mail(customer, "sms-1", channel="sms", content={"text": "ポイントが明日失効します"})
    DeliveryWorker().drain()
    [request] = sms_api.requests
    assert request["path"] == "/v1/messages"
    assert request["headers"]["Authorization"] == "Bearer sms-token"
    body = request["body"]
    assert body["to"] == "+819012345678"
    assert body["from"] == "KIZUNA"
    assert body["client_ref"] == f"kizuna-{message.pk}"
    assert body["text"].startswith("ポイントが明日失効します")
    assert "配信停止: https://crm.kizuna.example/u/" in body["text"]


def test_an_sms_too_long_with_its_sender_block_fails_whole_instead_of_being_cut(  # type: ignore[no-untyped-def]
    sms_api, settings
) -> None:
    # given sender details so long that with them a short text exceeds an SMS (660 characters)
    settings.KIZUNA_SENDER_ADDRESS = "東" * 600
    customer = consenting_customer(email_address=None, channels=(ConsentChannel.SMS,))
    add_identity(customer, IdentityKind.PHONE, "+819012345678")
    message = mail(customer, "sms-long", channel="sms", content={"text": "明日までポイント2倍"})
    # when it is delivered
    DeliveryWorker().drain()
    # then nothing goes to the provider, and the delivery page says why
    assert sms_api.requests == []
    message.refresh_from_db()
    assert message.status == OutboxStatus.FAILED
    assert "660文字を超えます" in message.reason
    assert "送信者表示を短く" in message.reason


def test_sms_without_a_mobile_number_is_skipped_not_sent(sms_api) -> None:  # type: ignore[no-untyped-def]
    customer = consenting_customer(email_address=None, channels=(ConsentChannel.SMS,))
    add_identity(customer, IdentityKind.PHONE, "+81312345678")
    message = mail(customer, "sms-landline", channel="sms", content={"text": "x"})
    DeliveryWorker().drain()
    message.refresh_from_db()
    assert (message.status, message.reason) == (OutboxStatus.SKIPPED, "SMSの宛先がありません")
    assert sms_api.requests == []


def test_transactional_sms_carries_no_sender_block(sms_api) -> None:  # type: ignore[no-untyped-def]
    customer = consenting_customer(email_address=None, channels=())
    add_identity(customer, IdentityKind.PHONE, "+818012345678")
    mail(
        customer,
        "sms-otp",
        channel="sms",
        purpose=Purpose.TRANSACTIONAL,
        content={"text": "お届け予定日のお知らせ"},
    )
    DeliveryWorker().drain()
    [request] = sms_api.requests
    assert request["body"]["text"] == "お届け予定日のお知らせ"
    assert not Suppression.objects.exists()
