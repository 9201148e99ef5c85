"""Write paths staff use on the delivery page: the sending rules, the pause switch, closing a
print/call list and exporting it. Each writes its audit row in the same transaction."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from kizuna.campaigns.consent_checks import gone_customers
from kizuna.campaigns.models import Channel, DeliveryList, DeliverySettings, OutboxMessage
from kizuna.campaigns.timing import JST
from kizuna.core import jp
from kizuna.core.audit import Actor, audit_record, diff
from kizuna.core.spreadsheet import safe_row, xlsx_bytes

SETTINGS_FIELDS = frozenset(
    {
        "quiet_start",
        "quiet_end",
        "cap_messages",
        "cap_days",
        "sender_name",
        "sender_address",
        "sender_contact",
    }
)


@transaction.atomic
def delivery_settings_update(*, changes: Mapping[str, Any], acting_user: Any) -> DeliverySettings:
    """Change the sending rules; the audit row keeps each old and new value."""
    unknown = set(changes) - SETTINGS_FIELDS
    if unknown:
        raise ValidationError(f"変更できない項目です: {', '.join(sorted(unknown))}")
    row = DeliverySettings.objects.select_for_update().get(pk=DeliverySettings.load().pk)
    old = {name: getattr(row, name) for name in changes}
    changed = diff(old, changes)
    if not changed:
        return row
    for name, value in changes.items():
        setattr(row, name, value)
    actor = Actor.of(acting_user)
    row.updated_by = actor.label
    row.full_clean()
    row.save()
    audit_record(
        actor=actor,
        action="delivery_settings.update",
        instance=row,
        customer_id=None,
        changes=changed,
    )
    return row


@transaction.atomic
def sending_pause(*, paused: bool, acting_user: Any) -> DeliverySettings:
    """Stop or restart all sending. Workers stop between two messages and give the rest of
    their batch back; nothing is skipped."""
    row = DeliverySettings.objects.select_for_update().get(pk=DeliverySettings.load().pk)
    if row.paused == paused:
        return row
    actor = Actor.of(acting_user)
    row.paused = paused
    row.paused_at = timezone.now() if paused else None
    row.paused_by = actor.label if paused else ""
    row.save()
    audit_record(
        actor=actor,
        action="delivery.pause" if paused else "delivery.resume",
        instance=row,
        customer_id=None,
        changes={"paused": [not paused, paused]},
    )
    return row


@transaction.atomic
def delivery_list_close(*, delivery_list: DeliveryList, acting_user: Any) -> DeliveryList:
    """締め: the list is final; messages sent from now on start the channel's next list."""
    row = DeliveryList.objects.select_for_update().get(pk=delivery_list.pk)
    if row.closed_at is not None:
        return row
    actor = Actor.of(acting_user)
    row.closed_at = timezone.now()
    row.closed_by = actor.label
    row.save()
    audit_record(
        actor=actor,
        action="delivery_list.close",
        instance=row,
        customer_id=None,
        changes={"closed_at": [None, row.closed_at.isoformat()]},
    )
    return row


class ReopenRefusedError(Exception):
    """The list cannot take messages again; the message says why, in Japanese."""


@transaction.atomic
def delivery_list_reopen(*, delivery_list: DeliveryList, acting_user: Any) -> DeliveryList:
    """Undo a 締め made too early: the list takes the channel's next messages again. Only while
    no newer list has started for the channel (one open list per channel): once a message has
    gone into the next list, the two batches stay as they are."""
    row = DeliveryList.objects.select_for_update().get(pk=delivery_list.pk)
    if row.closed_at is None:
        return row
    newer = DeliveryList.objects.filter(channel=row.channel, pk__gt=row.pk).exists()
    if newer:
        raise ReopenRefusedError(
            "この後のメッセージがすでに新しいリストに入っているため、締めを取り消せません。"
        )
    actor = Actor.of(acting_user)
    closed_at = row.closed_at
    row.closed_at = None
    row.closed_by = ""
    row.save()
    audit_record(
        actor=actor,
        action="delivery_list.reopen",
        instance=row,
        customer_id=None,
        changes={"closed_at": [closed_at.isoformat(), None]},
    )
    return row


POSTAL_COLUMNS = [
    "顧客ID",
    "郵便番号",
    "都道府県",
    "住所1",
    "住所2",
    "会社名",
    "氏名",
    "敬称",
    "件名",
    "本文",
]
INSERT_COLUMNS = ["顧客ID", "注文番号", "出荷伝票番号", "氏名", "敬称", "件名", "本文"]
CALL_COLUMNS = ["顧客ID", "電話番号", "氏名", "フリガナ", "理由", "トークスクリプト"]


def list_messages(delivery_list: DeliveryList) -> QuerySet[OutboxMessage]:
    """The messages a list's download holds: every one that joined it, except those of
    customers erased (APPI) or merged away since. An erased record has no name or address
    left, only 「削除済み(匿名化)」, which must not become a label at the printer, a row at the
    warehouse or a call; a merged-away record is not the person's record any more. Left out
    of closed lists too, since a list is often closed first and then downloaded for the
    printer. The messages stay `sent` on the list: the outbox keeps what was done."""
    return OutboxMessage.objects.filter(delivery_list=delivery_list).exclude(
        gone_customers("customer__")
    )


def list_rows(delivery_list: DeliveryList) -> tuple[list[str], Iterator[list[str]]]:
    """The header and rows of a list, in the order the messages joined it."""
    from kizuna.commerce.models import Shipment

    messages = list_messages(delivery_list).select_related("customer").order_by("sent_at", "id")
    channel = delivery_list.channel
    tracking: dict[str, str] = {}
    if channel == Channel.INSERT:
        numbers = messages.values_list("address", flat=True)
        for number, code in (
            Shipment.objects.filter(order__number__in=numbers)
            .order_by("shipped_on", "id")
            .values_list("order__number", "tracking_number")
        ):
            tracking[number] = code

    def rows() -> Iterator[list[str]]:
        for message in messages.iterator(chunk_size=2000):
            customer, content = message.customer, message.content
            name = customer.full_name
            if channel == Channel.POSTAL:
                yield [
                    str(customer.pk),
                    jp.format_postal_code(customer.postal_code),
                    customer.get_prefecture_display() if customer.prefecture else "",
                    customer.address1,
                    customer.address2,
                    customer.company,
                    name,
                    "様",
                    content.get("title", content.get("subject", "")),
                    content.get("text", ""),
                ]
            elif channel == Channel.INSERT:
                yield [
                    str(customer.pk),
                    message.address,
                    tracking.get(message.address, ""),
                    name,
                    "様",
                    content.get("title", content.get("subject", "")),
                    content.get("text", ""),
                ]
            else:
                yield [
                    str(customer.pk),
                    # Operators dial what they read: 090-1234-5678, as the pages show it.
                    jp.format_phone(message.address),
                    name,
                    customer.full_kana,
                    content.get("reason", content.get("subject", content.get("title", ""))),
                    content.get("script", content.get("text", "")),
                ]

    headers: dict[str, list[str]] = {
        Channel.POSTAL: POSTAL_COLUMNS,
        Channel.INSERT: INSERT_COLUMNS,
    }
    return headers.get(channel, CALL_COLUMNS), rows()


def _filename(delivery_list: DeliveryList, extension: str) -> str:
    made = delivery_list.created_at.astimezone(JST)
    return f"kizuna-{delivery_list.channel}-{delivery_list.pk}-{made:%Y%m%d-%H%M}.{extension}"


@transaction.atomic
def delivery_list_export(
    *, delivery_list: DeliveryList, file_format: str, acting_user: Any
) -> tuple[str, bytes]:
    """The list as CSV (UTF-8 with BOM, which Excel opens correctly) or Excel; audited, since
    it carries names and addresses (RELIABILITY D3)."""
    if file_format not in {"csv", "xlsx"}:
        raise ValidationError("形式は csv か xlsx を指定してください")
    header, rows = list_rows(delivery_list)
    if file_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(header)
        count = 0
        for count, row in enumerate(rows, start=1):  # noqa: B007 - the count is used below
            # Names and texts come from the shop's cart: never a formula in the printer's Excel.
            writer.writerow(safe_row(row))
        data = ("\ufeff" + buffer.getvalue()).encode("utf-8")
    else:
        data, count = xlsx_bytes(header, rows, title=delivery_list.get_channel_display())
    audit_record(
        actor=Actor.of(acting_user),
        action="delivery_list.export",
        instance=delivery_list,
        customer_id=None,
        changes={"format": [None, file_format], "rows": [None, count]},
    )
    return _filename(delivery_list, file_format), data
