"""What every file format turns its rows into, and the helpers formats share.

A format reads rows into `ParsedOrder`s (an `OrderInput` plus who ordered) or `ParsedCustomer`s;
it never writes. Writing is the pipeline's job, through the services every ingest route uses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.utils import timezone

from kizuna.commerce.importers import values
from kizuna.commerce.importers.errors import CellError, ImportRefused, RowError, RowErrors
from kizuna.commerce.importers.table import Column, Header, Record, bind
from kizuna.commerce.models import Order, OrderLine, Product, Shipment
from kizuna.commerce.services import (
    REGISTERED_AHEAD,
    OrderInput,
    is_ahead,
    validate_order_input,
)
from kizuna.core import jp
from kizuna.core.limits import TextLimit
from kizuna.customers.models import Customer, IdentityKind
from kizuna.customers.services import EARLIEST_BIRTHDAY, READING_LABELS

T = TypeVar("T")


ORDER_NUMBER = TextLimit.of(Order, "number")
PRODUCT_CODE = TextLimit.of(Product, "code")
# As customers.services words it for a birthday it refuses.
BIRTHDAY_OUT_OF_RANGE = "生年月日は1900年1月1日から今日までの日付にしてください"
PRODUCT_NAME = TextLimit.of(OrderLine, "product_name")
PAYMENT_METHOD = TextLimit.of(Order, "payment_method")
CARRIER = TextLimit.of(Shipment, "carrier")
TRACKING_NUMBER = TextLimit.of(Shipment, "tracking_number")


@dataclass
class ParsedCustomer:
    """Who a row is about: identities to match on, the profile for a new record, and e-mail
    consent when the file carries it (None: the file says nothing about consent)."""

    identities: dict[IdentityKind, str]
    profile: dict[str, Any]
    email_opt_in: bool | None = None
    consent_at: dt.datetime | None = None
    line: int = 0


@dataclass
class ParsedOrder:
    key: str
    lines: list[int]
    order: OrderInput
    customer: ParsedCustomer


@dataclass
class Skipped:
    """Rows deliberately not imported (e.g. EC-CUBE's 購入処理中: a checkout never finished)."""

    key: str
    lines: list[int]
    reason: str


class Cells:
    """Reads the cells of one record, collecting every problem instead of stopping at the first,
    so one pass over a file reports all of its bad cells."""

    def __init__(self, record: Record, errors: list[RowError], order: str = "") -> None:
        self.record = record
        self.errors = errors
        self.order = order

    def text(self, column: Column | None) -> str:
        return column.get(self.record) if column is not None else ""

    def read(self, column: Column | None, parse: Callable[[str], T], default: T) -> T:
        """The parsed value of a non-empty cell, else `default`; a bad value is recorded."""
        raw = self.text(column)
        if column is None or not raw:
            return default
        try:
            return parse(raw)
        except CellError as exc:
            self.fail(column.name, str(exc))
            return default

    def quantity(self, column: Column | None) -> int:
        """A line's 数量, at least 1. An empty, unreadable or smaller cell is one error (not a
        second 「1以上に」 for an unreadable one) and reads as 1, so the rest of the order is
        still checked."""
        raw = self.text(column)
        try:
            quantity = values.parse_int(raw, label="数量") if raw else 0
        except CellError as exc:
            self.fail(column_name(column, "数量"), str(exc))
            return 1
        if quantity < 1:
            self.fail(column_name(column, "数量"), "数量は1以上にしてください")
            return 1
        return quantity

    def require(self, column: Column | None, name: str) -> str:
        raw = self.text(column)
        if not raw:
            self.fail(column.name if column is not None else name, f"{name}が空です")
        return raw

    def fail(self, column: str, reason: str) -> None:
        self.errors.append(RowError(self.record.line, column, reason, self.order))

    def fits(self, column: Column | None, limit: TextLimit, value: str, label: str = "") -> str:
        """`value`, after recording an error against `column` if it is too long to store."""
        reason = limit.reason(value, label)
        if reason is not None:
            self.fail(column_name(column, label or limit.label), reason)
        return value


def read_registered_at(
    cells: Cells, column: Column | None, parse: Callable[[str], dt.datetime]
) -> dt.datetime | None:
    """A member row's 登録日. More than a day ahead is the row's error against its column, as an
    order's 受注日 is (the same slack: FUTURE_SLACK)."""
    registered = cells.read(column, parse, None)
    if registered is not None and column is not None and is_ahead(registered):
        cells.fail(column.name, REGISTERED_AHEAD)
        return None
    return registered


def column_name(column: Column | None, fallback: str) -> str:
    """The header of a bound column, or the field's usual name when the file lacks it."""
    return column.name if column is not None else fallback


def require_columns(header: Header, label: str, required: Mapping[str, Sequence[str]]) -> None:
    """Refuse a file that lacks a column the format cannot do without, naming it."""
    missing = [aliases[0] for aliases in required.values() if not header.has(*aliases)]
    if missing:
        found = "、".join(name for name in header.names[:12] if name)
        more = " …" if len(header) > 12 else ""
        raise ImportRefused(
            f"{label}として必要な列がありません: {'、'.join(missing)}。"
            f"(ファイルの見出し: {found}{more})"
        )


def bind_all(header: Header, columns: Mapping[str, Sequence[str]]) -> dict[str, Column | None]:
    return {name: bind(header, *aliases) for name, aliases in columns.items()}


def customer_cells(
    cells: Cells,
    cols: Mapping[str, Column | None],
    *,
    given_first: bool = False,
    prefecture: Callable[[str], int] = values.check_prefecture,
) -> tuple[dict[IdentityKind, str], dict[str, Any]]:
    """Identities and profile from the customer columns common to every format.

    Values are checked here with the same normalisers the services use, so a bad postal code
    is reported against its line and column before anything is written.
    """
    identities: dict[IdentityKind, str] = {}
    member = cells.text(cols.get("member_id"))
    if member and member != "0":  # EC-CUBE writes 0 or nothing for guest checkouts
        identities[IdentityKind.CART_MEMBER] = member
    email = cells.read(cols.get("email"), values.check_email, "")
    if email:
        identities[IdentityKind.EMAIL] = email
    phone = cells.read(cols.get("phone"), values.check_phone, "")
    if phone:
        identities[IdentityKind.PHONE] = phone

    profile: dict[str, Any] = {}
    family = cells.text(cols.get("family_name"))
    given = cells.text(cols.get("given_name"))
    full = cells.text(cols.get("full_name"))
    if not family and full:
        family, given = values.split_name(full, given_first=given_first)
    family_kana = cells.text(cols.get("family_kana"))
    given_kana = cells.text(cols.get("given_kana"))
    full_kana = cells.text(cols.get("full_kana"))
    if not family_kana and full_kana:
        family_kana, given_kana = values.split_name(full_kana, given_first=given_first)
    for name, value in (
        ("family_name", family),
        ("given_name", given),
        ("family_kana", family_kana),
        ("given_kana", given_kana),
        ("company", cells.text(cols.get("company"))),
    ):
        if value:
            profile[name] = value
    address = {
        "postal_code": cells.read(cols.get("postal_code"), values.check_postal_code, ""),
        "prefecture": cells.read(cols.get("prefecture"), prefecture, 0) or None,
        "address1": cells.text(cols.get("address1")),
        "address2": cells.text(cols.get("address2")),
    }
    # The address is one block: a row that gives one gives all of it, its empty cells included
    # (an empty 住所2 is no building, not "keep the old one", which belongs to the old street).
    # A row without any address says nothing about it.
    if any(address.values()):
        profile.update(
            (name, value) for name, value in address.items() if cols.get(name) is not None
        )
    birthday = cells.read(cols.get("birthday"), values.parse_date, None)
    if birthday is not None and not EARLIEST_BIRTHDAY <= birthday <= timezone.localdate():
        # The customer service refuses it too, but only when writing: checked here, it is
        # reported with the row's other bad cells, against its column.
        cells.fail(column_name(cols.get("birthday"), "誕生日"), BIRTHDAY_OUT_OF_RANGE)
    elif birthday is not None:
        profile["birthday"] = birthday
    gender = cells.read(cols.get("gender"), values.parse_gender, "")
    if gender:
        profile["gender"] = gender
    return identities, profile


# The cells that name a guest checkout's customer, and what the report calls each.
_GUEST_CELLS = (
    ("email", "メールアドレス"),
    ("family_name", "氏名"),
    ("given_name", "氏名"),
    ("full_name", "氏名"),
)


def _member_key(text: str) -> str:
    member = jp.nfkc(text)
    return "" if member == "0" else member  # EC-CUBE writes 0 or nothing for a guest


def _guest_key(name: str, text: str) -> str:
    # As the customer services compare them: an address in lower case, a name in NFKC.
    return jp.nfkc(text).lower() if name == "email" else jp.clean_text(text)


def check_one_customer(
    records: Sequence[Record],
    cols: Mapping[str, Column | None],
    errors: list[RowError],
    order: str,
) -> None:
    """Record an error on each later row of an order that names another customer than its
    first row: a member ID, or for a guest checkout the e-mail address or name. The order is
    stored under one customer, so the other would be silently dropped, and which of them
    ordered cannot be told from the file. A cell a later row leaves empty names nobody (Shopify
    writes the customer on an order's first row only) and is not compared."""
    first = records[0]
    member_column = cols.get("member_id")
    first_member = _member_key(member_column.get(first)) if member_column is not None else ""
    for record in records[1:]:
        cells = Cells(record, errors, order)
        member = cells.text(member_column)
        if member_column is not None and member and _member_key(member) != first_member:
            cells.fail(member_column.name, _other_customer(first.line, "会員ID"))
            continue
        if first_member:
            continue  # a member's order: the member ID says who, whatever else the row shows
        for name, what in _GUEST_CELLS:
            column = cols.get(name)
            text = cells.text(column)
            if (
                column is not None
                and text
                and _guest_key(name, text) != _guest_key(name, column.get(first))
            ):
                cells.fail(column.name, _other_customer(first.line, what))
                break


def _other_customer(first_line: int, what: str) -> str:
    return (
        f"同じ注文番号の{first_line}行目と顧客({what})が異なります。"
        "どちらの顧客の注文か分からないため、この注文は取り込みません"
        "(正しい顧客に直してから取り込み直してください)"
    )


# Where each length-limited profile field is read from, in the order the formats fill it: a
# name from its own column or split from the one-column name (Shopify: the shipping name when
# the billing name is empty); Shopify's street address after its city.
_PROFILE_SOURCES = {
    "family_name": ("family_name", "full_name", "shipping_name"),
    "given_name": ("given_name", "full_name", "shipping_name"),
    "family_kana": ("family_kana", "full_kana"),
    "given_kana": ("given_kana", "full_kana"),
    "company": ("company",),
    "address1": ("address1", "billing_city"),
    "address2": ("address2",),
}
_PROFILE_LIMITS = {name: TextLimit.of(Customer, name) for name in _PROFILE_SOURCES}


def check_profile(
    cells: Cells, cols: Mapping[str, Column | None], profile: Mapping[str, Any]
) -> None:
    """Record an error for each profile value too long for the customer record, or a reading
    that is not kana, against the column it came from, while reading: the customer service
    would refuse it only when writing, without the column (a one-column フリガナ)."""
    for name, limit in _PROFILE_LIMITS.items():
        value = profile.get(name)
        if not value:
            continue
        # Measured as the customer service stores it (customers.services._clean_profile):
        # half-width kana and NFKC can shorten a value, and a name such as ㈱ lengthen it.
        stored = jp.normalize_kana(value) if name.endswith("_kana") else jp.clean_text(value)
        reason = limit.reason(stored)
        if reason is None and name in READING_LABELS:
            try:
                jp.normalize_reading(value, READING_LABELS[name])
            except jp.NormalisationError as exc:
                reason = str(exc)
        if reason is None:
            continue
        sources = [cols.get(source) for source in _PROFILE_SOURCES[name]]
        column = next((c for c in sources if c is not None and cells.text(c)), None)
        cells.fail(column_name(column, limit.label), reason)


# Which column of a file holds each OrderInput / profile field, for errors raised by services.
_ORDER_FIELD_FALLBACK = {
    "number": "order_number",
    "lines": "product_code",
    "product_code": "product_code",
    "quantity": "quantity",
    "unit_price": "unit_price",
    "discount": "discount",
    "shipping_fee": "shipping_fee",
    "points_used": "points_used",
    "total": "discount",
    "delivered_on": "delivered_on",
}
# Fields whose column is named differently by some format: Shopify's shipped date is the day
# of its 「Fulfilled at」.
_ORDER_FIELD_ALTERNATIVE = {"shipped_on": "fulfilled_at"}


def validation_errors(
    exc: ValidationError,
    *,
    line: int,
    order: str,
    columns: Mapping[str, Column | None],
) -> list[RowError]:
    """A service's ValidationError as row errors against the file's own column names."""
    found: list[RowError] = []
    if not hasattr(exc, "error_dict"):
        return [RowError(line, "", " ".join(exc.messages), order)]
    for name, messages in exc.message_dict.items():
        column = columns.get(_ORDER_FIELD_FALLBACK.get(name, name))
        if column is None and name in _ORDER_FIELD_ALTERNATIVE:
            column = columns.get(_ORDER_FIELD_ALTERNATIVE[name])
        label = column.name if column is not None else ""
        for message in messages:
            found.append(RowError(line, label, message, order))
    return found


def check_order(
    data: OrderInput, *, line: int, columns: Mapping[str, Column | None]
) -> list[RowError]:
    """The order service's own validation, run while reading so strict mode sees it too."""
    errors: list[RowError] = []
    too_long = ORDER_NUMBER.reason(data.number)
    if too_long is not None:
        column = columns.get("order_number")
        # The number itself is too long to name the order by; its start identifies it.
        errors.append(RowError(line, column.name if column else "", too_long, data.number[:20]))
    try:
        validate_order_input(data)
    except ValidationError as exc:
        errors.extend(validation_errors(exc, line=line, order=data.number, columns=columns))
    return errors


def raise_if(errors: list[RowError]) -> None:
    if errors:
        raise RowErrors(errors)


@dataclass
class FormatInfo:
    """How a format names itself to people and in the data it writes."""

    name: str
    label: str
    source: str
    consent_form: str
