"""The opt-out link (RELIABILITY S5): GET never changes anything; a cookie-less POST without a
CSRF token (RFC 8058 one-click) withdraws the consent, audited and on the timeline."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client

from kizuna.campaigns.models import DeliverySettings
from kizuna.campaigns.unsubscribe import make_token
from kizuna.core.models import AuditLog
from kizuna.customers.models import (
    Consent,
    ConsentChannel,
    ConsentEvent,
    ConsentMethod,
    TimelineKind,
)
from tests.delivery_support import consenting_customer

pytestmark = pytest.mark.django_db


def email_consent(customer) -> Consent:  # type: ignore[no-untyped-def]
    return Consent.objects.get(customer=customer, channel=ConsentChannel.EMAIL)


def test_opening_the_link_shows_a_confirmation_and_changes_nothing() -> None:
    customer = consenting_customer()
    token = make_token(customer_id=customer.pk, channel="email")
    response = Client().get(f"/u/{token}")
    assert response.status_code == 200
    page = response.content.decode()
    assert "メールでのお知らせの配信を停止します" in page
    assert "配信停止" in page
    # no name or address on a public page
    assert "山田" not in page
    assert email_consent(customer).granted
    assert response["Cache-Control"].startswith("max-age=0")


def test_one_click_post_without_cookies_or_csrf_token_unsubscribes() -> None:
    # given the POST a mail client sends for List-Unsubscribe-Post (no cookie, no CSRF token)
    customer = consenting_customer()
    token = make_token(customer_id=customer.pk, channel="email")
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        f"/u/{token}",
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    # then the consent is withdrawn, with evidence, audit row and timeline row
    assert response.status_code == 200
    assert "配信を停止しました" in response.content.decode()
    consent = email_consent(customer)
    assert not consent.granted
    assert consent.opted_out_at is not None
    event = ConsentEvent.objects.filter(customer=customer).latest("id")
    assert (event.action, event.method) == (ConsentEvent.Action.WITHDRAW, ConsentMethod.UNSUBSCRIBE)
    assert AuditLog.objects.filter(action="consent.withdraw", customer_id=customer.pk).exists()
    assert customer.timeline.filter(kind=TimelineKind.CONSENT, title="メール: 配信停止").exists()
    # the grant evidence is kept (S7: evidence is retained)
    assert ConsentEvent.objects.filter(customer=customer, action=ConsentEvent.Action.GRANT).exists()


def test_a_second_click_writes_nothing_more() -> None:
    customer = consenting_customer()
    token = make_token(customer_id=customer.pk, channel="email")
    Client().post(f"/u/{token}")
    before = ConsentEvent.objects.count()
    response = Client().post(f"/u/{token}")
    assert "すでに停止されています" in response.content.decode()
    assert ConsentEvent.objects.count() == before


@pytest.mark.parametrize(
    "mangle", [lambda t: t[:-3] + "abc", lambda t: "x" + t, lambda t: "nonsense"]
)
def test_an_altered_link_is_refused_and_changes_nothing(mangle) -> None:  # type: ignore[no-untyped-def]
    customer = consenting_customer()
    token = mangle(make_token(customer_id=customer.pk, channel="email"))
    for method in ("get", "post"):
        response = getattr(Client(), method)(f"/u/{token}")
        assert response.status_code == 404
        assert "リンクが無効です" in response.content.decode()
    assert email_consent(customer).granted


def test_the_token_only_withdraws_the_channel_it_names() -> None:
    customer = consenting_customer(channels=(ConsentChannel.EMAIL, ConsentChannel.LINE))
    Client().post(f"/u/{make_token(customer_id=customer.pk, channel='line')}")
    assert email_consent(customer).granted
    assert not Consent.objects.get(customer=customer, channel=ConsentChannel.LINE).granted


def test_an_unsubscribe_mail_is_applied_by_command(capsys) -> None:  # type: ignore[no-untyped-def]
    customer = consenting_customer()
    token = make_token(customer_id=customer.pk, channel="email")
    call_command("campaigns", "unsubscribe", token)
    assert not email_consent(customer).granted
    assert "停止しました" in capsys.readouterr().out


@pytest.mark.parametrize("prefix", ["Re: ", "RE:", "Fwd: Re: ", "返信: "])
def test_a_token_copied_from_a_reply_subject_still_works(capsys, prefix: str) -> None:  # type: ignore[no-untyped-def]
    customer = consenting_customer()
    token = make_token(customer_id=customer.pk, channel="email")
    call_command("campaigns", "unsubscribe", f"{prefix}{token}")
    assert not email_consent(customer).granted
    assert "停止しました" in capsys.readouterr().out


def test_opening_the_link_again_after_stopping_says_it_is_stopped() -> None:
    # given a customer who already stopped e-mail with the link
    customer = consenting_customer()
    token = make_token(customer_id=customer.pk, channel="email")
    Client().post(f"/u/{token}")
    before = ConsentEvent.objects.count()
    # when they open the link from another mail
    response = Client().get(f"/u/{token}")
    # then the page says it is stopped already rather than asking again, and changes nothing
    page = response.content.decode()
    assert response.status_code == 200
    assert "メールでのお知らせの配信は、すでに停止されています" in page
    assert "よろしければ下のボタンを押してください" not in page
    assert ConsentEvent.objects.count() == before


def test_the_pages_name_the_shop_and_its_contact(settings) -> None:  # type: ignore[no-untyped-def]
    # The customer knows the shop that sent the mail, not the CRM behind it.
    DeliverySettings.objects.update_or_create(
        pk=1, defaults={"sender_name": "きずな化粧品", "sender_contact": "0120-000-000"}
    )
    customer = consenting_customer()
    token = make_token(customer_id=customer.pk, channel="email")
    confirm = Client().get(f"/u/{token}").content.decode()
    assert "きずな化粧品からのメールでのお知らせの配信を停止します" in confirm
    done = Client().post(f"/u/{token}").content.decode()
    assert "きずな化粧品からのメールでのお知らせの配信を停止しました" in done
    invalid = Client().get(f"/u/{token[:-3]}abc").content.decode()
    assert "きずな化粧品のお問い合わせ窓口(0120-000-000)までご連絡ください" in invalid
    for page in (confirm, done, invalid):
        # the header and title are the shop's; nothing names Kizuna or leads to the staff login
        assert "<title>配信停止の確認 | きずな化粧品</title>" in confirm
        assert '<span class="brand">きずな化粧品</span>' in page
        assert "Kizuna" not in page
        assert "/login" not in page
    # without a configured sender the sentences still read
    DeliverySettings.objects.update(sender_name="", sender_contact="")
    settings.KIZUNA_SENDER_NAME = settings.KIZUNA_SENDER_CONTACT = ""
    other = consenting_customer(email_address="taro@example.jp")
    plain = Client().get(f"/u/{make_token(customer_id=other.pk, channel='email')}").content.decode()
    assert "<p>メールでのお知らせの配信を停止します" in plain
    assert "メールに記載のお問い合わせ窓口まで" in Client().get("/u/nonsense").content.decode()
