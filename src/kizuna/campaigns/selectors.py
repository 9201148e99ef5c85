"""Reads the delivery page and the on-site API share."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from django.db.models import Count, Min, QuerySet
from django.utils import timezone

from kizuna.campaigns.models import (
    Channel,
    DeliveryList,
    OutboxMessage,
    OutboxStatus,
    Suppression,
)
from kizuna.core import jp
from kizuna.customers.models import Identity, IdentityKind

ONSITE_DAYS = 30
ONSITE_LIMIT = 20


@dataclass(frozen=True)
class QueueCounts:
    """Messages by channel and status; `oldest_due` shows a backlog nobody is working."""

    rows: list[tuple[str, str, dict[str, int]]]  # (channel, label, {status: n})
    totals: dict[str, int]
    oldest_due: dt.datetime | None


def queue_counts() -> QueueCounts:
    by_channel: dict[str, dict[str, int]] = defaultdict(dict)
    totals: dict[str, int] = defaultdict(int)
    for row in OutboxMessage.objects.values("channel", "status").annotate(n=Count("id")):
        by_channel[row["channel"]][row["status"]] = row["n"]
        totals[row["status"]] += row["n"]
    oldest = OutboxMessage.objects.filter(
        status=OutboxStatus.PENDING, next_attempt_at__lte=timezone.now()
    ).aggregate(oldest=Min("next_attempt_at"))["oldest"]
    rows = [
        (channel.value, channel.label, by_channel[channel.value])
        for channel in Channel
        if channel.value in by_channel
    ]
    return QueueCounts(rows=rows, totals=dict(totals), oldest_due=oldest)


def recent_problems() -> QuerySet[OutboxMessage]:
    """Failed and skipped messages, newest first (the page shows one page of them)."""
    return (
        OutboxMessage.objects.filter(status__in=[OutboxStatus.FAILED, OutboxStatus.SKIPPED])
        .select_related("customer")
        .order_by("-id")
    )


def suppressions(query: str = "") -> QuerySet[Suppression]:
    rows = Suppression.objects.all()
    if query:
        rows = rows.filter(address__contains=jp.nfkc(query).lower())
    return rows.order_by("-created_at", "-id")


def delivery_lists() -> QuerySet[DeliveryList]:
    return DeliveryList.objects.annotate(size=Count("messages")).order_by("-created_at", "-id")


def onsite_messages(member_id: str) -> list[OutboxMessage]:
    """The on-site messages shown to the member with this cart member ID, newest first."""
    try:
        key = jp.normalize_identifier(member_id)
    except jp.NormalisationError:
        return []
    customer_id = (
        Identity.objects.filter(kind=IdentityKind.CART_MEMBER, value=key)
        .values_list("customer_id", flat=True)
        .first()
    )
    if customer_id is None:
        return []
    since = timezone.now() - dt.timedelta(days=ONSITE_DAYS)
    return list(
        OutboxMessage.objects.filter(
            customer_id=customer_id,
            sent_channel=Channel.ONSITE,
            status=OutboxStatus.SENT,
            sent_at__gte=since,
        ).order_by("-sent_at", "-id")[:ONSITE_LIMIT]
    )
