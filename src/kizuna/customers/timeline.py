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
    event = timeline_row(
        customer=customer, kind=kind, title=title, occurred_at=occurred_at, ref=ref, detail=detail
    )
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
    """A timeline row as a tuple in TIMELINE_COLUMNS order, for bulk writers (insert_rows):
    the same row `timeline_row` builds, without a model instance."""
    return (
        customer_id,
        occurred_at,
        kind.value,
        title[:200],
        detail or {},
        ref._meta.label if ref is not None else "",
        ref.pk if ref is not None else None,
    )


def timeline_row(
    *,
    customer: Customer,
    kind: TimelineKind,
    title: str,
    occurred_at: dt.datetime,
    ref: models.Model | None = None,
    detail: dict[str, Any] | None = None,
) -> TimelineEvent:
    """An unsaved timeline row, for bulk writers that insert many with one `bulk_create`."""
    return TimelineEvent(
        customer=customer,
        kind=kind,
        title=title[:200],
        occurred_at=occurred_at,
        ref_entity=ref._meta.label if ref is not None else "",
        ref_id=ref.pk if ref is not None else None,
        detail=detail or {},
    )
