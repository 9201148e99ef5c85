"""The Asia/Tokyo calendar the scheduler, triggers and segments compute on (RELIABILITY S9).

Times are stored in UTC; "today", "a birthday" and "10:00" mean the Japanese day and the
Japanese clock, whatever the server's own time zone.
"""

from __future__ import annotations

import calendar
import datetime as dt
from zoneinfo import ZoneInfo

JST = ZoneInfo("Asia/Tokyo")


def jst_date(moment: dt.datetime) -> dt.date:
    return moment.astimezone(JST).date()


def jst_at(day: dt.date, at: dt.time = dt.time(0)) -> dt.datetime:
    """The aware moment of `at` o'clock on `day` in Japan."""
    return dt.datetime.combine(day, at, tzinfo=JST)


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day `months` later; the 31st becomes the month's last day when it has none."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(day.day, last))


def years_before(day: dt.date, years: int) -> dt.date:
    """`day` moved back whole years; 29 February becomes the 28th in a common year."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def latest_anchor_for(today: dt.date, months: int) -> dt.date:
    """The latest anchor date `d` with add_months(d, months) <= today.

    Inverts add_months for the "on the same day each month" steps: at the end of a short month
    every later day of the anchor month also lands on it (31 Jan + 1 month = 28 Feb).
    """
    if months == 0:
        return today
    back = add_months(today, -months)
    if today.day == calendar.monthrange(today.year, today.month)[1]:
        last = calendar.monthrange(back.year, back.month)[1]
        return back.replace(day=last)
    return back
