"""Whether a message may go to a customer on a channel, decided at send time (S4, S6, S7).

Everything a batch needs is loaded in a few queries (`Audience.load`) and the per-message
checks are pure functions of it, so a batch of 100 messages costs a handful of queries (the
同梱物 orders, when the batch has inserts, one more).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from django.db.models import Exists, OuterRef, Q

from kizuna.campaigns import channels
from kizuna.campaigns.models import Channel, Suppression, SuppressionKind, SuppressionReason
from kizuna.campaigns.suppression import address_hash
from kizuna.commerce.models import Order, OrderStatus, Shipment
from kizuna.customers.models import (
    IDENTITY_NEWEST_FIRST,
    AcquisitionChannel,
    Consent,
    ConsentChannel,
    Customer,
    Identity,
    IdentityKind,
    MemberStatus,
)
from kizuna.customers.services import ERASED_NAME

CONSENT_FOR: dict[str, ConsentChannel] = {
    Channel.EMAIL: ConsentChannel.EMAIL,
    Channel.LINE: ConsentChannel.LINE,
    Channel.SMS: ConsentChannel.SMS,
    Channel.POSTAL: ConsentChannel.POSTAL,
    Channel.CALL: ConsentChannel.PHONE,
}
# A 同梱物 travels in the parcel the customer ordered and an on-site message is shown on the
# shop's own pages to a logged-in member: neither is sent to an address, so neither needs an
# opt-in. A postal DM opt-out ("no paper advertising") still stops inserts.
NO_CONSENT_NEEDED = frozenset({Channel.INSERT, Channel.ONSITE})

SUPPRESSION_KIND: dict[str, SuppressionKind] = {
    Channel.EMAIL: SuppressionKind.EMAIL,
    Channel.LINE: SuppressionKind.LINE_USER,
    Channel.SMS: SuppressionKind.PHONE,
    Channel.CALL: SuppressionKind.PHONE,
}
# An address that bounced does not exist: nothing can reach it, transactional mail included.
# A complaint or a manual entry is the person saying "no marketing", which never blocks the
# mail they need (S6).
DEAD_ADDRESS = frozenset({SuppressionReason.BOUNCE, SuppressionReason.SMTP_REJECT})

# "The channel follows the customer" (PRODUCT 3): SNS and LINE customers on LINE, web customers
# by e-mail, phone and paper customers by letter and phone; then whatever else they allow.
BEST_ORDER: dict[str, tuple[str, ...]] = {
    AcquisitionChannel.SNS: (Channel.LINE, Channel.EMAIL, Channel.SMS),
    AcquisitionChannel.LINE: (Channel.LINE, Channel.EMAIL, Channel.SMS),
    AcquisitionChannel.WEB_AD: (Channel.EMAIL, Channel.LINE),
    AcquisitionChannel.AFFILIATE: (Channel.EMAIL, Channel.LINE),
    AcquisitionChannel.PHONE: (Channel.POSTAL, Channel.CALL),
    AcquisitionChannel.PAPER: (Channel.POSTAL, Channel.CALL),
}
BEST_FALLBACK = (Channel.EMAIL, Channel.LINE, Channel.POSTAL)

_MOBILE_PREFIXES = ("+8170", "+8180", "+8190")
# The identities each channel is addressed by, most specific first.
IDENTITY_FOR: dict[str, tuple[IdentityKind, ...]] = {
    Channel.EMAIL: (IdentityKind.EMAIL,),
    Channel.LINE: (IdentityKind.LINE_USER,),
    Channel.SMS: (IdentityKind.PHONE,),
    Channel.CALL: (IdentityKind.PHONE, IdentityKind.PBX_CALLER),
    Channel.ONSITE: (IdentityKind.CART_MEMBER,),
}

NO_CONSENT = "配信同意がありません"
OPTED_OUT = "配信停止済みです"
NO_EVIDENCE = "同意の証跡(日時・方法・取得フォーム・文言バージョン)が不足しています"
WITHDRAWN = "退会済みの顧客です"
NO_BEST = "送信できるチャネルがありません(同意・宛先・配信停止を確認してください)"
ERASED = "個人データを削除(匿名化)済みの顧客です"
MERGED = "他の顧客に統合済みの記録です"
# A 同梱物 goes into a parcel the warehouse has not sent yet, or nowhere: see Audience.parcel.
NO_PARCEL = "同梱できる未出荷の注文がありません"


def unreachable_reason(customer: Customer, consent: ConsentChannel) -> str | None:
    """Why a consent recorded now would still carry no marketing message on the channel: no
    address for it, or its address on the suppression list (the send-time checks, S4, would
    skip every message). Staff recording a consent are told before they save it."""
    channel = next(ch for ch, granted in CONSENT_FOR.items() if granted == consent)
    audience = Audience.load([customer.pk])
    address = audience.address(customer, channel, {})
    if not address:
        return no_address(channel)
    reason = audience.suppression_reason(channel, address)
    return suppressed(reason) if reason is not None else None


def gone_customers(prefix: str = "") -> Q:
    """Records no message, list row or export may name any more: erased (anonymised, APPI:
    customers.privacy leaves the family name ERASED_NAME and 退会 on them, and nothing else
    does) or merged into another record (`merged_into`: the person's record is the survivor).
    `prefix` is the path to the customer, e.g. "customer__" from the outbox."""
    return Q(**{f"{prefix}merged_into__isnull": False}) | Q(
        **{f"{prefix}family_name": ERASED_NAME, f"{prefix}member_status": MemberStatus.WITHDRAWN}
    )


def no_address(channel: str) -> str:
    if channel == Channel.INSERT:
        return NO_PARCEL
    return f"{Channel(channel).label}の宛先がありません"


def suppressed(reason: str) -> str:
    return f"配信停止アドレスです({SuppressionReason(reason).label})"


class ConsentFacts(NamedTuple):
    """What the send-time checks read of one consent record: a plain row, since a batch
    loads hundreds and a model instance each costs more than every check together."""

    granted: bool
    granted_at: dt.datetime | None
    method: str
    source_form: str
    wording_version: str
    opted_out_at: dt.datetime | None


def consent_problem(consent: ConsentFacts | None) -> str | None:
    """Why a marketing send on this consent is not allowed, or None (S6, S7)."""
    if consent is None:
        return NO_CONSENT
    if not consent.granted:
        return OPTED_OUT if consent.opted_out_at is not None else NO_CONSENT
    evidence = (
        consent.granted_at,
        consent.method,
        consent.source_form,
        consent.wording_version,
    )
    if not all(evidence):
        return NO_EVIDENCE
    return None


def parcels(customer_ids: Iterable[int]) -> dict[int, list[str]]:
    """The orders a 同梱物 can still go into, per customer, newest first: received, not
    cancelled or returned, with no shipment recorded (a parcel that has left cannot take a
    leaflet, and an order the cart reports shipped before the warehouse's shipment file
    arrived has left too). One query for the whole batch."""
    found: dict[int, list[str]] = defaultdict(list)
    ids = list(set(customer_ids))
    if not ids:
        return {}
    for customer_id, number in (
        Order.objects.filter(customer_id__in=ids, status=OrderStatus.RECEIVED)
        .filter(~Exists(Shipment.objects.filter(order=OuterRef("pk"))))
        .order_by("customer_id", "-ordered_at", "-id")
        .values_list("customer_id", "number")
    ):
        found[customer_id].append(number)
    return dict(found)


@dataclass
class Audience:
    """The identities, consents, suppressions and orders of one batch's customers."""

    identities: dict[tuple[int, str], list[str]] = field(default_factory=dict)
    consents: dict[tuple[int, str], ConsentFacts] = field(default_factory=dict)
    suppressions: dict[tuple[str, str], str] = field(default_factory=dict)
    # Erased or merged-away customers of the batch, with the reason nothing goes to them.
    gone: dict[int, str] = field(default_factory=dict)
    customer_ids: frozenset[int] = frozenset()
    # The orders each customer's 同梱物 may go into (`parcels`), read on the first insert.
    insertable: dict[int, list[str]] | None = None

    @classmethod
    def load(cls, customer_ids: Iterable[int], *, with_orders: Iterable[int] = ()) -> Audience:
        """`with_orders`: customers whose inserts name no order. Their orders are then read
        at once, for the whole batch (an insert naming its order is checked against the same
        rows); a batch whose inserts all name theirs reads them on the first one."""
        ids = list(set(customer_ids))
        identities: dict[tuple[int, str], list[str]] = defaultdict(list)
        for customer_id, kind, value in (
            Identity.objects.filter(customer_id__in=ids)
            .order_by(*IDENTITY_NEWEST_FIRST)
            .values_list("customer_id", "kind", "value")
        ):
            identities[(customer_id, kind)].append(value)
        consents = {
            (customer_id, channel): ConsentFacts(*facts)
            for customer_id, channel, *facts in Consent.objects.filter(
                customer_id__in=ids
            ).values_list("customer_id", "channel", *ConsentFacts._fields)
        }
        addresses = {value for values in identities.values() for value in values}
        # An erased customer's addresses are on the list only as hashes (customers.privacy).
        hashed = {address_hash(address): address for address in addresses}
        suppressions = {
            (kind, hashed.get(address, address)): reason
            for kind, address, reason in Suppression.objects.filter(
                address__in=addresses | set(hashed)
            ).values_list("kind", "address", "reason")
        }
        # Both kinds are 退会, so this reads only the batch's withdrawn records.
        gone = {
            pk: MERGED if merged_into is not None else ERASED
            for pk, merged_into in Customer.objects.filter(
                gone_customers(), pk__in=ids, member_status=MemberStatus.WITHDRAWN
            ).values_list("pk", "merged_into_id")
        }
        audience = cls(dict(identities), consents, suppressions, gone, frozenset(ids))
        if list(with_orders):
            audience.insertable = parcels(ids)
        return audience

    def address(self, customer: Customer, channel: str, content: dict[str, str]) -> str:
        """Where a message on `channel` goes for this customer; "" when there is nowhere."""
        cid = customer.pk
        if channel == Channel.POSTAL:
            complete = customer.postal_code and customer.prefecture and customer.address1
            return customer.postal_code if complete else ""
        if channel == Channel.INSERT:
            return self.parcel(cid, content.get("order_number", ""))
        values = [
            value
            for kind in IDENTITY_FOR.get(channel, ())
            for value in self.identities.get((cid, kind), [])
        ]
        if channel == Channel.SMS:
            values = [value for value in values if value.startswith(_MOBILE_PREFIXES)]
        return next(iter(values), "")

    def parcel(self, customer_id: int, order_number: str = "") -> str:
        """The order a 同梱物 goes into: the one named, if it is this customer's and has not
        shipped; with none named, the customer's newest such order; "" when there is none.

        With none, there is nothing to pack the leaflet into and the message is skipped
        (NO_PARCEL), not left pending for a next order. The warehouse packs inserts only into
        parcels not yet sent. A leaflet held back until the customer happens to order again
        would go out months later, its offer expired, inside the very order it was meant to
        bring about; the lift counts every enrolled customer outside the holdout as treated
        whatever became of the message, so waiting would not make the figures truer, only
        later; and the delivery page would show it as waiting for ever. Skipped, it shows on
        the page with the reason, and the marketer can reach customers without an open order
        by postal DM instead."""
        if self.insertable is None:
            self.insertable = parcels(self.customer_ids | {customer_id})
        open_orders = self.insertable.get(customer_id, [])
        if order_number:
            return order_number if order_number in open_orders else ""
        return next(iter(open_orders), "")

    def suppression_reason(self, channel: str, address: str) -> str | None:
        kind = SUPPRESSION_KIND.get(channel)
        if kind is None or not address:
            return None
        return self.suppressions.get((kind, address))

    def _opted_out(self, customer_id: int, channel: ConsentChannel) -> bool:
        consent = self.consents.get((customer_id, channel))
        return consent is not None and not consent.granted and consent.opted_out_at is not None

    def problem(
        self, customer: Customer, channel: str, *, marketing: bool, address: str
    ) -> str | None:
        """Why this message may not go to `address` on `channel`, or None when it may."""
        gone = self.gone.get(customer.pk)
        if gone is not None:
            return gone
        if not address:
            return no_address(channel)
        reason = self.suppression_reason(channel, address)
        if reason is not None and (marketing or reason in DEAD_ADDRESS):
            return suppressed(reason)
        if marketing:
            return self._marketing_problem(customer, channel)
        return None

    def _marketing_problem(self, customer: Customer, channel: str) -> str | None:
        if customer.member_status == MemberStatus.WITHDRAWN:
            return WITHDRAWN
        if channel == Channel.INSERT and self._opted_out(customer.pk, ConsentChannel.POSTAL):
            return OPTED_OUT
        if channel in NO_CONSENT_NEEDED:
            return None
        return consent_problem(self.consents.get((customer.pk, CONSENT_FOR[channel])))

    def best_channel(self, customer: Customer, content: dict[str, str]) -> tuple[str, str] | None:
        """The first channel in the customer's order that may be used, with its address
        (channels the shop has no provider for are passed over: channels.configured)."""
        preferred = BEST_ORDER.get(customer.acquisition_channel, ())
        for channel in dict.fromkeys((*preferred, *BEST_FALLBACK)):
            if not channels.configured(channel):
                continue
            address = self.address(customer, channel, content)
            if self.problem(customer, channel, marketing=True, address=address) is None:
                return channel, address
        return None


def content_for(channel: str, content: dict[str, str]) -> dict[str, str]:
    """The content of a "best channel" message in the shape `channel` renders."""
    heading = content.get("subject") or content.get("title") or ""
    text = content["text"]
    if channel == Channel.EMAIL:
        shaped = {"subject": heading, "text": text}
        if content.get("html"):
            shaped["html"] = content["html"]
        return shaped
    if channel in (Channel.LINE, Channel.SMS):
        return {"text": text}
    if channel in (Channel.POSTAL, Channel.INSERT):
        return {"title": heading, "text": text}
    if channel == Channel.ONSITE:
        return {"title": heading, "text": text, "url": content.get("url", "")}
    if channel == Channel.CALL:
        return {"reason": content.get("reason") or heading, "script": content.get("script") or text}
    return dict(content)
