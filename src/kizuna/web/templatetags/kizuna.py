"""Filters that put values the way a Japanese operator reads them: ¥4,980, 2025年3月4日, 〒150-0002."""

from __future__ import annotations

import datetime as dt

from django import template
from django.contrib.auth.models import AnonymousUser
from django.urls import NoReverseMatch, resolve, reverse
from django.utils import timezone

from kizuna.accounts.access import PUBLIC, allowed_roles
from kizuna.accounts.models import User
from kizuna.core import jp
from kizuna.core.audit import actor_display
from kizuna.web.navigation import MENU

register = template.Library()


@register.filter
def yen(value: float | str | None) -> str:
    """Yen as "¥4,980" ("-¥500" for refunds and reductions); an average or a prediction
    (a float) is rounded to the nearest yen, as floatformat:0 did."""
    if value is None or value == "":
        return ""
    amount = round(value) if isinstance(value, float) else int(value)
    sign = "-" if amount < 0 else ""
    return f"{sign}¥{abs(amount):,}"


@register.filter
def p_value(value: float) -> str:
    """A test's p-value as a statistician writes it: four decimals, and "p < 0.0001" below
    that, not "p = 0.0000" (which reads as impossible)."""
    return "p < 0.0001" if value < 0.0001 else f"p = {value:.4f}"


@register.filter
def actor(label: str | None) -> str:
    """Who recorded something: a staff user name, or a system process in Japanese."""
    return actor_display(label) if label else "-"


@register.filter
def points(value: int | str | None) -> str:
    """A points movement with its sign: "+120", "-300"."""
    if value is None or value == "":
        return ""
    return f"{int(value):+,}"


def _local_date(value: dt.date | dt.datetime) -> dt.date:
    if isinstance(value, dt.datetime):
        return timezone.localtime(value).date() if timezone.is_aware(value) else value.date()
    return value


@register.filter
def minus(value: int, other: int) -> int:
    """`value - other`, for counts such as the deliveries left under a subscription's 縛り."""
    return int(value) - int(other)


@register.filter
def jdate(value: dt.date | dt.datetime | None) -> str:
    """A date, or the JST date of a moment, as "2025年3月4日"."""
    if not value:
        return ""
    return jp.format_date(_local_date(value))


@register.filter
def jdatetime(value: dt.datetime | None) -> str:
    """A moment in JST as "2025-03-04 14:05"."""
    if not value:
        return ""
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    return f"{local:%Y-%m-%d %H:%M}"


@register.filter
def age(birthday: dt.date | None) -> str:
    """Age in full years today (JST) as "42歳"."""
    if not birthday:
        return ""
    today = timezone.localdate()
    years = today.year - birthday.year - ((today.month, today.day) < (birthday.month, birthday.day))
    return f"{years}歳"


@register.filter
def postal(value: str | None) -> str:
    """A stored seven-digit postal code as "〒150-0002"."""
    if not value:
        return ""
    return f"〒{jp.format_postal_code(value)}"


@register.filter
def phone(value: str | None) -> str:
    """An E.164 number as Japanese people write it (+819012345678 → 090-1234-5678)."""
    return jp.format_phone(value)


@register.simple_tag
def can_open(user: User | AnonymousUser, url_name: str, *args: object) -> bool:
    """Whether `user` may open the page named `url_name`, read from the view's own access
    declaration, so links and search boxes never offer a page the middleware would refuse."""
    try:
        match = resolve(reverse(url_name, args=args))
    except NoReverseMatch:
        return False
    roles = allowed_roles(match.func)
    if roles == PUBLIC:
        return True
    if roles is None or not user.is_authenticated or not isinstance(user, User):
        return False
    return user.has_role(*roles)


@register.simple_tag
def main_menu(user: User | AnonymousUser, current_path: str) -> list[dict[str, object]]:
    """The menu entries this user may open, marking the one the current page belongs to."""
    items: list[dict[str, object]] = []
    for entry in MENU:
        if not can_open(user, entry.url_name):
            continue
        url = reverse(entry.url_name)
        active = current_path == url if url == "/" else current_path.startswith(url)
        items.append({"url": url, "label": entry.label, "active": active})
    return items
