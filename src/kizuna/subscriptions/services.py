"""Write paths for 定期 subscriptions: pause, resume, cancel; each writes audit and timeline."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from kizuna.core.audit import Actor, audit_record, diff
from kizuna.customers.models import TimelineKind
from kizuna.customers.timeline import timeline_add
from kizuna.subscriptions.models import CancelReason, Subscription, SubscriptionStatus


def _record(
    *, subscription: Subscription, old: dict[str, Any], actor: Actor, action: str, title: str
) -> None:
    new = {
        "status": subscription.status,
        "paused_until": subscription.paused_until,
        "cancelled_on": subscription.cancelled_on,
        "cancel_reason": subscription.cancel_reason,
    }
    audit_record(
        actor=actor,
        action=action,
        instance=subscription,
        customer_id=subscription.customer_id,
        changes=diff(old, new),
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
    }
    return sub, old


@transaction.atomic
def subscription_pause(
    *, subscription: Subscription, until: dt.date, acting_user: Any
) -> Subscription:
    sub, old = _locked(subscription)
    if sub.status != SubscriptionStatus.ACTIVE:
        raise ValidationError("継続中の定期のみ休止できます")
    if until <= timezone.localdate():
        raise ValidationError("休止期限は明日以降の日付にしてください")
    sub.status = SubscriptionStatus.PAUSED
    sub.paused_until = until
    sub.next_delivery_on = until
    sub.save()
    _record(
        subscription=sub,
        old=old,
        actor=Actor.of(acting_user),
        action="subscription.pause",
        title=f"定期休止: {sub.product.name}({until:%Y-%m-%d}まで)",
    )
    return sub


@transaction.atomic
def subscription_resume(
    *, subscription: Subscription, next_delivery_on: dt.date, acting_user: Any
) -> Subscription:
    sub, old = _locked(subscription)
    if sub.status != SubscriptionStatus.PAUSED:
        raise ValidationError("休止中の定期のみ再開できます")
    sub.status = SubscriptionStatus.ACTIVE
    sub.paused_until = None
    sub.next_delivery_on = next_delivery_on
    sub.save()
    _record(
        subscription=sub,
        old=old,
        actor=Actor.of(acting_user),
        action="subscription.resume",
        title=f"定期再開: {sub.product.name}(次回 {next_delivery_on:%Y-%m-%d})",
    )
    return sub


@transaction.atomic
def subscription_cancel(
    *, subscription: Subscription, reason: CancelReason, note: str = "", acting_user: Any
) -> Subscription:
    """Cancel. Cancelling before the commitment count (縛り) is reached is allowed, because the
    shop decides at the desk; the delivery count at cancellation stays on record."""
    sub, old = _locked(subscription)
    if sub.status == SubscriptionStatus.CANCELLED:
        raise ValidationError("この定期はすでに解約されています")
    sub.status = SubscriptionStatus.CANCELLED
    sub.cancelled_on = timezone.localdate()
    sub.cancel_reason = reason
    sub.cancel_note = note
    sub.next_delivery_on = None
    sub.save()
    _record(
        subscription=sub,
        old=old,
        actor=Actor.of(acting_user),
        action="subscription.cancel",
        title=f"定期解約: {sub.product.name}({sub.delivery_count}回目で解約・{reason.label})",
    )
    return sub
