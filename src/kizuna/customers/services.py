"""Write paths for customers, identities and consent.

Each function is one use case: it validates and normalises its input, changes the rows, and in
the same transaction writes the audit row (PII/consent, RELIABILITY D3) and the timeline row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from kizuna.core import jp
from kizuna.core.audit import Actor, audit_record, diff
from kizuna.core.models import AuditLog
from kizuna.customers.models import (
    Consent,
    ConsentChannel,
    ConsentEvent,
    ConsentMethod,
    Customer,
    Identity,
    IdentityKind,
    TimelineKind,
)
from kizuna.customers.timeline import timeline_add

# Profile fields a service may set; search keys and timestamps are derived, never set directly.
PROFILE_FIELDS = frozenset(
    {
        "family_name",
        "given_name",
        "family_kana",
        "given_kana",
        "company",
        "postal_code",
        "prefecture",
        "address1",
        "address2",
        "birthday",
        "gender",
        "acquisition_channel",
        "registered_at",
        "member_status",
        "notes",
    }
)

_IDENTITY_NORMALISERS = {
    IdentityKind.EMAIL: jp.normalize_email,
    IdentityKind.PHONE: jp.normalize_phone,
    IdentityKind.PBX_CALLER: jp.normalize_phone,
    IdentityKind.CART_MEMBER: jp.normalize_identifier,
    IdentityKind.LINE_USER: jp.normalize_identifier,
    IdentityKind.CHAT: jp.normalize_identifier,
}


def _clean_profile(fields: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - PROFILE_FIELDS
    if unknown:
        raise ValidationError(f"変更できない項目です: {', '.join(sorted(unknown))}")
    cleaned: dict[str, Any] = {}
    try:
        for name, value in fields.items():
            if name == "postal_code" and value:
                cleaned[name] = jp.normalize_postal_code(value)
            elif name == "prefecture" and value not in (None, ""):
                cleaned[name] = jp.prefecture_code(value)
            elif name in {"family_kana", "given_kana"} and value:
                cleaned[name] = jp.normalize_kana(value)
            elif isinstance(value, str) and name != "notes":
                cleaned[name] = jp.clean_text(value)
            else:
                cleaned[name] = value
    except jp.NormalisationError as exc:
        raise ValidationError({name: str(exc)}) from exc
    return cleaned


def _field_label(name: str) -> str:
    field = Customer._meta.get_field(name)
    return str(getattr(field, "verbose_name", name))


def normalize_identity(kind: IdentityKind, value: str) -> str:
    try:
        return str(_IDENTITY_NORMALISERS[kind](value))
    except jp.NormalisationError as exc:
        raise ValidationError({"value": str(exc)}) from exc


def customer_prepare(profile: Mapping[str, Any]) -> tuple[Customer, dict[str, Any]]:
    """A new, unsaved customer from `profile`, validated, and the cleaned fields (for the audit
    row). Shared by `customer_create` and bulk resolution, which inserts many at once."""
    fields = _clean_profile(profile)
    fields.setdefault("registered_at", timezone.now())
    if not fields.get("family_name"):
        raise ValidationError({"family_name": "姓は必須です"})
    customer = Customer(**fields)
    # The one check constraint (prefecture 1–47) is the field's choices, checked here already;
    # validating constraints too would cost a database query per customer.
    customer.full_clean(exclude=["name_key", "kana_key"], validate_constraints=False)
    customer.refresh_search_keys()  # bulk_create does not call save(), which keeps them
    return customer, fields


@transaction.atomic
def customer_create(
    *,
    acting_user: Any,
    profile: Mapping[str, Any],
    identities: Mapping[IdentityKind, str] | None = None,
) -> Customer:
    """Create a customer with identities. Refuses an identity that belongs to someone else."""
    actor = Actor.of(acting_user)
    customer, fields = customer_prepare(profile)
    customer.save()
    audit_record(
        actor=actor,
        action="customer.create",
        instance=customer,
        customer_id=customer.pk,
        changes=diff({}, fields),
    )
    timeline_add(
        customer=customer,
        kind=TimelineKind.PROFILE,
        title="顧客登録",
        occurred_at=customer.registered_at,
        ref=customer,
    )
    for kind, value in (identities or {}).items():
        identity_add(customer=customer, kind=kind, value=value, acting_user=actor)
    return customer


# The audit action of an APPI erasure (customers.privacy). An erased record takes no new
# personal data: it stays anonymous, and a returning person is a new customer.
ERASE_ACTION = "customer.erase"
# What an erased record is called everywhere it is shown (its family name after erasure).
ERASED_NAME = "削除済み(匿名化)"


def is_erased(customer: Customer) -> bool:
    # Every erased record carries ERASED_NAME, so other records need no audit lookup.
    if customer.family_name != ERASED_NAME:
        return False
    return AuditLog.objects.filter(
        customer_id=customer.pk, action=ERASE_ACTION, entity=Customer._meta.label
    ).exists()


def _refuse_if_erased(customer: Customer) -> None:
    if is_erased(customer):
        raise ValidationError(
            "この顧客の個人データは削除(匿名化)済みのため、変更できません。"
            "同じ方から新たにご連絡があった場合は新しい顧客として登録してください"
        )


@transaction.atomic
def customer_update(
    *, customer: Customer, changes: Mapping[str, Any], acting_user: Any
) -> Customer:
    """Change profile fields; the audit row records each field's old and new value."""
    cleaned = _clean_profile(changes)
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    _refuse_if_erased(customer)
    old = {name: getattr(customer, name) for name in cleaned}
    changed = diff(old, cleaned)
    if not changed:
        return customer
    for name, value in cleaned.items():
        setattr(customer, name, value)
    customer.full_clean(exclude=["name_key", "kana_key"])
    customer.save()
    audit_record(
        actor=Actor.of(acting_user),
        action="customer.update",
        instance=customer,
        customer_id=customer.pk,
        changes=changed,
    )
    timeline_add(
        customer=customer,
        kind=TimelineKind.PROFILE,
        title="顧客情報を変更: " + "、".join(_field_label(name) for name in changed),
        occurred_at=timezone.now(),
        ref=customer,
    )
    return customer


@transaction.atomic
def identity_add(
    *, customer: Customer, kind: IdentityKind, value: str, acting_user: Any, source: str = ""
) -> Identity:
    """Link an external ID to the customer. The same ID on another customer is an error:
    merging is a separate, reviewed step."""
    key = normalize_identity(kind, value)
    existing = Identity.objects.filter(kind=kind, value=key).first()
    if existing is not None:
        if existing.customer_id == customer.pk:
            return existing
        raise ValidationError({"value": "この識別子は別の顧客に登録されています"})
    _refuse_if_erased(customer)
    identity = Identity.objects.create(
        customer=customer, kind=kind, value=key, display_value=jp.nfkc(value), source=source
    )
    audit_record(
        actor=Actor.of(acting_user),
        action="identity.add",
        instance=identity,
        customer_id=customer.pk,
        changes={"kind": [None, kind.value], "value": [None, key]},
    )
    return identity


@transaction.atomic
def consent_grant(
    *,
    customer: Customer,
    channel: ConsentChannel,
    method: ConsentMethod,
    source_form: str,
    wording_version: str,
    acting_user: Any,
    at: dt.datetime | None = None,
) -> Consent:
    """Record consent with the evidence the law asks for (特定電子メール法: when, how, which
    form and wording). Consent without a form and wording version is refused."""
    if not source_form or not wording_version:
        raise ValidationError("同意の証跡(取得フォームと文言バージョン)は必須です")
    _refuse_if_erased(customer)
    return _consent_change(
        customer=customer,
        channel=channel,
        granted=True,
        method=method,
        source_form=source_form,
        wording_version=wording_version,
        actor=Actor.of(acting_user),
        at=at or timezone.now(),
    )


@transaction.atomic
def consent_withdraw(
    *,
    customer: Customer,
    channel: ConsentChannel,
    method: ConsentMethod,
    acting_user: Any,
    at: dt.datetime | None = None,
) -> Consent:
    """Opt the customer out of one channel. Takes effect at once; the grant evidence is kept."""
    return _consent_change(
        customer=customer,
        channel=channel,
        granted=False,
        method=method,
        source_form="",
        wording_version="",
        actor=Actor.of(acting_user),
        at=at or timezone.now(),
    )


def _consent_change(
    *,
    customer: Customer,
    channel: ConsentChannel,
    granted: bool,
    method: ConsentMethod,
    source_form: str,
    wording_version: str,
    actor: Actor,
    at: dt.datetime,
) -> Consent:
    consent, _ = Consent.objects.select_for_update().get_or_create(
        customer=customer, channel=channel
    )
    old = {"granted": consent.granted, "opted_out_at": consent.opted_out_at}
    if granted:
        consent.granted = True
        consent.granted_at = at
        consent.method = method
        consent.source_form = source_form
        consent.wording_version = wording_version
        consent.opted_out_at = None
    else:
        consent.granted = False
        consent.opted_out_at = at
    consent.save()
    action = ConsentEvent.Action.GRANT if granted else ConsentEvent.Action.WITHDRAW
    ConsentEvent.objects.create(
        customer=customer,
        channel=channel,
        action=action,
        at=at,
        method=method,
        source_form=source_form,
        wording_version=wording_version,
        recorded_by=actor.label,
    )
    audit_record(
        actor=actor,
        action=f"consent.{action.value}",
        instance=consent,
        customer_id=customer.pk,
        changes=diff(old, {"granted": consent.granted, "opted_out_at": consent.opted_out_at}),
    )
    verb = "同意" if granted else "配信停止"
    timeline_add(
        customer=customer,
        kind=TimelineKind.CONSENT,
        title=f"{ConsentChannel(channel).label}: {verb}",
        occurred_at=at,
        ref=consent,
        detail={"method": method.value, "source_form": source_form, "wording": wording_version},
    )
    return consent
