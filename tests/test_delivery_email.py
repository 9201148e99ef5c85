"""E-mail delivery to a real SMTP server on 127.0.0.1: what the customer receives, and what
the worker refuses to send (RELIABILITY S4–S8)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command

from kizuna.campaigns.automation.templating import (
    compile_template,
    content_for,
    customer_contexts,
)
from kizuna.campaigns.delivery import DeliveryWorker
from kizuna.campaigns.journal import Journal, SentMark
from kizuna.campaigns.models import (
    OutboxMessage,
    OutboxStatus,
    Suppression,
    SuppressionKind,
    SuppressionReason,
)
from kizuna.campaigns.outbox import Purpose
from kizuna.campaigns.suppression import suppression_add
from kizuna.campaigns.unsubscribe import read_token
from kizuna.core.models import AuditLog
from kizuna.customers.models import (
    Consent,
    ConsentChannel,
    ConsentMethod,
    IdentityKind,
    TimelineKind,
)
from kizuna.customers.services import consent_withdraw
from tests.delivery_support import (
    STAFF,
    consenting_customer,
    mail,
    open_all_day,
)
from tests.factories import add_identity, make_customer

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _any_hour(db: None) -> None:
    open_all_day()


def deliver() -> None:
    DeliveryWorker().drain()


def status_of(message: OutboxMessage) -> tuple[str, str]:
    message.refresh_from_db()
    return message.status, message.reason


def test_marketing_mail_carries_one_click_unsubscribe_and_the_sender_block(smtp) -> None:  # type: ignore[no-untyped-def]
    # given a customer who agreed to e-mail with evidence
    customer = consenting_customer()
    message = mail(customer, "welcome-1")
    # when the worker runs
    deliver()
    # then the local SMTP server received one message with RFC 8058 headers (S5)
    [received] = smtp.handler.received
    assert received.rcpt == ["hanako@example.jp"]
    headers = received.message
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https_link, mailto = (part.strip(" <>") for part in headers["List-Unsubscribe"].split(","))
    assert https_link.startswith("https://crm.kizuna.example/u/")
    assert mailto.startswith("mailto:unsubscribe@kizuna.example?subject=")
    claim = read_token(https_link.rsplit("/u/", 1)[1])
    assert (claim.customer_id, claim.channel) == (customer.pk, ConsentChannel.EMAIL)
    # and the text and HTML parts both show the sender block the law asks for (S8)
    text = headers.get_body(preferencelist=("plain",)).get_content()
    html = headers.get_body(preferencelist=("html",)).get_content()
    for part in (text, html):
        assert "株式会社きずな化粧品" in part
        assert "東京都渋谷区渋谷2-1-1" in part
        assert "0120-000-000" in part
        assert "配信を停止できます" in part
        assert https_link in part
    assert html.index("kizuna-sender") < html.index("</body>")
    # and the message is recorded as sent, with a timeline row, exactly when it was sent
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert message.message_id == received.message_id
    assert message.message_id.startswith(f"<kizuna.{message.pk}.")
    event = customer.timeline.get(kind=TimelineKind.MESSAGE)
    assert event.title.startswith("メール送信: 山田様へのお知らせ")
    assert event.detail["outbox_id"] == message.pk


def test_a_template_s_unsubscribe_url_is_the_recipient_s_one_click_link(smtp) -> None:  # type: ignore[no-untyped-def]
    # given a scenario template that places {{ unsubscribe_url }} in its text and HTML
    customer = consenting_customer()
    compiled = compile_template(
        subject="{{ name }}様へのお知らせ",
        text="ご案内です。\n配信停止はこちら: {{ unsubscribe_url }}\n",
        html='<html><body><p><a href="{{ unsubscribe_url }}">配信停止</a></p></body></html>',
    )
    context = customer_contexts([customer.pk], today=dt.date(2026, 5, 1))[customer.pk]
    message = mail(customer, "tpl-1", content=content_for("email", compiled.render(context)))
    # when the worker sends it
    deliver()
    # then each part carries the same link as the List-Unsubscribe header, never the
    # placeholder
    [received] = smtp.handler.received
    https_link = received.message["List-Unsubscribe"].split(",")[0].strip(" <>")
    text = received.message.get_body(preferencelist=("plain",)).get_content()
    html = received.message.get_body(preferencelist=("html",)).get_content()
    assert f"配信停止はこちら: {https_link}\r\n" in text
    assert f'<a href="{https_link}">配信停止</a>' in html
    assert "unsubscribe_url" not in text + html
    # and the sender block (S8) still shows it as well
    assert text.count(https_link) == 2
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    # a transactional message from the same template has no link to show: the spot is empty
    mail(customer, "tpl-2", purpose=Purpose.TRANSACTIONAL,
         content=content_for("email", compiled.render(context)))  # fmt: skip
    deliver()
    text = smtp.handler.received[1].message.get_body(preferencelist=("plain",)).get_content()
    assert text.rstrip().endswith("配信停止はこちら:")
    assert "{{" not in text


def test_transactional_mail_has_no_unsubscribe_header_and_no_sender_block(smtp) -> None:  # type: ignore[no-untyped-def]
    customer = consenting_customer(channels=())
    mail(customer, "order-1", purpose=Purpose.TRANSACTIONAL)
    deliver()
    [received] = smtp.handler.received
    assert received.message["List-Unsubscribe"] is None
    text = received.message.get_body(preferencelist=("plain",)).get_content()
    assert "配信停止" not in text


def test_opt_out_stops_marketing_at_once_but_never_transactional_mail(smtp) -> None:  # type: ignore[no-untyped-def]
    # given two messages queued while the customer still agreed
    customer = consenting_customer()
    campaign = mail(customer, "campaign-1")
    receipt = mail(customer, "order-confirmation-1", purpose=Purpose.TRANSACTIONAL)
    # when the customer opts out before the worker runs (S4: checked at send time)
    consent_withdraw(
        customer=customer,
        channel=ConsentChannel.EMAIL,
        method=ConsentMethod.UNSUBSCRIBE,
        acting_user=STAFF,
    )
    deliver()
    # then the order confirmation still arrives and the campaign does not (S6)
    assert [r.message["Subject"].strip() for r in smtp.handler.received] == [
        "山田様へのお知らせ order-confirmation-1"
    ]
    assert status_of(campaign) == (OutboxStatus.SKIPPED, "配信停止済みです")
    assert status_of(receipt)[0] == OutboxStatus.SENT


def test_no_marketing_without_a_consent_record_with_evidence(smtp) -> None:  # type: ignore[no-untyped-def]
    # given one customer with no consent, and one whose consent lacks the form wording (S7)
    nobody = make_customer(family_name="佐藤")
    add_identity(nobody, IdentityKind.EMAIL, "sato@example.jp")
    thin = make_customer(family_name="鈴木")
    add_identity(thin, IdentityKind.EMAIL, "suzuki@example.jp")
    Consent.objects.create(
        customer=thin,
        channel=ConsentChannel.EMAIL,
        granted=True,
        granted_at=thin.registered_at,
        method=ConsentMethod.IMPORT,
    )
    first = mail(nobody, "no-consent")
    second = mail(thin, "thin-consent")
    deliver()
    assert smtp.handler.received == []
    assert status_of(first) == (OutboxStatus.SKIPPED, "配信同意がありません")
    assert status_of(second)[1].startswith("同意の証跡")


def test_a_suppressed_address_is_checked_at_send_time(smtp) -> None:  # type: ignore[no-untyped-def]
    customer = consenting_customer()
    message = mail(customer, "after-complaint")
    receipt = mail(customer, "receipt-after-complaint", purpose=Purpose.TRANSACTIONAL)
    # the complaint arrives after the message was queued (S4)
    suppression_add(
        kind=SuppressionKind.EMAIL,
        address="HANAKO@example.jp",
        reason=SuppressionReason.COMPLAINT,
        acting_user=STAFF,
    )
    deliver()
    assert status_of(message) == (OutboxStatus.SKIPPED, "配信停止アドレスです(迷惑メール報告)")
    # a complaint is about marketing; the receipt still goes out
    assert status_of(receipt)[0] == OutboxStatus.SENT


def test_a_hard_bounced_address_gets_nothing_not_even_transactional(smtp) -> None:  # type: ignore[no-untyped-def]
    customer = consenting_customer()
    suppression_add(
        kind=SuppressionKind.EMAIL,
        address="hanako@example.jp",
        reason=SuppressionReason.BOUNCE,
        acting_user=STAFF,
    )
    receipt = mail(customer, "receipt-to-dead-address", purpose=Purpose.TRANSACTIONAL)
    deliver()
    assert smtp.handler.received == []
    assert status_of(receipt) == (OutboxStatus.SKIPPED, "配信停止アドレスです(不達(バウンス))")


def test_a_5xx_refusal_fails_the_message_and_suppresses_the_address(smtp) -> None:  # type: ignore[no-untyped-def]
    # given a mailbox the receiving server says does not exist
    smtp.handler.refuse.add("gone@example.jp")
    customer = consenting_customer(email_address="gone@example.jp")
    other = consenting_customer(email_address="ok@example.jp", family_name="田中")
    first = mail(customer, "to-gone")
    mail(other, "to-ok")
    later = mail(customer, "to-gone-again")
    deliver()
    # then that message failed for good, the other customer still got theirs,
    first.refresh_from_db()
    assert first.status == OutboxStatus.FAILED
    assert "550" in first.reason
    assert [r.rcpt for r in smtp.handler.received] == [["ok@example.jp"]]
    # the address is suppressed and audited, and the next message is skipped without trying
    suppression = Suppression.objects.get(address="gone@example.jp")
    assert suppression.reason == SuppressionReason.SMTP_REJECT
    assert AuditLog.objects.filter(action="suppression.add", customer_id=customer.pk).exists()
    assert status_of(later)[0] in {OutboxStatus.SKIPPED, OutboxStatus.FAILED}


def test_an_unreachable_server_is_retried_later_not_failed(settings) -> None:  # type: ignore[no-untyped-def]
    from tests.delivery_support import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens
    settings.KIZUNA_SENDER_NAME = settings.KIZUNA_SENDER_ADDRESS = "x"
    settings.KIZUNA_SENDER_CONTACT = "x"
    customer = consenting_customer()
    message = mail(customer, "retry-me")
    deliver()
    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    assert message.attempts == 1
    assert message.next_attempt_at > message.send_after
    assert "接続できません" in message.last_error
    # in words the admin can act on, not the socket's "[Errno 111] Connection refused"
    assert "接続を拒否されました。ホスト名・ポート番号" in message.last_error
    assert "Errno" not in message.last_error


def test_marketing_waits_while_the_sender_block_is_not_configured(smtp, settings) -> None:  # type: ignore[no-untyped-def]
    settings.KIZUNA_SENDER_ADDRESS = ""
    customer = consenting_customer()
    message = mail(customer, "no-sender")
    deliver()
    assert smtp.handler.received == []
    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    assert "送信者情報" in message.reason


@pytest.mark.django_db(transaction=True)
def test_worker_command_once_delivers_and_exits(smtp) -> None:  # type: ignore[no-untyped-def]
    customer = consenting_customer()
    mail(customer, "via-command")
    call_command("worker", "--once", "--no-scheduler")
    assert len(smtp.handler.received) == 1


@pytest.mark.django_db(transaction=True)
def test_worker_runs_the_scenario_tick_before_delivering(smtp, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from kizuna.core.management.commands import worker

    customer = consenting_customer()
    ticks: list[int] = []

    def tick() -> None:
        # the scheduler fills the outbox; the same --once pass must deliver it
        ticks.append(1)
        mail(customer, f"from-tick-{len(ticks)}")

    monkeypatch.setattr(worker, "scheduler_tick", lambda: tick)
    call_command("worker", "--once")
    assert ticks == [1]
    assert len(smtp.handler.received) == 1


def test_without_a_writable_journal_each_sent_mark_is_recorded_at_once(smtp, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # given a data directory the worker cannot write its sent journal to
    def full(self: Journal, mark: SentMark) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Journal, "append", full)
    customer = consenting_customer()
    message = mail(customer, "no-journal")
    # when the worker sends
    deliver()
    # then the message is still recorded as sent, with its timeline row, exactly once
    assert len(smtp.handler.received) == 1
    assert status_of(message)[0] == OutboxStatus.SENT
    assert customer.timeline.filter(kind=TimelineKind.MESSAGE).count() == 1


def test_a_connection_the_server_dropped_while_idle_does_not_cost_a_try(smtp) -> None:  # type: ignore[no-untyped-def]
    # given: a long-running worker that sent one message and then found nothing to do
    worker = DeliveryWorker()
    first = mail(consenting_customer(), "before-the-pause")
    worker.run_batch()
    assert status_of(first)[0] == OutboxStatus.SENT
    assert worker.run_batch().claimed == 0
    # when: the mail server drops idle connections (here: it restarts on the same port)
    from aiosmtpd.controller import Controller

    smtp.controller.stop()
    smtp.controller = Controller(smtp.handler, hostname="127.0.0.1", port=smtp.port)
    smtp.controller.start()
    second = mail(consenting_customer(email_address="after@example.jp"), "after-the-pause")
    worker.run_batch()
    worker.close()
    # then: the next message goes out at its first try, on a new connection
    second.refresh_from_db()
    assert second.status == OutboxStatus.SENT
    assert second.attempts == 1
