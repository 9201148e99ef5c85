"""The suppression list: addresses that bounced, complained, or staff blocked.

Adding or removing an address is audited (it is PII) and, when the address belongs to a
customer, shown on their timeline. Bounce and complaint notifications from an ESP arrive as a
signed webhook (POST /api/v1/webhooks/<source>/email-events) or a JSON file (`kizuna campaigns
bounce FILE`); SMTP 5xx refusals are added by the worker itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from kizuna.campaigns.models import Suppression, SuppressionKind, SuppressionReason
from kizuna.core import jp
from kizuna.core.audit import Actor, audit_record
from kizuna.customers.models import Identity, IdentityKind, TimelineKind
from kizuna.customers.timeline import timeline_add

_NORMALISE = {
    # The key without jp.normalize_email's address check: an address stored before that check
    # existed can still bounce, and must still be blockable (and findable on the list).
    SuppressionKind.EMAIL: jp.email_key,
    SuppressionKind.PHONE: jp.normalize_phone,
    SuppressionKind.LINE_USER: jp.normalize_identifier,
}
_IDENTITY_KINDS = {
    SuppressionKind.EMAIL: [IdentityKind.EMAIL],
    SuppressionKind.PHONE: [IdentityKind.PHONE, IdentityKind.PBX_CALLER],
    SuppressionKind.LINE_USER: [IdentityKind.LINE_USER],
}


# Addresses of people whose data was erased (customers.privacy) are kept only as this hash of
# the normalised address: enough to recognise the address when it comes back (an import, an
# API create), not enough to read it.
HASH_PREFIX = "sha256:"
ERASED_DETAIL = "個人データ削除(APPI)の請求により登録"


def address_hash(address: str) -> str:
    """The stored form of a normalised address whose owner's data was erased."""
    return HASH_PREFIX + hashlib.sha256(address.encode()).hexdigest()


def normalise_address(kind: SuppressionKind, address: str) -> str:
    try:
        return str(_NORMALISE[kind](address))
    except jp.NormalisationError as exc:
        raise ValidationError({"address": str(exc)}) from exc


def _owners(kind: SuppressionKind, address: str) -> list[Identity]:
    return list(
        Identity.objects.filter(kind__in=_IDENTITY_KINDS[kind], value=address).select_related(
            "customer"
        )
    )


def _customer_ids(owners: list[Identity]) -> list[int | None]:
    """One audit row per customer holding the address (each customer's history shows it), or
    one without a customer when nobody holds it."""
    return [identity.customer_id for identity in owners] or [None]


@transaction.atomic
def suppression_add(
    *,
    kind: SuppressionKind,
    address: str,
    reason: SuppressionReason,
    acting_user: Any,
    detail: str = "",
) -> tuple[Suppression, bool]:
    """Block an address; (row, created). An address already on the list is left as it is."""
    key = normalise_address(kind, address)
    existing = Suppression.objects.filter(kind=kind, address=key).first()
    if existing is not None:
        return existing, False
    actor = Actor.of(acting_user)
    try:
        with transaction.atomic():
            row = Suppression.objects.create(
                kind=kind, address=key, reason=reason, detail=detail[:500], created_by=actor.label
            )
    except IntegrityError:
        # Another worker suppressed the same address a moment ago.
        return Suppression.objects.get(kind=kind, address=key), False
    owners = _owners(kind, key)
    for customer_id in _customer_ids(owners):
        audit_record(
            actor=actor,
            action="suppression.add",
            instance=row,
            customer_id=customer_id,
            changes={"address": [None, key], "reason": [None, str(reason)]},
        )
    for identity in owners:
        timeline_add(
            customer=identity.customer,
            kind=TimelineKind.CONSENT,
            title=f"{SuppressionKind(kind).label}を配信停止リストに追加({reason.label})",
            occurred_at=timezone.now(),
            ref=row,
        )
    return row, True


@transaction.atomic
def suppression_remove(*, suppression: Suppression, acting_user: Any) -> None:
    """Take an address off the list (e.g. the customer fixed their mailbox)."""
    actor = Actor.of(acting_user)
    owners = _owners(SuppressionKind(suppression.kind), suppression.address)
    for customer_id in _customer_ids(owners):
        audit_record(
            actor=actor,
            action="suppression.remove",
            instance=suppression,
            customer_id=customer_id,
            changes={"address": [suppression.address, None], "reason": [suppression.reason, None]},
        )
    for identity in owners:
        timeline_add(
            customer=identity.customer,
            kind=TimelineKind.CONSENT,
            title=f"{suppression.get_kind_display()}を配信停止リストから削除",
            occurred_at=timezone.now(),
            ref=suppression,
        )
    suppression.delete()


def suppression_add_erased(
    *, kind: SuppressionKind, address: str, customer_id: int, acting_user: Any
) -> Suppression:
    """Block an erased customer's normalised address by its hash, for good.

    A row already holding the address in clear (a bounce, a complaint) keeps its reason and
    becomes the hashed row, so the clear address leaves the database. The audit row names the
    hash only.
    """
    hashed = address_hash(address)
    plain = Suppression.objects.filter(kind=kind, address=address).first()
    row = Suppression.objects.filter(kind=kind, address=hashed).first()
    if row is None and plain is not None:
        plain.address = hashed
        plain.save(update_fields=["address", "updated_at"])
        row = plain
    elif plain is not None:
        plain.delete()
    if row is None:
        row = Suppression.objects.create(
            kind=kind,
            address=hashed,
            reason=SuppressionReason.MANUAL,
            detail=ERASED_DETAIL,
            created_by=Actor.of(acting_user).label,
        )
    audit_record(
        actor=Actor.of(acting_user),
        action="suppression.add",
        instance=row,
        customer_id=customer_id,
        changes={"address": [None, hashed], "reason": [None, str(row.reason)]},
    )
    return row


@dataclass
class NotificationReport:
    added: int = 0
    already: int = 0
    ignored: int = 0
    errors: list[str] = field(default_factory=list)


_TYPES = {"bounce": SuppressionReason.BOUNCE, "complaint": SuppressionReason.COMPLAINT}


def notification_apply(record: Mapping[str, Any], *, acting_user: Any) -> str:
    """Apply one ESP notification: `{"type": "bounce"|"complaint", "email": …, "bounce_type":
    "permanent"|"transient", "detail": …}`. "added" (the address is now suppressed, audited),
    "already" (it was) or "ignored" (a transient bounce: the worker retries those). A record
    that cannot be applied raises ValidationError and changes nothing."""
    kind = str(record.get("type", "")).lower()
    if kind not in _TYPES:
        raise ValidationError("type は bounce か complaint です")
    if kind == "bounce" and str(record.get("bounce_type", "permanent")) != "permanent":
        return "ignored"
    _, created = suppression_add(
        kind=SuppressionKind.EMAIL,
        address=str(record.get("email", "")),
        reason=_TYPES[kind],
        detail=str(record.get("detail", "")),
        acting_user=acting_user,
    )
    return "added" if created else "already"


def notifications_ingest(
    records: Iterable[Mapping[str, Any]], *, acting_user: Any
) -> NotificationReport:
    """Apply ESP notifications (see `notification_apply`), each on its own, so one bad record
    is reported and the rest still apply."""
    report = NotificationReport()
    for number, record in enumerate(records, start=1):
        try:
            outcome = notification_apply(record, acting_user=acting_user)
        except ValidationError as exc:
            report.errors.append(f"{number}件目: {'; '.join(exc.messages)}")
            continue
        setattr(report, outcome, getattr(report, outcome) + 1)
    return report
