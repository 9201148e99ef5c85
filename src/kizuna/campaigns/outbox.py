"""Putting messages into the outbox: the one way anything asks Kizuna to contact a customer.

Call these inside the transaction that decided to send (RELIABILITY S1): if it rolls back, the
message was never asked for and nothing is sent. Nothing here contacts anyone; the delivery
worker (`kizuna worker`) does, checking consent, suppression, quiet hours and the frequency cap
at that moment (S4, S6, S7), not here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from kizuna.campaigns.models import Channel, OutboxMessage, OutboxStatus, Purpose
from kizuna.customers.models import Customer

__all__ = ["OutboxRow", "Purpose", "outbox_enqueue", "outbox_enqueue_many", "validate_content"]

# The content keys each channel needs; "best" needs enough to render any channel it may become.
REQUIRED_CONTENT: dict[str, tuple[str, ...]] = {
    Channel.EMAIL: ("subject", "text"),
    Channel.LINE: ("text",),
    Channel.SMS: ("text",),
    Channel.POSTAL: ("title", "text"),
    Channel.INSERT: ("title", "text"),
    Channel.ONSITE: ("title", "text"),
    Channel.CALL: ("reason", "script"),
    Channel.BEST: ("text",),
}
# `order_number` names the order a 同梱物 goes into; without it, the customer's latest order.
OPTIONAL_CONTENT = frozenset(
    {"html", "url", "subject", "title", "reason", "script", "order_number"}
)
DEDUPE_KEY_MAX = 200


def validate_content(channel: str, content: Mapping[str, Any]) -> None:
    """Refuse content a channel cannot render, with a message staff can act on."""
    if channel not in Channel.values:
        raise ValidationError(f"不明なチャネルです: {channel}")
    missing = [key for key in REQUIRED_CONTENT[channel] if not content.get(key)]
    if channel == Channel.BEST and not (content.get("subject") or content.get("title")):
        missing.append("subject または title")
    if missing:
        label = Channel(channel).label
        raise ValidationError(f"{label}の内容に必要な項目がありません: {', '.join(missing)}")
    unknown = set(content) - set(REQUIRED_CONTENT[channel]) - OPTIONAL_CONTENT
    if unknown:
        raise ValidationError(f"内容に不明な項目があります: {', '.join(sorted(unknown))}")
    not_text = [key for key, value in content.items() if not isinstance(value, str)]
    if not_text:
        raise ValidationError(f"内容は文字列で指定してください: {', '.join(sorted(not_text))}")


def _validate(
    *,
    channel: str,
    purpose: str,
    dedupe_key: str,
    send_after: dt.datetime,
    prefer_customer_hour: bool,
) -> None:
    if purpose not in Purpose.values:
        raise ValidationError(f"不明な目的です: {purpose}")
    if not dedupe_key or len(dedupe_key) > DEDUPE_KEY_MAX:
        raise ValidationError(f"重複防止キーは1〜{DEDUPE_KEY_MAX}文字で指定してください")
    if send_after.tzinfo is None:
        raise ValidationError("送信予定日時にはタイムゾーンが必要です")
    if channel == Channel.BEST and purpose == Purpose.TRANSACTIONAL:
        # A transactional message must reach the customer where they asked to be told, so the
        # caller names the channel; "best" is a marketing choice.
        raise ValidationError("取引連絡では最適チャネルを使えません。チャネルを指定してください")
    if prefer_customer_hour and purpose == Purpose.TRANSACTIONAL:
        raise ValidationError(
            "取引連絡は送信時刻を遅らせずに送ります(顧客ごとの送信時刻は使えません)"
        )


def outbox_enqueue(
    *,
    customer: Customer,
    channel: str,
    purpose: Purpose,
    dedupe_key: str,
    content: dict[str, Any],
    send_after: dt.datetime,
    scenario_id: int | None = None,
    step_key: str = "",
    enrollment_id: int | None = None,
    prefer_customer_hour: bool = False,
) -> OutboxMessage | None:
    """Store one message for delivery at or after `send_after`; None if `dedupe_key` exists.

    The insert runs in a savepoint, so a duplicate key leaves the caller's transaction usable.
    The customer's timeline gets its row when the message is sent, not here.
    `prefer_customer_hour` (marketing only) lets the worker hold the message until the hour
    this customer usually buys, within a day of `send_after`.
    """
    validate_content(channel, content)
    _validate(
        channel=channel,
        purpose=purpose,
        dedupe_key=dedupe_key,
        send_after=send_after,
        prefer_customer_hour=prefer_customer_hour,
    )
    try:
        with transaction.atomic():
            return OutboxMessage.objects.create(
                customer=customer,
                channel=channel,
                purpose=purpose,
                dedupe_key=dedupe_key,
                content=content,
                send_after=send_after,
                next_attempt_at=send_after,
                scenario_id=scenario_id,
                step_key=step_key,
                enrollment_id=enrollment_id,
                prefer_customer_hour=prefer_customer_hour,
            )
    except IntegrityError:
        if OutboxMessage.objects.filter(dedupe_key=dedupe_key).exists():
            return None
        raise


@dataclass(frozen=True)
class OutboxRow:
    """One message for `outbox_enqueue_many`; the fields mean what they mean in outbox_enqueue."""

    customer_id: int
    channel: str
    purpose: Purpose
    dedupe_key: str
    content: dict[str, Any]
    send_after: dt.datetime
    scenario_id: int | None = None
    step_key: str = ""
    enrollment_id: int | None = None
    prefer_customer_hour: bool = False


def outbox_enqueue_many(rows: Iterable[OutboxRow], *, batch_size: int = 5000) -> None:
    """Store many messages in bulk; rows whose `dedupe_key` already exists are left out.

    The fast path for scenario ticks (INSERT … ON CONFLICT DO NOTHING). Every row is validated
    first, so one bad row refuses the whole call before anything is written.
    """
    objects = []
    for row in rows:
        validate_content(row.channel, row.content)
        _validate(
            channel=row.channel,
            purpose=row.purpose,
            dedupe_key=row.dedupe_key,
            send_after=row.send_after,
            prefer_customer_hour=row.prefer_customer_hour,
        )
        objects.append(
            OutboxMessage(
                customer_id=row.customer_id,
                channel=row.channel,
                purpose=row.purpose,
                dedupe_key=row.dedupe_key,
                content=row.content,
                send_after=row.send_after,
                next_attempt_at=row.send_after,
                scenario_id=row.scenario_id,
                step_key=row.step_key,
                enrollment_id=row.enrollment_id,
                prefer_customer_hour=row.prefer_customer_hour,
                status=OutboxStatus.PENDING,
            )
        )
    OutboxMessage.objects.bulk_create(objects, batch_size=batch_size, ignore_conflicts=True)
