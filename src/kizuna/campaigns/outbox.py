"""Putting messages into the outbox: the one way anything asks Kizuna to contact a customer.

Call these inside the transaction that decided to send (RELIABILITY S1): if it rolls back, the
message was never asked for and nothing is sent. Nothing here contacts anyone; the delivery
worker (`kizuna worker`) does, checking consent, suppression, quiet hours and the frequency cap
at that moment (S4, S6, S7), not here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from kizuna.campaigns.models import Channel, OutboxMessage, Purpose
from kizuna.core.bulk import insert_rows
from kizuna.customers.models import Customer

__all__ = [
    "ContentCheck",
    "OutboxRow",
    "Purpose",
    "outbox_enqueue",
    "outbox_enqueue_many",
    "validate_content",
]

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
# Looked up per message on the bulk path: TextChoices.values builds a new list on every call.
_CHANNELS = frozenset(Channel.values)
_PURPOSES = frozenset(Purpose.values)
_ALLOWED = {
    channel: frozenset(required) | OPTIONAL_CONTENT
    for channel, required in REQUIRED_CONTENT.items()
}


def validate_content(channel: str, content: Mapping[str, Any]) -> None:
    """Refuse content a channel cannot render, with a message staff can act on."""
    if channel not in _CHANNELS:
        raise ValidationError(f"不明なチャネルです: {channel}")
    missing = [key for key in REQUIRED_CONTENT[channel] if not content.get(key)]
    if channel == Channel.BEST and not (content.get("subject") or content.get("title")):
        missing.append("subject または title")
    if missing:
        label = Channel(channel).label
        raise ValidationError(f"{label}の内容に必要な項目がありません: {', '.join(missing)}")
    unknown = content.keys() - _ALLOWED[channel]
    if unknown:
        raise ValidationError(f"内容に不明な項目があります: {', '.join(sorted(unknown))}")
    not_text = [key for key, value in content.items() if not isinstance(value, str)]
    if not_text:
        raise ValidationError(f"内容は文字列で指定してください: {', '.join(sorted(not_text))}")


class ContentCheck:
    """`validate_content` for many messages, as cheaply as it can be done right.

    Which keys a channel accepts is checked once per shape (channel and key order); each
    message is then only checked for what differs from message to message: required parts
    left empty and values that are not text. Raises the same ValidationError.
    """

    def __init__(self) -> None:
        self._shapes: set[tuple[str, tuple[str, ...]]] = set()

    def __call__(self, channel: str, content: Mapping[str, Any]) -> None:
        shape = (channel, tuple(content))
        if shape not in self._shapes:
            validate_content(channel, content)
            self._shapes.add(shape)
        elif not _filled(channel, content):
            validate_content(channel, content)  # raises with the message staff see


def _validate_kind(channel: str, purpose: str, prefer_customer_hour: bool) -> None:
    if purpose not in _PURPOSES:
        raise ValidationError(f"不明な目的です: {purpose}")
    if channel == Channel.BEST and purpose == Purpose.TRANSACTIONAL:
        # A transactional message must reach the customer where they asked to be told, so the
        # caller names the channel; "best" is a marketing choice.
        raise ValidationError("取引連絡では最適チャネルを使えません。チャネルを指定してください")
    if prefer_customer_hour and purpose == Purpose.TRANSACTIONAL:
        raise ValidationError(
            "取引連絡は送信時刻を遅らせずに送ります(顧客ごとの送信時刻は使えません)"
        )


def _validate_row(*, dedupe_key: str, send_after: dt.datetime) -> None:
    if not dedupe_key or len(dedupe_key) > DEDUPE_KEY_MAX:
        raise ValidationError(f"重複防止キーは1〜{DEDUPE_KEY_MAX}文字で指定してください")
    if send_after.tzinfo is None:
        raise ValidationError("送信予定日時にはタイムゾーンが必要です")


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
    _validate_kind(channel, purpose, prefer_customer_hour)
    _validate_row(dedupe_key=dedupe_key, send_after=send_after)
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


class OutboxRow(NamedTuple):
    """One message for `outbox_enqueue_many`; the fields mean what they mean in outbox_enqueue.

    A named tuple rather than a dataclass: a tick builds one per message, and a tuple is the
    cheapest immutable record Python has."""

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


def outbox_enqueue_many(rows: Iterable[OutboxRow], *, content_checked: bool = False) -> int:
    """Store many messages in bulk; rows whose `dedupe_key` already exists are left out.

    The fast path for scenario ticks: a prepared INSERT … ON CONFLICT DO NOTHING run over the
    rows with executemany (core.bulk.insert_rows), without building model instances.
    Every row is validated first, so one bad row refuses the whole call before anything is
    written. The checks are the ones `outbox_enqueue` makes, done set-wise: a
    channel/purpose combination and a content shape are checked once (ContentCheck), each
    row only for what differs from row to row (empty or non-text values, the key, the time
    zone). Returns the number of rows given (duplicates included).

    `content_checked` says the caller already passed every row's content through a
    ContentCheck (the scheduler does, to skip one bad message instead of refusing the batch),
    so it is not checked twice.
    """
    kinds_ok: set[tuple[str, str, bool]] = set()
    check = None if content_checked else ContentCheck()
    created_at = timezone.now()
    values: list[tuple[Any, ...]] = []
    for row in rows:
        # Unpacked once: this loop runs for every message of a tick.
        _, channel, purpose, dedupe_key, content, send_after, _, _, _, prefer_hour = row
        if check is not None:
            check(channel, content)
        kind = (channel, purpose, prefer_hour)
        if kind not in kinds_ok:
            _validate_kind(*kind)
            kinds_ok.add(kind)
        if not 0 < len(dedupe_key) <= DEDUPE_KEY_MAX or send_after.tzinfo is None:
            _validate_row(dedupe_key=dedupe_key, send_after=send_after)
        # The row's fields in their order, then next_attempt_at (_BULK_COLUMNS).
        values.append((*row, send_after))
    # `status` (pending) and `created_at` (auto_now_add, given as `now`) are left to
    # insert_rows' defaults: converted once for the batch, not once per row.
    insert_rows(OutboxMessage, _BULK_COLUMNS, values, ignore_conflicts=True, now=created_at)
    return len(values)


# OutboxRow's fields (each named as its column) and next_attempt_at, which starts at send_after.
_BULK_COLUMNS = (*OutboxRow._fields, "next_attempt_at")


def _filled(channel: str, content: Mapping[str, Any]) -> bool:
    """What validate_content checks per row once the keys are known to fit the channel.

    Plain loops: this runs for every message of a tick."""
    if channel == Channel.BEST and not (content.get("subject") or content.get("title")):
        return False
    for value in content.values():
        if not isinstance(value, str):
            return False
    # A loop rather than all(generator): a generator costs more than the two checks it runs.
    for key in REQUIRED_CONTENT[channel]:  # noqa: SIM110
        if not content[key]:
            return False
    return True
