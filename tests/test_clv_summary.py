"""Transactions → per-customer (x, t_x, T, monetary), and reading analysts' files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kizuna.analytics.clv.summary import (
    DEFAULT_COLUMNS,
    TransactionFileError,
    load_transactions,
    parse_columns,
    summarise,
)

CAL_END = dt.date(2024, 3, 31)
HOLDOUT_END = dt.date(2024, 6, 30)

# (customer, day, amount)
ORDERS = [
    ("A", "2024-01-01", 1000.0),
    ("A", "2024-01-01", 500.0),  # same day: one purchase of ¥1,500
    ("A", "2024-01-11", 2000.0),
    ("A", "2024-02-10", 3000.0),
    ("A", "2024-04-05", 4000.0),  # holdout
    ("A", "2024-04-05", 1000.0),  # holdout, same day
    ("B", "2024-03-31", 800.0),  # first purchase on the calibration end
    ("B", "2024-05-01", 900.0),
    ("B", "2024-06-30", 700.0),
    ("B", "2024-07-01", 600.0),  # after the holdout: ignored
    ("C", "2024-04-10", 1200.0),  # first purchase in the holdout: not a calibration customer
    ("D", "2024-03-01", 1100.0),
    ("D", "2024-02-01", 900.0),
]


def _summary(unit_days: float = 1.0):  # type: ignore[no-untyped-def]
    customer, day, amount = zip(*ORDERS, strict=True)
    return summarise(
        np.array(customer),
        np.array(day, dtype="datetime64[D]"),
        np.array(amount),
        calibration_end=CAL_END,
        holdout_end=HOLDOUT_END,
        unit_days=unit_days,
    )


def test_summary_counts_repeat_purchase_days_up_to_the_calibration_end() -> None:
    s = _summary()
    assert list(s.customer) == ["A", "B", "D"]
    assert list(s.x) == [2, 0, 1]
    assert list(s.t_x) == [40, 0, 29]
    assert list(s.T) == [90, 0, 59]
    assert list(s.first.astype(str)) == ["2024-01-01", "2024-03-31", "2024-02-01"]
    # monetary is the mean of the repeat purchases only (the first is often a discounted trial)
    assert s.monetary is not None
    assert s.monetary[0] == 2500
    assert np.isnan(s.monetary[1])
    assert s.monetary[2] == 1100


def test_summary_counts_holdout_purchases_per_calibration_customer() -> None:
    s = _summary()
    assert s.holdout_purchases is not None
    assert s.holdout_monetary is not None
    assert list(s.holdout_purchases) == [1, 2, 0]
    assert s.holdout_monetary[0] == 5000
    assert s.holdout_monetary[1] == 800
    assert np.isnan(s.holdout_monetary[2])


def test_summary_in_weeks_divides_times_by_seven() -> None:
    days, weeks = _summary(), _summary(unit_days=7.0)
    assert np.allclose(weeks.t_x, days.t_x / 7)
    assert np.allclose(weeks.T, days.T / 7)
    assert np.array_equal(weeks.x, days.x)


def test_summary_refuses_a_holdout_that_ends_before_it_starts() -> None:
    with pytest.raises(ValueError, match="較正期間の終了日より後"):
        summarise(
            ["A"],
            np.array(["2024-01-01"], dtype="datetime64[D]"),
            calibration_end=CAL_END,
            holdout_end=CAL_END,
        )


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


JAPANESE = {"customer": "会員ID", "date": "受注日", "amount": "合計金額"}


def test_a_japanese_cart_export_reads_with_its_column_names(tmp_path: Path) -> None:
    # given a UTF-8 file with a BOM, slashed dates and yen-formatted amounts
    path = _write(
        tmp_path / "orders.csv",
        "\ufeff会員ID,受注日,合計金額,備考\n"
        'M001,2024/01/05,"¥1,280",\n'
        "M002,2024/01/06,3500円,ギフト\n"
        "M001,2024/02/05,980,\n",
    )
    tx = load_transactions(path, columns=JAPANESE, amount_required=True)
    assert tx.rows == 3
    assert list(tx.labels[tx.customer]) == ["M001", "M002", "M001"]
    assert list(tx.day.astype(str)) == ["2024-01-05", "2024-01-06", "2024-02-05"]
    assert tx.amount is not None
    assert list(tx.amount) == [1280, 3500, 980]


def test_shift_jis_files_need_the_encoding_option(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "sjis.csv", "会員ID,受注日,合計金額\n髙橋①,20240105,1280\n", encoding="cp932"
    )
    with pytest.raises(TransactionFileError, match="--encoding cp932"):
        load_transactions(path, columns=JAPANESE, amount_required=True)
    tx = load_transactions(path, columns=JAPANESE, amount_required=True, encoding="cp932")
    assert list(tx.labels) == ["髙橋①"]
    assert list(tx.day.astype(str)) == ["2024-01-05"]


def test_times_with_an_offset_count_on_the_japanese_calendar_day(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "utc.csv",
        "customer_id,date\nA,2024-05-01T16:00:00Z\nB,2024-05-01T08:59:00+09:00\n",
    )
    tx = load_transactions(path, columns=DEFAULT_COLUMNS, amount_required=False)
    assert list(tx.day.astype(str)) == ["2024-05-02", "2024-05-01"]
    assert tx.amount is None


def test_every_bad_line_is_named_and_nothing_is_skipped(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.csv",
        "customer_id,date,amount\nA,2024-01-01,100\nB,2024-13-45,100\nC,昨日,100\n",
    )
    with pytest.raises(TransactionFileError, match=r"行 3, 4"):
        load_transactions(path, columns=DEFAULT_COLUMNS, amount_required=False)
    path = _write(tmp_path / "amount.csv", "customer_id,date,amount\nA,2024-01-01,abc\n")
    with pytest.raises(TransactionFileError, match=r"金額列「amount」.*行 2"):
        load_transactions(path, columns=DEFAULT_COLUMNS, amount_required=False)
    path = _write(tmp_path / "negative.csv", "customer_id,date,amount\nA,2024-01-01,-100\n")
    with pytest.raises(TransactionFileError, match="負の値"):
        load_transactions(path, columns=DEFAULT_COLUMNS, amount_required=False)
    path = _write(tmp_path / "empty.csv", "customer_id,date,amount\n,2024-01-01,100\n")
    with pytest.raises(TransactionFileError, match=r"顧客列「customer_id」が空.*行 2"):
        load_transactions(path, columns=DEFAULT_COLUMNS, amount_required=False)


def test_missing_columns_are_listed_with_the_columns_the_file_has(tmp_path: Path) -> None:
    path = _write(tmp_path / "cols.csv", "id,day,total\nA,2024-01-01,100\n")
    with pytest.raises(
        TransactionFileError, match=r"列 customer_id、date がありません.*id、day、total"
    ):
        load_transactions(path, columns=DEFAULT_COLUMNS, amount_required=False)
    mapping = parse_columns("customer=id,date=day,amount=total")
    assert load_transactions(path, columns=mapping, amount_required=True).rows == 1
    with pytest.raises(TransactionFileError, match="使えるのは customer, date, amount"):
        parse_columns("client=id")
    with pytest.raises(TransactionFileError, match="読めません"):
        parse_columns("customer")


def test_parquet_files_read_like_csv(tmp_path: Path) -> None:
    path = tmp_path / "orders.parquet"
    pd.DataFrame(
        {
            "customer_id": ["A", "B"],
            "date": pd.to_datetime(["2024-01-05 23:30", "2024-01-06 00:00"]),
            "amount": [1280, 3500],
        }
    ).to_parquet(path)
    tx = load_transactions(path, columns=DEFAULT_COLUMNS, amount_required=True)
    assert list(tx.day.astype(str)) == ["2024-01-05", "2024-01-06"]
    assert tx.amount is not None
    assert list(tx.amount) == [1280, 3500]


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(TransactionFileError, match="見つかりません"):
        load_transactions(tmp_path / "none.csv", columns=DEFAULT_COLUMNS, amount_required=False)
