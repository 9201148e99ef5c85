"""One pipeline, several engines: DuckDB (default), the operational PostgreSQL, and the ways
data leaves the database for DuckDB. Equal inputs must give equal snapshots everywhere.

PostgreSQL comparisons need committed rows (the engine opens its own connection), hence
transactional tests. On an SQLite test database the postgres engine must refuse clearly.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import ibis
import pyarrow as pa
import pytest
from django.db import connection

from kizuna.analytics.models import AnalyticsRun, CustomerScore, KpiTable, RunStatus
from kizuna.analytics.pipeline.extract import snapshot_from_database
from kizuna.analytics.pipeline.kpis import day_number
from kizuna.analytics.pipeline.run import AnalyticsRunError
from tests.analytics_shop import build_varied_shop, run

AS_OF = dt.date(2025, 6, 30)
FLOAT_COLUMNS = ("expected_purchases", "p_alive", "expected_avg_spend", "clv_12m")


def test_duckdb_create_table_works_with_the_installed_ibis_and_sqlglot() -> None:
    # Ibis 12 with sqlglot 30 breaks DuckDB's create_table (parser error): the pin must hold.
    con = ibis.duckdb.connect()
    orders = con.create_table("orders", pa.table({"customer": [1, 1, 2], "amount": [5, 7, 11]}))
    totals = con.create_table(
        "totals", orders.group_by("customer").aggregate(t=orders.amount.sum())
    )
    assert dict(totals.order_by("customer").to_pyarrow().to_pydict().items()) == {
        "customer": [1, 2],
        "t": [12, 11],
    }


def _snapshot_dict(method: str) -> dict[str, Any]:
    snapshot = snapshot_from_database(method=method)
    return {
        name: table.sort_by([(table.column_names[0], "ascending")]).to_pydict()
        for name, table in snapshot.tables().items()
    }


@pytest.mark.django_db(transaction=True)
def test_every_extraction_method_reads_the_same_snapshot() -> None:
    # given a shop with orders either side of midnight JST
    build_varied_shop()
    # when the tables are read through Django's cursor and through connectorx (and COPY on
    # PostgreSQL)
    cursor = _snapshot_dict("cursor")
    assert _snapshot_dict("connectorx") == cursor
    if connection.vendor == "postgresql":
        assert _snapshot_dict("copy") == cursor
    else:
        with pytest.raises(ValueError, match="PostgreSQL"):
            snapshot_from_database(method="copy")
    # then 23:59:59 and 00:00:00 JST land on their own JST days and months
    orders = snapshot_from_database(method="cursor").orders
    days = set(orders.column("day").to_pylist())
    assert day_number(dt.date(2025, 3, 31)) in days
    assert day_number(dt.date(2025, 4, 1)) in days


def _stored(analytics_run: AnalyticsRun) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = list(
        CustomerScore.objects.filter(run=analytics_run)
        .order_by("customer_id")
        .values(
            *[
                f.attname
                for f in CustomerScore._meta.concrete_fields
                if f.attname not in ("id", "run_id")
            ]
        )
    )
    kpis = {k.name: k.rows for k in KpiTable.objects.filter(run=analytics_run)}
    return rows, kpis


def assert_same_snapshot(a: AnalyticsRun, b: AnalyticsRun) -> None:
    """Every column equal; the model outputs (floats from an iterative fit on identical inputs)
    to 1e-9 relative, so a BLAS summation order cannot fail the comparison."""
    rows_a, kpis_a = _stored(a)
    rows_b, kpis_b = _stored(b)
    assert len(rows_a) == len(rows_b) > 0
    for x, y in zip(rows_a, rows_b, strict=True):
        exact = {k: v for k, v in x.items() if k not in FLOAT_COLUMNS}
        assert exact == {k: v for k, v in y.items() if k not in FLOAT_COLUMNS}
        for column in FLOAT_COLUMNS:
            if x[column] is None or y[column] is None:
                assert x[column] == y[column]
            else:
                assert x[column] == pytest.approx(y[column], rel=1e-9)
    assert kpis_a == kpis_b
    assert set(kpis_a) >= {
        "f_conversion",
        "repeat_rate_month",
        "upgrade",
        "cohorts:channel",
        "cpm_changes",
        "cpm_forecast",
        "fan_indicators",
        "subscription_sbg",
    }


@pytest.mark.django_db(transaction=True)
def test_postgres_engine_gives_the_duckdb_snapshot_or_refuses_on_sqlite() -> None:
    build_varied_shop()
    on_duckdb = run(AS_OF, "duckdb")
    if connection.vendor == "postgresql":
        # when the same expressions run inside PostgreSQL on the operational tables
        on_postgres = run(AS_OF, "postgres")
        # then the snapshots are the same, row for row and KPI for KPI
        assert on_postgres.status == RunStatus.DONE
        assert_same_snapshot(on_duckdb, on_postgres)
    else:
        with pytest.raises(AnalyticsRunError, match="PostgreSQL のときだけ"):
            run(AS_OF, "postgres")
        failed = AnalyticsRun.objects.latest("id")
        assert failed.status == RunStatus.FAILED
        assert "PostgreSQL" in failed.message


@pytest.mark.django_db(transaction=True)
def test_the_jst_calendar_is_the_same_inside_postgresql() -> None:
    build_varied_shop()
    on_duckdb = run(AS_OF, "duckdb")
    late = CustomerScore.objects.filter(run=on_duckdb).order_by("-customer_id").first()
    assert late is not None
    # the customer who ordered at 23:59:59 JST on 3/31, 00:00 on 4/1 and 23:59:59 on 6/30
    # (and once more after the as-of day, not counted)
    assert (late.first_purchase_on, late.last_purchase_on) == (dt.date(2025, 3, 31), AS_OF)
    assert (late.purchase_count, late.days_since_last) == (3, 0)
    if connection.vendor == "postgresql":
        on_postgres = run(AS_OF, "postgres")
        same = CustomerScore.objects.get(run=on_postgres, customer_id=late.customer_id)
        assert (same.first_purchase_on, same.last_purchase_on, same.purchase_count) == (
            late.first_purchase_on,
            late.last_purchase_on,
            late.purchase_count,
        )
