"""kizuna.core.fetch: reads by key give what the ORM gives, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction

from kizuna.commerce.models import Order
from kizuna.core.audit import Actor, audit_record
from kizuna.core.fetch import instances_where_in, rows_where_in
from kizuna.core.models import AuditLog
from tests.factories import make_customer, make_order

pytestmark = pytest.mark.django_db


def _fields(instance: object) -> dict[str, object]:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}  # type: ignore[attr-defined]


def test_instances_equal_the_orms_with_converted_datetimes() -> None:
    customer = make_customer()
    at = dt.datetime(2026, 4, 1, 1, 30, tzinfo=dt.UTC)
    orders = [make_order(customer, ordered_at=at + dt.timedelta(hours=n)) for n in range(3)]
    numbers = [orders[2].number, orders[0].number, "NOT-STORED"]

    fetched = instances_where_in(Order, "number", numbers, order_by="number")

    expected = Order.objects.filter(number__in=numbers).order_by("number")
    assert [_fields(o) for o in fetched] == [_fields(o) for o in expected]
    assert fetched[0].ordered_at == at  # an aware datetime, not SQLite's text
    assert not fetched[0]._state.adding  # saved instances: save() updates, not inserts


def test_json_columns_are_decoded() -> None:
    customer = make_customer()
    audit_record(
        actor=Actor.system("test"),
        action="test.fetch",
        instance=customer,
        customer_id=customer.pk,
        changes={"メモ": [None, "髙﨑"]},
    )
    entry = AuditLog.objects.get(action="test.fetch")

    ((changes, action),) = rows_where_in(AuditLog, ("changes", "action"), "id", [entry.pk])

    assert changes == {"メモ": [None, "髙﨑"]}
    assert action == "test.fetch"


def test_no_values_reads_nothing(django_assert_num_queries: object) -> None:
    with django_assert_num_queries(0):  # type: ignore[operator]
        assert instances_where_in(Order, "number", []) == []


def test_for_update_locks_inside_a_transaction() -> None:
    order = make_order(make_customer())
    with transaction.atomic():
        (locked,) = instances_where_in(Order, "number", [order.number], for_update=True)
        locked.total = 1
        locked.save(update_fields=["total"])
    order.refresh_from_db()
    assert order.total == 1
