"""Co-purchase recommendations: "customers who bought X next bought Y".

For every customer, each order is paired with the customer's next order (by time); every
product in the first and a different product in the second make one (X, Y) pair, counted once
per customer. The top pairs per X are kept in CoPurchase. The whole computation is one SQL
statement (window function + join + GROUP BY) that runs the same on SQLite and PostgreSQL;
nothing here loops over customers or orders in Python.
"""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from kizuna.campaigns.automation.models import CoPurchase
from kizuna.commerce.models import Order, OrderLine, OrderStatus, Product, ProductKind

TOP_PER_PRODUCT = 5
# Recomputed at most this often by the scheduler: co-purchase patterns move slowly.
REFRESH_EVERY = dt.timedelta(hours=24)


def _sql() -> str:
    order, line, product = Order._meta.db_table, OrderLine._meta.db_table, Product._meta.db_table
    target = CoPurchase._meta.db_table
    return f"""
        INSERT INTO {target} (product_id, next_product_id, customers, rank, computed_at)
        WITH seq AS (
            SELECT id, customer_id,
                   ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY ordered_at, id) AS n
            FROM {order} WHERE status NOT IN (%s, %s)
        ),
        pairs AS (
            SELECT DISTINCT a.customer_id, la.product_id AS x, lb.product_id AS y
            FROM seq a
            JOIN seq b ON b.customer_id = a.customer_id AND b.n = a.n + 1
            JOIN {line} la ON la.order_id = a.id
            JOIN {line} lb ON lb.order_id = b.id
            WHERE la.product_id <> lb.product_id
        ),
        counted AS (
            SELECT pairs.x, pairs.y, COUNT(*) AS n
            FROM pairs JOIN {product} p ON p.id = pairs.y
            WHERE p.is_active AND p.kind <> %s
            GROUP BY pairs.x, pairs.y
        )
        SELECT x, y, n, rk, %s FROM (
            SELECT x, y, n, ROW_NUMBER() OVER (PARTITION BY x ORDER BY n DESC, y) AS rk
            FROM counted
        ) ranked
        WHERE rk <= %s
    """  # noqa: S608 - table names from the models, every value a parameter


@transaction.atomic
def copurchase_refresh(*, now: dt.datetime | None = None) -> int:
    """Recompute the co-purchase table; returns the number of pairs kept."""
    now = now or timezone.now()
    void = (OrderStatus.CANCELLED.value, OrderStatus.RETURNED.value)
    CoPurchase.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(_sql(), [*void, ProductKind.SAMPLE.value, now, TOP_PER_PRODUCT])
    return CoPurchase.objects.count()


def copurchase_refresh_if_stale(*, now: dt.datetime) -> bool:
    """Refresh when the table is older than REFRESH_EVERY (or empty); True when it ran."""
    last = CoPurchase.objects.aggregate(last=Max("computed_at"))["last"]
    if last is not None and now - last < REFRESH_EVERY:
        return False
    copurchase_refresh(now=now)
    return True


def copurchase_table() -> dict[int, list[tuple[int, str, int]]]:
    """{product id: [(next product id, name, price), …]} best first; one small query."""
    table: dict[int, list[tuple[int, str, int]]] = {}
    rows = CoPurchase.objects.order_by("product_id", "rank").values_list(
        "product_id", "next_product_id", "next_product__name", "next_product__price"
    )
    for product_id, next_id, name, price in rows:
        table.setdefault(product_id, []).append((next_id, name, price))
    return table
