"""Bounce and complaint webhooks from the e-mail provider: signed like the cart's webhooks (I1),
applied once per event id (I2); a reported address is suppressed, audited, and skipped at the
next send (S4)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from kizuna.campaigns.delivery import DeliveryWorker
from kizuna.campaigns.models import OutboxStatus, Suppression, SuppressionReason
from kizuna.core import webhooks
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog, WebhookEvent, WebhookSource
from kizuna.customers.models import IdentityKind
from tests.delivery_support import SmtpServer, consenting_customer, mail, open_all_day
from tests.factories import add_identity, make_customer
from tests.test_webhooks import deliver

pytestmark = pytest.mark.django_db
ADMIN = Actor.system("test-admin")


@pytest.fixture
def esp() -> tuple[WebhookSource, str]:
    return webhooks.webhook_source_create(name="配信サービス", slug="esp", acting_user=ADMIN)


def event(event_id: str = "bnc_1", **data: Any) -> dict[str, Any]:
    body = {"type": "bounce", "email": "Hanako@Example.jp", "bounce_type": "permanent"}
    body.update(data)
    return {"id": event_id, "type": "email.event", "data": body}


def post(secret: str, payload: dict[str, Any], **kwargs: Any) -> Any:
    return deliver(secret, payload, topic="email-events", slug="esp", **kwargs)


def state() -> tuple[int, int, int]:
    return (
        Suppression.objects.count(),
        WebhookEvent.objects.count(),
        AuditLog.objects.filter(action__startswith="suppression").count(),
    )


def test_a_signed_bounce_suppresses_the_address_and_is_audited(esp) -> None:  # type: ignore[no-untyped-def]
    _, secret = esp
    customer = consenting_customer()
    response = post(secret, event(detail="550 5.1.1 user unknown"))
    assert response.status_code == 200
    assert response.json() == {"event_id": "bnc_1", "duplicate": False, "outcome": "added"}
    row = Suppression.objects.get()
    assert (row.kind, row.address, row.reason) == ("email", "hanako@example.jp", "bounce")
    assert row.detail == "550 5.1.1 user unknown"
    assert row.created_by == "system:webhook:esp"
    audit = AuditLog.objects.get(action="suppression.add")
    assert audit.customer_id == customer.pk


def test_a_complaint_is_recorded_as_a_complaint(esp) -> None:  # type: ignore[no-untyped-def]
    _, secret = esp
    assert post(secret, event("cmp_1", type="complaint")).json()["outcome"] == "added"
    assert Suppression.objects.get().reason == SuppressionReason.COMPLAINT


@pytest.mark.parametrize(
    "tamper",
    [
        {"signature": "sha256=" + "0" * 64},
        {"timestamp": int(time.time()) - 3600},
    ],
    ids=["bad-signature", "stale-timestamp"],
)
def test_an_unsigned_or_stale_event_is_refused_and_changes_nothing(esp, tamper) -> None:  # type: ignore[no-untyped-def]
    _, secret = esp
    before = state()
    response = post(secret, event(), **tamper)
    assert response.status_code == 401
    assert state() == before


def test_another_source_s_secret_does_not_sign_for_this_one(esp) -> None:  # type: ignore[no-untyped-def]
    _, other_secret = webhooks.webhook_source_create(name="カート", slug="cart", acting_user=ADMIN)
    before = state()
    assert post(other_secret, event()).status_code == 401
    assert state() == before


def test_the_same_event_twice_is_applied_once(esp) -> None:  # type: ignore[no-untyped-def]
    _, secret = esp
    post(secret, event())
    after_first = state()
    again = post(secret, event())
    assert again.status_code == 200
    assert again.json() == {"event_id": "bnc_1", "duplicate": True, "outcome": "added"}
    assert state() == after_first


def test_a_transient_bounce_is_acknowledged_and_ignored(esp) -> None:  # type: ignore[no-untyped-def]
    _, secret = esp
    response = post(secret, event(bounce_type="transient"))
    assert response.json()["outcome"] == "ignored"
    assert not Suppression.objects.exists()


def test_an_unusable_address_is_a_422_and_can_be_redelivered_fixed(esp) -> None:  # type: ignore[no-untyped-def]
    _, secret = esp
    before = state()
    response = post(secret, event(email="not an address"))
    assert response.status_code == 422
    assert list(response.json()["error"]["fields"]) == ["data.email"]
    assert "not an address" not in response.content.decode()  # no PII in error bodies
    assert state() == before
    # the failed delivery left no event record, so the provider's retry is applied
    assert post(secret, event()).json()["outcome"] == "added"


def test_an_address_stored_before_the_address_check_can_still_be_suppressed(esp) -> None:  # type: ignore[no-untyped-def]
    # Kizuna once stored any address with an @ and a dot after it; such an address can still
    # bounce, and blocking it must work (the worker blocks on an SMTP refusal the same way)
    _, secret = esp
    customer = make_customer()
    add_identity(customer, IdentityKind.EMAIL, "a..b@example.jp")
    response = post(secret, event(email="A..B@example.jp"))
    assert response.json()["outcome"] == "added"
    assert Suppression.objects.get().address == "a..b@example.jp"
    assert AuditLog.objects.get(action="suppression.add").customer_id == customer.pk


@pytest.fixture
def smtp(settings) -> Iterator[SmtpServer]:  # type: ignore[no-untyped-def]
    with SmtpServer() as server:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = server.port
        yield server


def test_the_next_send_to_a_reported_address_is_skipped_with_the_reason(esp, smtp) -> None:  # type: ignore[no-untyped-def]
    _, secret = esp
    open_all_day()
    customer = consenting_customer()
    message = mail(customer, "after-bounce")
    post(secret, event())
    DeliveryWorker().drain()
    message.refresh_from_db()
    assert (message.status, message.reason) == (
        OutboxStatus.SKIPPED,
        "配信停止アドレスです(不達(バウンス))",
    )
    assert smtp.handler.received == []
