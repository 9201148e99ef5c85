"""Background work for points, run by `kizuna worker`."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from django_tasks import task

from kizuna.core.audit import Actor
from kizuna.customers.models import Customer
from kizuna.loyalty.models import PointEntry
from kizuna.loyalty.services import points_expire_due

# Customers whose points expired within this window are re-checked each run; a daily run
# with a week of slack still catches every expiry if the worker was down for a few days.
EXPIRY_LOOKBACK_DAYS = 7


@task()
def expire_points(on: str | None = None) -> int:
    """Write off expired points for every customer with an expiry in the look-back window.

    Returns how many customers lost points. Idempotent: a second run finds nothing due.
    """
    day = dt.date.fromisoformat(on) if on else timezone.localdate()
    window_start = day - dt.timedelta(days=EXPIRY_LOOKBACK_DAYS)
    customer_ids = (
        PointEntry.objects.filter(amount__gt=0, expires_on__gte=window_start)
        .filter(expires_on__lt=day)
        .values_list("customer_id", flat=True)
        .distinct()
    )
    actor = Actor.system("points-expiry")
    expired = 0
    for customer in Customer.objects.filter(pk__in=list(customer_ids)).iterator():
        if points_expire_due(customer=customer, on=day, acting_user=actor) is not None:
            expired += 1
    return expired
