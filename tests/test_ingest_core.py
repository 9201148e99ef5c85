"""The order upsert and identity resolution that every ingest route goes through."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from kizuna.commerce.models import Order, OrderStatus, ProductKind
from kizuna.commerce.services import LineInput, OrderInput, UpsertOutcome, order_upsert
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from kizuna.customers.models import DuplicateCandidate, IdentityKind, TimelineKind
from kizuna.customers.resolution import customer_resolve
from tests.factories import make_customer

pytestmark = pytest.mark.django_db
IMPORT = Actor.system("test-import")
T0 = timezone.make_aware(dt.datetime(2026, 5, 1, 10, 0))


def _order(**overrides: object) -> OrderInput:
    values: dict[str, object] = {
        "number": "1001",
        "ordered_at": T0,
        "lines": (LineInput("SK-TR-01", "美容液トライアル", 980, 1, ProductKind.TRIAL),),
        "shipping_fee": 0,
    }
    values.update(overrides)
    return OrderInput(**values)  # type: ignore[arg-type]


def test_the_same_order_twice_changes_nothing_the_second_time() -> None:
    customer = make_customer()
    order, first = order_upsert(customer=customer, data=_order(), acting_user=IMPORT)
    _, second = order_upsert(customer=customer, data=_order(), acting_user=IMPORT)
    assert (first, second) == (UpsertOutcome.CREATED, UpsertOutcome.UNCHANGED)
    assert Order.objects.count() == 1
    assert order.total == 980
    assert customer.timeline.filter(kind=TimelineKind.ORDER).count() == 1


def test_a_later_export_adds_shipping_and_delivery() -> None:
    customer = make_customer()
    order_upsert(customer=customer, data=_order(), acting_user=IMPORT)
    later = _order(
        status=OrderStatus.DELIVERED,
        shipped_on=dt.date(2026, 5, 2),
        delivered_on=dt.date(2026, 5, 3),
        tracking_number="1234-5678-9012",
    )
    order, outcome = order_upsert(customer=customer, data=later, acting_user=IMPORT)
    assert outcome == UpsertOutcome.UPDATED
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    shipment = order.shipments.get()
    assert (shipment.shipped_on, shipment.delivered_on) == (
        dt.date(2026, 5, 2),
        dt.date(2026, 5, 3),
    )
    kinds = set(customer.timeline.values_list("kind", flat=True))
    assert {TimelineKind.SHIPMENT, TimelineKind.DELIVERY} <= kinds


def test_an_older_update_never_rolls_the_order_back() -> None:
    customer = make_customer()
    newer = _order(status=OrderStatus.DELIVERED, source_updated_at=T0 + dt.timedelta(hours=5))
    older = _order(status=OrderStatus.RECEIVED, source_updated_at=T0 + dt.timedelta(hours=1))
    order_upsert(customer=customer, data=newer, acting_user=IMPORT)
    order, outcome = order_upsert(customer=customer, data=older, acting_user=IMPORT)
    assert outcome == UpsertOutcome.STALE
    order.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED


def test_an_undated_update_never_overwrites_a_dated_version() -> None:
    # nothing shows an update without a time is newer than the dated version stored (a CSV
    # export without an update time, a cart that forgot the field): what it says of amounts,
    # lines and the status going back is ignored
    customer = make_customer()
    dated = _order(status=OrderStatus.SHIPPED, source_updated_at=T0 + dt.timedelta(hours=5))
    order_upsert(customer=customer, data=dated, acting_user=IMPORT)
    undated = _order(
        status=OrderStatus.RECEIVED,
        shipping_fee=700,
        lines=(LineInput("SK-MN-01", "美容液", 4800, 1, ProductKind.MAIN),),
    )
    order, outcome = order_upsert(customer=customer, data=undated, acting_user=IMPORT)
    assert outcome == UpsertOutcome.STALE
    order.refresh_from_db()
    assert (order.status, order.shipping_fee, order.total) == (OrderStatus.SHIPPED, 0, 980)
    assert list(order.lines.values_list("product__code", flat=True)) == ["SK-TR-01"]
    assert order.source_updated_at == T0 + dt.timedelta(hours=5)


def test_an_undated_export_moves_a_dated_order_forward_and_nothing_else() -> None:
    # given an order the cart sent with its time (API, webhook), and then the shop's export
    # without one (EC-CUBE, Shopify) reporting it shipped — with other amounts and lines
    customer = make_customer()
    dated = _order(source_updated_at=T0 + dt.timedelta(hours=5))
    order, _ = order_upsert(customer=customer, data=dated, acting_user=IMPORT)
    created_audit = AuditLog.objects.count()
    export = _order(
        status=OrderStatus.SHIPPED,
        shipped_on=dt.date(2026, 5, 2),
        tracking_number="1234-5678-9012",
        shipping_fee=700,
        payment_method="代金引換",
        lines=(LineInput("SK-MN-01", "美容液", 4800, 1, ProductKind.MAIN),),
    )
    _, outcome = order_upsert(customer=customer, data=export, acting_user=IMPORT)
    # then the status and the shipment move; amounts, lines and the version time do not
    assert outcome == UpsertOutcome.UPDATED
    order.refresh_from_db()
    assert order.status == OrderStatus.SHIPPED
    assert (order.shipping_fee, order.total, order.payment_method) == (0, 980, "")
    assert list(order.lines.values_list("product__code", flat=True)) == ["SK-TR-01"]
    assert order.source_updated_at == T0 + dt.timedelta(hours=5)
    shipment = order.shipments.get()
    assert (shipment.shipped_on, shipment.tracking_number) == (
        dt.date(2026, 5, 2),
        "1234-5678-9012",
    )
    assert customer.timeline.filter(kind=TimelineKind.SHIPMENT).count() == 1
    # audited as an update naming only what moved
    (audit,) = AuditLog.objects.filter(action="order.update")
    assert audit.changes == {"status": ["received", "shipped"]}
    assert AuditLog.objects.count() == created_audit + 1


def test_an_undated_export_adds_missing_dates_but_never_overwrites_or_clears_one() -> None:
    customer = make_customer()
    shipped = dt.date(2026, 5, 2)
    dated = _order(
        status=OrderStatus.SHIPPED,
        shipped_on=shipped,
        tracking_number="111",
        source_updated_at=T0 + dt.timedelta(hours=5),
    )
    order, _ = order_upsert(customer=customer, data=dated, acting_user=IMPORT)
    # another shipped date and tracking number, and the delivery not yet known
    delivered = _order(
        status=OrderStatus.DELIVERED,
        shipped_on=dt.date(2026, 5, 3),
        delivered_on=dt.date(2026, 5, 4),
        tracking_number="222",
    )
    _, outcome = order_upsert(customer=customer, data=delivered, acting_user=IMPORT)
    assert outcome == UpsertOutcome.UPDATED
    shipment = order.shipments.get()
    assert (shipment.shipped_on, shipment.delivered_on, shipment.tracking_number) == (
        shipped,
        dt.date(2026, 5, 4),
        "111",
    )
    assert customer.timeline.filter(kind=TimelineKind.DELIVERY).count() == 1
    # an export without the dates, or with other ones, then moves nothing: stale
    for later in (
        _order(status=OrderStatus.SHIPPED),
        _order(status=OrderStatus.DELIVERED, shipped_on=shipped, delivered_on=dt.date(2026, 5, 9)),
    ):
        _, outcome = order_upsert(customer=customer, data=later, acting_user=IMPORT)
        assert outcome == UpsertOutcome.STALE
    order.refresh_from_db()
    shipment.refresh_from_db()
    assert order.status == OrderStatus.DELIVERED
    assert (shipment.shipped_on, shipment.delivered_on) == (shipped, dt.date(2026, 5, 4))
    assert AuditLog.objects.filter(action="order.update").count() == 1


def test_an_undated_cancellation_is_recorded_only_when_the_status_moves_to_it() -> None:
    customer = make_customer()
    dated = _order(source_updated_at=T0 + dt.timedelta(hours=5))
    order, _ = order_upsert(customer=customer, data=dated, acting_user=IMPORT)
    cancelled = _order(status=OrderStatus.CANCELLED, cancel_reason="お客様都合")
    _, outcome = order_upsert(customer=customer, data=cancelled, acting_user=IMPORT)
    assert outcome == UpsertOutcome.UPDATED
    assert order.reversals.get().reason == "お客様都合"
    # "returned" ranks with "cancelled": the status cannot move to it, so no return either
    returned = _order(status=OrderStatus.RETURNED)
    _, outcome = order_upsert(customer=customer, data=returned, acting_user=IMPORT)
    assert outcome == UpsertOutcome.STALE
    order.refresh_from_db()
    assert order.status == OrderStatus.CANCELLED
    assert order.reversals.count() == 1


def test_an_older_dated_update_moves_nothing_forward_either() -> None:
    customer = make_customer()
    newer = _order(source_updated_at=T0 + dt.timedelta(hours=5))
    order, _ = order_upsert(customer=customer, data=newer, acting_user=IMPORT)
    older = _order(
        status=OrderStatus.SHIPPED,
        shipped_on=dt.date(2026, 5, 2),
        source_updated_at=T0 + dt.timedelta(hours=1),
    )
    _, outcome = order_upsert(customer=customer, data=older, acting_user=IMPORT)
    assert outcome == UpsertOutcome.STALE
    order.refresh_from_db()
    assert order.status == OrderStatus.RECEIVED
    assert not order.shipments.exists()


def test_orders_that_never_had_a_time_take_the_last_update() -> None:
    customer = make_customer()
    order_upsert(customer=customer, data=_order(), acting_user=IMPORT)
    order, outcome = order_upsert(
        customer=customer, data=_order(shipping_fee=700), acting_user=IMPORT
    )
    assert outcome == UpsertOutcome.UPDATED
    assert order.total == 1680
    # and the first dated version is taken too, and from then on guards the order
    dated = _order(shipping_fee=500, source_updated_at=T0)
    _, outcome = order_upsert(customer=customer, data=dated, acting_user=IMPORT)
    assert outcome == UpsertOutcome.UPDATED
    _, outcome = order_upsert(customer=customer, data=_order(), acting_user=IMPORT)
    assert outcome == UpsertOutcome.STALE


def test_without_versions_status_still_only_moves_forward() -> None:
    customer = make_customer()
    order_upsert(customer=customer, data=_order(status=OrderStatus.SHIPPED), acting_user=IMPORT)
    order, _ = order_upsert(
        customer=customer, data=_order(status=OrderStatus.RECEIVED), acting_user=IMPORT
    )
    order.refresh_from_db()
    assert order.status == OrderStatus.SHIPPED


def test_cancellation_is_recorded_once() -> None:
    customer = make_customer()
    cancelled = _order(status=OrderStatus.CANCELLED, cancel_reason="お客様都合")
    order, _ = order_upsert(customer=customer, data=cancelled, acting_user=IMPORT)
    order_upsert(customer=customer, data=cancelled, acting_user=IMPORT)
    assert order.reversals.count() == 1
    assert order.reversals.get().reason == "お客様都合"


def test_bad_orders_are_refused_with_the_field_named() -> None:
    customer = make_customer()
    with pytest.raises(ValidationError) as excinfo:
        order_upsert(customer=customer, data=_order(lines=()), acting_user=IMPORT)
    assert "lines" in excinfo.value.message_dict
    with pytest.raises(ValidationError) as excinfo:
        order_upsert(customer=customer, data=_order(discount=5000), acting_user=IMPORT)
    assert "total" in excinfo.value.message_dict
    assert not Order.objects.exists()


def test_resolution_matches_on_normalised_identities() -> None:
    first = customer_resolve(
        identities={IdentityKind.EMAIL: "Hanako@Example.jp", IdentityKind.PHONE: "090-1234-5678"},
        profile={"family_name": "山田", "given_name": "花子", "family_kana": "ヤマダ"},
        acting_user=IMPORT,
        source="test",
    )
    again = customer_resolve(
        identities={IdentityKind.PHONE: "０９０１２３４５６７８"},
        profile={"family_name": "山田"},
        acting_user=IMPORT,
        source="test",
    )
    assert first.created
    assert not again.created
    assert again.customer.pk == first.customer.pk


def test_cart_member_id_wins_over_a_shared_phone() -> None:
    husband = customer_resolve(
        identities={IdentityKind.CART_MEMBER: "EC100", IdentityKind.PHONE: "03-1234-5678"},
        profile={"family_name": "鈴木", "given_name": "一郎"},
        acting_user=IMPORT,
        source="test",
    ).customer
    # a different cart member on the same landline is another person, proposed for review
    wife = customer_resolve(
        identities={IdentityKind.CART_MEMBER: "EC200", IdentityKind.PHONE: "0312345678"},
        profile={"family_name": "鈴木", "given_name": "花子"},
        acting_user=IMPORT,
        source="test",
    )
    assert wife.created
    assert wife.customer.pk != husband.pk
    assert wife.customer.identities.get(kind=IdentityKind.CART_MEMBER).value == "EC200"
    # the landline stays with its first owner; the pair waits in the review queue
    assert not wife.customer.identities.filter(kind=IdentityKind.PHONE).exists()
    candidate = DuplicateCandidate.objects.get()
    assert candidate.reason == "同じ電話番号でカート会員IDが異なる"


def test_an_unknown_cart_id_on_a_known_email_without_cart_id_is_attached() -> None:
    guest = customer_resolve(
        identities={IdentityKind.EMAIL: "guest@example.jp"},
        profile={"family_name": "佐藤"},
        acting_user=IMPORT,
        source="test",
    ).customer
    member = customer_resolve(
        identities={IdentityKind.EMAIL: "guest@example.jp", IdentityKind.CART_MEMBER: "EC300"},
        profile={"family_name": "佐藤"},
        acting_user=IMPORT,
        source="test",
    )
    assert not member.created
    assert member.customer.pk == guest.pk
    assert guest.identities.filter(kind=IdentityKind.CART_MEMBER, value="EC300").exists()


def test_same_kana_and_postal_code_is_proposed_not_merged() -> None:
    existing = make_customer(family_kana="ヤマダ", given_kana="ハナコ", postal_code="1500002")
    result = customer_resolve(
        identities={IdentityKind.EMAIL: "new-address@example.jp"},
        profile={
            "family_name": "山田",
            "given_name": "花子",
            "family_kana": "やまだ",
            "given_kana": "はなこ",
            "postal_code": "150-0002",
        },
        acting_user=IMPORT,
        source="test",
    )
    assert result.created
    candidate = DuplicateCandidate.objects.get()
    assert {candidate.customer_a_id, candidate.customer_b_id} == {existing.pk, result.customer.pk}
    assert "カナ" in candidate.reason
