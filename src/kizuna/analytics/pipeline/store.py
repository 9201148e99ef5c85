"""Write a run's snapshot into the operational database, fast, and prune old per-customer rows.

Per-customer rows go in with PostgreSQL COPY (CSV written by Arrow) or SQLite executemany in
large batches; neither builds a model instance per customer. Aggregates are a few hundred rows
and use the ORM.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from django.db import connections, transaction

from kizuna.analytics.models import AnalyticsRun, CustomerScore, KpiTable, RunStatus, SegmentCount
from kizuna.analytics.pipeline.compute import CUSTOMER_COLUMNS, PipelineResult

EXECUTEMANY_BATCH = 50_000
COPY_BATCH_ROWS = 200_000


def _score_table(run: AnalyticsRun, customers: pa.Table) -> pa.Table:
    n = customers.num_rows
    run_ids = pa.array(np.full(n, run.pk, dtype=np.int64))
    as_of = pa.array(np.full(n, np.datetime64(run.as_of, "D")), pa.date32())
    return customers.append_column("run_id", run_ids).append_column("as_of", as_of)


def _column_names() -> list[str]:
    return ["run_id", "as_of", *CUSTOMER_COLUMNS]


def _db_columns() -> list[str]:
    fields = {f.attname: f.column for f in CustomerScore._meta.concrete_fields}
    return [fields[name] for name in _column_names()]


def _copy_postgres(cursor: Any, table: pa.Table) -> None:
    columns = ", ".join(_db_columns())
    sql = f"COPY {CustomerScore._meta.db_table} ({columns}) FROM STDIN WITH (FORMAT csv)"
    with cursor.copy(sql) as copy:
        for start in range(0, table.num_rows, COPY_BATCH_ROWS):
            buffer = io.BytesIO()
            pa_csv.write_csv(
                table.slice(start, COPY_BATCH_ROWS),
                buffer,
                write_options=pa_csv.WriteOptions(include_header=False, quoting_style="needed"),
            )
            copy.write(buffer.getvalue())


def _python_columns(table: pa.Table) -> list[list[Any]]:
    """Each column as a Python list in the types sqlite3 takes (dates as ISO text)."""
    out = []
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_date(column.type):
            column = pc.cast(column, pa.string())
        out.append(column.to_pylist())
    return out


def _batches(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while batch := list(itertools.islice(rows, size)):
        yield batch


def _executemany(cursor: Any, table: pa.Table) -> None:
    columns = _db_columns()
    placeholders = ", ".join(["%s"] * len(columns))
    sql = (
        f"INSERT INTO {CustomerScore._meta.db_table} ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608
    )
    rows = zip(*_python_columns(table), strict=True)
    for batch in _batches(rows, EXECUTEMANY_BATCH):
        cursor.executemany(sql, batch)


def store_customer_scores(
    run: AnalyticsRun, customers: pa.Table, *, using: str = "default"
) -> None:
    table = _score_table(run, customers).select(_column_names())
    conn = connections[using]
    with conn.cursor() as cursor:
        raw = getattr(cursor, "cursor", cursor)
        if conn.vendor == "postgresql":
            _copy_postgres(raw, table)
        elif conn.vendor == "sqlite":
            _executemany(raw, table)
        else:
            CustomerScore.objects.using(using).bulk_create(
                CustomerScore(**row) for row in table.to_pylist()
            )


def store_result(run: AnalyticsRun, result: PipelineResult, *, using: str = "default") -> None:
    """All of a run's snapshot, in one transaction: readers see all of it or none of it."""
    with transaction.atomic(using=using):
        store_customer_scores(run, result.customers, using=using)
        SegmentCount.objects.using(using).bulk_create(
            SegmentCount(run=run, as_of=run.as_of, **row) for row in result.segments
        )
        KpiTable.objects.using(using).bulk_create(_kpi_rows(run, result.kpis))
        run.customers = result.customers.num_rows
        run.purchases = int(result.kpis.get("headline", {}).get("purchases", 0))
        run.predictions = result.predictions
        run.customer_rows_kept = True
        run.save(
            using=using,
            update_fields=["customers", "purchases", "predictions", "customer_rows_kept"],
        )


def _kpi_rows(run: AnalyticsRun, kpis: dict[str, Any]) -> Iterator[KpiTable]:
    for name, value in kpis.items():
        if name == "cohorts":
            for split, rows in value.items():
                yield KpiTable(run=run, as_of=run.as_of, name=f"cohorts:{split}", rows=rows)
        else:
            yield KpiTable(run=run, as_of=run.as_of, name=name, rows=value)


def prune_customer_scores(*, keep: int, using: str = "default") -> int:
    """Delete per-customer rows of all but the `keep` latest finished runs; returns runs pruned."""
    kept = (
        AnalyticsRun.objects.using(using)
        .filter(status=RunStatus.DONE, customer_rows_kept=True)
        .order_by("-as_of", "-id")
    )
    old = list(kept.values_list("id", flat=True)[keep:])
    if not old:
        return 0
    with transaction.atomic(using=using):
        CustomerScore.objects.using(using).filter(run_id__in=old).delete()
        AnalyticsRun.objects.using(using).filter(id__in=old).update(customer_rows_kept=False)
    return len(old)
