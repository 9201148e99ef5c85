"""Audit log, points ledger and consent evidence cannot be rewritten, by the ORM or by SQL."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from kizuna.core.audit import Actor
from kizuna.core.models import AppendOnlyError, AuditLog
from kizuna.customers.models import ConsentEvent
from kizuna.loyalty.models import PointEntry
from kizuna.loyalty.services import points_earn
from tests.factories import make_customer

pytestmark = pytest.mark.django_db


def _audit_row() -> AuditLog:
    return AuditLog.objects.create(
        at=timezone.now(), actor_label="t", action="x", entity="e", entity_id="1", changes={}
    )


def test_orm_refuses_update_and_delete() -> None:
    row = _audit_row()
    row.action = "changed"
    with pytest.raises(AppendOnlyError):
        row.save()
    with pytest.raises(AppendOnlyError):
        row.delete()
    with pytest.raises(AppendOnlyError):
        AuditLog.objects.filter(pk=row.pk).update(action="changed")
    with pytest.raises(AppendOnlyError):
        AuditLog.objects.all().delete()


@pytest.mark.parametrize("table", ["core_auditlog", "loyalty_pointentry", "customers_consentevent"])
def test_database_refuses_sql_update(table: str) -> None:
    customer = make_customer()
    _audit_row()
    points_earn(customer=customer, amount=10, acting_user=_system(), reason="テスト")
    ConsentEvent.objects.create(
        customer=customer,
        channel="email",
        action="grant",
        at=timezone.now(),
        method="web_form",
        recorded_by="t",
    )
    column = {"core_auditlog": "action", "loyalty_pointentry": "reason"}.get(table, "method")
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"UPDATE {table} SET {column} = 'rewritten'")  # noqa: S608


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite guards DELETE in the ORM")
def test_postgresql_refuses_sql_delete() -> None:
    points_earn(customer=make_customer(), amount=10, acting_user=_system(), reason="テスト")
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM loyalty_pointentry")
    assert PointEntry.objects.count() == 1


def _system() -> Actor:
    return Actor.system("test")
