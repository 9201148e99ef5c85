"""Reads the delivery page and the on-site API share."""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from collections import defaultdict
from dataclasses import dataclass

from django.db.models import Count, Max, Min, QuerySet
from django.utils import timezone

from kizuna.campaigns.consent_checks import gone_customers
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


PROBLEM_STATUSES = (OutboxStatus.FAILED, OutboxStatus.SKIPPED)


class RecentProblems:
    """Failed and skipped messages, the most recently due first — a sequence the page's
    Paginator slices.

    Each status is read on its own in the order of the outbox_due index (status,
    next_attempt_at), so a page reads only its rows plus the ones before it; the two are
    merged here. One query for both statuses ordered by id made the database sort every
    problem there is (400,000 skipped messages in a 1M-customer shop: 1.8 s a page view).
    """

    def __init__(self) -> None:
        self._by_status = [
            OutboxMessage.objects.filter(status=status)
            .select_related("customer")
            .order_by("-next_attempt_at", "-id")
            for status in PROBLEM_STATUSES
        ]

    def count(self) -> int:
        return sum(rows.count() for rows in self._by_status)

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, index: slice) -> list[OutboxMessage]:
        if not isinstance(index, slice) or index.step is not None:
            raise TypeError("RecentProblems is sliced by a page, start:stop")
        start, stop = index.start or 0, index.stop
        if stop is None:
            raise TypeError("RecentProblems needs the end of the slice")
        merged = heapq.merge(
            *(rows[:stop] for rows in self._by_status),
            key=lambda m: (m.next_attempt_at, m.pk),
            reverse=True,
        )
        return list(itertools.islice(merged, start, stop))


def recent_problems() -> RecentProblems:
    """Failed and skipped messages, the most recently due first (the page shows one page)."""
    return RecentProblems()


def suppressions(query: str = "") -> QuerySet[Suppression]:
    rows = Suppression.objects.all()
    if query:
        rows = rows.filter(address__contains=jp.nfkc(query).lower())
    return rows.order_by("-created_at", "-id")


def delivery_lists() -> QuerySet[DeliveryList]:
    """The lists, newest first, each with `size`: the rows its download holds (an erased or
    merged-away customer's row is left out of it, services.list_messages)."""
    size = Count("messages", filter=~gone_customers("messages__customer__"))
    return DeliveryList.objects.annotate(size=size).order_by("-created_at", "-id")


def reopenable_lists() -> set[int]:
    """The closed lists whose 締め can still be undone (services.delivery_list_reopen): each
    channel's newest list, when it is closed."""
    newest = DeliveryList.objects.values("channel").annotate(newest=Max("pk"))
    ids = [row["newest"] for row in newest]
    return set(
        DeliveryList.objects.filter(pk__in=ids, closed_at__isnull=False).values_list(
            "pk", flat=True
        )
    )


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
