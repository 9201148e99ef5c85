"""Reading points."""

from __future__ import annotations

from kizuna.customers.models import Customer
from kizuna.loyalty.models import PointEntry


def points_balance(customer: Customer) -> int:
    """The balance: the running sum stored on the customer's latest ledger entry."""
    last = (
        PointEntry.objects.filter(customer=customer)
        .order_by("-seq")
        .values_list("balance_after", flat=True)
        .first()
    )
    return last or 0
