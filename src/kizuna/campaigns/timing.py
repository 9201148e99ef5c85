"""When a marketing message may go out: quiet hours, the customer's usual hour, the cap window.

Times are stored in UTC and reasoned about on the Asia/Tokyo clock (RELIABILITY S9): "08:00"
is 08:00 in Tokyo, and the day a 00:30 JST send belongs to is the Tokyo day, which in UTC is
the day before.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from django.db.models import Count
from django.db.models.functions import ExtractHour

from kizuna.commerce.models import Order

JST = ZoneInfo("Asia/Tokyo")
UTC = dt.UTC


def in_quiet_hours(moment: dt.time, *, start: dt.time, end: dt.time) -> bool:
    """Whether a Tokyo wall-clock time falls in [start, end), which may wrap past midnight."""
    if start == end:
        return False
    if start < end:
        return start <= moment < end
    return moment >= start or moment < end


def after_quiet_hours(when: dt.datetime, *, start: dt.time, end: dt.time) -> dt.datetime:
    """The earliest moment at or after `when` outside quiet hours (UTC in, UTC out)."""
    local = when.astimezone(JST)
    if not in_quiet_hours(local.time(), start=start, end=end):
        return when
    day = local.date()
    if start > end and local.time() >= start:
        # Evening part of a window that wraps midnight: it ends tomorrow morning (Tokyo).
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, end, tzinfo=JST).astimezone(UTC)


def at_usual_hour(when: dt.datetime, hour: int) -> dt.datetime:
    """The first moment at or after `when` inside the Tokyo hour `hour` (within 24 hours)."""
    local = when.astimezone(JST)
    if local.hour == hour:
        return when
    candidate = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if candidate < local:
        candidate += dt.timedelta(days=1)
    return candidate.astimezone(UTC)


def usual_hours(customer_ids: Iterable[int]) -> dict[int, int]:
    """Each customer's most frequent ordering hour on the Tokyo clock (ties: the earlier hour).

    Customers without orders are absent. Opens are not tracked (no tracking pixels), so buying
    is the signal.
    """
    ids = list(customer_ids)
    if not ids:
        return {}
    rows = (
        Order.objects.filter(customer_id__in=ids)
        .annotate(hour=ExtractHour("ordered_at", tzinfo=JST))
        .values("customer_id", "hour")
        .annotate(n=Count("id"))
    )
    counts: dict[int, Counter[int]] = defaultdict(Counter)
    for row in rows:
        counts[row["customer_id"]][row["hour"]] += row["n"]
    return {
        customer: min(hours, key=lambda hour: (-hours[hour], hour))
        for customer, hours in counts.items()
    }
