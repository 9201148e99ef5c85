"""Write paths for customers, identities and consent.

Each function is one use case: it validates and normalises its input, changes the rows, and in
the same transaction writes the audit row (PII/consent, RELIABILITY D3) and the timeline row.
Bulk writers (CSV import) use the `…_many` forms, which do the same for a batch in a constant
number of statements; `customer_update` and `consent_grant` are their one-item case.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from kizuna.core import jp
from kizuna.core.audit import AUDIT_COLUMNS, Actor, audit_record, audit_values, diff
from kizuna.core.bulk import insert_instances, insert_rows, update_fields
from kizuna.core.models import AuditLog
from kizuna.core.races import retry_lost_race, unique_clash
from kizuna.customers.models import (
    REMOVABLE_IDENTITY_KINDS,
    SEARCH_KEY_FIELDS,
    Consent,
    ConsentChannel,
    ConsentEvent,
    ConsentMethod,
    Customer,
    Identity,
    IdentityKind,
    TimelineEvent,
    TimelineKind,
)
from kizuna.customers.timeline import TIMELINE_COLUMNS, timeline_add, timeline_values

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


# What a consent row records of the customer's current choice (merge.py compares and carries
# these; the consent writers update them).
CONSENT_STATE_FIELDS = (
    "granted",
    "granted_at",
    "method",
    "source_form",
    "wording_version",
    "opted_out_at",
)


# A postal address is one block: a street with another address's building or postal code sends
# parcels nowhere (merge.py fills it whole, `ProfileChange.whole_address` replaces it whole).
ADDRESS_FIELDS = ("postal_code", "prefecture", "address1", "address2")
_NO_ADDRESS: dict[str, Any] = {
    "postal_code": "",
    "prefecture": None,
    "address1": "",
    "address2": "",
}


# The readings, as their refusal names them: operators and carts call them フリガナ(セイ/メイ).
READING_LABELS = {"family_kana": "フリガナ(セイ)", "given_kana": "フリガナ(メイ)"}


def _clean_profile(fields: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - PROFILE_FIELDS
    if unknown:
        raise ValidationError(f"変更できない項目です: {', '.join(sorted(unknown))}")
    cleaned: dict[str, Any] = {}
    # Every bad field at once, each under its name: a form shows them all after one send.
    errors: dict[str, str] = {}
    for name, value in fields.items():
        try:
            if name == "postal_code" and value:
                cleaned[name] = jp.normalize_postal_code(value)
            elif name == "prefecture" and value not in (None, ""):
                cleaned[name] = jp.prefecture_code(value)
            elif name in READING_LABELS and value:
                cleaned[name] = jp.normalize_reading(value, READING_LABELS[name])
            elif name == "birthday" and value is not None:
                cleaned[name] = _birthday(value)
            elif isinstance(value, str) and name != "notes":
                cleaned[name] = jp.clean_text(value)
            else:
                cleaned[name] = value
        except jp.NormalisationError as exc:
            errors[name] = str(exc)
    if errors:
        raise ValidationError(errors)
    return cleaned


EARLIEST_BIRTHDAY = dt.date(1900, 1, 1)


def _birthday(value: Any) -> Any:
    """A birthday that can be one: not in the future (a typo such as 2999, or the order date
    in the wrong column), not before 1900. Birthday scenarios and age segments read it."""
    if isinstance(value, dt.date) and not (EARLIEST_BIRTHDAY <= value <= timezone.localdate()):
        raise jp.NormalisationError("生年月日は1900年1月1日から今日までの日付にしてください")
    return value


def _field_label(name: str) -> str:
    field = Customer._meta.get_field(name)
    return str(getattr(field, "verbose_name", name))


def normalize_identity(kind: IdentityKind, value: str) -> str:
    try:
        return str(_IDENTITY_NORMALISERS[kind](value))
    except jp.NormalisationError as exc:
        raise ValidationError({"value": str(exc)}) from exc


def _validate_profile(customer: Customer) -> None:
    """Field validation of a new or changed customer (the search keys are derived, not input).
    The one check constraint (prefecture 1–47) is the field's choices, checked here already;
    validating constraints too would cost a database query per customer."""
    customer.full_clean(exclude=list(SEARCH_KEY_FIELDS), validate_constraints=False)


def customer_prepare(profile: Mapping[str, Any]) -> tuple[Customer, dict[str, Any]]:
    """A new, unsaved customer from `profile`, validated, and the cleaned fields (for the audit
    row). Shared by `customer_create` and bulk resolution, which inserts many at once."""
    fields = _clean_profile(profile)
    fields.setdefault("registered_at", timezone.now())
    if not fields.get("family_name"):
        raise ValidationError({"family_name": "姓は必須です"})
    customer = Customer(**fields)
    _validate_profile(customer)
    customer.refresh_search_keys()  # bulk inserts do not call save(), which keeps them
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
    return customer.pk in _erased_ids([customer])


def _erased_ids(customers: Iterable[Customer]) -> set[int]:
    """The erased ones among `customers`, in one query. Every erased record carries
    ERASED_NAME, so other records need no audit lookup."""
    return erased_among([c.pk for c in customers if c.family_name == ERASED_NAME])


def erased_among(named: list[int]) -> set[int]:
    """Those of `named` (records carrying ERASED_NAME) that an erasure's audit row confirms
    erased: the name alone could have been typed by staff."""
    if not named:
        return set()
    found = AuditLog.objects.filter(
        customer_id__in=named, action=ERASE_ACTION, entity=Customer._meta.label
    ).values_list("customer_id", flat=True)
    return {pk for pk in found if pk is not None}


_ERASED_REFUSAL = (
    "この顧客の個人データは削除(匿名化)済みのため、変更できません。"
    "同じ方から新たにご連絡があった場合は新しい顧客として登録してください"
)


def refuse_if_erased(customer: Customer) -> None:
    """Raise ValidationError (the same Japanese message as a refused profile update) when the
    customer is erased: an anonymous record takes no new personal data nor new activity
    (subscriptions, points). Reads `customer` as given: pass the row read (and locked) in the
    writing transaction, not an instance read before, which may predate the erasure."""
    if is_erased(customer):
        raise ValidationError(_ERASED_REFUSAL)


@dataclass(frozen=True)
class ProfileChange:
    """Profile fields to change on one customer: a request to `customers_update_many`.

    `whole_address`: the source states the customer's whole address whenever it gives one (a
    cart's member export). When the address parts in `changes` differ from the stored ones,
    the customer has moved, and the parts `changes` lacks (a column the file does not have)
    are emptied: they belonged to the old address. Otherwise, as for a form or a PATCH, fields
    not in `changes` stay as they are."""

    customer: Customer
    changes: Mapping[str, Any]
    whole_address: bool = False


@dataclass(frozen=True)
class ProfileUpdate:
    """The customer as stored after the change, and whether the change changed anything."""

    customer: Customer
    changed: bool


def customer_update(
    *, customer: Customer, changes: Mapping[str, Any], acting_user: Any
) -> Customer:
    """Change profile fields; the audit row records each field's old and new value. The
    one-customer case of `customers_update_many`: raises ValidationError for a change that
    cannot be stored."""
    (result,) = customers_update_many([ProfileChange(customer, changes)], acting_user=acting_user)
    if isinstance(result, ValidationError):
        raise result
    return result.customer


@transaction.atomic
def customers_update_many(
    changes: Sequence[ProfileChange], *, acting_user: Any
) -> list[ProfileUpdate | ValidationError]:
    """Apply each change as if one after another (the same customer twice: the second sees
    the first), in a constant number of statements: the customers are read and locked in one
    query, compared in Python, and written with one bulk UPDATE, their audit and timeline rows
    with one INSERT each. A change that cannot be stored gets its ValidationError in its place
    and writes nothing; the others are applied."""
    actor = Actor.of(acting_user)
    # Locked in id order, so two writers updating the same customers wait instead of deadlocking.
    stored = {
        customer.pk: customer
        for customer in Customer.objects.select_for_update()
        .filter(pk__in={change.customer.pk for change in changes})
        .order_by("pk")
    }
    erased = _erased_ids(stored.values())
    now = timezone.now()
    results: list[ProfileUpdate | ValidationError] = []
    saved: dict[int, Customer] = {}
    fields: set[str] = set()
    audit: list[tuple[Any, ...]] = []
    timeline: list[tuple[Any, ...]] = []
    for change in changes:
        customer = stored.get(change.customer.pk)
        if customer is None:
            raise Customer.DoesNotExist(f"顧客 {change.customer.pk} は存在しません")
        try:
            changed = _apply_profile(
                customer,
                change.changes,
                erased=customer.pk in erased,
                whole_address=change.whole_address,
            )
        except ValidationError as exc:
            results.append(exc)
            continue
        results.append(ProfileUpdate(customer, bool(changed)))
        if not changed:
            continue
        customer.updated_at = now  # update_fields neither applies auto_now nor calls save()
        customer.refresh_search_keys()
        saved[customer.pk] = customer
        fields.update(changed)
        audit.append(
            audit_values(
                actor=actor,
                action="customer.update",
                entity=Customer,
                entity_id=customer.pk,
                customer_id=customer.pk,
                changes=changed,
                at=now,
            )
        )
        timeline.append(
            timeline_values(
                customer_id=customer.pk,
                kind=TimelineKind.PROFILE,
                title="顧客情報を変更: " + "、".join(_field_label(name) for name in changed),
                occurred_at=now,
                ref=customer,
            )
        )
    update_fields(list(saved.values()), sorted(fields | {*SEARCH_KEY_FIELDS, "updated_at"}))
    # The audit and timeline rows as plain rows (kizuna.core.bulk), as resolution writes them.
    insert_rows(AuditLog, AUDIT_COLUMNS, audit, now=now)
    insert_rows(TimelineEvent, TIMELINE_COLUMNS, timeline, now=now)
    return results


def _apply_profile(
    customer: Customer, changes: Mapping[str, Any], *, erased: bool, whole_address: bool
) -> dict[str, list[Any]]:
    """Set the cleaned changes on `customer` and validate it; returns what changed. A refused
    change leaves `customer` as it was, for the next change of the same customer.
    `whole_address`: see ProfileChange."""
    cleaned = _clean_profile(changes)
    if erased:
        raise ValidationError(_ERASED_REFUSAL)
    given = [name for name in ADDRESS_FIELDS if name in cleaned]
    if whole_address and any(cleaned[name] != getattr(customer, name) for name in given):
        cleaned = {**_NO_ADDRESS, **cleaned}
    old = {name: getattr(customer, name) for name in cleaned}
    changed = diff(old, cleaned)
    if not changed:
        return changed
    for name, value in cleaned.items():
        setattr(customer, name, value)
    try:
        _validate_profile(customer)
    except ValidationError:
        for name, value in old.items():
            setattr(customer, name, value)
        raise
    return changed


@transaction.atomic
def identity_add(
    *, customer: Customer, kind: IdentityKind, value: str, acting_user: Any, source: str = ""
) -> Identity:
    """Link an external ID to the customer. The same ID on another customer is an error:
    merging is a separate, reviewed step. One the customer already has is given again (a
    customer going back to an earlier address): observed now, it is where messages of its
    kind go from now on, as a new one would be (Identity.observed_at)."""
    key = normalize_identity(kind, value)
    existing = Identity.objects.filter(kind=kind, value=key).first()
    if existing is not None:
        if existing.customer_id == customer.pk:
            now = timezone.now()
            Identity.objects.filter(pk=existing.pk).update(observed_at=now, updated_at=now)
            audit_record(
                actor=Actor.of(acting_user),
                action="identity.add",
                instance=existing,
                customer_id=customer.pk,
                changes=diff({"observed_at": existing.observed_at}, {"observed_at": now}),
            )
            existing.observed_at = existing.updated_at = now
            return existing
        raise ValidationError({"value": "この識別子は別の顧客に登録されています"})
    refuse_if_erased(customer)
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
def identity_remove(*, identity: Identity, acting_user: Any) -> None:
    """Take an e-mail address or phone number off the customer (one typed wrong, or one the
    customer no longer has): messages then go to the newest one left. Audited with the value,
    as its addition was. Read under the customer's lock, as erasure and merge take it."""
    if identity.kind not in REMOVABLE_IDENTITY_KINDS:
        raise ValidationError("この種類の識別子は、連携元のシステムが付けるため削除できません")
    customer = Customer.objects.select_for_update().get(pk=identity.customer_id)
    refuse_if_erased(customer)
    removed = Identity.objects.filter(pk=identity.pk, customer=customer).delete()[0]
    if not removed:
        raise ValidationError("この識別子はすでに削除されているか、別の顧客に移っています")
    audit_record(
        actor=Actor.of(acting_user),
        action="identity.remove",
        instance=identity,
        customer_id=customer.pk,
        changes={"kind": [identity.kind, None], "value": [identity.value, None]},
    )


@dataclass(frozen=True)
class ConsentGrant:
    """Consent of one customer for one channel, with its evidence: a request to
    `consents_grant_many`."""

    customer: Customer
    channel: ConsentChannel
    method: ConsentMethod
    source_form: str
    wording_version: str
    at: dt.datetime | None = None


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
    form and wording). Consent without a form and wording version is refused. The one-grant
    case of `consents_grant_many`."""
    grant = ConsentGrant(customer, channel, method, source_form, wording_version, at)
    (result,) = consents_grant_many([grant], acting_user=acting_user)
    if isinstance(result, ValidationError):
        raise result
    return result


@transaction.atomic
def consents_grant_many(
    grants: Sequence[ConsentGrant], *, acting_user: Any
) -> list[Consent | ValidationError]:
    """Record each grant as if one after another, in a constant number of statements. A grant
    without its evidence, or for an erased record, gets its ValidationError in its place and
    writes nothing; the others are recorded."""
    erased = _erased_ids(grant.customer for grant in grants)
    now = timezone.now()
    results: list[Consent | ValidationError | None] = []
    changes: list[_ConsentChange] = []
    for grant in grants:
        if not grant.source_form or not grant.wording_version:
            results.append(ValidationError("同意の証跡(取得フォームと文言バージョン)は必須です"))
        elif grant.customer.pk in erased:
            results.append(ValidationError(_ERASED_REFUSAL))
        else:
            results.append(None)
            changes.append(
                _ConsentChange(
                    customer=grant.customer,
                    channel=grant.channel,
                    granted=True,
                    method=grant.method,
                    source_form=grant.source_form,
                    wording_version=grant.wording_version,
                    at=grant.at or now,
                )
            )
    consents = iter(_consents_change(changes, actor=Actor.of(acting_user)))
    return [next(consents) if result is None else result for result in results]


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
    change = _ConsentChange(
        customer=customer,
        channel=channel,
        granted=False,
        method=method,
        source_form="",
        wording_version="",
        at=at or timezone.now(),
    )
    (consent,) = _consents_change([change], actor=Actor.of(acting_user))
    return consent


@dataclass(frozen=True)
class _ConsentChange:
    customer: Customer
    channel: ConsentChannel
    granted: bool
    method: ConsentMethod
    source_form: str
    wording_version: str
    at: dt.datetime


def _consents_change(changes: list[_ConsentChange], *, actor: Actor) -> list[Consent]:
    """Grant or withdraw, in order, in a constant number of statements: each customer's
    consent row for the channel is read and locked (or created), changed, and the grant or
    opt-out appended as a ConsentEvent with its audit and timeline rows.

    Two writers creating the same consent row at once (get_or_create's race): the unique
    (customer, channel) index lets one win; the loser rolls back to a savepoint, reads again
    and applies its changes to the winner's row."""
    return retry_lost_race(
        lambda: _consents_write(changes, actor=actor),
        lost=unique_clash("consent_one_per_channel", "customers_consent."),
    )


def _consents_write(changes: list[_ConsentChange], *, actor: Actor) -> list[Consent]:
    if not changes:
        return []
    keys = {(change.customer.pk, str(change.channel)) for change in changes}
    # Locked in one order, so two writers wait on each other instead of deadlocking.
    stored = {
        (consent.customer_id, consent.channel): consent
        for consent in Consent.objects.select_for_update()
        .filter(
            customer_id__in={pk for pk, _ in keys}, channel__in={channel for _, channel in keys}
        )
        .order_by("customer_id", "channel")
        if (consent.customer_id, consent.channel) in keys
    }
    new = {key: Consent(customer_id=key[0], channel=key[1]) for key in sorted(keys - stored.keys())}
    rows = {**stored, **new}
    now = timezone.now()
    done: list[tuple[_ConsentChange, Consent, dict[str, list[Any]]]] = []
    for change in changes:
        consent = rows[(change.customer.pk, str(change.channel))]
        old = {"granted": consent.granted, "opted_out_at": consent.opted_out_at}
        if change.granted:
            consent.granted = True
            consent.granted_at = change.at
            consent.method = change.method
            consent.source_form = change.source_form
            consent.wording_version = change.wording_version
            consent.opted_out_at = None
        else:
            consent.granted = False
            consent.opted_out_at = change.at
        consent.updated_at = now  # update_fields does not apply auto_now
        new_state = {"granted": consent.granted, "opted_out_at": consent.opted_out_at}
        done.append((change, consent, diff(old, new_state)))
    # As plain rows (kizuna.core.bulk); the new rows with reserved ids, needed below.
    insert_instances(list(new.values()))
    update_fields(list(stored.values()), [*CONSENT_STATE_FIELDS, "updated_at"])
    events: list[ConsentEvent] = []
    audit: list[tuple[Any, ...]] = []
    timeline: list[tuple[Any, ...]] = []
    for change, consent, changed in done:
        action = ConsentEvent.Action.GRANT if change.granted else ConsentEvent.Action.WITHDRAW
        events.append(
            ConsentEvent(
                customer=change.customer,
                channel=change.channel,
                action=action,
                at=change.at,
                method=change.method,
                source_form=change.source_form,
                wording_version=change.wording_version,
                recorded_by=actor.label,
            )
        )
        audit.append(
            audit_values(
                actor=actor,
                action=f"consent.{action.value}",
                entity=Consent,
                entity_id=consent.pk,
                customer_id=change.customer.pk,
                changes=changed,
                at=now,
            )
        )
        verb = "同意" if change.granted else "配信停止"
        timeline.append(
            timeline_values(
                customer_id=change.customer.pk,
                kind=TimelineKind.CONSENT,
                title=f"{ConsentChannel(change.channel).label}: {verb}",
                occurred_at=change.at,
                ref=consent,
                detail={
                    "method": change.method.value,
                    "source_form": change.source_form,
                    "wording": change.wording_version,
                },
            )
        )
    insert_instances(events)
    insert_rows(AuditLog, AUDIT_COLUMNS, audit, now=now)
    insert_rows(TimelineEvent, TIMELINE_COLUMNS, timeline, now=now)
    return [consent for _, consent, _ in done]
