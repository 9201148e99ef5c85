"""Which orders of a batch are already stored exactly as the file says, found in a few queries.

Shops re-import overlapping exports every day (the last 30 days, say), so most rows of a file
describe orders that have not changed. Sending each through `customer_resolve` and
`order_upsert` costs a dozen queries to learn that nothing changes; here the whole batch is
read in five, and only orders that would change go through the services.

An order counts as current only when `order_upsert` would report UNCHANGED — decided with the
service's own comparison helpers, so the two cannot drift apart — and no consent is left to
record. Anything unsure (a version timestamp, say) takes the services' path.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from kizuna.commerce.importers.base import ParsedOrder
from kizuna.commerce.models import Order, OrderLine, OrderReversal, OrderStatus, Shipment
from kizuna.commerce.services import (
    OrderInput,
    _effective_status,
    _input_signature,
    _order_fields,
)
from kizuna.core import jp
from kizuna.core.audit import diff
from kizuna.customers.models import Consent, ConsentChannel, IdentityKind

_REVERSAL_KIND = {
    OrderStatus.CANCELLED: OrderReversal.Kind.CANCEL,
    OrderStatus.RETURNED: OrderReversal.Kind.RETURN,
}


@dataclass
class BatchOrders:
    """The stored orders a batch of rows refers to."""

    existing: dict[str, Order] = field(default_factory=dict)
    current: set[str] = field(default_factory=set)


def read_batch(rows: Iterable[ParsedOrder]) -> BatchOrders:
    """Which orders of `rows` exist (with their customer) and which would not change."""
    candidates = {jp.nfkc(p.order.number): p for p in rows}
    if not candidates:
        return BatchOrders()
    orders = {
        order.number: order
        for order in Order.objects.filter(number__in=candidates).select_related("customer")
    }
    if not orders:
        return BatchOrders()
    ids = [order.pk for order in orders.values()]
    lines: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
    for order_id, code, price, quantity in OrderLine.objects.filter(order_id__in=ids).values_list(
        "order_id", "product__code", "unit_price", "quantity"
    ):
        lines[order_id].append((code, price, quantity))
    shipments: dict[int, Shipment] = {}
    for shipment in Shipment.objects.filter(order_id__in=ids).order_by("order_id", "id"):
        shipments.setdefault(shipment.order_id, shipment)
    reversals: dict[int, set[str]] = defaultdict(set)
    for order_id, kind in OrderReversal.objects.filter(order_id__in=ids).values_list(
        "order_id", "kind"
    ):
        reversals[order_id].add(kind)
    settled = _email_consent_settled(
        order.customer_id
        for number, order in orders.items()
        if candidates[number].customer.email_opt_in
    )
    batch = BatchOrders(existing=orders)
    for number, order in orders.items():
        parsed = candidates[number]
        wants_consent = (
            parsed.customer.email_opt_in
            and IdentityKind.EMAIL in parsed.customer.identities
            and order.customer_id not in settled
        )
        if (
            parsed.order.source_updated_at is None
            and not wants_consent
            and _order_is_current(
                order, parsed.order, lines[order.pk], shipments.get(order.pk), reversals[order.pk]
            )
        ):
            batch.current.add(number)
    return batch


def _email_consent_settled(customer_ids: Iterable[int]) -> set[int]:
    """Customers whose e-mail consent the import would leave alone (given, or opted out)."""
    wanted = set(customer_ids)
    if not wanted:
        return set()
    return set(
        Consent.objects.filter(customer_id__in=wanted, channel=ConsentChannel.EMAIL)
        .exclude(granted=False, opted_out_at__isnull=True)
        .values_list("customer_id", flat=True)
    )


def _order_is_current(
    order: Order,
    data: OrderInput,
    lines: list[tuple[str, int, int]],
    shipment: Shipment | None,
    reversal_kinds: set[str],
) -> bool:
    """What `order_upsert` would decide, without writing: True when it would be UNCHANGED."""
    new_fields = _order_fields(data)
    fields_same = not diff({name: getattr(order, name) for name in new_fields}, new_fields)
    status_same = _effective_status(order.status, data.status) == order.status
    lines_same = sorted(lines) == _input_signature(data)
    return (
        fields_same
        and status_same
        and lines_same
        and _fulfilment_known(data, shipment, reversal_kinds)
    )


def _fulfilment_known(
    data: OrderInput, shipment: Shipment | None, reversal_kinds: set[str]
) -> bool:
    """True when `_apply_fulfilment` would record nothing new."""
    if shipment is None:
        new_shipment = data.shipped_on is not None
    else:
        new_shipment = bool(data.delivered_on and shipment.delivered_on is None) or bool(
            data.tracking_number and shipment.tracking_number != data.tracking_number
        )
    reversal = _REVERSAL_KIND.get(data.status)
    return not new_shipment and (reversal is None or reversal.value in reversal_kinds)
