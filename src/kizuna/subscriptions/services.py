"""Write paths for 定期 subscriptions: pause, resume, cancel; each writes audit and timeline."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from kizuna.commerce.models import Product
from kizuna.core import jp
from kizuna.core.audit import Actor, audit_record, diff
from kizuna.customers.models import Customer, TimelineKind
from kizuna.customers.services import refuse_if_erased
from kizuna.customers.timeline import timeline_add
from kizuna.subscriptions.models import (
    CancelReason,
    CycleKind,
    DeliveryStatus,
    Subscription,
    SubscriptionStatus,
)


def _record(
    *,
    subscription: Subscription,
    old: dict[str, Any],
    actor: Actor,
    action: str,
    title: str,
    also: Mapping[str, list[Any]] | None = None,
) -> None:
    """Audit (old → new of the status fields, plus `also`: other changes made with them, as
    {key: [old, new]}) and timeline."""
    new = {
        "status": subscription.status,
        "paused_until": subscription.paused_until,
        "cancelled_on": subscription.cancelled_on,
        "cancel_reason": subscription.cancel_reason,
        # Free text that may name the person: an erasure redacts it in the audit log with
        # every other value recorded about them (customers.privacy, audit_redact).
        "cancel_note": subscription.cancel_note,
    }
    audit_record(
        actor=actor,
        action=action,
        instance=subscription,
        customer_id=subscription.customer_id,
        changes={**diff(old, new), **(also or {})},
    )
    timeline_add(
        customer=subscription.customer,
        kind=TimelineKind.SUBSCRIPTION,
        title=title,
        occurred_at=timezone.now(),
        ref=subscription,
    )


def _locked(subscription: Subscription) -> tuple[Subscription, dict[str, Any]]:
    locked = Subscription.objects.select_for_update().select_related("product", "customer")
    sub = locked.get(pk=subscription.pk)
    old = {
        "status": sub.status,
        "paused_until": sub.paused_until,
        "cancelled_on": sub.cancelled_on,
        "cancel_reason": sub.cancel_reason,
        "cancel_note": sub.cancel_note,
    }
    return sub, old


@transaction.atomic
def subscription_pause(
    *, subscription: Subscription, until: dt.date, acting_user: Any
) -> Subscription:
    """Pause a running 定期 until `until`, its next delivery. On a paused one, move that date
    (the customer wants it back sooner or later): audited and on the timeline like the pause;
    the same date again changes nothing. The date is tomorrow or later."""
    sub, old = _locked(subscription)
    moving = sub.status == SubscriptionStatus.PAUSED
    if moving and sub.paused_until == until:
        return sub
    if sub.status == SubscriptionStatus.CANCELLED:
        raise ValidationError("解約済みの定期は休止できません")
    if until <= timezone.localdate():
        raise ValidationError({"paused_until": "休止期限は明日以降の日付にしてください"})
    sub.status = SubscriptionStatus.PAUSED
    sub.paused_until = until
    sub.next_delivery_on = until
    sub.save()
    what = "定期休止期限を変更" if moving else "定期休止"
    _record(
        subscription=sub,
        old=old,
        actor=Actor.of(acting_user),
        action="subscription.pause",
        title=f"{what}: {sub.product.name}({jp.format_date(until)}まで)",
    )
    return sub


@transaction.atomic
def subscription_resume(
    *, subscription: Subscription, next_delivery_on: dt.date, acting_user: Any
) -> Subscription:
    sub, old = _locked(subscription)
    if sub.status != SubscriptionStatus.PAUSED:
        raise ValidationError("休止中の定期のみ再開できます")
    _check_next_delivery(next_delivery_on)
    sub.status = SubscriptionStatus.ACTIVE
    sub.paused_until = None
    sub.next_delivery_on = next_delivery_on
    sub.save()
    _record(
        subscription=sub,
        old=old,
        actor=Actor.of(acting_user),
        action="subscription.resume",
        title=f"定期再開: {sub.product.name}(次回 {jp.format_date(next_delivery_on)})",
    )
    return sub


def cancelled_already(sub: Subscription) -> str:
    """What a cancelled 定期 answers to a change: when, and why, it was cancelled."""
    reason = dict(CancelReason.choices).get(sub.cancel_reason) or "未記録"
    day = f"{jp.format_date(sub.cancelled_on)}に" if sub.cancelled_on else ""
    return f"この定期は{day}解約済みです(解約理由: {reason})"


@transaction.atomic
def subscription_cancel(
    *, subscription: Subscription, reason: CancelReason, note: str = "", acting_user: Any
) -> Subscription:
    """Cancel. Cancelling before the commitment count (縛り) is reached is allowed, because the
    shop decides at the desk; the delivery count at cancellation stays on record.

    Deliveries still scheduled and not yet ordered will not come: they become 中止(解約), kept
    so staff can see what had been planned. One already ordered (受注・未出荷) keeps its status:
    the order ships unless it is cancelled in the cart."""
    sub, old = _locked(subscription)
    if sub.status == SubscriptionStatus.CANCELLED:
        raise ValidationError(cancelled_already(sub))
    sub.status = SubscriptionStatus.CANCELLED
    sub.cancelled_on = timezone.localdate()
    sub.cancel_reason = reason
    sub.cancel_note = note
    sub.next_delivery_on = None
    # A pause ends with the contract: its end date would read as a day the 定期 comes back.
    sub.paused_until = None
    sub.save()
    planned = sub.deliveries.filter(status=DeliveryStatus.SCHEDULED, order__isnull=True)
    stopped = sorted(planned.values_list("sequence", flat=True))
    planned.update(status=DeliveryStatus.CANCELLED)
    # Which deliveries went from 予定 to 中止(解約), by number (n回目).
    also = {"cancelled_deliveries": [None, ",".join(map(str, stopped))]} if stopped else {}
    _record(
        subscription=sub,
        old=old,
        actor=Actor.of(acting_user),
        action="subscription.cancel",
        title=f"定期解約: {sub.product.name}({sub.delivery_count}回目で解約・{reason.label})",
        also=also,
    )
    return sub


# Fields a client may change on a running subscription; status changes go through
# pause/resume/cancel above, which keep their own rules.
SUBSCRIPTION_TERMS = frozenset(
    {
        "quantity",
        "unit_price",
        "cycle_kind",
        "cycle_days",
        "monthly_day",
        "next_delivery_on",
        "commitment_count",
    }
)


# How far ahead a subscription may start: a cart registers a 定期 when it is ordered, to start
# with a delivery in the coming weeks; a start years away is a typo (2199 for 2019).
START_AHEAD_MAX = dt.timedelta(days=365)
# The cycle field each kind uses, and the one it must not carry.
_CYCLE_FIELD = {CycleKind.DAYS: "cycle_days", CycleKind.MONTHLY_DAY: "monthly_day"}


def _check_cycle(sub: Subscription, sent: Mapping[str, Any]) -> None:
    """The cycle rules of the table's CHECK, with messages staff and clients can act on; and
    the other kind's field must not be sent with a value (cycle_days with monthly_day: which
    one did the client mean?)."""
    if sub.cycle_kind == CycleKind.DAYS:
        if sub.cycle_days is None or not 7 <= sub.cycle_days <= 180:
            raise ValidationError({"cycle_days": "周期(日)は7〜180日で指定してください"})
    elif sub.cycle_kind == CycleKind.MONTHLY_DAY:
        if sub.monthly_day is None or not 1 <= sub.monthly_day <= 28:
            raise ValidationError({"monthly_day": "毎月のお届け日は1〜28日で指定してください"})
    else:
        raise ValidationError({"cycle_kind": "周期の種類が正しくありません"})
    kind = CycleKind(sub.cycle_kind)
    for other_kind, other in _CYCLE_FIELD.items():
        if other_kind != kind and sent.get(other) is not None:
            raise ValidationError(
                {
                    other: f"周期の種類が「{kind.label}」の定期には指定できません"
                    f"({_CYCLE_FIELD[kind]} を指定してください)"
                }
            )


def _check_next_delivery(next_delivery_on: dt.date | None) -> None:
    if next_delivery_on is not None and next_delivery_on < timezone.localdate():
        raise ValidationError(
            {"next_delivery_on": "次回お届け予定日は今日以降の日付にしてください"}
        )


def _check_start(started_on: dt.date, next_delivery_on: dt.date | None) -> None:
    if started_on > timezone.localdate() + START_AHEAD_MAX:
        raise ValidationError({"started_on": "開始日は今日から1年以内の日付にしてください"})
    if next_delivery_on is not None and next_delivery_on < started_on:
        raise ValidationError({"next_delivery_on": "次回お届け予定日は開始日以降にしてください"})


def _term_values(sub: Subscription) -> dict[str, Any]:
    return {name: getattr(sub, name) for name in sorted(SUBSCRIPTION_TERMS)}


@transaction.atomic
def subscription_create(
    *,
    customer: Customer,
    product: Product,
    terms: Mapping[str, Any],
    started_on: dt.date,
    acting_user: Any,
) -> Subscription:
    """Start a 定期 for the customer. `terms` holds the SUBSCRIPTION_TERMS fields; the cycle is
    checked (every 7–180 days, or monthly on day 1–28, and only the kind's own field given),
    the start is at most a year ahead, and a next delivery date given is today or later and
    not before the start. Without one, the next delivery is the start (a subscription moved
    over from another system may have started in the past). An erased customer is refused."""
    unknown = set(terms) - SUBSCRIPTION_TERMS
    if unknown:
        raise ValidationError(f"設定できない項目です: {', '.join(sorted(unknown))}")
    # Under the lock the erasure takes: an erasure that committed first is seen here and
    # refuses the 定期; one that comes after waits, and sees it running (and refuses itself).
    refuse_if_erased(Customer.objects.select_for_update().get(pk=customer.pk))
    sub = Subscription(customer=customer, product=product, started_on=started_on, **terms)
    _check_next_delivery(sub.next_delivery_on)
    _check_start(started_on, sub.next_delivery_on)
    if sub.next_delivery_on is None:
        sub.next_delivery_on = started_on
    _check_cycle(sub, terms)
    sub.full_clean()
    sub.save()
    audit_record(
        actor=Actor.of(acting_user),
        action="subscription.create",
        instance=sub,
        customer_id=customer.pk,
        changes=diff({}, {"product": product.code, **_term_values(sub)}),
    )
    timeline_add(
        customer=customer,
        kind=TimelineKind.SUBSCRIPTION,
        title=f"定期開始: {product.name}({sub.cycle_label})",
        occurred_at=timezone.now(),
        ref=sub,
    )
    return sub


@transaction.atomic
def subscription_update(
    *, subscription: Subscription, changes: Mapping[str, Any], acting_user: Any
) -> Subscription:
    """Change quantity, price, cycle, next delivery date or commitment count of a subscription
    that is not cancelled. The audit row records each field's old and new value.

    A change of cycle kind clears the old kind's field (days → monthly_day clears cycle_days);
    a new next delivery date must be today or later."""
    unknown = set(changes) - SUBSCRIPTION_TERMS
    if unknown:
        raise ValidationError(f"変更できない項目です: {', '.join(sorted(unknown))}")
    sub, _ = _locked(subscription)
    old = _term_values(sub)
    sent = dict(changes)
    kind = sent.get("cycle_kind")
    if kind is not None and kind != sub.cycle_kind and kind in _CYCLE_FIELD:
        for other_kind, other in _CYCLE_FIELD.items():
            if other_kind != kind:
                sent.setdefault(other, None)
    changed = diff(old, {**old, **sent})
    if not changed:
        return sub
    if sub.status == SubscriptionStatus.CANCELLED:
        raise ValidationError("解約済みの定期は変更できません")
    if "next_delivery_on" in changed:
        _check_next_delivery(sent["next_delivery_on"])
    for name, value in sent.items():
        setattr(sub, name, value)
    _check_cycle(sub, sent)
    sub.full_clean()
    sub.save()
    audit_record(
        actor=Actor.of(acting_user),
        action="subscription.update",
        instance=sub,
        customer_id=sub.customer_id,
        changes=changed,
    )
    labels = "、".join(
        str(getattr(Subscription._meta.get_field(name), "verbose_name", name)) for name in changed
    )
    timeline_add(
        customer=sub.customer,
        kind=TimelineKind.SUBSCRIPTION,
        title=f"定期内容を変更: {sub.product.name}({labels})",
        occurred_at=timezone.now(),
        ref=sub,
    )
    return sub
