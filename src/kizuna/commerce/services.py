"""Write paths for orders: the one upsert every ingest route (CSV, API, webhook) goes through.

`orders_upsert_many` is idempotent (the same input twice changes nothing the second time) and
monotonic (an update never moves an order back to an earlier state, RELIABILITY I3), so
importers and webhooks can replay, retry and arrive out of order safely. It writes a whole
chunk of orders (a CSV batch, an API batch) in a constant number of statements; `order_upsert`
is its one-order case, so every route shares one code path.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from kizuna.commerce.models import (
    ORDER_STATUS_RANK,
    Order,
    OrderLine,
    OrderReversal,
    OrderStatus,
    Product,
    ProductKind,
    SalesChannel,
    Shipment,
)
from kizuna.core import jp
from kizuna.core.audit import AUDIT_COLUMNS, Actor, audit_values, diff
from kizuna.core.bulk import insert_instances, insert_rows, update_fields
from kizuna.core.fetch import instances_where_in, rows_where_in
from kizuna.core.models import AuditLog
from kizuna.core.races import retry_lost_race, unique_clash
from kizuna.customers.models import Customer, TimelineEvent, TimelineKind
from kizuna.customers.resolution import ResolveRequest, customers_resolve_many
from kizuna.customers.timeline import TIMELINE_COLUMNS, timeline_values


@dataclass(frozen=True)
class LineInput:
    product_code: str
    product_name: str
    unit_price: int
    quantity: int
    product_kind: ProductKind = ProductKind.OTHER


@dataclass(frozen=True)
class OrderInput:
    number: str
    ordered_at: dt.datetime
    lines: tuple[LineInput, ...]
    status: OrderStatus = OrderStatus.RECEIVED
    channel: SalesChannel = SalesChannel.WEB
    discount: int = 0
    shipping_fee: int = 0
    points_used: int = 0
    payment_method: str = ""
    source: str = ""
    shipped_on: dt.date | None = None
    delivered_on: dt.date | None = None
    carrier: str = ""
    tracking_number: str = ""
    cancelled_at: dt.datetime | None = None
    cancel_reason: str = ""
    source_updated_at: dt.datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def subtotal(self) -> int:
        return sum(line.unit_price * line.quantity for line in self.lines)

    @property
    def total(self) -> int:
        return self.subtotal - self.discount + self.shipping_fee - self.points_used


class UpsertOutcome(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    STALE = "stale"  # an older version of the order than the one stored: ignored


# The largest amount an order's yen columns hold (IntegerField: 32 bits on every database).
AMOUNT_MAX = 2_147_483_647


def validate_order_input(data: OrderInput) -> None:
    """Refuse input that would store a wrong order; messages name the field, in Japanese."""
    errors: dict[str, str] = {}
    if not data.number.strip():
        errors["number"] = "注文番号が空です"
    if not data.lines:
        errors["lines"] = "注文明細がありません"
    for line in data.lines:
        errors.update(_line_errors(line))
    if "quantity" not in errors and max(data.subtotal, data.total) > AMOUNT_MAX:
        errors["total"] = f"注文の合計が上限の{AMOUNT_MAX:,}円を超えます"
    for name in ("discount", "shipping_fee", "points_used"):
        if getattr(data, name) < 0:
            errors[name] = "金額がマイナスです"
    if data.lines and data.total < 0:
        errors["total"] = "合計金額がマイナスになります"
    errors.update(_future_date_errors(data))
    # A future date is told first; an order date refused as future is the one wrong, not
    # the shipping dates after it.
    for name, message in _date_order_errors(data, "ordered_at" not in errors).items():
        errors.setdefault(name, message)
    if errors:
        raise ValidationError(errors)


# How far ahead of our clock an order's dates may be: a cart's clock running fast, or a date
# written in another time zone, is not a mistake; a year typed wrong (2062 for 2026) is, and
# a future order would then count as the newest purchase in every analysis.
FUTURE_SLACK = dt.timedelta(days=1)
# A customer's 登録日 (registered_at) further ahead than that: the CSV importers, the API and
# the customer webhook refuse it with this message. A typo there would date the customer, and
# the e-mail consent a member file records at that time, in the future.
REGISTERED_AHEAD = "登録日が未来の日付です"


def is_ahead(at: dt.datetime) -> bool:
    """A time more than FUTURE_SLACK ahead of our clock: a date typed wrong, not clock skew."""
    return at > timezone.now() + FUTURE_SLACK


def _future_date_errors(data: OrderInput) -> dict[str, str]:
    now = timezone.now()
    # Shipping and delivery are calendar days in the shop's time zone (Asia/Tokyo).
    latest_day = timezone.localdate(now) + FUTURE_SLACK
    errors: dict[str, str] = {}
    if data.ordered_at > now + FUTURE_SLACK:
        errors["ordered_at"] = "受注日が未来の日付です"
    if data.cancelled_at and data.cancelled_at > now + FUTURE_SLACK:
        errors["cancelled_at"] = "キャンセル・返品日が未来の日付です"
    if data.shipped_on and data.shipped_on > latest_day:
        errors["shipped_on"] = "出荷日が未来の日付です"
    if data.delivered_on and data.delivered_on > latest_day:
        errors["delivered_on"] = "お届け日が未来の日付です(届いた日だけを登録できます)"
    return errors


def _date_order_errors(data: OrderInput, against_order: bool = True) -> dict[str, str]:
    """Dates out of order: shipped or cancelled before the order was placed, delivered before
    it was shipped (or, with no shipped date, before the order). A typo or a column mixed up; stored,
    it would show a shipment before its order on the timeline and in the days-to-ship numbers.
    The same day is fine. The order's day is its calendar day in the shop's time zone
    (Asia/Tokyo), as shipped and delivered dates are: 2026-11-19T16:00Z is ordered on the 20th."""
    errors: dict[str, str] = {}
    ordered_on = timezone.localdate(data.ordered_at) if against_order else None
    if data.shipped_on and ordered_on and data.shipped_on < ordered_on:
        errors["shipped_on"] = "出荷日が受注日より前です"
    if data.cancelled_at and ordered_on and timezone.localdate(data.cancelled_at) < ordered_on:
        errors["cancelled_at"] = "キャンセル・返品日が受注日より前です"
    if data.delivered_on:
        if data.shipped_on and data.delivered_on < data.shipped_on:
            errors["delivered_on"] = "お届け日が出荷日より前です"
        elif ordered_on and data.delivered_on < ordered_on:
            errors["delivered_on"] = "お届け日が受注日より前です"
    return errors


def _line_errors(line: LineInput) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not line.product_code.strip():
        errors["product_code"] = "商品コードが空です"
    if line.quantity < 1:
        errors["quantity"] = "数量は1以上にしてください"
    if line.unit_price < 0:
        errors["unit_price"] = "価格がマイナスです"
    if line.unit_price * line.quantity > AMOUNT_MAX:
        errors["quantity"] = f"明細の金額(単価×数量)が上限の{AMOUNT_MAX:,}円を超えます"
    return errors


# Hiragana and katakana (ー itself included, so ワーーイ keeps both marks).
_KANA_RE = re.compile("[\u3041-\u309f\u30a1-\u30ff]")


def product_code_key(code: str) -> str:
    """A product code as stored and matched: `jp.normalize_identifier` (NFKC; an IME's ー for
    the minus key as "-", so "KZー0001" is "KZ-0001"), except that a long-vowel mark after
    kana stays ー. There it is part of the word: Shopify's code for a line item without SKU
    is 「SHOPIFY:」 and the item's name, and 「ギフトカード」 folded to 「ギフトカ-ド」, a word
    nobody wrote. Raises NormalisationError for an empty code.

    Codes stored before this kept ー are in the folded form; `_older_code` finds them."""
    folded = jp.normalize_identifier(code)
    if "ー" not in code and "ｰ" not in code:  # most codes; NFKC makes the half-width ｰ a ー
        return folded
    text = jp.nfkc(code)
    if len(text) != len(folded):  # normalize_identifier replaces one character by one
        return folded
    return "".join(
        ch if ch == "ー" and i and _KANA_RE.match(text[i - 1]) else plain
        for i, (ch, plain) in enumerate(zip(text, folded, strict=True))
    )


def _older_code(key: str) -> str:
    """The form `key` was stored in before product codes kept ー (ギフトカ-ド). Lines and
    products imported then are found under it, so importing a file again creates nothing; the
    stored codes are not rewritten, since segments and triggers name products by code."""
    return jp.normalize_identifier(key)


def product_ensure(*, code: str, name: str, price: int, kind: ProductKind) -> Product:
    """The product with this code, created from the order line when the catalogue lacks it."""
    code = product_code_key(code)
    found = {p.code: p for p in Product.objects.filter(code__in={code, _older_code(code)})}
    product = found.get(code) or found.get(_older_code(code))
    if product is not None:
        return product
    try:
        with transaction.atomic():
            return Product.objects.create(code=code, name=name, price=max(price, 0), kind=kind)
    except IntegrityError:  # created by a concurrent import in the meantime
        return Product.objects.get(code=code)


def _effective_status(current: str, incoming: OrderStatus) -> str:
    """Never step back: a late "shipped" after "delivered" keeps "delivered"."""
    if ORDER_STATUS_RANK[OrderStatus(current)] >= ORDER_STATUS_RANK[incoming]:
        return current
    return incoming.value


def _order_fields(data: OrderInput) -> dict[str, Any]:
    return {
        "ordered_at": data.ordered_at,
        "channel": data.channel.value,
        "subtotal": data.subtotal,
        "discount": data.discount,
        "shipping_fee": data.shipping_fee,
        "points_used": data.points_used,
        "total": data.total,
        "payment_method": data.payment_method,
    }


@dataclass(frozen=True)
class OrderItem:
    """One order of a bulk upsert and who placed it.

    `customer` when the caller knows it; otherwise `who` is resolved (kizuna.customers.
    resolution) — only when the order is new: an update never moves an order to another
    customer, and resolving again could create a customer nobody uses.
    """

    data: OrderInput
    customer: Customer | None = None
    who: ResolveRequest | None = None


@dataclass
class OrderResult:
    """What became of one OrderItem: the order and its outcome, or why it was refused
    (`customer_error`: the refusal is about the customer's identities or profile)."""

    order: Order | None = None
    outcome: UpsertOutcome | None = None
    customer_created: bool = False
    error: ValidationError | None = None
    customer_error: bool = False


def order_upsert(
    *, customer: Customer, data: OrderInput, acting_user: Any
) -> tuple[Order, UpsertOutcome]:
    """Create the order, or bring the stored one up to date with `data`: the one-order case
    of `orders_upsert_many`. Raises ValidationError for an order that cannot be stored."""
    (result,) = orders_upsert_many([OrderItem(data, customer=customer)], acting_user=acting_user)
    if result.error is not None:
        raise result.error
    assert result.order is not None  # noqa: S101 - set whenever there is no error
    assert result.outcome is not None  # noqa: S101 - likewise
    return result.order, result.outcome


def orders_upsert_many(
    items: Sequence[OrderItem], *, acting_user: Any, source: str = ""
) -> list[OrderResult]:
    """Upsert each order as if one after another, in a constant number of statements.

    Stored orders are read with their lines, shipments and reversals in one query each (their
    rows locked on PostgreSQL, so concurrent deliveries of one order serialise), compared in
    Python, and the changes written with one bulk statement per table. The same order number
    twice in `items` is two upserts in turn: the second is applied in a later round that reads
    what the first wrote. An item that fails validation gets its error and writes nothing.

    Two writers creating the same new order race on the unique order number: the loser rolls
    back to a savepoint, reads again and applies its item as an update of the winner's order.
    `source` is recorded on identities added while resolving customers.
    """
    actor = Actor.of(acting_user)
    # PostgreSQL names the unique index (commerce_order_number_key), SQLite the column.
    return retry_lost_race(
        lambda: _upsert(items, actor=actor, source=source),
        lost=unique_clash("commerce_order_number", "commerce_order.number"),
    )


def _upsert(items: Sequence[OrderItem], *, actor: Actor, source: str) -> list[OrderResult]:
    results = [OrderResult() for _ in items]
    rounds: list[list[tuple[int, str]]] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        try:
            validate_order_input(item.data)
        except ValidationError as exc:
            results[index].error = exc
            continue
        number = jp.normalize_identifier(item.data.number)
        turn = seen.get(number, 0)
        seen[number] = turn + 1
        if turn == len(rounds):
            rounds.append([])
        rounds[turn].append((index, number))
    for entries in rounds:
        _Round(actor=actor, source=source).run([(items[i], n, results[i]) for i, n in entries])
    return results


class _Round:
    """Items with distinct order numbers: read what is stored, decide, write in bulk."""

    def __init__(self, *, actor: Actor, source: str) -> None:
        self.actor = actor
        self.source = source
        self.now = timezone.now()
        self.created: list[Order] = []
        self.saved: list[Order] = []  # changed: every field written
        self.touched: list[Order] = []  # unchanged but for the cart's version timestamp
        self.lines_for: list[tuple[Order, OrderInput]] = []
        self.relined: list[int] = []  # stored orders whose lines are replaced
        self.new_shipments: list[Shipment] = []
        self.changed_shipments: list[Shipment] = []
        # Shipments whose shipped or delivered date a later input corrected, by their order's
        # customer: their timeline rows move with them.
        self.redated: dict[int, tuple[int, Shipment]] = {}
        self.new_reversals: list[OrderReversal] = []
        # Built once the rows they refer to have ids: (customer, kind, title, at, ref).
        self.timeline: list[tuple[Customer, TimelineKind, str, dt.datetime, Any]] = []
        self.audit: list[tuple[str, Order, dict[str, list[Any]]]] = []

    def run(self, entries: list[tuple[OrderItem, str, OrderResult]]) -> None:
        stored = _Stored.read([number for _, number, _ in entries])
        customers = self._customers(
            [(item, result) for item, number, result in entries if number not in stored.orders]
        )
        for item, number, result in entries:
            if result.error is not None:
                continue
            order = stored.orders.get(number)
            if order is None:
                result.order = self._create(number, item.data, customers[id(item)])
                result.outcome = UpsertOutcome.CREATED
            else:
                try:
                    result.outcome = self._update(order, item.data, stored)
                except ValidationError as exc:  # nothing of it was recorded for writing
                    result.error = exc
                    continue
                result.order = order
        self._write()

    def _customers(self, new: list[tuple[OrderItem, OrderResult]]) -> dict[int, Customer]:
        """Who placed each new order: given, or resolved for all of them at once."""
        found = {id(item): item.customer for item, _ in new if item.customer is not None}
        asked = [(item, result) for item, result in new if item.customer is None]
        if not asked:
            return found
        requests = [item.who or ResolveRequest(identities={}) for item, _ in asked]
        resolved = customers_resolve_many(requests, acting_user=self.actor, source=self.source)
        for (item, result), resolution in zip(asked, resolved, strict=True):
            if isinstance(resolution, ValidationError):
                result.error = resolution
                result.customer_error = True
            else:
                found[id(item)] = resolution.customer
                result.customer_created = resolution.created
        return found

    # -- deciding, order by order -----------------------------------------------------------

    def _create(self, number: str, data: OrderInput, customer: Customer) -> Order:
        order = Order(
            number=number,
            customer=customer,
            status=data.status.value,
            source=data.source,
            source_updated_at=data.source_updated_at,
            **_order_fields(data),
        )
        self.created.append(order)
        self.lines_for.append((order, data))
        self.timeline.append(
            (
                customer,
                TimelineKind.ORDER,
                f"注文 {number}(¥{order.total:,})",
                data.ordered_at,
                order,
            )
        )
        self.audit.append(("order.create", order, {}))
        self._fulfil(order, data, shipment=None, reversal_kinds=set(), changes={})
        return order

    def _update(self, order: Order, data: OrderInput, stored: _Stored) -> UpsertOutcome:
        # Out of order (RELIABILITY I3): an input older than the version stored is ignored.
        # Orders that never had a time keep "last write wins" (the status still only moves on).
        if order.source_updated_at is not None:
            if data.source_updated_at is None:
                return self._move_forward(order, data, stored)
            if data.source_updated_at < order.source_updated_at:
                return UpsertOutcome.STALE
        new_fields = _order_fields(data)
        new_fields["ordered_at"] = _same_moment(order.ordered_at, data.ordered_at)
        changes = diff({name: getattr(order, name) for name in new_fields}, new_fields)
        lines_changed = sorted(stored.lines.get(order.pk, [])) != _input_signature(data)
        status = _effective_status(order.status, data.status)
        if status != order.status:
            changes["status"] = [order.status, status]
        for name, value in new_fields.items():
            setattr(order, name, value)
        order.status = status
        if data.source_updated_at is not None:
            order.source_updated_at = data.source_updated_at
        fulfilment_changed = self._fulfil(
            order,
            data,
            shipment=stored.shipments.get(order.pk),
            reversal_kinds=stored.reversals.get(order.pk, set()),
            changes=changes,
        )
        if not changes and not lines_changed and not fulfilment_changed:
            if data.source_updated_at is not None:
                self.touched.append(order)
            return UpsertOutcome.UNCHANGED
        if lines_changed:
            self.relined.append(order.pk)
            self.lines_for.append((order, data))
            changes["lines"] = ["変更前", "変更後"]
        self._save(order, changes)
        return UpsertOutcome.UPDATED

    def _move_forward(self, order: Order, data: OrderInput, stored: _Stored) -> UpsertOutcome:
        """An input without a time for an order whose stored version has one.

        Nothing shows it is newer, so it must not overwrite what a late, undated copy could
        roll back: amounts, lines, customer, tracking number and the version time stay. What
        only ever moves one way is safe to take from it whatever its age: the status forward,
        and a shipped or delivered date the order does not have yet (an EC-CUBE or Shopify
        export carries no update time, and its later exports are how the shop reports
        shipping for orders that first came through the API or a webhook).
        """
        status = _effective_status(order.status, data.status)
        changes = {"status": [order.status, status]} if status != order.status else {}
        order.status = status
        fulfilment_changed = self._fulfil(
            order,
            data,
            shipment=stored.shipments.get(order.pk),
            reversal_kinds=stored.reversals.get(order.pk, set()),
            changes=changes,
            forward_only=True,
        )
        if not changes and not fulfilment_changed:
            return UpsertOutcome.STALE
        self._save(order, changes)
        return UpsertOutcome.UPDATED

    def _save(self, order: Order, changes: dict[str, list[Any]]) -> None:
        order.updated_at = self.now  # update_fields does not apply auto_now
        self.saved.append(order)
        self.audit.append(("order.update", order, changes))

    def _fulfil(
        self,
        order: Order,
        data: OrderInput,
        *,
        shipment: Shipment | None,
        reversal_kinds: set[str],
        changes: dict[str, list[Any]],
        forward_only: bool = False,
    ) -> bool:
        """Record shipping, delivery and cancellation facts. Facts only accumulate: a later
        input that lacks a date (a status-only event, an export made before the parcel
        arrived) does not erase it, and a shipment once recorded stays the one shipment, its
        scenarios triggered once. A later input that gives another date corrects it in place
        (the shop mistyped the shipping date), recorded in `changes` for the audit row, and its
        timeline row moves with it.

        `forward_only` (an undated input, see _move_forward): only dates not yet known are
        added, the tracking number stays, and a cancellation or return is recorded only when
        the order's status is now that (a status that could not move forward records none).
        Raises ValidationError, before recording anything, for dates that would put the
        delivery before the shipping."""
        if shipment is not None:
            _check_shipment_dates(shipment, data, forward_only=forward_only)
        changed = False
        customer = order.customer
        if data.shipped_on and shipment is None:
            shipment = Shipment(
                order=order,
                shipped_on=data.shipped_on,
                delivered_on=data.delivered_on,
                carrier=data.carrier,
                tracking_number=data.tracking_number,
            )
            self.new_shipments.append(shipment)
            self.timeline.append(
                (
                    customer,
                    TimelineKind.SHIPMENT,
                    f"出荷 {order.number}",
                    _start_of(data.shipped_on),
                    shipment,
                )
            )
            if data.delivered_on:
                self._delivered(order, shipment, data.delivered_on)
            changed = True
        elif shipment is not None:
            if data.delivered_on and shipment.delivered_on is None:
                shipment.delivered_on = data.delivered_on
                self._delivered(order, shipment, data.delivered_on)
                changed = True
            if not forward_only:
                given = {
                    name: getattr(data, name) for name in _SHIPMENT_DATES if getattr(data, name)
                }
                corrected = diff({name: getattr(shipment, name) for name in given}, given)
                for name in corrected:
                    setattr(shipment, name, given[name])
                if corrected:
                    changes.update(corrected)
                    self.redated[shipment.pk] = (order.customer_id, shipment)
                    changed = True
            if (
                not forward_only
                and data.tracking_number
                and shipment.tracking_number != data.tracking_number
            ):
                shipment.tracking_number = data.tracking_number
                shipment.carrier = data.carrier or shipment.carrier
                changed = True
            if changed:
                self.changed_shipments.append(shipment)
        is_reversal = data.status in (OrderStatus.CANCELLED, OrderStatus.RETURNED)
        if is_reversal and (not forward_only or order.status == data.status):
            kind = (
                OrderReversal.Kind.CANCEL
                if data.status == OrderStatus.CANCELLED
                else OrderReversal.Kind.RETURN
            )
            if kind.value not in reversal_kinds:
                at = data.cancelled_at or data.source_updated_at or data.ordered_at
                reversal = OrderReversal(
                    order=order, kind=kind, occurred_at=at, reason=data.cancel_reason
                )
                self.new_reversals.append(reversal)
                self.timeline.append(
                    (
                        customer,
                        TimelineKind.CANCELLATION,
                        f"{reversal.get_kind_display()} {order.number}",
                        at,
                        reversal,
                    )
                )
                changed = True
        return changed

    def _delivered(self, order: Order, shipment: Shipment, delivered_on: dt.date) -> None:
        self.timeline.append(
            (
                order.customer,
                TimelineKind.DELIVERY,
                f"お届け {order.number}",
                _start_of(delivered_on),
                shipment,
            )
        )

    # -- writing, one statement per table ---------------------------------------------------

    def _write(self) -> None:
        # New rows go in as plain rows (kizuna.core.bulk), ids reserved up front so lines,
        # shipments and timeline rows can refer to their order: an order line is a dozen
        # rows, and building them through the ORM cost several times what storing them does.
        # New orders in number order (and stored ones locked in number order, see _Stored):
        # two writers with overlapping orders then wait on each other instead of deadlocking.
        now = self.now
        insert_instances(sorted(self.created, key=lambda order: order.number))
        update_fields(self.saved, [*_ORDER_FIELDS, "status", "updated_at"])
        update_fields(self.touched, ["source_updated_at"])
        if self.relined:
            OrderLine.objects.filter(order_id__in=self.relined).delete()
        insert_rows(OrderLine, _LINE_COLUMNS, self._lines(), now=now)
        insert_instances(self.new_shipments)
        update_fields(
            self.changed_shipments, ["shipped_on", "delivered_on", "tracking_number", "carrier"]
        )
        self._move_timeline()
        insert_instances(self.new_reversals)
        insert_rows(
            TimelineEvent,
            TIMELINE_COLUMNS,
            [
                timeline_values(
                    customer_id=customer.pk, kind=kind, title=title, occurred_at=at, ref=ref
                )
                for customer, kind, title, at, ref in self.timeline
            ],
            now=now,
        )
        insert_rows(
            AuditLog,
            AUDIT_COLUMNS,
            [
                audit_values(
                    actor=self.actor,
                    action=action,
                    entity=Order,
                    entity_id=order.pk,
                    customer_id=order.customer_id,
                    changes=changes,
                    at=now,
                )
                for action, order, changes in self.audit
            ],
            now=now,
        )

    def _move_timeline(self) -> None:
        """The 出荷 and お届け timeline rows of the redated shipments, to their new dates (the
        timeline never disagrees with the data). Read by customer, as the timeline is indexed."""
        if not self.redated:
            return
        events = list(
            TimelineEvent.objects.filter(
                customer_id__in={customer_id for customer_id, _ in self.redated.values()},
                kind__in=_TIMELINE_DATES,
                ref_entity=Shipment._meta.label,
                ref_id__in=self.redated,
            ).only("pk", "kind", "ref_id", "occurred_at")
        )
        for event in events:
            assert event.ref_id is not None  # noqa: S101 - the filter names a shipment
            _, shipment = self.redated[event.ref_id]
            day = getattr(shipment, _TIMELINE_DATES[TimelineKind(event.kind)])
            event.occurred_at = _start_of(day)
        update_fields(events, ["occurred_at"])

    def _lines(self) -> list[tuple[Any, ...]]:
        """The new lines as plain rows in _LINE_COLUMNS order."""
        products = _products_ensure(
            [line for _order, data in self.lines_for for line in data.lines]
        )
        return [
            (
                order.pk,
                products[product_code_key(line.product_code)].pk,
                line.product_name,
                line.unit_price,
                line.quantity,
                line.unit_price * line.quantity,
            )
            for order, data in self.lines_for
            for line in data.lines
        ]


_SHIPMENT_DATES = ("shipped_on", "delivered_on")
# The timeline rows a shipment has, and the date each is on.
_TIMELINE_DATES = {TimelineKind.SHIPMENT: "shipped_on", TimelineKind.DELIVERY: "delivered_on"}
_LINE_COLUMNS = ("order_id", "product_id", "product_name", "unit_price", "quantity", "amount")
_ORDER_FIELDS = (
    "ordered_at",
    "channel",
    "subtotal",
    "discount",
    "shipping_fee",
    "points_used",
    "total",
    "payment_method",
    "source_updated_at",
)


@dataclass
class _Stored:
    """The stored orders a round refers to, with what the comparison needs of each."""

    orders: dict[str, Order] = field(default_factory=dict)
    lines: dict[int, list[tuple[str, int, int]]] = field(default_factory=dict)
    shipments: dict[int, Shipment] = field(default_factory=dict)  # the first, by id
    reversals: dict[int, set[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, numbers: list[str]) -> _Stored:
        # Locked in number order (see _Round._write). Read by kizuna.core.fetch: for one API
        # call's order this read is most of the work, and the ORM's compiling it cost more
        # than the database's answering.
        found = instances_where_in(Order, "number", numbers, order_by="number", for_update=True)
        stored = cls(orders={order.number: order for order in found})
        if not found:
            return stored
        owners = {
            c.pk: c for c in instances_where_in(Customer, "id", {o.customer_id for o in found})
        }
        for order in found:
            order.customer = owners[order.customer_id]
        ids = [order.pk for order in found]
        lines = rows_where_in(
            OrderLine, ("order_id", "product_id", "unit_price", "quantity"), "order_id", ids
        )
        codes = dict(rows_where_in(Product, ("id", "code"), "id", {row[1] for row in lines}))
        for order_id, product_id, price, quantity in lines:
            line = (_older_code(codes[product_id]), price, quantity)
            stored.lines.setdefault(order_id, []).append(line)
        for shipment in sorted(
            instances_where_in(Shipment, "order_id", ids), key=lambda s: (s.order_id, s.pk)
        ):
            stored.shipments.setdefault(shipment.order_id, shipment)
        for order_id, kind in rows_where_in(OrderReversal, ("order_id", "kind"), "order_id", ids):
            stored.reversals.setdefault(order_id, set()).add(kind)
        return stored


def _input_signature(data: OrderInput) -> list[tuple[str, int, int]]:
    """The lines as the stored signature reads them: (code, price, quantity), the code in its
    folded form (`_older_code`) on both sides, so that a line stored before product codes
    kept ー (ギフトカ-ド) is the same line as the file's ギフトカード."""
    return sorted((_older_code(x.product_code), x.unit_price, x.quantity) for x in data.lines)


def _products_ensure(lines: list[LineInput]) -> dict[str, Product]:
    """The products these lines name, by normalised code; the catalogue's missing ones are
    created from the first line that names them (as `product_ensure` does, in bulk)."""
    wanted: dict[str, LineInput] = {}
    for line in lines:
        wanted.setdefault(product_code_key(line.product_code), line)
    if not wanted:
        return {}
    older = {code: _older_code(code) for code in wanted}
    found = {p.code: p for p in instances_where_in(Product, "code", {*wanted, *older.values()})}
    products: dict[str, Product] = {}
    missing: list[str] = []
    for code in wanted:
        product = found.get(code) or found.get(older[code])
        if product is None:
            missing.append(code)
        else:
            products[code] = product
    if missing:
        # ignore_conflicts: a concurrent import may create the same product meanwhile.
        Product.objects.bulk_create(
            [
                Product(
                    code=code,
                    name=wanted[code].product_name,
                    price=max(wanted[code].unit_price, 0),
                    kind=wanted[code].product_kind,
                )
                for code in missing
            ],
            ignore_conflicts=True,
        )
        products.update((p.code, p) for p in Product.objects.filter(code__in=missing))
    return products


def _same_moment(stored: dt.datetime, given: dt.datetime) -> dt.datetime:
    """`given`, or `stored` when `given` is the stored moment written without its seconds: an
    export re-saved in Excel reads 2026/5/1 10:23 for 10:23:45, and the shop changed nothing."""
    if given.second == given.microsecond == 0 and stored.replace(second=0, microsecond=0) == given:
        return stored
    return given


def _check_shipment_dates(shipment: Shipment, data: OrderInput, *, forward_only: bool) -> None:
    """Refuse an input whose dates, with those recorded, would put the delivery before the
    shipping: a corrected shipping date after the recorded delivery, or a delivery before the
    recorded shipping. The input alone was checked (validate_order_input)."""
    shipped = data.shipped_on if data.shipped_on and not forward_only else shipment.shipped_on
    delivered = shipment.delivered_on
    if data.delivered_on and (delivered is None or not forward_only):
        delivered = data.delivered_on
    if delivered is None or delivered >= shipped:
        return
    if delivered == shipment.delivered_on:
        raise ValidationError(
            {
                "shipped_on": f"出荷日が、記録済みのお届け日({delivered:%Y-%m-%d})より後です。"
                "お届け日も直してください"
            }
        )
    raise ValidationError(
        {"delivered_on": f"お届け日が、記録済みの出荷日({shipped:%Y-%m-%d})より前です"}
    )


def _start_of(day: dt.date) -> dt.datetime:
    # Carts report shipping and delivery as dates; noon JST keeps them on the right day.
    return timezone.make_aware(dt.datetime.combine(day, dt.time(12)))
