"""The bulk write path (`orders_upsert_many`, `customers_resolve_many`): a chunk gives the same
result as the same inputs upserted one after another, in a number of statements that does not
grow with the chunk."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from kizuna.commerce.models import Order, OrderStatus, ProductKind
from kizuna.commerce.services import (
    LineInput,
    OrderInput,
    OrderItem,
    UpsertOutcome,
    order_upsert,
    orders_upsert_many,
)
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from kizuna.customers.models import (
    Customer,
    DuplicateCandidate,
    Identity,
    IdentityKind,
    TimelineEvent,
    TimelineKind,
)
from kizuna.customers.resolution import (
    ResolveRequest,
    customer_resolve,
    customers_resolve_many,
)
from tests.factories import make_customer

pytestmark = pytest.mark.django_db
IMPORT = Actor.system("test-import")
T0 = timezone.make_aware(dt.datetime(2026, 5, 1, 10, 0))


def _order(number: str, **overrides: Any) -> OrderInput:
    values: dict[str, Any] = {
        "number": number,
        "ordered_at": T0,
        "lines": (LineInput("SK-TR-01", "美容液トライアル", 980, 1, ProductKind.TRIAL),),
    }
    values.update(overrides)
    return OrderInput(**values)


def _who(email: str, **profile: Any) -> ResolveRequest:
    return ResolveRequest(
        identities={IdentityKind.EMAIL: email},
        profile={"family_name": "山田", **profile},
    )


SHIPPED = {
    "status": OrderStatus.SHIPPED,
    "shipped_on": dt.date(2026, 5, 2),
    "tracking_number": "1111",
}


def test_the_same_order_twice_in_one_chunk_is_two_upserts_in_turn() -> None:
    results = orders_upsert_many(
        [
            OrderItem(_order("A-1"), who=_who("a@example.jp")),
            OrderItem(_order("A-1", **SHIPPED), who=_who("a@example.jp")),
            OrderItem(_order("A-1", **SHIPPED), who=_who("a@example.jp")),
        ],
        acting_user=IMPORT,
    )
    assert [r.outcome for r in results] == [
        UpsertOutcome.CREATED,
        UpsertOutcome.UPDATED,
        UpsertOutcome.UNCHANGED,
    ]
    order = Order.objects.get()
    assert order.status == OrderStatus.SHIPPED
    assert order.shipments.get().tracking_number == "1111"
    actions = list(
        AuditLog.objects.filter(entity="commerce.Order").values_list("action", flat=True)
    )
    assert actions == ["order.create", "order.update"]


def test_the_same_new_customer_in_two_orders_of_a_chunk_is_created_once() -> None:
    results = orders_upsert_many(
        [
            OrderItem(_order("A-1"), who=_who("Hanako@Example.jp")),
            OrderItem(_order("A-2"), who=_who("hanako@example.jp")),
        ],
        acting_user=IMPORT,
    )
    assert [r.customer_created for r in results] == [True, False]
    customer = Customer.objects.get()
    assert {o.customer_id for o in Order.objects.all()} == {customer.pk}
    assert Identity.objects.get().value == "hanako@example.jp"


def test_a_refused_order_writes_nothing_and_the_others_are_stored() -> None:
    results = orders_upsert_many(
        [
            OrderItem(_order("A-1"), who=_who("a@example.jp")),
            OrderItem(_order("A-2", discount=5000), who=_who("b@example.jp")),
            OrderItem(
                _order("A-3"), who=ResolveRequest(identities={IdentityKind.EMAIL: "c@example.jp"})
            ),
            OrderItem(_order("A-4"), who=_who("d@example.jp")),
        ],
        acting_user=IMPORT,
    )
    assert [r.outcome for r in results] == [
        UpsertOutcome.CREATED,
        None,
        None,
        UpsertOutcome.CREATED,
    ]
    assert results[1].error is not None
    assert "total" in results[1].error.message_dict
    assert not results[1].customer_error
    # the third has no family name for its new customer: refused as a customer error
    assert results[2].error is not None
    assert results[2].customer_error
    assert "family_name" in results[2].error.message_dict
    assert sorted(Order.objects.values_list("number", flat=True)) == ["A-1", "A-4"]
    assert not Identity.objects.filter(value__in=["b@example.jp", "c@example.jp"]).exists()


def test_an_update_keeps_the_order_with_its_customer_without_resolving() -> None:
    orders_upsert_many([OrderItem(_order("A-1"), who=_who("a@example.jp"))], acting_user=IMPORT)
    (result,) = orders_upsert_many(
        [OrderItem(_order("A-1", payment_method="代金引換"), who=_who("new@example.jp"))],
        acting_user=IMPORT,
    )
    assert result.outcome == UpsertOutcome.UPDATED
    assert Customer.objects.count() == 1
    assert not Identity.objects.filter(value="new@example.jp").exists()


def test_every_write_of_a_chunk_is_audited_and_on_the_timeline() -> None:
    orders_upsert_many(
        [
            OrderItem(
                _order("A-1", **SHIPPED, delivered_on=dt.date(2026, 5, 3)), who=_who("a@x.jp")
            ),
            OrderItem(_order("A-2", status=OrderStatus.CANCELLED), who=_who("b@x.jp")),
        ],
        acting_user=IMPORT,
    )
    customers = list(Customer.objects.order_by("pk"))
    identities = list(Identity.objects.order_by("pk"))
    audited = set(AuditLog.objects.values_list("action", "entity", "entity_id", "customer_id"))
    for customer in customers:
        assert ("customer.create", "customers.Customer", str(customer.pk), customer.pk) in audited
    for identity in identities:
        assert (
            "identity.add",
            "customers.Identity",
            str(identity.pk),
            identity.customer_id,
        ) in audited
    for order in Order.objects.all():
        assert ("order.create", "commerce.Order", str(order.pk), order.customer_id) in audited
    first = Order.objects.get(number="A-1")
    kinds = list(
        TimelineEvent.objects.filter(customer=first.customer)
        .order_by("id")
        .values_list("kind", "ref_entity", "ref_id")
    )
    shipment = first.shipments.get()
    assert kinds == [
        (TimelineKind.PROFILE, "customers.Customer", first.customer_id),
        (TimelineKind.ORDER, "commerce.Order", first.pk),
        (TimelineKind.SHIPMENT, "commerce.Shipment", shipment.pk),
        (TimelineKind.DELIVERY, "commerce.Shipment", shipment.pk),
    ]
    cancelled = Order.objects.get(number="A-2")
    reversal = cancelled.reversals.get()
    assert TimelineEvent.objects.filter(
        kind=TimelineKind.CANCELLATION, ref_entity="commerce.OrderReversal", ref_id=reversal.pk
    ).exists()


def _chunk(size: int, offset: int) -> list[OrderItem]:
    # Namesakes at ten postal codes: every chunk proposes duplicates, fewer than
    # COPY_MIN_ROWS of them — past that PostgreSQL moves the proposals through a temporary
    # table, a few statements more once per chunk (core.bulk.insert_rows), not per row.
    return [
        OrderItem(
            _order(f"N-{offset + n}", **(SHIPPED if n % 2 else {})),
            who=_who(
                f"c{offset + n}@example.jp", family_kana="ヤマダ", postal_code=f"150{n % 10:04d}"
            ),
        )
        for n in range(size)
    ]


def test_a_chunk_takes_the_same_number_of_statements_whatever_its_size() -> None:
    # (SQLite splits an INSERT every 999 parameters, so the sizes stay below that)
    orders_upsert_many(_chunk(1, 1000), acting_user=IMPORT)  # the catalogue has the product
    counts = []
    for size, offset in ((3, 0), (30, 100)):
        with CaptureQueriesContext(connection) as queries:
            orders_upsert_many(_chunk(size, offset), acting_user=IMPORT)
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
    # and re-sending both chunks as updates costs the same per chunk too
    with CaptureQueriesContext(connection) as small:
        orders_upsert_many(_chunk(3, 0), acting_user=IMPORT)
    with CaptureQueriesContext(connection) as large:
        orders_upsert_many(_chunk(30, 100), acting_user=IMPORT)
    assert len(small) == len(large)


def _snapshot() -> dict[str, Any]:
    """What a user sees of the ingest: orders, lines, fulfilment, customers, the review queue,
    the timeline and the audit trail (ids aside)."""
    by_email = {i.customer_id: i.value for i in Identity.objects.filter(kind=IdentityKind.EMAIL)}

    def who(customer_id: int) -> str:
        return by_email.get(customer_id, f"#{Customer.objects.get(pk=customer_id).given_name}")

    return {
        "orders": sorted(
            (o.number, o.status, o.total, o.payment_method, who(o.customer_id))
            for o in Order.objects.all()
        ),
        "lines": sorted(
            Order.objects.values_list("number", "lines__product__code", "lines__quantity")
        ),
        "shipments": sorted(
            Order.objects.filter(shipments__isnull=False).values_list(
                "number", "shipments__delivered_on", "shipments__tracking_number"
            )
        ),
        "customers": Customer.objects.count(),
        "identities": sorted(Identity.objects.values_list("kind", "value")),
        "duplicates": sorted(
            (who(d.customer_a_id), who(d.customer_b_id), d.reason)
            for d in DuplicateCandidate.objects.all()
        ),
        "timeline": sorted(
            (who(e.customer_id), e.kind, e.title) for e in TimelineEvent.objects.all()
        ),
        "audit": sorted(AuditLog.objects.values_list("action", "entity")),
    }


def _upsert_one(item: OrderItem) -> UpsertOutcome:
    """What the importer did before the bulk path: the stored order's customer, or resolve."""
    assert item.who is not None
    order = Order.objects.filter(number=item.data.number).first()
    customer = (
        order.customer
        if order is not None
        else customer_resolve(
            identities=item.who.identities,
            profile=item.who.profile,
            acting_user=IMPORT,
            source="test",
        ).customer
    )
    return order_upsert(customer=customer, data=item.data, acting_user=IMPORT)[1]


def test_a_chunk_ends_where_the_same_upserts_one_by_one_end() -> None:
    # given a mix: repeat and new customers, a family sharing a landline, same name kana and
    # postal code, updates and a stale update of orders seen earlier in the chunk
    landline = {IdentityKind.PHONE: "03-1234-5678"}
    items = [
        OrderItem(_order("A-1"), who=_who("a@example.jp", given_name="花子")),
        OrderItem(
            _order("A-2"),
            who=ResolveRequest(
                {IdentityKind.CART_MEMBER: "EC1", **landline}, {"family_name": "鈴木"}
            ),
        ),
        OrderItem(
            _order("A-3"),
            who=ResolveRequest(
                {IdentityKind.CART_MEMBER: "EC2", **landline},
                {"family_name": "鈴木", "given_name": "妻"},
            ),
        ),
        OrderItem(_order("A-1", **SHIPPED), who=_who("a@example.jp")),
        OrderItem(
            _order("A-4", source_updated_at=T0),
            who=_who("b@example.jp", family_kana="ヤマダ", postal_code="1500002"),
        ),
        OrderItem(
            _order("A-5", payment_method="カード"),
            who=_who("c@example.jp", family_kana="やまだ", postal_code="150-0002"),
        ),
        OrderItem(
            _order("A-4", status=OrderStatus.CANCELLED, source_updated_at=T0 - dt.timedelta(1)),
            who=_who("b@example.jp"),
        ),
        OrderItem(
            _order("A-1", status=OrderStatus.DELIVERED, delivered_on=dt.date(2026, 5, 4)),
            who=_who("a@example.jp"),
        ),
        OrderItem(_order("A-6", discount=99999), who=_who("d@example.jp")),
    ]
    make_customer(family_kana="ヤマダ", given_kana="", postal_code="1500002")

    def one_by_one() -> list[Any]:
        outcomes: list[Any] = []
        for item in items:
            try:
                with transaction.atomic():  # a refused order writes nothing
                    outcomes.append(_upsert_one(item))
            except Exception as exc:  # compared below
                outcomes.append(type(exc).__name__)
        return outcomes

    def in_one_chunk() -> list[Any]:
        results = orders_upsert_many(items, acting_user=IMPORT, source="test")
        return [r.outcome or type(r.error).__name__ for r in results]

    with transaction.atomic():
        sequential = one_by_one()
        expected = _snapshot()
        transaction.set_rollback(True)
    with transaction.atomic():
        bulk = in_one_chunk()
        got = _snapshot()
        transaction.set_rollback(True)
    # then
    assert bulk == sequential
    assert sequential[-1] == "ValidationError"
    assert UpsertOutcome.STALE in sequential
    for key in expected:
        assert got[key] == expected[key], key
    assert expected["duplicates"], "the mix proposes duplicates"


def test_resolving_a_chunk_proposes_what_one_by_one_would() -> None:
    # given one existing member on a landline
    customer_resolve(
        identities={IdentityKind.CART_MEMBER: "EC100", IdentityKind.PHONE: "03-1234-5678"},
        profile={"family_name": "鈴木", "given_name": "一郎"},
        acting_user=IMPORT,
        source="test",
    )
    # when a chunk brings another member on it, twice, and a guest with a bad phone
    results = customers_resolve_many(
        [
            ResolveRequest(
                {IdentityKind.CART_MEMBER: "EC200", IdentityKind.PHONE: "0312345678"},
                {"family_name": "鈴木", "given_name": "花子"},
            ),
            ResolveRequest({IdentityKind.CART_MEMBER: "EC200"}, {"family_name": "鈴木"}),
            ResolveRequest({IdentityKind.PHONE: "12"}, {"family_name": "佐藤"}),
        ],
        acting_user=IMPORT,
        source="test",
    )
    # then the wife is a new record, matched again by her member ID; the pair waits for review
    wife, again, bad = results
    assert not isinstance(wife, Exception)
    assert not isinstance(again, Exception)
    assert wife.created
    assert not again.created
    assert again.customer.pk == wife.customer.pk
    assert isinstance(bad, Exception)
    assert DuplicateCandidate.objects.get().reason == "同じ電話番号でカート会員IDが異なる"
