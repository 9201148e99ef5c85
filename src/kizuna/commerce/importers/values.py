"""Reading one cell as a number, a date, a flag… Each parser raises CellError with the reason in
Japanese; the caller adds the line and the column."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from django.utils import timezone

from kizuna.commerce.importers.errors import CellError
from kizuna.commerce.services import AMOUNT_MAX
from kizuna.core import jp
from kizuna.customers.models import Gender

# What carts and spreadsheets write. Excel rewrites "2026-05-01 10:23:45" as "2026/5/1 10:23";
# strptime accepts the missing zero padding.
DATETIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S %z",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f%z",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y%m%d",
    "%Y年%m月%d日 %H時%M分",
    "%Y年%m月%d日 %H:%M",
    "%Y年%m月%d日",
)
_SPACED_OFFSET = re.compile(r" ?([+-]\d{2})(\d{2})$")
_MONEY_NOISE = re.compile(r"[,円¥\\\s]")
_TRUE = frozenset({"1", "yes", "y", "true", "t", "on", "はい", "する", "希望する", "受け取る", "受信する", "配信する", "同意", "同意する", "○", "◯", "可"})  # fmt: skip
_FALSE = frozenset({"0", "no", "n", "false", "f", "off", "いいえ", "しない", "希望しない", "受け取らない", "受信しない", "配信しない", "不可", "×", "-"})  # fmt: skip
_GENDERS = {
    "男性": Gender.MALE, "男": Gender.MALE, "male": Gender.MALE, "m": Gender.MALE,
    "女性": Gender.FEMALE, "女": Gender.FEMALE, "female": Gender.FEMALE, "f": Gender.FEMALE,
    "その他": Gender.OTHER, "other": Gender.OTHER,
    "不明": Gender.UNKNOWN, "未回答": Gender.UNKNOWN, "回答しない": Gender.UNKNOWN,
}  # fmt: skip


def parse_int(text: str, *, label: str = "数値", unit: str = "") -> int:
    """An integer, read the way people write yen: "1,980", "¥1,980", "1980円", "１９８０", "1980.00".

    No larger than the order's integer columns hold: refused here, a value too large for its
    own cell is named by its own column, not by the sum (単価×数量, the order total) the order
    checks find too large, nor left for the database to refuse.

    A fraction is explained in the value's own unit: 「1円未満」 only for yen, since a
    quantity of 1.5 is a count typed wrong, not an amount below one yen."""
    cleaned = _MONEY_NOISE.sub("", jp.nfkc(text)).replace("￥", "")
    try:
        number = Decimal(cleaned)
    except InvalidOperation:
        raise CellError(f"{label}として読めません") from None
    if not number.is_finite():  # "NaN", "Infinity" read as Decimals
        raise CellError(f"{label}として読めません")
    if number != number.to_integral_value():
        if unit == "円":
            raise CellError(f"{label}に小数があります(1円未満は扱えません)")
        raise CellError(f"{label}は整数で入力してください(小数は使えません)")
    if number > AMOUNT_MAX:
        raise CellError(f"{label}が大きすぎます(上限は{AMOUNT_MAX:,}{unit})")
    return int(number)


def parse_money(text: str, *, default: int = 0) -> int:
    return default if not text.strip() else parse_int(text, label="金額", unit="円")


def parse_points(text: str) -> int:
    return parse_int(text, label="ポイント", unit="ポイント")


def parse_datetime(text: str, formats: Sequence[str] = DATETIME_FORMATS) -> dt.datetime:
    """A moment; without an offset it is taken as Japan time (the shop's clock)."""
    return _moment(jp.nfkc(text), tuple(formats))


# An export repeats the same few moments on every row of an order and across orders of a day;
# strptime is slow enough to matter at a million rows. Bounded, so memory stays flat.
@functools.lru_cache(maxsize=16384)
def _moment(value: str, formats: tuple[str, ...]) -> dt.datetime:
    parsed: dt.datetime | None = None
    if formats == DATETIME_FORMATS:
        parsed = _iso(value)
    for fmt in formats if parsed is None else ():
        try:
            parsed = dt.datetime.strptime(value, fmt)
        except ValueError:
            continue
        break
    if parsed is None:
        raise CellError("日時として読めません(例: 2026-05-01 10:23:45)")
    return timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed


def _iso(value: str) -> dt.datetime | None:
    """The ISO-like spellings most carts write, read by the fast C parser."""
    value = _SPACED_OFFSET.sub(r"\1:\2", value)  # "… 10:23:45 +0900" (Shopify)
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def parse_date(text: str, formats: Sequence[str] = DATETIME_FORMATS) -> dt.date:
    """A calendar day; a moment with a time is read as its day in Japan time."""
    moment = parse_datetime(text, formats)
    return timezone.localtime(moment).date()


def optional_date(text: str, formats: Sequence[str] = DATETIME_FORMATS) -> dt.date | None:
    return parse_date(text, formats) if text.strip() else None


def parse_flag(text: str) -> bool:
    key = jp.nfkc(text).lower()
    if key in _TRUE:
        return True
    if key in _FALSE or not key:
        return False
    raise CellError("「1/0」「はい/いいえ」「yes/no」のいずれかで入力してください")


def parse_gender(text: str) -> str:
    key = jp.nfkc(text).lower()
    if not key:
        return Gender.UNKNOWN.value
    gender = _GENDERS.get(key)
    if gender is None:
        raise CellError("性別として読めません(男性・女性・その他)")
    return gender.value


def split_name(text: str, *, given_first: bool = False) -> tuple[str, str]:
    """A full name in one cell as (family, given). Without a space it is all family name."""
    parts = jp.clean_text(text).split(" ", 1)
    if len(parts) == 1:
        return parts[0], ""
    first, rest = parts
    return (rest, first) if given_first else (first, rest)


_SIX_DIGITS = re.compile(r"[0-9]{6}")


def check_postal_code(text: str) -> str:
    try:
        return jp.normalize_postal_code(text)
    except jp.NormalisationError as exc:
        digits = jp.nfkc(text).strip()
        if _SIX_DIGITS.fullmatch(digits):
            # Excel reads 0600001 as a number and saves it as 600001. Padding it back would be
            # a guess (a typo loses a digit too), so the row is refused with the value the
            # user needs to find it; a postal code alone names nobody.
            raise CellError(f"{exc}(「{digits}」:Excelで先頭の0が消えた可能性があります)") from None
        raise CellError(str(exc)) from None


def check_prefecture(text: str) -> int:
    try:
        return jp.prefecture_code(text)
    except jp.NormalisationError as exc:
        raise CellError(str(exc)) from None


@functools.lru_cache(maxsize=16384)  # repeat customers: phonenumbers is slow
def check_email(text: str) -> str:
    try:
        jp.normalize_email(text)
    except jp.NormalisationError as exc:
        raise CellError(str(exc)) from None
    return text


@functools.lru_cache(maxsize=16384)
def check_phone(text: str) -> str:
    try:
        jp.normalize_phone(text)
    except jp.NormalisationError as exc:
        raise CellError(str(exc)) from None
    return text
