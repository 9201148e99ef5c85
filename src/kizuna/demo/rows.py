"""Turn simulated stories into table rows, and write them a chunk at a time.

Rows are plain tuples in the column order of `COLUMNS`, written with kizuna.core.bulk (one
executemany on SQLite, COPY on PostgreSQL per table) instead of model instances and
bulk_create: at a million customers and ~40 rows each, the ORM's per-object and per-field work
was three quarters of the build. The columns a tuple does not give take their model default,
and `created_at`/`updated_at` the moment the chunk is written (as for an import).

Primary keys are assigned here from counters (`Ids`) that carry over from chunk to chunk, so
rows can reference each other before anything is written and nothing needs reading back.
Every row's time comes from the story.

The points ledger is computed here rather than in the simulation because it depends on the
final order totals: points used on an order lower its total, which lowers the points it earns.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from django.db import models
from django.utils import timezone

from kizuna.commerce.models import (
    Order,
    OrderLine,
    OrderReversal,
    OrderStatus,
    ProductKind,
    Shipment,
)
from kizuna.core.bulk import insert_rows
from kizuna.core.jp import name_key, normalize_email, normalize_kana
from kizuna.core.models import AuditLog
from kizuna.customers.models import (
    AcquisitionChannel,
    BehaviourEvent,
    Consent,
    ConsentChannel,
    ConsentEvent,
    ConsentMethod,
    Customer,
    Identity,
    IdentityKind,
    MemberStatus,
    TimelineEvent,
    TimelineKind,
)
from kizuna.demo import story
from kizuna.demo.plan import (
    Calendar,
    PlannedConsent,
    PlannedOrder,
    Story,
    at_time,
    chance,
    days_after,
    wording_version,
    years_later,
)
from kizuna.loyalty.models import PointEntry, PointKind
from kizuna.subscriptions.models import DeliveryStatus, Subscription, SubscriptionDelivery
from kizuna.support.models import Contact, ContactChannel

ACTOR = "system:demo"
SOURCE = "demo"
TaggedCustomer: type[models.Model] = Customer.tags.through

_CONSENT_LABELS = {
    ConsentChannel.EMAIL: "メール",
    ConsentChannel.SMS: "SMS",
    ConsentChannel.LINE: "LINE",
    ConsentChannel.POSTAL: "郵送DM",
    ConsentChannel.PHONE: "電話",
}
_CONTACT_LABELS = dict(ContactChannel.choices)
_CHANNEL_LABELS = dict(AcquisitionChannel.choices)
_FREE_SHIPPING_KINDS = (ProductKind.TRIAL, ProductKind.SAMPLE)
_LINE_ID_MULTIPLIER = 0x9E3779B97F4A7C15F39CC0605CEDC835  # odd: a bijection modulo 2**128
_TRACKING_MULTIPLIER = 982_451_653  # coprime to 10: tracking numbers never repeat


@dataclass
class Ids:
    """The last primary key used in each table (0 for an empty table)."""

    customer: int = 0
    tagging: int = 0
    identity: int = 0
    consent: int = 0
    consent_event: int = 0
    subscription: int = 0
    delivery: int = 0
    order: int = 0
    order_line: int = 0
    shipment: int = 0
    reversal: int = 0
    point: int = 0
    contact: int = 0
    behaviour: int = 0
    timeline: int = 0
    audit: int = 0


Row = tuple[Any, ...]

# The columns of each table, in the order RowMaker's tuples give them (attnames), parents first:
# the order the chunk is inserted in. Columns left out take their model default.
COLUMNS: dict[str, tuple[type[models.Model], tuple[str, ...]]] = {
    "customers": (Customer, (
        "id", "family_name", "given_name", "family_kana", "given_kana", "name_key", "kana_key",
        "given_name_key", "given_kana_key", "company", "postal_code", "prefecture", "address1",
        "address2", "birthday", "gender", "acquisition_channel", "registered_at", "member_status",
        "notes")),
    "taggings": (TaggedCustomer, ("id", "customer_id", "tag_id")),
    "identities": (Identity, (
        "id", "customer_id", "kind", "value", "display_value", "source")),
    "consents": (Consent, (
        "id", "customer_id", "channel", "granted", "granted_at", "method", "source_form",
        "wording_version", "opted_out_at")),
    "consent_events": (ConsentEvent, (
        "id", "customer_id", "channel", "action", "at", "method", "source_form",
        "wording_version", "recorded_by")),
    "subscriptions": (Subscription, (
        "id", "customer_id", "product_id", "quantity", "unit_price", "cycle_kind", "cycle_days",
        "monthly_day", "started_on", "next_delivery_on", "delivery_count", "commitment_count",
        "status", "paused_until", "cancelled_on", "cancel_reason", "cancel_note")),
    "orders": (Order, (
        "id", "number", "customer_id", "ordered_at", "status", "channel", "subtotal", "discount",
        "shipping_fee", "points_used", "total", "payment_method", "source")),
    "order_lines": (OrderLine, (
        "id", "order_id", "product_id", "product_name", "unit_price", "quantity", "amount")),
    "shipments": (Shipment, (
        "id", "order_id", "shipped_on", "delivered_on", "carrier", "tracking_number")),
    "reversals": (OrderReversal, (
        "id", "order_id", "kind", "occurred_at", "reason", "refund_amount")),
    "deliveries": (SubscriptionDelivery, (
        "id", "subscription_id", "sequence", "scheduled_on", "status", "order_id")),
    "point_entries": (PointEntry, (
        "id", "customer_id", "seq", "kind", "amount", "balance_after", "occurred_at",
        "expires_on", "order_id", "reason", "recorded_by")),
    "contacts": (Contact, (
        "id", "customer_id", "occurred_at", "channel", "direction", "reason", "summary",
        "order_id", "subscription_id")),
    "behaviour_events": (BehaviourEvent, (
        "id", "customer_id", "kind", "occurred_at", "product_id", "url", "payload")),
    "timeline_events": (TimelineEvent, (
        "id", "customer_id", "occurred_at", "kind", "title", "detail", "ref_entity", "ref_id")),
    "audit_logs": (AuditLog, (
        "id", "at", "actor_id", "actor_label", "action", "entity", "entity_id", "customer_id",
        "changes")),
}  # fmt: skip


@dataclass
class ChunkRows:
    """The rows of one chunk of customers, one list of tuples per table (see COLUMNS)."""

    tables: dict[str, list[Row]] = field(default_factory=lambda: {name: [] for name in COLUMNS})

    def write(self, using: str) -> dict[str, int]:
        """Insert every table's rows (parents first); returns the number of rows per table.
        Call inside a transaction: a chunk is written whole or not at all."""
        now = timezone.now()
        for name, (model, columns) in COLUMNS.items():
            insert_rows(model, columns, self.tables[name], using=using, now=now)
        return {name: len(rows) for name, rows in self.tables.items()}


class RowMaker:
    """Builds customers' rows into a ChunkRows, taking primary keys from `ids`."""

    def __init__(self, ids: Ids, cal: Calendar, tag_ids: dict[str, int]) -> None:
        self.ids = ids
        self.cal = cal
        self.tag_ids = tag_ids
        self.rows = ChunkRows()

    def timeline(
        self,
        customer_id: int,
        at: dt.datetime,
        kind: TimelineKind,
        title: str,
        *,
        ref: tuple[str, int] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """One line of the customer's timeline; `ref` is (entity label, id) of its row."""
        self.ids.timeline += 1
        self.rows.tables["timeline_events"].append(
            (
                self.ids.timeline,
                customer_id,
                at,
                kind,
                title,
                detail or {},
                ref[0] if ref else "",
                ref[1] if ref else None,
            )
        )

    def add(self, st: Story, rng: random.Random) -> None:
        """All rows of one customer. `rng` continues the customer's own random stream."""
        profile = st.profile
        self.ids.customer += 1
        cid = self.ids.customer
        # The simulation derived e-mail addresses and phone numbers from this id.
        assert cid == profile.customer_id  # noqa: S101
        family, given = profile.family, profile.given
        self.rows.tables["customers"].append(
            (
                cid,
                family.kanji,
                given.kanji,
                family.kana,
                given.kana,
                # The search keys Customer.save() would set (refresh_search_keys).
                name_key(family.kanji + given.kanji),
                normalize_kana(family.kana + given.kana),
                name_key(given.kanji),
                normalize_kana(given.kana),
                profile.company,
                profile.postal_code,
                profile.prefecture,
                profile.address1,
                profile.address2,
                profile.birthday,
                profile.gender,
                profile.channel,
                profile.registered_at,
                st.member_status,
                profile.notes,
            )
        )
        self.ids.audit += 1
        self.rows.tables["audit_logs"].append(
            (
                self.ids.audit,
                profile.registered_at,
                None,
                ACTOR,
                "customer.create",
                "customers.Customer",
                str(cid),
                cid,
                {},
            )
        )
        title = f"顧客登録(獲得経路: {_CHANNEL_LABELS[profile.channel]})"
        ref = ("customers.Customer", cid)
        self.timeline(cid, profile.registered_at, TimelineKind.PROFILE, title, ref=ref)
        self._consents(st)
        self._identities(st)
        sub_ids = self._subscriptions(st)
        _OrderWriter(self, st, rng).write()
        self._deliveries(st, sub_ids)
        self._contacts(st, sub_ids)
        for at, channel, title in sorted(st.messages):
            self.timeline(cid, at, TimelineKind.MESSAGE, title, detail={"channel": channel})
        self._behaviour(st)
        self._tags(st, rng)
        if st.withdrawn_at is not None:
            self.timeline(cid, st.withdrawn_at, TimelineKind.PROFILE, "退会", ref=ref)

    # --- identities and consent --------------------------------------------------------------

    def _identity(self, cid: int, kind: IdentityKind, value: str, display: str) -> None:
        self.ids.identity += 1
        self.rows.tables["identities"].append(
            (self.ids.identity, cid, kind, value, display, SOURCE)
        )

    def _identities(self, st: Story) -> None:
        profile = st.profile
        cid = profile.customer_id
        if profile.email_display:
            email = normalize_email(profile.email_display)
            self._identity(cid, IdentityKind.EMAIL, email, profile.email_display)
        if profile.phone_national:
            e164 = "+81" + profile.phone_national[1:]  # what jp.normalize_phone returns
            self._identity(cid, IdentityKind.PHONE, e164, profile.phone_display)
            if profile.has_pbx_caller:  # the PBX reports the caller's number without hyphens
                self._identity(cid, IdentityKind.PBX_CALLER, e164, profile.phone_national)
        if profile.has_cart_member and st.member_status != MemberStatus.GUEST:
            member = f"EC{cid:08d}"
            self._identity(cid, IdentityKind.CART_MEMBER, member, member)
        line = st.consents[ConsentChannel.LINE]
        if profile.channel == AcquisitionChannel.LINE or line.granted_at is not None:
            user = f"U{(cid * _LINE_ID_MULTIPLIER) % (1 << 128):032x}"
            self._identity(cid, IdentityKind.LINE_USER, user, user)
        if any(contact.channel == "chat" for contact in st.contacts):
            chat = f"chat-{cid:08d}"
            self._identity(cid, IdentityKind.CHAT, chat, chat)

    def _consents(self, st: Story) -> None:
        cid = st.profile.customer_id
        for consent in st.consents.values():
            self.ids.consent += 1
            version = wording_version(consent.granted_at) if consent.granted_at else ""
            self.rows.tables["consents"].append(
                (
                    self.ids.consent,
                    cid,
                    consent.channel,
                    consent.granted_at is not None and consent.opted_out_at is None,
                    consent.granted_at,  # kept after an opt-out, as evidence
                    consent.method or "",
                    consent.source_form,
                    version,
                    consent.opted_out_at,
                )
            )
            if consent.granted_at is not None and consent.method is not None:
                self._consent_events(cid, consent, version)

    def _consent_events(self, cid: int, consent: PlannedConsent, version: str) -> None:
        label = _CONSENT_LABELS[consent.channel]
        assert consent.granted_at is not None  # noqa: S101 - only called for granted consents
        assert consent.method is not None  # noqa: S101
        events: list[tuple[str, dt.datetime, ConsentMethod, str, str, str]] = [
            (
                ConsentEvent.Action.GRANT,
                consent.granted_at,
                consent.method,
                consent.source_form,
                version,
                f"{label}配信に同意",
            )
        ]
        if consent.opted_out_at is not None and consent.opt_out_method is not None:
            events.append(
                (
                    ConsentEvent.Action.WITHDRAW,
                    consent.opted_out_at,
                    consent.opt_out_method,
                    "",
                    "",
                    f"{label}配信を停止",
                )
            )
        for action, at, method, source_form, wording, title in events:
            self.ids.consent_event += 1
            event_id = self.ids.consent_event
            self.rows.tables["consent_events"].append(
                (event_id, cid, consent.channel, action, at, method, source_form, wording, ACTOR)
            )
            ref = ("customers.ConsentEvent", event_id)
            self.timeline(cid, at, TimelineKind.CONSENT, title, ref=ref)

    # --- subscriptions -------------------------------------------------------------------------

    def _subscriptions(self, st: Story) -> dict[int, int]:
        """Subscription rows and their start/pause/cancel timeline; returns {id(plan): pk}."""
        cid = st.profile.customer_id
        as_of = self.cal.as_of
        sub_ids: dict[int, int] = {}
        for sub in st.subscriptions:
            self.ids.subscription += 1
            sid = sub_ids[id(sub)] = self.ids.subscription
            shipped = sum(
                1 for d in sub.deliveries if d.order is not None and d.order.shipped_on <= as_of
            )
            self.rows.tables["subscriptions"].append(
                (
                    sid,
                    cid,
                    sub.product.id,
                    sub.quantity,
                    sub.product.price,
                    sub.cycle_kind,
                    sub.cycle_days,
                    sub.monthly_day,
                    sub.started_at.date(),
                    sub.next_delivery_on,
                    shipped,  # delivery_count: boxes that have left the warehouse
                    sub.commitment,
                    sub.status,
                    sub.paused_until,
                    sub.cancelled_at.date() if sub.cancelled_at else None,
                    sub.cancel_reason or "",
                    sub.cancel_note,
                )
            )
            ref = ("subscriptions.Subscription", sid)
            kind = TimelineKind.SUBSCRIPTION
            title = f"定期申込 {sub.product.name}({sub.cycle_label})"
            self.timeline(cid, sub.started_at, kind, title, ref=ref)
            for paused_at, until in sub.pauses:
                title = f"定期休止({until:%Y/%m/%d}まで)"
                self.timeline(cid, paused_at, kind, title, ref=ref)
                if until <= as_of:
                    self.timeline(cid, at_time(until, 0), kind, "定期再開", ref=ref)
            if sub.cancelled_at is not None and sub.cancel_reason is not None:
                title = f"定期解約({sub.cancel_reason.label})"
                self.timeline(cid, sub.cancelled_at, kind, title, ref=ref)
        return sub_ids

    def _deliveries(self, st: Story, sub_ids: dict[int, int]) -> None:
        as_of = self.cal.as_of
        for sub in st.subscriptions:
            for delivery in sub.deliveries:
                order = delivery.order
                if delivery.skipped:
                    status = DeliveryStatus.SKIPPED
                elif order is None or order.shipped_on > as_of:
                    status = DeliveryStatus.SCHEDULED
                elif order.delivered_on > as_of:
                    status = DeliveryStatus.SHIPPED
                else:
                    status = DeliveryStatus.DELIVERED
                self.ids.delivery += 1
                self.rows.tables["deliveries"].append(
                    (
                        self.ids.delivery,
                        sub_ids[id(sub)],
                        delivery.sequence,
                        delivery.scheduled_on,
                        status,
                        order.id if order is not None else None,
                    )
                )

    # --- contacts, behaviour, tags -------------------------------------------------------------

    def _contacts(self, st: Story, sub_ids: dict[int, int]) -> None:
        cid = st.profile.customer_id
        for contact in st.contacts:
            self.ids.contact += 1
            contact_id = self.ids.contact
            sub = contact.subscription
            self.rows.tables["contacts"].append(
                (
                    contact_id,
                    cid,
                    contact.at,
                    contact.channel,
                    contact.direction,
                    contact.reason,
                    contact.summary,
                    contact.order.id if contact.order is not None else None,
                    sub_ids[id(sub)] if sub is not None else None,
                )
            )
            verb = "発信" if contact.direction == "outbound" else "問い合わせ"
            title = f"{verb}({_CONTACT_LABELS[contact.channel]}): {contact.reason}"
            ref = ("support.Contact", contact_id)
            self.timeline(cid, contact.at, TimelineKind.CONTACT, title, ref=ref)

    def _behaviour(self, st: Story) -> None:
        cid = st.profile.customer_id
        rows = self.rows.tables["behaviour_events"]
        for event in st.behaviour:
            self.ids.behaviour += 1
            rows.append(
                (
                    self.ids.behaviour,
                    cid,
                    event.kind,
                    event.at,
                    event.product.id if event.product is not None else None,
                    event.url,
                    {"session": event.session},
                )
            )

    def _tags(self, st: Story, rng: random.Random) -> None:
        """A few percent of customers carry a tag; VIP marks most loyal (優良) customers."""
        kept = [order for order in st.orders if not order.reversed_by(self.cal.cutoff)]
        spend = sum(order.total for order in kept)
        tenure = (kept[-1].at - kept[0].at).days if kept else 0
        loyal = spend > story.LOYAL_SPEND_YEN and tenure >= story.LOYAL_TENURE_DAYS
        returned = any(order.fate == "return" for order in st.orders)
        email = st.consents[ConsentChannel.EMAIL]
        reader = email.granted_at is not None and email.opted_out_at is None
        sensitive = any(contact.reason == "肌トラブル" for contact in st.contacts)
        tags = [
            name
            for name, applies in (
                ("VIP", loyal and chance(rng, story.VIP_TAG_SHARE)),
                (
                    "クレーム注意",
                    chance(rng, story.CLAIM_TAG_SHARE) or (returned and chance(rng, 0.1)),
                ),
                ("モニター", chance(rng, story.MONITOR_TAG_SHARE)),
                ("メルマガ読者", reader and chance(rng, story.NEWSLETTER_TAG_SHARE)),
                ("敏感肌", sensitive and chance(rng, 0.6)),
                ("同梱物不要", chance(rng, story.NO_INSERTS_TAG_SHARE)),
            )
            if applies
        ]
        for name in tags:
            self.ids.tagging += 1
            self.rows.tables["taggings"].append(
                (self.ids.tagging, st.profile.customer_id, self.tag_ids[name])
            )


class _OrderWriter:
    """One customer's orders in time order, with lines, shipments, reversals, the points ledger
    and their timeline."""

    def __init__(self, maker: RowMaker, st: Story, rng: random.Random) -> None:
        self.maker, self.st, self.rng = maker, st, rng
        self.ids, self.rows, self.cal = maker.ids, maker.rows, maker.cal
        self.cid = st.profile.customer_id
        self.ledger = _Ledger(maker, st)

    def write(self) -> None:
        for plan in self.st.orders:
            self.ledger.run_until(plan.at)
            self._order(plan)
        self.ledger.run_until(self.cal.cutoff)

    def _status(self, plan: PlannedOrder) -> OrderStatus:
        """The order's state at the end of as_of (a reversal after that has not happened)."""
        as_of, cutoff = self.cal.as_of, self.cal.cutoff
        if plan.fate == "cancel" and plan.reversed_by(cutoff):
            return OrderStatus.CANCELLED
        if plan.shipped_on > as_of:
            return OrderStatus.RECEIVED
        if plan.delivered_on > as_of:
            return OrderStatus.SHIPPED
        if plan.fate == "return" and plan.reversed_by(cutoff):
            return OrderStatus.RETURNED
        return OrderStatus.DELIVERED

    def _points_to_use(self, plan: PlannedOrder, payable: int) -> int:
        """Single orders that will be kept sometimes use the points collected so far."""
        balance = self.ledger.balance
        if plan.subscription is not None or plan.fate != "ok" or balance < story.REDEEM_MIN:
            return 0
        if not chance(self.rng, story.REDEEM_SHARE):
            return 0
        points = min(balance, payable)
        if points >= 100 and chance(self.rng, 0.3):
            points -= points % 100  # "300ポイント使います"
        return points

    def _order(self, plan: PlannedOrder) -> None:
        self.ids.order += 1
        oid = plan.id = self.ids.order
        number = plan.number = f"KZ{oid:08d}"
        subtotal = plan.subtotal
        discount = min(plan.discount, subtotal)
        free_shipping = (
            plan.subscription is not None
            or subtotal - discount >= story.FREE_SHIPPING_FROM
            or all(product.kind in _FREE_SHIPPING_KINDS for product, _ in plan.lines)
        )
        shipping = 0 if free_shipping else story.SHIPPING_FEE
        points_used = self._points_to_use(plan, subtotal - discount + shipping)
        total = plan.total = subtotal - discount + shipping - points_used
        status = self._status(plan)
        self.rows.tables["orders"].append(
            (
                oid,
                number,
                self.cid,
                plan.at,
                status,
                plan.channel,
                subtotal,
                discount,
                shipping,
                points_used,
                total,
                plan.payment,
                SOURCE,
            )
        )
        lines = self.rows.tables["order_lines"]
        for product, quantity in plan.lines:
            self.ids.order_line += 1
            lines.append(
                (
                    self.ids.order_line,
                    oid,
                    product.id,
                    product.name,
                    product.price,
                    quantity,
                    product.price * quantity,
                )
            )
        title = f"注文 {number}(¥{total:,})"
        if plan.subscription is not None:
            title = f"定期注文 {number}(¥{total:,}・{plan.sequence}回目)"
        detail = {"total": total, "channel": str(plan.channel)}
        ref = ("commerce.Order", oid)
        self.maker.timeline(self.cid, plan.at, TimelineKind.ORDER, title, ref=ref, detail=detail)
        if points_used:
            self.ledger.redeem(plan.at, points_used, plan)
        if status == OrderStatus.CANCELLED:
            self._reversal(plan, OrderReversal.Kind.CANCEL, refund=0)
        elif status != OrderStatus.RECEIVED:
            self._shipment(plan, delivered=status != OrderStatus.SHIPPED)
        if status == OrderStatus.RETURNED:
            self._reversal(plan, OrderReversal.Kind.RETURN, refund=total)
        elif status == OrderStatus.DELIVERED:
            # Points are granted by the night batch a week after delivery (after the return
            # window), as a whole 1% of what was paid.
            grant_at = at_time(days_after(plan.delivered_on, story.POINT_GRANT_DELAY_DAYS), 3)
            points = total * story.POINT_PERCENT // 100
            if points > 0 and grant_at < self.cal.cutoff:
                self.ledger.earn_later(grant_at, plan, points)

    def _shipment(self, plan: PlannedOrder, *, delivered: bool) -> None:
        self.ids.shipment += 1
        sid = self.ids.shipment
        tracking = (sid * _TRACKING_MULTIPLIER + 310_000_000_000) % 10**12
        self.rows.tables["shipments"].append(
            (
                sid,
                plan.id,
                plan.shipped_on,
                plan.delivered_on if delivered else None,
                plan.carrier,
                f"{tracking:012d}",
            )
        )
        ref = ("commerce.Shipment", sid)
        shipped_at = at_time(plan.shipped_on, 17, plan.id % 60)  # the afternoon pick-up
        title = f"出荷 {plan.number}({plan.carrier})"
        self.maker.timeline(self.cid, shipped_at, TimelineKind.SHIPMENT, title, ref=ref)
        if delivered:
            arrived_at = at_time(plan.delivered_on, 9 + plan.id % 12, (plan.id * 7) % 60)
            title = f"お届け完了 {plan.number}"
            self.maker.timeline(self.cid, arrived_at, TimelineKind.DELIVERY, title, ref=ref)

    def _reversal(self, plan: PlannedOrder, kind: OrderReversal.Kind, *, refund: int) -> None:
        assert plan.reversal_at is not None  # noqa: S101 - only called for reversed orders
        self.ids.reversal += 1
        rid = self.ids.reversal
        self.rows.tables["reversals"].append(
            (rid, plan.id, kind, plan.reversal_at, plan.reversal_reason, refund)
        )
        if kind == OrderReversal.Kind.CANCEL:
            title = f"キャンセル {plan.number}({plan.reversal_reason})"
        else:
            title = f"返品 {plan.number}(¥{refund:,}返金)"
        ref = ("commerce.OrderReversal", rid)
        self.maker.timeline(self.cid, plan.reversal_at, TimelineKind.CANCELLATION, title, ref=ref)


class _Lot:
    """Points from one order, spent oldest first, the rest expiring after a year."""

    __slots__ = ("expires_on", "remaining")

    def __init__(self, points: int, expires_on: dt.date) -> None:
        self.remaining = points
        self.expires_on = expires_on


class _Ledger:
    """One customer's points, replayed in time order: earn lots, redeem oldest first (FIFO),
    expire what is left of a lot the day after its expiry date. `seq` and `balance_after`
    follow exactly, and the balance can never go below zero."""

    def __init__(self, maker: RowMaker, st: Story) -> None:
        self.maker = maker
        self.st = st
        self.reminders_until = maker.cal.scenarios_from
        self.customer_id = st.profile.customer_id
        self.balance = 0
        self.seq = 0
        self.lots: list[_Lot] = []
        # (time, tiebreak, action, payload): earn (payload: order), remind or expire (a lot)
        self.pending: list[tuple[dt.datetime, int, str, Any]] = []
        self.tiebreak = 0

    def _schedule(self, at: dt.datetime, action: str, payload: Any) -> None:
        self.tiebreak += 1
        heapq.heappush(self.pending, (at, self.tiebreak, action, payload))

    def earn_later(self, at: dt.datetime, order: PlannedOrder, points: int) -> None:
        self._schedule(at, "earn", (order, points))

    def run_until(self, until: dt.datetime) -> None:
        """Apply everything scheduled strictly before `until`."""
        while self.pending and self.pending[0][0] < until:
            at, _, action, payload = heapq.heappop(self.pending)
            if action == "earn":
                order, points = payload
                self._earn(at, order, points)
            elif action == "remind":
                # ポイント有効期限のお知らせ, to customers who still accept e-mail.
                if (
                    at < self.reminders_until
                    and payload.remaining > 0
                    and self.st.consent_active(ConsentChannel.EMAIL, at)
                ):
                    self.st.messages.append((at, "email", story.POINT_REMINDER_TITLE))
            elif payload.remaining > 0:
                expired, payload.remaining = payload.remaining, 0
                self._entry(PointKind.EXPIRE, -expired, at, reason="有効期限切れ")

    def _earn(self, at: dt.datetime, order: PlannedOrder, points: int) -> None:
        lot = _Lot(points, years_later(at.date(), 1))
        self.lots.append(lot)
        reason = f"ご購入ポイント({order.number})"
        self._entry(
            PointKind.EARN, points, at, order_id=order.id, expires_on=lot.expires_on, reason=reason
        )
        remind_on = lot.expires_on - dt.timedelta(days=story.POINT_REMINDER_DAYS)
        self._schedule(at_time(remind_on, 10), "remind", lot)
        self._schedule(at_time(days_after(lot.expires_on, 1), 0, 5), "expire", lot)

    def redeem(self, at: dt.datetime, points: int, order: PlannedOrder) -> None:
        left = points
        for lot in self.lots:
            used = min(lot.remaining, left)
            lot.remaining -= used
            left -= used
        reason = f"ご注文で利用({order.number})"
        self._entry(PointKind.REDEEM, -points, at, order_id=order.id, reason=reason)

    def _entry(
        self,
        kind: PointKind,
        amount: int,
        at: dt.datetime,
        *,
        reason: str,
        order_id: int | None = None,
        expires_on: dt.date | None = None,
    ) -> None:
        self.seq += 1
        self.balance += amount
        ids = self.maker.ids
        ids.point += 1
        self.maker.rows.tables["point_entries"].append(
            (
                ids.point,
                self.customer_id,
                self.seq,
                kind,
                amount,
                self.balance,
                at,
                expires_on,
                order_id,
                reason,
                ACTOR,
            )
        )
        title = {
            PointKind.EARN: f"ポイント付与 +{amount}pt",
            PointKind.REDEEM: f"ポイント利用 {amount}pt",
            PointKind.EXPIRE: f"ポイント失効 {amount}pt",
        }[kind]
        ref = ("loyalty.PointEntry", ids.point)
        self.maker.timeline(self.customer_id, at, TimelineKind.POINTS, title, ref=ref)
