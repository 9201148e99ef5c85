"""Transactions → the per-customer (x, t_x, T, monetary) the purchase and spend models take.

Conventions (those of Fader, Hardie & Lee's CDNOW analyses, which reproduce their published
numbers): a customer's purchases are counted in *distinct days*, so several orders on one day are
one purchase whose amount is their sum; x is the number of purchase days after the first one
(repeat purchases) up to the calibration end; t_x is the time from the first to the last of them
and T the time from the first purchase to the calibration end, both in `unit_days`-day units;
monetary is the mean amount of the repeat purchases (the first purchase is left out, as it
is often a discounted trial).

`load_transactions` reads the CSV or Parquet files that `kizuna analytics backtest` and the file
mode take, and reports every bad line instead of skipping it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from numpy.typing import ArrayLike, NDArray

from kizuna.analytics.clv.common import FloatArray, weighted_count

DEFAULT_COLUMNS: Mapping[str, str] = {
    "customer": "customer_id",
    "date": "date",
    "amount": "amount",
}
# Date layouts seen in Japanese cart exports and analysts' files, tried in this order.
DATE_FORMATS = ("ISO8601", "%Y%m%d", "%Y/%m/%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M")
BUSINESS_TIMEZONE = "Asia/Tokyo"
MAX_REPORTED_LINES = 10


class TransactionFileError(ValueError):
    """A transactions file that cannot be used as it is; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Transactions:
    """One row per order line or order: customer code, purchase day and (optional) amount."""

    customer: NDArray[np.intp]
    labels: NDArray[Any]
    day: NDArray[np.datetime64]
    amount: FloatArray | None

    @property
    def rows(self) -> int:
        return int(self.customer.size)


@dataclass(frozen=True, slots=True)
class CustomerSummary:
    """One row per customer whose first purchase is on or before the calibration end."""

    customer: NDArray[Any]
    first: NDArray[np.datetime64]
    last: NDArray[np.datetime64]
    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    monetary: FloatArray | None
    holdout_purchases: FloatArray | None
    holdout_monetary: FloatArray | None

    @property
    def customers(self) -> int:
        return int(self.x.size)


def _day_numbers(values: ArrayLike) -> NDArray[np.int64]:
    days = np.asarray(values).astype("datetime64[D]")
    if np.any(np.isnat(days)):
        raise ValueError("購入日に空の値があります")
    return days.astype(np.int64)


def _purchase_days(
    codes: NDArray[np.intp], days: NDArray[np.int64], amounts: FloatArray | None
) -> tuple[NDArray[np.int64], NDArray[np.int64], FloatArray | None]:
    """Distinct (customer, day) pairs sorted by customer, then day, with each day's total."""
    # One integer key per (customer, day): sorting the keys sorts by customer, then by day.
    first_day = int(days.min())
    span = int(days.max()) - first_day + 1
    keys, pair_of_row = np.unique(
        codes.astype(np.int64) * span + (days - first_day), return_inverse=True
    )
    pair_amount = (
        None if amounts is None else weighted_count(pair_of_row.ravel(), amounts, keys.size)
    )
    return keys // span, keys % span + first_day, pair_amount


def summarise(
    customer: ArrayLike,
    day: ArrayLike,
    amount: ArrayLike | None = None,
    *,
    calibration_end: dt.date,
    holdout_end: dt.date | None = None,
    unit_days: float = 1.0,
) -> CustomerSummary:
    """Per-customer calibration summary and, with `holdout_end`, holdout purchases and spend.

    Purchases after the calibration end and up to `holdout_end` (inclusive) are the holdout;
    customers whose first purchase falls after the calibration end are not in the summary.
    Vectorised: one sort of the (customer, day) pairs, no loop over customers.
    """
    if unit_days <= 0:
        raise ValueError("時間の単位(日数)は正の数である必要があります")
    ids = np.asarray(customer)
    days = _day_numbers(day)
    amounts = None if amount is None else np.asarray(amount, dtype=np.float64)
    if ids.shape != days.shape or (amounts is not None and amounts.shape != days.shape):
        raise ValueError("顧客・購入日・金額の行数が一致しません")
    cal_end = int(np.datetime64(calibration_end, "D").astype(np.int64))
    end = cal_end
    if holdout_end is not None:
        end = int(np.datetime64(holdout_end, "D").astype(np.int64))
        if end <= cal_end:
            raise ValueError("検証期間の終了日は較正期間の終了日より後にしてください")

    labels, codes = np.unique(ids, return_inverse=True)
    keep = days <= end
    if not keep.any():
        raise ValueError("期間内の購入がありません")
    pair_customer, pair_day, pair_amount = _purchase_days(
        codes.ravel()[keep], days[keep], None if amounts is None else amounts[keep]
    )

    in_cal = pair_day <= cal_end
    cal_customer = pair_customer[in_cal]
    cal_day = pair_day[in_cal]
    if cal_day.size == 0:
        raise ValueError("較正期間内の購入がありません")
    starts = np.flatnonzero(np.r_[True, cal_customer[1:] != cal_customer[:-1]])
    ends = np.r_[starts[1:], cal_day.size] - 1
    who = cal_customer[starts]
    first = cal_day[starts]
    last = cal_day[ends]
    x = (ends - starts).astype(np.float64)

    monetary = None
    if pair_amount is not None:
        cal_amount = pair_amount[in_cal]
        repeat_spend = np.add.reduceat(cal_amount, starts) - cal_amount[starts]
        with np.errstate(invalid="ignore", divide="ignore"):
            monetary = np.where(x > 0, repeat_spend / x, np.nan)

    holdout_purchases = holdout_monetary = None
    if holdout_end is not None:
        in_holdout = ~in_cal
        n_customers = labels.size
        counts = np.bincount(pair_customer[in_holdout], minlength=n_customers)[who]
        holdout_purchases = counts.astype(np.float64)
        if pair_amount is not None:
            spend = weighted_count(pair_customer[in_holdout], pair_amount[in_holdout], n_customers)[
                who
            ]
            with np.errstate(invalid="ignore", divide="ignore"):
                holdout_monetary = np.where(counts > 0, spend / counts, np.nan)

    return CustomerSummary(
        customer=labels[who],
        first=first.astype("datetime64[D]"),
        last=last.astype("datetime64[D]"),
        x=x,
        t_x=(last - first) / unit_days,
        T=(cal_end - first) / unit_days,
        monetary=monetary,
        holdout_purchases=holdout_purchases,
        holdout_monetary=holdout_monetary,
    )


def parse_columns(spec: str | None) -> dict[str, str]:
    """`customer=会員ID,date=受注日,amount=合計` → the column mapping, defaults filled in."""
    columns = dict(DEFAULT_COLUMNS)
    if not spec:
        return columns
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise TransactionFileError(
                f"--columns の指定「{part}」が読めません。例: customer=会員ID,date=受注日,amount=合計"
            )
        if key not in DEFAULT_COLUMNS:
            raise TransactionFileError(
                f"--columns の「{key}」は使えません。使えるのは customer, date, amount です"
            )
        columns[key] = value
    return columns


def _lines(mask: NDArray[np.bool_], first_line: int) -> str:
    positions = np.flatnonzero(mask)
    shown = ", ".join(str(int(p) + first_line) for p in positions[:MAX_REPORTED_LINES])
    more = len(positions) - MAX_REPORTED_LINES
    return shown + (f" ほか {more:,} 行" if more > 0 else "")


def _dates_in_format(text: pd.Series[Any], fmt: str) -> pd.Series[Any]:
    try:
        return pd.to_datetime(text, format=fmt, errors="coerce")
    except (ValueError, TypeError):
        # Mixed UTC offsets in one column: compare them on one clock.
        return pd.to_datetime(text, format=fmt, errors="coerce", utc=True)


def _parse_dates(raw: pd.Series[Any], name: str, first_line: int) -> NDArray[np.datetime64]:
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        parsed = pd.to_datetime(raw)
    else:
        text = raw.astype("string").str.strip()
        parsed = _dates_in_format(text, DATE_FORMATS[0])
        for fmt in DATE_FORMATS[1:]:
            if parsed.notna().all():
                break
            attempt = _dates_in_format(text, fmt)
            if attempt.notna().sum() > parsed.notna().sum():
                parsed = attempt
        bad = parsed.isna().to_numpy()
        if bad.any():
            raise TransactionFileError(
                f"日付列「{name}」に日付として読めない値があります(行 {_lines(bad, first_line)})。"
                "YYYY-MM-DD、YYYYMMDD、YYYY/MM/DD の形式にしてください"
            )
    series = pd.Series(parsed)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        # The business day is the Japanese calendar day, whatever offset the export used.
        series = series.dt.tz_convert(BUSINESS_TIMEZONE).dt.tz_localize(None)
    return np.asarray(series.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]"))


def _parse_amounts(raw: pd.Series[Any], name: str, first_line: int) -> FloatArray:
    if pd.api.types.is_numeric_dtype(raw.dtype):
        values = pd.to_numeric(raw, errors="coerce")
    else:
        cleaned = raw.astype("string").str.replace(r"[,\s¥￥円]", "", regex=True)
        values = pd.to_numeric(cleaned, errors="coerce")
    array = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(array)
    if bad.any():
        raise TransactionFileError(
            f"金額列「{name}」に数値として読めない値があります(行 {_lines(bad, first_line)})"
        )
    negative = array < 0
    if negative.any():
        raise TransactionFileError(
            f"金額列「{name}」に負の値があります(行 {_lines(negative, first_line)})。"
            "返品・取消は元の注文から差し引いてから読み込んでください"
        )
    return array


@contextmanager
def _reading(path: Path, encoding: str) -> Iterator[None]:
    """Turn the ways a file can fail to read into one error a user can act on."""
    try:
        yield
    except UnicodeDecodeError as error:
        raise TransactionFileError(
            f"ファイル {path} を {encoding} として読めません(バイト位置 {error.start})。"
            "Shift_JIS の場合は --encoding cp932 を指定してください"
        ) from error
    except (OSError, ValueError) as error:
        raise TransactionFileError(f"ファイル {path} を読めません: {error}") from error


def _read(
    path: Path, *, use: list[str], text_columns: list[str], is_parquet: bool, encoding: str
) -> pd.DataFrame:
    with _reading(path, encoding):
        if is_parquet:
            return pd.read_parquet(path, columns=use)
        return pd.read_csv(
            path,
            usecols=use,
            dtype=dict.fromkeys(text_columns, "string"),
            encoding=encoding,
            keep_default_na=False,
        )


def load_transactions(
    path: Path,
    *,
    columns: Mapping[str, str],
    amount_required: bool,
    encoding: str = "utf-8-sig",
) -> Transactions:
    """Read a CSV (any extension but .parquet) or Parquet file of transactions.

    The amount column is optional unless `amount_required`: a file without it still supports
    purchase back-tests. Any empty customer, unreadable date or amount is an error naming the
    lines, so nothing is silently dropped.
    """
    if not path.is_file():
        raise TransactionFileError(f"ファイル {path} が見つかりません")
    customer_col, date_col, amount_col = columns["customer"], columns["date"], columns["amount"]
    is_parquet = path.suffix.lower() in {".parquet", ".pq"}
    with _reading(path, encoding):
        available = (
            list(pq.read_schema(path).names)
            if is_parquet
            else [str(c) for c in pd.read_csv(path, nrows=0, encoding=encoding).columns]
        )
    required = [customer_col, date_col] + ([amount_col] if amount_required else [])
    missing = [name for name in required if name not in available]
    if missing:
        raise TransactionFileError(
            f"列 {'、'.join(missing)} がありません。ファイルの列: {'、'.join(available)}。"
            "--columns customer=…,date=…,amount=… で列名を指定してください"
        )
    has_amount = amount_col in available
    frame = _read(
        path,
        use=[customer_col, date_col] + ([amount_col] if has_amount else []),
        text_columns=[customer_col, date_col],
        is_parquet=is_parquet,
        encoding=encoding,
    )

    # CSV line numbers count the header as line 1; Parquet rows are numbered from 1.
    first_line = 1 if is_parquet else 2
    customers = frame[customer_col].astype("string").str.strip()
    empty = (customers.isna() | (customers == "")).to_numpy()
    if empty.any():
        raise TransactionFileError(
            f"顧客列「{customer_col}」が空の行があります(行 {_lines(empty, first_line)})"
        )
    codes, labels = pd.factorize(customers)
    return Transactions(
        customer=np.asarray(codes, dtype=np.intp),
        labels=np.asarray(labels, dtype=object),
        day=_parse_dates(frame[date_col], date_col, first_line),
        amount=_parse_amounts(frame[amount_col], amount_col, first_line) if has_amount else None,
    )
