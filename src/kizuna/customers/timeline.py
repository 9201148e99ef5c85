"""Writing timeline rows. Services call `timeline_add` in the transaction of the change itself."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import models

from kizuna.customers.models import Customer, TimelineEvent, TimelineKind

# The columns of `timeline_values` tuples, for kizuna.core.bulk.insert_rows.
TIMELINE_COLUMNS = (
    "customer_id", "occurred_at", "kind", "title", "detail", "ref_entity", "ref_id",
)  # fmt: skip


def timeline_add(
    *,
    customer: Customer,
    kind: TimelineKind,
    title: str,
    occurred_at: dt.datetime,
    ref: models.Model | None = None,
    detail: dict[str, Any] | None = None,
) -> TimelineEvent:
    values = timeline_values(
        customer_id=customer.pk,
        kind=kind,
        title=title,
        occurred_at=occurred_at,
        ref=ref,
        detail=detail,
    )
    event = TimelineEvent(**dict(zip(TIMELINE_COLUMNS, values, strict=True)))
    event.save(force_insert=True)
    return event


def timeline_values(
    *,
    customer_id: int,
    kind: TimelineKind,
    title: str,
    occurred_at: dt.datetime,
    ref: models.Model | None = None,
    detail: dict[str, Any] | None = None,
) -> tuple[Any, ...]:
    """A timeline row as a tuple in TIMELINE_COLUMNS order: what bulk writers insert
    (insert_rows) and `timeline_add` saves."""
    return (
        customer_id,
        occurred_at,
        kind.value,
        title[:200],
        detail or {},
        ref._meta.label if ref is not None else "",
        ref.pk if ref is not None else None,
    )
