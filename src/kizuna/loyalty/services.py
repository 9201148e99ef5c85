"""Write paths for points. Every movement is one new ledger row plus its audit and timeline rows.

Concurrency: the customer's row is locked (SELECT … FOR UPDATE on PostgreSQL; SQLite runs
write transactions one at a time, see settings) before the last entry is read, so concurrent
redemptions queue and the second one sees the first one's balance. The unique (customer, seq)
constraint and the balance CHECK in the database stay as the last line of defence.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from kizuna.commerce.models import Order
from kizuna.core.audit import Actor, audit_record
from kizuna.customers.models import Customer, TimelineKind
from kizuna.customers.timeline import timeline_add
from kizuna.loyalty.models import PointEntry, PointKind
from kizuna.loyalty.selectors import points_balance

POINTS_VALID_DAYS = 365


class InsufficientPointsError(ValidationError):
    """A redemption or negative adjustment larger than the balance."""


def _append(
    *,
    customer: Customer,
    kind: PointKind,
    amount: int,
    actor: Actor,
    reason: str,
    at: dt.datetime,
    order: Order | None = None,
    expires_on: dt.date | None = None,
) -> PointEntry:
    Customer.objects.select_for_update().filter(pk=customer.pk).first()
    last = PointEntry.objects.filter(customer=customer).order_by("-seq").first()
    balance = last.balance_after if last else 0
    if balance + amount < 0:
        raise InsufficientPointsError(
            f"ポイント残高が足りません(残高 {balance:,} pt、必要 {-amount:,} pt)"
        )
    entry = PointEntry.objects.create(
        customer=customer,
        seq=(last.seq if last else 0) + 1,
        kind=kind,
        amount=amount,
        balance_after=balance + amount,
        occurred_at=at,
        expires_on=expires_on,
        order=order,
        reason=reason,
        recorded_by=actor.label,
    )
    audit_record(
        actor=actor,
        action=f"points.{kind.value}",
        instance=entry,
        customer_id=customer.pk,
        changes={"balance": [balance, entry.balance_after]},
    )
    timeline_add(
        customer=customer,
        kind=TimelineKind.POINTS,
        title=f"ポイント{kind.label} {amount:+,} pt(残高 {entry.balance_after:,} pt)",
        occurred_at=at,
        ref=entry,
        detail={"reason": reason},
    )
    return entry


@transaction.atomic
def points_earn(
    *,
    customer: Customer,
    amount: int,
    acting_user: Any,
    reason: str,
    order: Order | None = None,
    at: dt.datetime | None = None,
    valid_days: int = POINTS_VALID_DAYS,
) -> PointEntry:
    """Grant points. An order earns at most once (a repeat call returns the first entry)."""
    if amount <= 0:
        raise ValidationError("付与ポイントは1以上にしてください")
    if order is not None:
        existing = PointEntry.objects.filter(order=order, kind=PointKind.EARN).first()
        if existing is not None:
            return existing
    at = at or timezone.now()
    return _append(
        customer=customer,
        kind=PointKind.EARN,
        amount=amount,
        actor=Actor.of(acting_user),
        reason=reason,
        at=at,
        order=order,
        expires_on=timezone.localdate(at) + dt.timedelta(days=valid_days),
    )


@transaction.atomic
def points_redeem(
    *,
    customer: Customer,
    amount: int,
    acting_user: Any,
    reason: str,
    order: Order | None = None,
    at: dt.datetime | None = None,
) -> PointEntry:
    """Spend points; refused (InsufficientPointsError) when the balance is smaller."""
    if amount <= 0:
        raise ValidationError("利用ポイントは1以上にしてください")
    return _append(
        customer=customer,
        kind=PointKind.REDEEM,
        amount=-amount,
        actor=Actor.of(acting_user),
        reason=reason,
        at=at or timezone.now(),
        order=order,
    )


@transaction.atomic
def points_adjust(*, customer: Customer, amount: int, acting_user: Any, reason: str) -> PointEntry:
    """A manual correction by staff; a reason is required and the balance cannot go below zero."""
    if amount == 0:
        raise ValidationError("調整ポイントが0です")
    if not reason.strip():
        raise ValidationError("調整の理由を入力してください")
    return _append(
        customer=customer,
        kind=PointKind.ADJUST,
        amount=amount,
        actor=Actor.of(acting_user),
        reason=reason,
        at=timezone.now(),
    )


def points_expiring(*, customer: Customer, on: dt.date) -> int:
    """Points that have expired by `on` and are not yet written off.

    Spending consumes the soonest-expiring points first, so of all points whose expiry has
    passed, what is left is their sum minus everything taken out so far (redeemed, expired,
    negative adjustments), never below zero. A lot is any positive entry with an expiry: an
    earning, or points carried over from a merged record with their original expiry.
    """
    entries = PointEntry.objects.filter(customer=customer)
    expired_earned = (
        entries.filter(amount__gt=0, expires_on__lt=on).aggregate(s=Sum("amount"))["s"] or 0
    )
    taken_out = -(entries.filter(amount__lt=0).aggregate(s=Sum("amount"))["s"] or 0)
    return max(0, min(expired_earned - taken_out, points_balance(customer)))


@transaction.atomic
def points_expire_due(*, customer: Customer, on: dt.date, acting_user: Any) -> PointEntry | None:
    """Write off points past their expiry date, if any. Safe to run repeatedly."""
    Customer.objects.select_for_update().filter(pk=customer.pk).first()
    due = points_expiring(customer=customer, on=on)
    if due <= 0:
        return None
    return _append(
        customer=customer,
        kind=PointKind.EXPIRE,
        amount=-due,
        actor=Actor.of(acting_user),
        reason="有効期限切れ",
        at=timezone.now(),
    )


def points_lots(customer: Customer) -> list[tuple[int, dt.date | None]]:
    """The customer's unspent points as (points, expiry) lots, soonest expiry first; points
    that never expire (manual adjustments) come last with expiry None.

    The same accounting as `points_expiring`: everything taken out so far is charged to the
    soonest-expiring lots first.
    """
    positive = PointEntry.objects.filter(customer=customer, amount__gt=0)
    lots = positive.order_by(F("expires_on").asc(nulls_last=True), "seq").values_list(
        "amount", "expires_on"
    )
    taken_out = -(
        PointEntry.objects.filter(customer=customer, amount__lt=0).aggregate(s=Sum("amount"))["s"]
        or 0
    )
    remaining: dict[dt.date | None, int] = {}
    for amount, expires_on in lots:
        used = min(amount, taken_out)
        taken_out -= used
        if amount > used:
            remaining[expires_on] = remaining.get(expires_on, 0) + amount - used
    return [(points, expires_on) for expires_on, points in remaining.items()]


@transaction.atomic
def points_transfer(
    *,
    source: Customer,
    target: Customer,
    lots: list[tuple[int, dt.date | None]],
    acting_user: Any,
    reason: str,
    at: dt.datetime,
) -> int:
    """Move `lots` of points from `source` to `target`, keeping each lot's expiry.

    `source` gives them up in one negative adjustment; `target` receives one adjustment per
    lot carrying its expiry date, so merged points expire when they would have. Returns the
    points moved; refused (InsufficientPointsError) if `source` holds fewer.
    """
    total = sum(points for points, _ in lots)
    if total <= 0:
        return 0
    actor = Actor.of(acting_user)
    _append(
        customer=source, kind=PointKind.ADJUST, amount=-total, actor=actor, reason=reason, at=at
    )
    for points, expires_on in lots:
        _append(
            customer=target,
            kind=PointKind.ADJUST,
            amount=points,
            actor=actor,
            reason=reason,
            at=at,
            expires_on=expires_on,
        )
    return total
