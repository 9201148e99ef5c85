"""Reading points."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.db.models import Subquery, Sum
from django.db.models.expressions import Combinable
from django.db.models.functions import Coalesce

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


# -- points still held per expiry date ---------------------------------------------------------
#
# One rule, in SQL (`unspent_through`, for the "points expiring in N days" trigger) and over
# rows read in batches (`expiring_on`, `remaining_lots`, for the messages' values): spending
# takes the soonest-expiring points first, so what a customer still holds expiring on a date D
# is what is left of the points expiring by D once everything taken out (used, expired,
# adjusted away) is counted against the soonest first:
#
#     held through D = (points added expiring on or before D) − (points taken out)
#     held on D      = min(points added expiring on D, held through D), at least 0
#
# Points that never expire come last, as in `loyalty.services.points_lots`; for ordinary
# earnings (each expiring a fixed time after it was earned) the two give the same lots.


def unspent_through(customer: Any, day: Any, *, before: Any = None) -> Combinable:
    """SQL: the customer's points expiring on or before `day` still held once every negative
    entry is taken from them soonest first (may be ≤ 0: nothing left). `customer` and `day`
    are expressions (OuterRef); `before` limits the ledger to entries made before that moment.
    """
    entries = PointEntry.objects.filter(customer=customer)
    if before is not None:
        entries = entries.filter(occurred_at__lt=before)
    grouped = entries.order_by().values("customer")
    added = grouped.filter(amount__gt=0, expires_on__lte=day).annotate(s=Sum("amount"))
    taken = grouped.filter(amount__lt=0).annotate(s=Sum("amount"))
    return Coalesce(Subquery(added.values("s")), 0) + Coalesce(Subquery(taken.values("s")), 0)


def _held(
    ledger: Iterable[tuple[int, int, dt.date | None, dt.datetime]], before: dt.datetime | None
) -> list[tuple[dt.date, int]]:
    """The (expiry, points still held) lots of one customer's ledger rows, soonest first."""
    added: dict[dt.date, int] = {}
    taken = 0
    for _, amount, expires_on, occurred_at in ledger:
        if before is not None and occurred_at >= before:
            continue
        if amount < 0:
            taken -= amount
        elif expires_on is not None:
            added[expires_on] = added.get(expires_on, 0) + amount
    lots: list[tuple[dt.date, int]] = []
    through = -taken
    for day in sorted(added):
        through += added[day]
        held = min(added[day], through)
        if held > 0:
            lots.append((day, held))
    return lots


def _ledgers(
    customers: Any,
) -> dict[int, list[tuple[int, int, dt.date | None, dt.datetime]]]:
    rows = (
        PointEntry.objects.filter(customer_id__in=customers)
        .order_by()
        .values_list("customer_id", "amount", "expires_on", "occurred_at")
    )
    ledgers: dict[int, list[tuple[int, int, dt.date | None, dt.datetime]]] = {}
    for row in rows:
        ledgers.setdefault(row[0], []).append(row)
    return ledgers


def remaining_lots(customers: Any) -> dict[int, list[tuple[dt.date, int]]]:
    """For each customer of `customers` (anything `customer_id__in=` takes), the points still
    held per expiry date, soonest first (dates with nothing left omitted), from one query."""
    return {cid: _held(ledger, None) for cid, ledger in _ledgers(customers).items()}


def expiring_on(
    wanted: Iterable[tuple[int, dt.date, dt.datetime | None]], *, customers: Any = None
) -> dict[tuple[int, dt.date], int]:
    """Points each (customer, expiry date) still holds expiring on that date, counting the
    ledger up to the given moment (None: all of it), from one query. `customers` narrows the
    read (anything `customer_id__in=` takes); by default the customers of `wanted`."""
    wanted = list(wanted)
    if not wanted:
        return {}
    ledgers = _ledgers(customers if customers is not None else sorted({w[0] for w in wanted}))
    result: dict[tuple[int, dt.date], int] = {}
    for cid, day, before in wanted:
        held = dict(_held(ledgers.get(cid, ()), before))
        result[cid, day] = held.get(day, 0)
    return result
