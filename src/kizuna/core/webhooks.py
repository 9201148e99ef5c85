"""Webhooks from the cart: sources and their secrets, signature checks, and deduplication.

Signing scheme (RELIABILITY I1), the same idea as Stripe's and Shopify's:

    X-Kizuna-Timestamp: <Unix time in seconds when the sender signed>
    X-Kizuna-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw request body)>

The HMAC covers the raw bytes as sent, before any parsing, so re-serialised JSON cannot pass;
the timestamp is inside the signature and must be within five minutes of our clock, so a
captured request cannot be replayed later. Comparison is constant-time.

Deduplication (RELIABILITY I2): `webhook_event_claim` inserts (source, event id) in the
transaction that applies the event; the unique constraint makes a second delivery of the same
event — later or at the same moment — find the row and apply nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from kizuna.core.audit import Actor, audit_record
from kizuna.core.models import WebhookEvent, WebhookSource

TIMESTAMP_HEADER = "X-Kizuna-Timestamp"
SIGNATURE_HEADER = "X-Kizuna-Signature"
SIGNATURE_PREFIX = "sha256="
TOLERANCE_SECONDS = 300
# How long a replaced secret still verifies after 秘密鍵を再発行: a day to paste the new one.
ROTATION_GRACE = dt.timedelta(hours=24)
SECRET_PREFIX = "whsec_"  # noqa: S105 - a label in front of generated secrets
# Receiving time is for the settings page only; writing it on every delivery would make all
# deliveries from one source queue on that row's lock.
_TOUCH_EVERY = dt.timedelta(minutes=1)


class SignatureError(Exception):
    """The request is not provably from the source: nothing may be changed."""


def sign(*, secret: str, timestamp: int, body: bytes) -> str:
    """The X-Kizuna-Signature header value for `body` sent at `timestamp`."""
    message = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(
    *, secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float | None
) -> None:
    """Raise SignatureError unless `signature` is this body's HMAC at a fresh `timestamp`."""
    if not timestamp or not signature:
        raise SignatureError("署名ヘッダーがありません")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureError("タイムスタンプが正しくありません")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > TOLERANCE_SECONDS:
        raise SignatureError("タイムスタンプが5分以上ずれています")
    expected = sign(secret=secret, timestamp=int(timestamp), body=body)
    if not hmac.compare_digest(expected.encode("ascii"), signature.strip().encode("utf-8")):
        raise SignatureError("署名が一致しません")


def webhook_source_for(slug: str) -> WebhookSource | None:
    """The active source with this slug, or None."""
    return WebhookSource.objects.filter(slug=slug, revoked_at__isnull=True).first()


def webhook_source_touch(source: WebhookSource) -> None:
    now = timezone.now()
    stale = now - _TOUCH_EVERY
    if source.last_received_at is None or source.last_received_at < stale:
        WebhookSource.objects.filter(pk=source.pk).update(last_received_at=now)


@transaction.atomic
def webhook_source_create(*, name: str, slug: str, acting_user: Any) -> tuple[WebhookSource, str]:
    """A new source and its signing secret. The secret is returned here and shown once."""
    name = name.strip()
    slug = slugify(slug.strip())
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "名前を入力してください"
    if not slug:
        errors["slug"] = "識別名は半角英数字とハイフンで入力してください"
    elif taken := WebhookSource.objects.filter(slug=slug).first():
        errors["slug"] = (
            "この識別名はすでに使われています"
            if taken.revoked_at is None
            # A revoked sender keeps its identifier, so what it delivered stays attributed to
            # it (the audit log and the received events name it): say why, and what to do.
            else f"この識別名は失効した送信元「{taken.name}」が使っていたため使えません。"
            f"「{slug}-2」など別の識別名にしてください"
        )
    if errors:
        raise ValidationError(errors)
    actor = Actor.of(acting_user)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    source = WebhookSource.objects.create(
        name=name, slug=slug, secret=secret, created_by_id=actor.user_id
    )
    audit_record(
        actor=actor,
        action="webhook_source.create",
        instance=source,
        customer_id=None,
        changes={"name": [None, name], "slug": [None, slug]},
    )
    return source, secret


@transaction.atomic
def webhook_source_revoke(*, source: WebhookSource, acting_user: Any) -> WebhookSource:
    """Stop accepting deliveries signed with this source's secret. Cannot be undone."""
    source = WebhookSource.objects.select_for_update().get(pk=source.pk)
    if source.revoked_at is not None:
        return source
    source.revoked_at = timezone.now()
    source.save(update_fields=["revoked_at", "updated_at"])
    audit_record(
        actor=Actor.of(acting_user),
        action="webhook_source.revoke",
        instance=source,
        customer_id=None,
        changes={"revoked_at": [None, source.revoked_at.isoformat()]},
    )
    return source


@transaction.atomic
def webhook_source_rotate(*, source: WebhookSource, acting_user: Any) -> tuple[WebhookSource, str]:
    """A new signing secret; the current one keeps verifying for ROTATION_GRACE. Returns the
    source and the new secret (shown once). Audited without either secret."""
    source = WebhookSource.objects.select_for_update().get(pk=source.pk)
    if source.revoked_at is not None:
        raise ValidationError("失効した送信元の秘密鍵は再発行できません")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    source.previous_secret = source.secret
    source.previous_secret_until = timezone.now() + ROTATION_GRACE
    source.secret = secret
    source.save(update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"])
    audit_record(
        actor=Actor.of(acting_user),
        action="webhook_source.rotate",
        instance=source,
        customer_id=None,
        changes={"previous_secret_until": [None, source.previous_secret_until.isoformat()]},
    )
    return source, secret


def accepted_secrets(source: WebhookSource, *, now: dt.datetime | None = None) -> list[str]:
    """The secrets a delivery from this source may be signed with: the current one, and the
    one it replaced while its grace period lasts."""
    current = now or timezone.now()
    until = source.previous_secret_until
    if source.previous_secret and until is not None and current < until:
        return [source.secret, source.previous_secret]
    return [source.secret]


def webhook_event_claim(
    *, source: WebhookSource, event_id: str, topic: str, source_updated_at: dt.datetime | None
) -> WebhookEvent | None:
    """Record that this event is being applied, or None when it already was.

    Call inside the transaction that applies the event: if that transaction rolls back, the
    record goes with it and a redelivery is applied again. A concurrent delivery of the same
    event waits on the unique index until this transaction ends, then gets None.
    """
    try:
        with transaction.atomic():
            return WebhookEvent.objects.create(
                source=source,
                event_id=event_id,
                topic=topic,
                received_at=timezone.now(),
                source_updated_at=source_updated_at,
            )
    except IntegrityError:
        return None


def webhook_event_finish(
    *, event: WebhookEvent, customer_id: int | None, ref: str, outcome: str
) -> None:
    event.customer_id = customer_id
    event.ref = ref[:64]
    event.outcome = outcome
    event.save(update_fields=["customer_id", "ref", "outcome"])


def webhook_event_previous(*, source: WebhookSource, event_id: str) -> WebhookEvent | None:
    """The stored record of an event delivered before (for the duplicate answer)."""
    return WebhookEvent.objects.filter(source=source, event_id=event_id).first()


def customer_known_after(*, customer_id: int, at: dt.datetime) -> bool:
    """True when a dated customer event from the cart newer than `at` was applied to the
    customer: what the cart said about the customer as of `at` (an order's identities, given
    at checkout) is older than what is stored. Callers lock the customer row first."""
    return (
        WebhookEvent.objects.filter(
            topic="customer", customer_id=customer_id, source_updated_at__gt=at
        )
        .exclude(outcome="stale")
        .exists()
    )


def customer_event_is_stale(
    *, customer_id: int, source_updated_at: dt.datetime | None, event: WebhookEvent
) -> bool:
    """True when the customer's stored version is newer than this event (RELIABILITY I3).

    The stored version is the customer events from the cart already applied: a dated one newer
    than this event, or — this event having no time — any dated one, since nothing shows the
    undated event is newer (the rule orders follow, kizuna.commerce.services). A customer only
    ever sent undated events keeps "last write wins".

    Callers lock the customer row first, so two events for one customer are compared in turn.
    """
    applied = (
        WebhookEvent.objects.filter(topic=event.topic, customer_id=customer_id)
        .exclude(pk=event.pk)
        .exclude(outcome="stale")
    )
    if source_updated_at is None:
        return applied.filter(source_updated_at__isnull=False).exists()
    return applied.filter(source_updated_at__gt=source_updated_at).exists()
