"""Filters for the analytics pages: rates as percentages and changes with their sign."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def pct(value: float | str | None, places: int = 1) -> str:
    """A stored rate (0.302518) as "30.3%"; "—" where the rate is undefined (null)."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.{int(places)}f}%"


@register.filter
def signed(value: int | None) -> str:
    """A change in a count as "+12" / "-3" / "±0"; empty when there is nothing to compare."""
    if value is None:
        return ""
    return f"{int(value):+,}" if value else "±0"


@register.filter
def bar_width(value: float | None) -> str:
    """A share (0…1) as a CSS width in percent for a bar-table bar."""
    if not value:
        return "0"
    return f"{min(100.0, float(value) * 100):.1f}"


@register.filter
def total_seconds(timings: dict[str, float] | None) -> str:
    """A run's step timings added up, as "12.3秒"."""
    if not timings:
        return ""
    return f"{sum(float(v) for v in timings.values()):.1f}秒"
