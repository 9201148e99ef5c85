"""Resolving customers and writing under concurrency, shared by the API routes and webhooks.

Two requests about the same new customer or the same new order can run at once (a cart
retrying, two events for one order). Both look, find nothing, and try to create; the
database's unique indexes let one win. The loser's attempt is rolled back to its savepoint and
run again (kizuna.core.races), and the second time it finds the row the winner created.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError

from kizuna.api.errors import django_fields
from kizuna.core.audit import Actor
from kizuna.customers.models import Customer, IdentityKind
from kizuna.customers.resolution import Resolution, customer_resolve


class IdentityRaceError(IntegrityError):
    """An identity was free when resolution looked and taken when it was added."""


def resolve_customer(
    *,
    identities: Mapping[IdentityKind, str],
    profile: Mapping[str, Any],
    actor: Actor,
    source: str,
    field_prefix: str,
    stale: Callable[[Customer], bool] | None = None,
    observed_at: dt.datetime | None = None,
) -> Resolution:
    """customer_resolve, with its profile errors named by where they are in the request."""
    try:
        return customer_resolve(
            identities=identities,
            profile=profile,
            acting_user=actor,
            source=source,
            stale=stale,
            observed_at=observed_at,
        )
    except ValidationError as exc:
        # Identities reach here already normalised and checked, and customer_resolve only adds
        # identities it found free; an identity error ("value") therefore means another request
        # added it in between. Retried, the resolution finds that customer.
        if hasattr(exc, "error_dict") and "value" in exc.error_dict:
            raise IdentityRaceError from exc
        _, fields = django_fields(exc, prefix=field_prefix)
        raise ValidationError(fields or exc.messages) from None
