"""Recording contacts with customers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from kizuna.customers.models import Customer, TimelineKind
from kizuna.customers.services import refuse_if_erased
from kizuna.customers.timeline import timeline_add
from kizuna.support.models import Contact, ContactChannel, Direction

REASON_MAX = 100
SUMMARY_MAX = 200
BODY_MAX = 5000
# A contact is recorded during or just after the call: a clock a few minutes ahead is tolerated,
# a time further ahead is a typo (the wrong day or year) that would sort it above every other.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@transaction.atomic
def contact_record(
    *,
    customer: Customer,
    channel: ContactChannel,
    direction: Direction,
    summary: str,
    acting_user: Any,
    body: str = "",
    reason: str = "",
    at: dt.datetime | None = None,
) -> Contact:
    """Record one contact. Every caller gets the same checks: each error is raised under its
    field (channel, direction, occurred_at, reason, summary, body); an erased or merged-away
    customer takes no new contact."""
    now = timezone.now()
    occurred_at = at or now
    errors: dict[str, str] = {}
    if channel not in ContactChannel.values:
        errors["channel"] = "チャネルを一覧から選んでください"
    if direction not in Direction.values:
        errors["direction"] = "方向を一覧から選んでください"
    if occurred_at > now + FUTURE_TOLERANCE:
        errors["occurred_at"] = "日時が未来になっています。問い合わせのあった日時を入力してください"
    elif occurred_at < EARLIEST:
        errors["occurred_at"] = "日時は2000年1月1日以降を入力してください"
    if len(reason.strip()) > REASON_MAX:
        errors["reason"] = f"問い合わせ理由は{REASON_MAX}文字以内で入力してください"
    if not summary.strip():
        errors["summary"] = "要約を入力してください"
    elif len(summary.strip()) > SUMMARY_MAX:
        errors["summary"] = f"要約は{SUMMARY_MAX}文字以内で入力してください"
    if len(body) > BODY_MAX:
        errors["body"] = f"内容は{BODY_MAX:,}文字以内で入力してください"
    if errors:
        raise ValidationError(errors)
    # The row as it is now, locked: an erasure or merge committed since the caller read it counts.
    stored = Customer.objects.select_for_update().get(pk=customer.pk)
    refuse_if_erased(stored)
    if stored.merged_into_id is not None:
        raise ValidationError(
            f"この顧客は顧客ID {stored.merged_into_id} に統合済みです。統合先に記録してください"
        )
    contact = Contact.objects.create(
        customer=customer,
        occurred_at=occurred_at,
        channel=channel,
        direction=direction,
        operator=acting_user if getattr(acting_user, "pk", None) else None,
        reason=reason.strip(),
        summary=summary.strip(),
        body=body.strip(),
    )
    timeline_add(
        customer=customer,
        kind=TimelineKind.CONTACT,
        title=f"{ContactChannel(channel).label}{Direction(direction).label}: {contact.summary}",
        occurred_at=contact.occurred_at,
        ref=contact,
    )
    return contact
