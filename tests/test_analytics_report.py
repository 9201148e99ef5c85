"""File mode for analysts: a transactions file in, a per-customer table and KPI JSON out,
without any database (DuckDB reads the file itself)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command

from kizuna.analytics.pipeline.report import ColumnsError, parse_columns, write_report
from kizuna.analytics.pipeline.tables import TransactionsFileError

AS_OF = dt.date(2025, 6, 30)

# Three customers. C001: 3 purchases (one in another date layout), tenure 100 days, ¥75,000 →
# 流行(現役). C002: two orders the same day → よちよち. C003: one purchase 300 days ago → 初回(離脱).
CSV = """会員ID,受注日,合計
C001,2025-01-01,25000
C001,2025/03/01,25000
C001,20250411,"25,000"
C002,2025-06-01 10:00:00,1000
C002,2025-06-01 18:00:00,1500
C003,2024-09-03,980
"""


def _write_csv(tmp_path: Path, text: str = CSV) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_report_writes_customer_table_and_kpis_without_a_database(tmp_path: Path) -> None:
    # given an analyst's CSV with Japanese column names
    source = _write_csv(tmp_path)
    # when the report is written
    files = write_report(
        transactions=source,
        as_of=AS_OF,
        out=tmp_path / "out",
        columns=parse_columns("customer=会員ID,date=受注日,amount=合計"),
    )
    # then the per-customer table is in CSV and Parquet, the same rows in both
    table = pq.read_table(files.customers_parquet)
    assert pa_csv.read_csv(files.customers_csv).num_rows == table.num_rows == 3
    rows = {r["customer_id"]: r for r in table.to_pylist()}
    assert rows["C001"]["cpm_segment"] == "trendy_active"
    assert (rows["C001"]["purchase_count"], rows["C001"]["total_spend"]) == (3, 75_000)
    assert rows["C001"]["tenure_days"] == 100  # 2025-01-01 → 2025-04-11
    assert rows["C002"]["cpm_segment"] == "toddler_active"
    assert (rows["C002"]["avg_spend"], rows["C002"]["days_since_last"]) == (1250, 29)
    assert rows["C003"]["cpm_segment"] == "first_lapsed"
    assert "clv_12m" in table.column_names
    assert "expected_purchases" in table.column_names
    # and the KPIs computable from transactions alone are in the JSON
    kpis = json.loads(files.kpis_json.read_text(encoding="utf-8"))
    assert kpis["as_of"] == "2025-06-30"
    assert kpis["kpis"]["headline"]["customers"] == 3
    assert kpis["kpis"]["headline"]["f2_customers"] == 2
    assert {"f_conversion", "repeat_rate_month", "repeat_rate_year", "cohorts"} <= set(kpis["kpis"])
    assert "upgrade" not in kpis["kpis"]  # needs product kinds, which a transactions file lacks
    cpm = {s["segment"]: s["customers"] for s in kpis["segments"] if s["kind"] == "cpm"}
    assert cpm == {"trendy_active": 1, "toddler_active": 1, "first_lapsed": 1}


def test_report_reads_parquet_with_default_column_names(tmp_path: Path) -> None:
    source = tmp_path / "tx.parquet"
    pq.write_table(
        pa.table(
            {
                "customer": ["a", "a", "b"],
                "date": pa.array([dt.date(2025, 1, 1), dt.date(2025, 2, 1), dt.date(2025, 6, 1)]),
                "amount": [1000, 2000, 3000],
            }
        ),
        source,
    )
    files = write_report(transactions=source, as_of=AS_OF, out=tmp_path / "o")
    assert files.result.kpis["headline"]["purchases"] == 3
    assert files.result.customers.num_rows == 2


def test_unreadable_rows_stop_the_report_and_are_named(tmp_path: Path) -> None:
    source = _write_csv(
        tmp_path, "customer,date,amount\nA,2025-01-01,100\nB,2025-13-45,100\nC,明日,x\n"
    )
    with pytest.raises(TransactionsFileError) as caught:
        write_report(transactions=source, as_of=AS_OF, out=tmp_path / "out")
    message = str(caught.value)
    assert (
        "列「date」: 日付として読めません(2行。例: 3行目「2025-13-45」, 4行目「明日」)" in message
    )
    assert "列「amount」: 金額として読めません(1行。例: 4行目「x」)" in message
    assert not (tmp_path / "out").exists()


def test_missing_columns_are_named_with_the_columns_the_file_has(tmp_path: Path) -> None:
    source = _write_csv(tmp_path)
    with pytest.raises(TransactionsFileError, match="customer=customer, date=date, amount=amount"):
        write_report(transactions=source, as_of=AS_OF, out=tmp_path / "out")


def test_bad_columns_option_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ColumnsError, match="customer=列名"):
        parse_columns("customer:会員ID")
    with pytest.raises(TransactionsFileError, match="見つかりません"):
        write_report(transactions=tmp_path / "missing.csv", as_of=AS_OF, out=tmp_path / "out")


def test_the_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _write_csv(tmp_path)
    call_command(
        "analytics",
        "report",
        "--transactions",
        str(source),
        "--columns",
        "customer=会員ID,date=受注日,amount=合計",
        "--as-of",
        "2025-06-30",
        "--out",
        str(tmp_path / "result"),
    )
    out = capsys.readouterr().out
    assert "完了: 顧客 3人、購入 6件" in out
    assert (tmp_path / "result" / "customers.parquet").exists()
    with pytest.raises(CommandError, match="金額として読めません"):
        call_command(
            "analytics",
            "report",
            "--transactions",
            str(_write_csv(tmp_path, "customer,date,amount\nA,2025-01-01,abc\n")),
            "--as-of",
            "2025-06-30",
            "--out",
            str(tmp_path / "r2"),
        )
