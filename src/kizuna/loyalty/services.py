"""Write paths for points. Every movement is one new ledger row plus its audit and timeline rows.

Concurrency: the customer's row is locked (SELECT … FOR UPDATE on PostgreSQL; SQLite runs
write transactions one at a time, see settings) before the last entry is read, so concurrent
redemptions queue and the second one sees the first one's balance. The unique (customer, seq)
constraint and the balance CHECK in the database stay as the last line of defence.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from kizuna.commerce.models import Order
from kizuna.core.audit import Actor, audit_record
from kizuna.customers.models import Customer, TimelineKind
from kizuna.customers.services import refuse_if_erased
from kizuna.customers.timeline import timeline_add
from kizuna.loyalty.models import PointEntry, PointKind

POINTS_VALID_DAYS = 365


def points_expiry(at: dt.datetime | None = None, valid_days: int = POINTS_VALID_DAYS) -> dt.date:
    """The last day points granted at `at` (default: now) are valid: the shop's validity
    period counted from that day in Japan."""
    return timezone.localdate(at) + dt.timedelta(days=valid_days)


class InsufficientPointsError(ValidationError):
    """A redemption or negative adjustment larger than the balance."""


def _lock_active(customer: Customer) -> None:
    """Lock the customer's row and refuse an erased record (docs/privacy.md): an anonymous
    record earns, spends and is granted nothing. Read under the lock the erasure takes, so an
    erasure either has committed and is seen here, or waits for this write. What stays
    possible on an erased record: expiry, and a negative adjustment writing off its balance."""
    locked = Customer.objects.select_for_update().filter(pk=customer.pk).first()
    if locked is not None:
        refuse_if_erased(locked)


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
    lot_id: int | None = None,
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
        lot_id=lot_id,
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
    _lock_active(customer)
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
        expires_on=points_expiry(at, valid_days),
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
    _lock_active(customer)
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
def points_adjust(
    *,
    customer: Customer,
    amount: int,
    acting_user: Any,
    reason: str,
    expires_on: dt.date | None = None,
    never_expires: bool = False,
) -> PointEntry:
    """A manual correction by staff; a reason is required and the balance cannot go below zero.
    An erased record takes only a negative one (writing off what it holds).

    Granted points expire like earned ones: on `expires_on` (after today) or, by default, after
    the shop's validity period (`points_expiry`). A deduction takes no date: it is taken from
    the lots the customer holds. `never_expires` writes an undated lot, as adjustments were
    before they carried a date; ledgers holding such lots are what the lot rules still handle.
    """
    if amount == 0:
        raise ValidationError("調整ポイントが0です")
    if not reason.strip():
        raise ValidationError("調整の理由を入力してください")
    if amount < 0 and (expires_on is not None or never_expires):
        raise ValidationError({"expires_on": "減算の調整には有効期限を指定できません"})
    today = timezone.localdate()
    if expires_on is not None and expires_on <= today:
        raise ValidationError({"expires_on": "有効期限は明日以降の日付を指定してください"})
    if amount > 0:
        _lock_active(customer)
        if expires_on is None and not never_expires:
            expires_on = points_expiry()
    return _append(
        customer=customer,
        kind=PointKind.ADJUST,
        amount=amount,
        actor=Actor.of(acting_user),
        reason=reason,
        at=timezone.now(),
        expires_on=expires_on,
    )


def _soonest_first(expires_on: dt.date | None) -> tuple[bool, dt.date]:
    return expires_on is None, expires_on or dt.date.min


@dataclass
class _Lots:
    """A customer's unspent points per expiry date (None: points that never expire), and for
    each date the latest entry that added points expiring then (what a transfer names)."""

    remaining: dict[dt.date | None, int]
    latest_entry: dict[dt.date | None, int]


def _replay(customer: Customer) -> _Lots:
    """The customer's lots, from the ledger read in its own order (seq).

    Every positive entry adds a lot with its expiry. A negative entry takes its points from the
    lots that exist at that moment, soonest expiry first (points that never expire last) — or,
    when it names a lot (`PointEntry.lot`, written by `points_transfer`), first from the lots
    expiring on that lot's date. The balance never goes below zero at any entry (the ledger's
    CHECK), so there is always enough to take; a named date that has less gives what it has
    and the rest comes soonest-first.

    Reading in order matters: points a merge carries over arrive after the survivor's own
    spending, which cannot have used them, and an undo that gives back a merged lot takes
    exactly that lot, not the survivor's soonest-expiring own points.
    """
    remaining: dict[dt.date | None, int] = {}
    latest: dict[dt.date | None, int] = {}
    expiry_of: dict[int, dt.date | None] = {}
    entries = (
        PointEntry.objects.filter(customer=customer)
        .order_by("seq")
        .values_list("pk", "amount", "expires_on", "lot_id")
    )
    for pk, amount, expires_on, lot_id in entries:
        if amount > 0:
            remaining[expires_on] = remaining.get(expires_on, 0) + amount
            latest[expires_on] = pk
            expiry_of[pk] = expires_on
            continue
        due = -amount
        if lot_id in expiry_of:
            named = expiry_of[lot_id]
            taken = min(due, remaining.get(named, 0))
            if taken:
                remaining[named] -= taken
                due -= taken
        for day in sorted(remaining, key=_soonest_first):
            if not due:
                break
            taken = min(due, remaining[day])
            remaining[day] -= taken
            due -= taken
    return _Lots(remaining={d: p for d, p in remaining.items() if p > 0}, latest_entry=latest)


def points_expiring(*, customer: Customer, on: dt.date) -> int:
    """Points that have expired by `on` and are not yet written off: the unspent lots (see
    `points_lots`) whose expiry date is before `on`. A lot is any positive entry with an
    expiry: an earning, a grant by staff, or points carried over from a merged record with their
    original expiry.
    """
    lots = _replay(customer).remaining
    return sum(points for day, points in lots.items() if day is not None and day < on)


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
    """The customer's unspent points as (points, expiry) lots, one per expiry date, soonest
    expiry first; points that never expire (adjustments made before they carried a date) come
    last with expiry None.

    Spending takes the soonest-expiring points the customer holds at that moment (see
    `_replay`); the lots add up to the balance.
    """
    lots = _replay(customer).remaining
    return [(lots[day], day) for day in sorted(lots, key=_soonest_first)]


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

    `target` receives one adjustment per lot carrying its expiry date, so moved points expire
    when they would have. `source` gives up everything it holds in one negative adjustment;
    when it keeps some points, it gives up each lot in its own adjustment naming that lot
    (`PointEntry.lot`), so what it keeps is exactly what it had besides the lots: a merge
    followed by its undo leaves both ledgers' lots as they were. Returns the points moved;
    refused (InsufficientPointsError) if `source` holds fewer.
    """
    total = sum(points for points, _ in lots)
    if total <= 0:
        return 0
    actor = Actor.of(acting_user)
    Customer.objects.select_for_update().filter(pk=source.pk).first()
    held = _replay(source)
    if total >= sum(held.remaining.values()):
        _append(
            customer=source, kind=PointKind.ADJUST, amount=-total, actor=actor, reason=reason, at=at
        )
    else:
        for points, expires_on in lots:
            _append(
                customer=source,
                kind=PointKind.ADJUST,
                amount=-points,
                actor=actor,
                reason=reason,
                at=at,
                lot_id=held.latest_entry.get(expires_on),
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
