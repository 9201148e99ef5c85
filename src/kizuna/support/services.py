"""Recording contacts with customers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from kizuna.customers.models import Customer, TimelineKind
from kizuna.customers.timeline import timeline_add
from kizuna.support.models import Contact, ContactChannel, Direction


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
    if not summary.strip():
        raise ValidationError({"summary": "要約を入力してください"})
    contact = Contact.objects.create(
        customer=customer,
        occurred_at=at or timezone.now(),
        channel=channel,
        direction=direction,
        operator=acting_user if getattr(acting_user, "pk", None) else None,
        reason=reason,
        summary=summary.strip(),
        body=body,
    )
    timeline_add(
        customer=customer,
        kind=TimelineKind.CONTACT,
        title=f"{ContactChannel(channel).label}{Direction(direction).label}: {contact.summary}",
        occurred_at=contact.occurred_at,
        ref=contact,
    )
    return contact
