"""Putting messages into the outbox: the one way anything asks Kizuna to contact a customer.

Call these inside the transaction that decided to send (RELIABILITY S1): if it rolls back, the
message was never asked for and nothing is sent. Nothing here contacts anyone; the delivery
worker (`kizuna worker`) does, checking consent, suppression, quiet hours and the frequency cap
at that moment (S4, S6, S7), not here.

The second half is the staff's hand on the queue (送信キュー on the delivery page): reading it a
page at a time (`queue_page`), cancelling waiting messages (`outbox_cancel`, the restore
procedure of RELIABILITY D8) and sending failed ones again (`outbox_retry`).
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from kizuna.campaigns.models import (
    Channel,
    DeliverySettings,
    OutboxMessage,
    OutboxStatus,
    Purpose,
)
from kizuna.core.audit import Actor, audit_record
from kizuna.core.bulk import insert_rows
from kizuna.customers.models import Customer

__all__ = [
    "ContentCheck",
    "OutboxRow",
    "Purpose",
    "QueueFilter",
    "QueuePage",
    "outbox_cancel",
    "outbox_enqueue",
    "outbox_enqueue_many",
    "outbox_retry",
    "queue_count",
    "queue_newest_id",
    "queue_page",
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


# --- The queue as staff see and correct it (送信キュー) -----------------------------------------
#
# Every read walks the outbox_due index (status, next_attempt_at) one status at a time, in the
# index's order, and stops after a page: the outbox can hold millions of rows, and a query over
# several statuses at once, or ordered by another column, would sort all of them first.

WAITING = (OutboxStatus.PENDING.value, OutboxStatus.CLAIMED.value)
# Cancelled messages are `skipped` with this reason, as an erased customer's are
# (customers.privacy): a status no worker claims and the frequency cap never counts, shown
# wherever skips are shown (the delivery page, the customer's scenario steps) with who did it.
CANCEL_REASON = "送信を取り消し({user})"
# Rows changed per statement by a cancel or retry of everything matching a filter: each chunk
# is its own short transaction, so workers and the web server are not kept waiting behind it.
CHUNK = 1000


@dataclass(frozen=True)
class QueueFilter:
    """Which messages the queue page shows and a cancel or retry "of all matching" touches.

    `due_from`/`due_before` bound next_attempt_at (送信予定日時: when a worker will next try,
    which is send_after moved by quiet hours, send-time choice and retries).
    """

    statuses: tuple[str, ...] = WAITING
    channel: str = ""
    scenario_id: int | None = None
    # Narrows scenario_id to these steps (the steps that use one template); empty: all steps.
    step_keys: tuple[str, ...] = ()
    due_from: dt.datetime | None = None
    due_before: dt.datetime | None = None

    @property
    def ascending(self) -> bool:
        """Waiting messages read the next one to go first; history reads the newest first."""
        return all(status in WAITING for status in self.statuses)

    def rows(self, status: str) -> QuerySet[OutboxMessage]:
        rows = OutboxMessage.objects.filter(status=status)
        if self.channel:
            rows = rows.filter(channel=self.channel)
        if self.scenario_id is not None:
            rows = rows.filter(scenario_id=self.scenario_id)
        if self.step_keys:
            rows = rows.filter(step_key__in=self.step_keys)
        if self.due_from is not None:
            rows = rows.filter(next_attempt_at__gte=self.due_from)
        if self.due_before is not None:
            rows = rows.filter(next_attempt_at__lt=self.due_before)
        return rows

    def describe(self) -> dict[str, Any]:
        """The filter as the audit row records it."""
        return {
            "statuses": list(self.statuses),
            "channel": self.channel or None,
            "scenario_id": self.scenario_id,
            **({"step_keys": list(self.step_keys)} if self.step_keys else {}),
            "due_from": self.due_from.isoformat() if self.due_from else None,
            "due_before": self.due_before.isoformat() if self.due_before else None,
        }


Cursor = tuple[dt.datetime, int]


@dataclass(frozen=True)
class QueuePage:
    """One page of the queue; `after`/`before` are the cursors of the next and the previous
    page, None when there is none (`before` is None on the first page)."""

    rows: list[OutboxMessage]
    after: Cursor | None
    before: Cursor | None


def _key(message: OutboxMessage) -> Cursor:
    return (message.next_attempt_at, message.pk)


def _beyond(rows: QuerySet[OutboxMessage], cursor: Cursor, *, forward: bool) -> Any:
    """Rows past `cursor` in the direction read. The bare >= / <= on next_attempt_at gives the
    index its range; the OR then only drops the rows at the cursor's own moment."""
    at, pk = cursor
    if forward:
        return rows.filter(Q(next_attempt_at__gt=at) | Q(pk__gt=pk), next_attempt_at__gte=at)
    return rows.filter(Q(next_attempt_at__lt=at) | Q(pk__lt=pk), next_attempt_at__lte=at)


def queue_page(
    queue: QueueFilter,
    *,
    size: int,
    after: Cursor | None = None,
    before: Cursor | None = None,
) -> QueuePage:
    """A page of messages in the filter's order (keyset pagination: no OFFSET, no count).

    Each status is read on its own through outbox_due up to `size + 1` rows past the cursor
    and the reads are merged, so a page costs the same at the first row or the millionth.
    """
    ascending = queue.ascending
    backward = before is not None and after is None
    # Reading backward walks the index the other way from `before`, then turns the page round.
    increasing = ascending != backward
    order = ("next_attempt_at", "id") if increasing else ("-next_attempt_at", "-id")
    cursor = before if backward else after
    reads = []
    for status in queue.statuses:
        rows = queue.rows(status).select_related("customer").order_by(*order)
        if cursor is not None:
            rows = _beyond(rows, cursor, forward=increasing)
        reads.append(list(rows[: size + 1]))
    merged = list(heapq.merge(*reads, key=_key, reverse=not increasing))[: size + 1]
    more = len(merged) > size
    page = merged[:size]
    if backward:
        page.reverse()
        return QueuePage(
            rows=page,
            after=_key(page[-1]) if page else None,
            before=_key(page[0]) if page and more else None,
        )
    return QueuePage(
        rows=page,
        after=_key(page[-1]) if more else None,
        before=_key(page[0]) if page and cursor is not None else None,
    )


def _cancellable(now: dt.datetime) -> Q:
    """Waiting rows no worker holds: pending, or claimed by a worker whose lease ran out (it
    died; any worker may claim the row again). A live worker's row is never taken from it."""
    return Q(status=OutboxStatus.PENDING) | Q(status=OutboxStatus.CLAIMED, lease_until__lt=now)


def _retryable(now: dt.datetime) -> Q:
    """Failed rows (`now` unused: the same signature as _cancellable)."""
    return Q(status=OutboxStatus.FAILED)


def _changes(action: str, acting: Actor, now: dt.datetime, cause: str) -> dict[str, Any]:
    if action == "cancel":
        return {
            "status": OutboxStatus.SKIPPED,
            "reason": (cause + CANCEL_REASON.format(user=acting.label))[:200],
            "claimed_by": "",
            "lease_until": None,
            "cap_counted_at": None,
        }
    # Back to the queue as if new: a full set of attempts, due now (quiet hours still apply
    # when the worker picks it up); the last error stays visible until the next try.
    return {
        "status": OutboxStatus.PENDING,
        "next_attempt_at": now,
        "attempts": 0,
        "reason": "",
        "claimed_by": "",
        "lease_until": None,
        "cap_counted_at": None,
        "sent_channel": "",
        "address": "",
    }


ACTIONS = {"cancel": _cancellable, "retry": _retryable}


def queue_count(queue: QueueFilter, *, action: str, up_to_id: int | None = None) -> int:
    """How many messages matching the filter the action would touch now (the confirmation)."""
    allowed = ACTIONS[action](timezone.now())
    total = 0
    for status in queue.statuses:
        rows = queue.rows(status).filter(allowed)
        if up_to_id is not None:
            rows = rows.filter(pk__lte=up_to_id)
        total += rows.count()
    return total


def queue_newest_id() -> int:
    """The newest message's id: a confirmed "all matching" touches no message queued since."""
    newest: int | None = OutboxMessage.objects.aggregate(newest=Max("pk"))["newest"]
    return newest or 0


def _apply(
    action: str,
    *,
    acting_user: Any,
    message_ids: Collection[int] | None,
    queue: QueueFilter | None,
    up_to_id: int | None,
    cause: str = "",
) -> int:
    acting = Actor.of(acting_user)
    now = timezone.now()
    allowed = ACTIONS[action]
    values = _changes(action, acting, now, cause)
    done = 0
    if message_ids is not None and queue is None:
        ids = sorted({int(pk) for pk in message_ids})
        for start in range(0, len(ids), CHUNK):
            with transaction.atomic():
                done += OutboxMessage.objects.filter(
                    allowed(now), pk__in=ids[start : start + CHUNK]
                ).update(**values)
        scope: dict[str, list[Any]] = {"ids": [None, ids[:200]]}
    elif queue is not None and message_ids is None:
        for status in queue.statuses:
            rows = queue.rows(status).filter(allowed(now)).order_by("next_attempt_at", "id")
            if up_to_id is not None:
                rows = rows.filter(pk__lte=up_to_id)
            cursor: Cursor | None = None
            while True:
                chunk = rows if cursor is None else _beyond(rows, cursor, forward=True)
                keys = list(chunk.values_list("next_attempt_at", "pk")[:CHUNK])
                if not keys:
                    break
                cursor = keys[-1]
                # The same conditions again in the UPDATE: a worker may have claimed a row
                # since the SELECT, and then the row is its, not ours (SQLite and PostgreSQL).
                with transaction.atomic():
                    done += OutboxMessage.objects.filter(
                        allowed(now), pk__in=[pk for _, pk in keys]
                    ).update(**values)
        scope = {"filter": [None, queue.describe()], "up_to_id": [None, up_to_id]}
    else:
        raise ValueError("pass either message_ids or queue")
    if done:
        audit_record(
            actor=acting,
            action=f"outbox.{action}",
            instance=DeliverySettings.load(),
            customer_id=None,
            changes={"count": [0, done], **scope, **({"cause": [None, cause]} if cause else {})},
        )
    return done


def outbox_cancel(
    *,
    acting_user: Any,
    message_ids: Collection[int] | None = None,
    queue: QueueFilter | None = None,
    up_to_id: int | None = None,
    cause: str = "",
) -> int:
    """取り消す: these waiting messages are never sent. Returns how many were cancelled.

    Either `message_ids` (ticked on the page) or `queue` (everything matching, up to the
    message `up_to_id` the confirmation counted). Only rows no worker holds change: a
    conditional UPDATE … WHERE status='pending' (or an expired claim), so a worker that
    claimed a row a moment earlier keeps it and sends it. Cancelled rows are `skipped` with
    the reason 送信を取り消し(<user>); one audit row `outbox.cancel` says who, how many and
    which ones or which filter. `cause` says why, when the cancel comes from elsewhere than
    the queue page (シナリオ「…」の停止により): put before the reason and in the audit row.
    """
    return _apply(
        "cancel",
        acting_user=acting_user,
        message_ids=message_ids,
        queue=queue,
        up_to_id=up_to_id,
        cause=cause,
    )


def outbox_retry(
    *,
    acting_user: Any,
    message_ids: Collection[int] | None = None,
    queue: QueueFilter | None = None,
    up_to_id: int | None = None,
) -> int:
    """再送する: failed messages go back to the queue, due now, with a fresh set of attempts.

    The worker checks consent, suppression, quiet hours and the cap again when it sends, as
    for any message. Audited as `outbox.retry`; arguments as for outbox_cancel."""
    return _apply(
        "retry", acting_user=acting_user, message_ids=message_ids, queue=queue, up_to_id=up_to_id
    )
