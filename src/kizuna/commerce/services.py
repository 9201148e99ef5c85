"""Write paths for orders: the one upsert every ingest route (CSV, API, webhook) goes through.

`order_upsert` is idempotent (the same input twice changes nothing the second time) and
monotonic (an update never moves an order back to an earlier state, RELIABILITY I3), so
importers and webhooks can replay, retry and arrive out of order safely.
"""

from __future__ import annotations

import datetime as dt
import enum
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
from kizuna.core.audit import Actor, audit_record, diff
from kizuna.customers.models import Customer, TimelineKind
from kizuna.customers.timeline import timeline_add


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


def validate_order_input(data: OrderInput) -> None:
    """Refuse input that would store a wrong order; messages name the field, in Japanese."""
    errors: dict[str, str] = {}
    if not data.number.strip():
        errors["number"] = "注文番号が空です"
    if not data.lines:
        errors["lines"] = "注文明細がありません"
    for line in data.lines:
        if not line.product_code.strip():
            errors["product_code"] = "商品コードが空です"
        if line.quantity < 1:
            errors["quantity"] = "数量は1以上にしてください"
        if line.unit_price < 0:
            errors["unit_price"] = "価格がマイナスです"
    for name in ("discount", "shipping_fee", "points_used"):
        if getattr(data, name) < 0:
            errors[name] = "金額がマイナスです"
    if data.lines and data.total < 0:
        errors["total"] = "合計金額がマイナスになります"
    if data.shipped_on and data.delivered_on and data.delivered_on < data.shipped_on:
        errors["delivered_on"] = "お届け日が出荷日より前です"
    if errors:
        raise ValidationError(errors)


def product_ensure(*, code: str, name: str, price: int, kind: ProductKind) -> Product:
    """The product with this code, created from the order line when the catalogue lacks it."""
    code = jp.normalize_identifier(code)
    product = Product.objects.filter(code=code).first()
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


@transaction.atomic
def order_upsert(
    *, customer: Customer, data: OrderInput, acting_user: Any
) -> tuple[Order, UpsertOutcome]:
    """Create the order, or bring the stored one up to date with `data`.

    The order row is locked while it is compared, so concurrent deliveries of the same update
    serialise; the unique order number makes a concurrent double-create fail rather than
    duplicate (callers retry, and the retry finds the order).
    """
    validate_order_input(data)
    actor = Actor.of(acting_user)
    number = jp.normalize_identifier(data.number)
    order = Order.objects.select_for_update().filter(number=number).first()
    if order is None:
        return _create(customer=customer, number=number, data=data, actor=actor), (
            UpsertOutcome.CREATED
        )
    if (
        data.source_updated_at is not None
        and order.source_updated_at is not None
        and data.source_updated_at < order.source_updated_at
    ):
        return order, UpsertOutcome.STALE
    changed = _update(order=order, data=data, actor=actor)
    return order, UpsertOutcome.UPDATED if changed else UpsertOutcome.UNCHANGED


def _create(*, customer: Customer, number: str, data: OrderInput, actor: Actor) -> Order:
    order = Order.objects.create(
        number=number,
        customer=customer,
        status=data.status.value,
        source=data.source,
        source_updated_at=data.source_updated_at,
        **_order_fields(data),
    )
    _replace_lines(order, data)
    timeline_add(
        customer=customer,
        kind=TimelineKind.ORDER,
        title=f"注文 {number}(¥{order.total:,})",
        occurred_at=data.ordered_at,
        ref=order,
    )
    audit_record(actor=actor, action="order.create", instance=order, customer_id=customer.pk)
    _apply_fulfilment(order=order, data=data)
    return order


def _update(*, order: Order, data: OrderInput, actor: Actor) -> bool:
    new_fields = _order_fields(data)
    old_fields = {name: getattr(order, name) for name in new_fields}
    changes = diff(old_fields, new_fields)
    lines_changed = _lines_signature(order) != _input_signature(data)
    status = _effective_status(order.status, data.status)
    if status != order.status:
        changes["status"] = [order.status, status]
    for name, value in new_fields.items():
        setattr(order, name, value)
    order.status = status
    if data.source_updated_at is not None:
        order.source_updated_at = data.source_updated_at
    fulfilment_changed = _apply_fulfilment(order=order, data=data)
    if not changes and not lines_changed and not fulfilment_changed:
        if data.source_updated_at is not None:
            order.save(update_fields=["source_updated_at"])
        return False
    if lines_changed:
        _replace_lines(order, data)
        changes["lines"] = ["変更前", "変更後"]
    order.save()
    audit_record(
        actor=actor,
        action="order.update",
        instance=order,
        customer_id=order.customer_id,
        changes=changes,
    )
    return True


def _lines_signature(order: Order) -> list[tuple[str, int, int]]:
    return sorted(order.lines.values_list("product__code", "unit_price", "quantity").order_by("id"))


def _input_signature(data: OrderInput) -> list[tuple[str, int, int]]:
    return sorted(
        (jp.normalize_identifier(x.product_code), x.unit_price, x.quantity) for x in data.lines
    )


def _replace_lines(order: Order, data: OrderInput) -> None:
    order.lines.all().delete()
    OrderLine.objects.bulk_create(
        OrderLine(
            order=order,
            product=product_ensure(
                code=line.product_code,
                name=line.product_name,
                price=line.unit_price,
                kind=line.product_kind,
            ),
            product_name=line.product_name,
            unit_price=line.unit_price,
            quantity=line.quantity,
            amount=line.unit_price * line.quantity,
        )
        for line in data.lines
    )


def _apply_fulfilment(*, order: Order, data: OrderInput) -> bool:
    """Record shipping, delivery and cancellation facts not yet known. Facts only accumulate:
    a later input that lacks a date does not erase it."""
    changed = False
    shipment = order.shipments.order_by("id").first()
    if data.shipped_on and shipment is None:
        shipment = Shipment.objects.create(
            order=order,
            shipped_on=data.shipped_on,
            delivered_on=data.delivered_on,
            carrier=data.carrier,
            tracking_number=data.tracking_number,
        )
        timeline_add(
            customer=order.customer,
            kind=TimelineKind.SHIPMENT,
            title=f"出荷 {order.number}",
            occurred_at=_start_of(data.shipped_on),
            ref=shipment,
        )
        if data.delivered_on:
            _delivered_timeline(order, shipment, data.delivered_on)
        changed = True
    elif shipment is not None:
        if data.delivered_on and shipment.delivered_on is None:
            shipment.delivered_on = data.delivered_on
            shipment.save(update_fields=["delivered_on"])
            _delivered_timeline(order, shipment, data.delivered_on)
            changed = True
        if data.tracking_number and shipment.tracking_number != data.tracking_number:
            shipment.tracking_number = data.tracking_number
            shipment.carrier = data.carrier or shipment.carrier
            shipment.save(update_fields=["tracking_number", "carrier"])
            changed = True
    if data.status in (OrderStatus.CANCELLED, OrderStatus.RETURNED):
        kind = (
            OrderReversal.Kind.CANCEL
            if data.status == OrderStatus.CANCELLED
            else OrderReversal.Kind.RETURN
        )
        if not order.reversals.filter(kind=kind).exists():
            at = data.cancelled_at or data.source_updated_at or data.ordered_at
            reversal = OrderReversal.objects.create(
                order=order, kind=kind, occurred_at=at, reason=data.cancel_reason
            )
            timeline_add(
                customer=order.customer,
                kind=TimelineKind.CANCELLATION,
                title=f"{reversal.get_kind_display()} {order.number}",
                occurred_at=at,
                ref=reversal,
            )
            changed = True
    return changed


def _delivered_timeline(order: Order, shipment: Shipment, delivered_on: dt.date) -> None:
    timeline_add(
        customer=order.customer,
        kind=TimelineKind.DELIVERY,
        title=f"お届け {order.number}",
        occurred_at=_start_of(delivered_on),
        ref=shipment,
    )


def _start_of(day: dt.date) -> dt.datetime:
    # Carts report shipping and delivery as dates; noon JST keeps them on the right day.
    return timezone.make_aware(dt.datetime.combine(day, dt.time(12)))
