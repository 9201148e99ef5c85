"""File mode for analysts: transactions file in, per-customer table and KPI JSON out, no database.

    kizuna analytics report --transactions orders.csv --as-of 2025-06-30 --out result/

writes result/customers.csv, result/customers.parquet (summary, RFM, CPM, predictions) and
result/kpis.json (the KPIs computable from transactions alone: F2/F3/F4, both リピート率,
cohort retention and LTV, segment counts, headline numbers). DuckDB reads the file itself.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from kizuna.analytics.pipeline.backends import connect_duckdb
from kizuna.analytics.pipeline.compute import PipelineResult, compute
from kizuna.analytics.pipeline.config import AnalyticsConfig
from kizuna.analytics.pipeline.steps import OnStep, StepClock
from kizuna.analytics.pipeline.tables import DEFAULT_COLUMNS, file_tables

REPORT_STEPS = ["load", "summary", "predictions", "repeat", "cohorts", "dynamics", "fans"]


class ColumnsError(ValueError):
    """--columns could not be read; the message shows the expected form, in Japanese."""


def parse_columns(text: str | None) -> dict[str, str]:
    """ "customer=会員ID,date=受注日,amount=合計" → the column mapping (defaults for the rest)."""
    columns = dict(DEFAULT_COLUMNS)
    if not text:
        return columns
    allowed = {"customer", "date", "amount", "order"}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in allowed or not value:
            raise ColumnsError(
                "--columns は「customer=列名,date=列名,amount=列名」の形で指定してください"
                f"(order=列名 も指定できます)。読めなかった部分: {part.strip()}"
            )
        columns[key] = value
    return columns


@dataclass(frozen=True)
class ReportFiles:
    customers_csv: Path
    customers_parquet: Path
    kpis_json: Path
    result: PipelineResult


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"JSON にできない値です: {type(value).__name__}")


def write_report(
    *,
    transactions: Path,
    as_of: dt.date,
    out: Path,
    columns: Mapping[str, str] | None = None,
    cfg: AnalyticsConfig | None = None,
    on_step: OnStep | None = None,
) -> ReportFiles:
    """Compute the per-customer table and the KPIs from a transactions file into `out`."""
    config = cfg or AnalyticsConfig()
    clock = StepClock(REPORT_STEPS, on_step)
    con = connect_duckdb()
    with clock.step("load"):
        tables = file_tables(con, transactions, columns or DEFAULT_COLUMNS)
    result = compute(tables, as_of=as_of, cfg=config, clock=clock)
    out.mkdir(parents=True, exist_ok=True)
    customers: pa.Table = result.customers
    csv_path, parquet_path, json_path = (
        out / "customers.csv",
        out / "customers.parquet",
        out / "kpis.json",
    )
    pa_csv.write_csv(customers, csv_path)
    pq.write_table(customers, parquet_path)
    payload = {
        "as_of": as_of.isoformat(),
        "transactions": str(transactions),
        "kpis": result.kpis,
        "segments": result.segments,
        "predictions": result.predictions,
        "timings": result.timings,
    }
    json_path.write_text(
        json.dumps(payload, ensure_ascii=False, indent=2, default=_json_default), encoding="utf-8"
    )
    return ReportFiles(csv_path, parquet_path, json_path, result)
