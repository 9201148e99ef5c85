"""Pages of a list, as every list of Kizuna pages."""

from __future__ import annotations

from typing import Any, TypeVar

from django.core import paginator

T = TypeVar("T")


class Paginator(paginator.Paginator[T]):
    """Django's paginator, except that a page number below 1 (?page=0, ?page=-1, typed or
    left in a bookmark) opens the first page. Django opens the last one, as for a number past
    the end, which on a customer's orders shows their oldest as if it were the start."""

    def get_page(self, number: Any) -> paginator.Page[T]:
        try:
            below_one = int(number) < 1
        except (TypeError, ValueError):
            below_one = False  # unreadable: Django already opens the first page
        return super().get_page(1 if below_one else number)
