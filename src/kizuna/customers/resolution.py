"""Identity resolution: which customer does incoming data (a CSV row, an API call, a webhook)
belong to?

Matching is on normalised identities only, strongest first: the cart's member ID, then e-mail,
then phone. A match is certain enough to attach the data. Weaker evidence — the same name kana
and postal code, an identity already held by another record — never merges anything by itself:
it is proposed as a DuplicateCandidate for staff to review (merge and undo live in merge.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from kizuna.customers.models import Customer, DuplicateCandidate, Identity, IdentityKind
from kizuna.customers.services import customer_create, identity_add, normalize_identity

MATCH_ORDER = (IdentityKind.CART_MEMBER, IdentityKind.EMAIL, IdentityKind.PHONE)


@dataclass(frozen=True)
class Resolution:
    customer: Customer
    created: bool


def propose_duplicate(a: Customer, b: Customer, reason: str) -> None:
    """Queue the pair for review (once per pair; a later reason does not re-open a decision)."""
    if a.pk == b.pk:
        return
    first, second = (a, b) if a.pk < b.pk else (b, a)
    try:
        with transaction.atomic():
            DuplicateCandidate.objects.get_or_create(
                customer_a=first, customer_b=second, defaults={"reason": reason}
            )
    except IntegrityError:  # proposed concurrently by another import
        pass


def _owners(identities: Mapping[IdentityKind, str]) -> dict[IdentityKind, Identity]:
    keys = {kind: normalize_identity(kind, value) for kind, value in identities.items() if value}
    found: dict[IdentityKind, Identity] = {}
    for kind, key in keys.items():
        identity = Identity.objects.select_related("customer").filter(kind=kind, value=key).first()
        if identity is not None:
            found[kind] = identity
    return found


@transaction.atomic
def customer_resolve(
    *,
    identities: Mapping[IdentityKind, str],
    profile: Mapping[str, Any],
    acting_user: Any,
    source: str,
) -> Resolution:
    """The customer these identities belong to, created from `profile` when none matches.

    Identities the customer does not have yet are added when free; one that belongs to another
    record is left alone and the two records are proposed as duplicates.
    """
    present = {kind: value for kind, value in identities.items() if value and value.strip()}
    owners = _owners(present)
    matched_kind = next((kind for kind in MATCH_ORDER if kind in owners), None)
    if matched_kind is None and owners:  # a weaker kind (LINE, chat…) still identifies
        matched_kind = next(iter(owners))
    customer = owners[matched_kind].customer if matched_kind is not None else None
    conflict = _stronger_conflict(customer, matched_kind, present, owners)
    if customer is not None and matched_kind is not None and conflict is not None:
        # e.g. a family sharing one landline: same phone, but a different cart member ID or
        # e-mail than the record holds. Another person, most likely; staff confirm.
        probable = customer
        customer = customer_create(acting_user=acting_user, profile=profile)
        propose_duplicate(
            customer,
            probable,
            f"同じ{IdentityKind(matched_kind).label}で{IdentityKind(conflict).label}が異なる",
        )
    created = customer is None or conflict is not None
    if customer is None:
        customer = customer_create(acting_user=acting_user, profile=profile)
        _propose_by_profile(customer)
    for kind, value in present.items():
        owner = owners.get(kind)
        if owner is None:
            identity_add(
                customer=customer, kind=kind, value=value, acting_user=acting_user, source=source
            )
        elif owner.customer_id != customer.pk:
            label = IdentityKind(kind).label
            propose_duplicate(customer, owner.customer, f"同じ{label}で別の顧客")
    return Resolution(customer=customer, created=created)


def _stronger_conflict(
    customer: Customer | None,
    matched_kind: IdentityKind | None,
    present: Mapping[IdentityKind, str],
    owners: Mapping[IdentityKind, Identity],
) -> IdentityKind | None:
    """A stronger identity in the input that is new, where the matched record already holds
    a different one of that kind."""
    if customer is None or matched_kind not in MATCH_ORDER:
        return None
    for kind in MATCH_ORDER[: MATCH_ORDER.index(matched_kind)]:
        if (
            kind in present
            and kind not in owners
            and customer.identities.filter(kind=kind).exists()
        ):
            return kind
    return None


def _propose_by_profile(customer: Customer) -> None:
    """Same name kana and postal code as an existing record: probably the same person who
    bought again with a new e-mail address."""
    if not customer.kana_key or not customer.postal_code:
        return
    others = Customer.objects.filter(
        kana_key=customer.kana_key, postal_code=customer.postal_code, merged_into__isnull=True
    ).exclude(pk=customer.pk)[:5]
    for other in others:
        propose_duplicate(customer, other, "氏名カナと郵便番号が一致")
