"""Shopify's orders export (管理画面 → 注文管理 → エクスポート), UTF-8, usually with a BOM.

One row per line item. Order-level columns (Email, Created at, Billing …, Total…) are filled on
the first row of an order only; the following rows of the same `Name` (#1001) carry just the
Lineitem columns.
"""

from __future__ import annotations

import datetime as dt
import unicodedata

from kizuna.commerce.importers import values
from kizuna.commerce.importers.base import (
    PAYMENT_METHOD,
    PRODUCT_CODE,
    PRODUCT_NAME,
    Cells,
    FormatInfo,
    ParsedCustomer,
    ParsedOrder,
    bind_all,
    check_one_customer,
    check_order,
    check_profile,
    column_name,
    customer_cells,
    raise_if,
    require_columns,
)
from kizuna.commerce.importers.errors import CellError, RowError
from kizuna.commerce.importers.table import Header, Record
from kizuna.commerce.models import OrderStatus
from kizuna.commerce.services import LineInput, OrderInput
from kizuna.core import jp
from kizuna.customers.models import IdentityKind, MemberStatus

INFO = FormatInfo(name="shopify", label="Shopify 注文CSV", source="Shopify", consent_form="Shopify")

COLUMNS: dict[str, tuple[str, ...]] = {
    "order_number": ("Name",),
    "email": ("Email",),
    "financial_status": ("Financial Status",),
    "fulfillment_status": ("Fulfillment Status",),
    "fulfilled_at": ("Fulfilled at",),
    "accepts_marketing": ("Accepts Marketing", "Accepts Email Marketing"),
    "shipping_fee": ("Shipping",),
    "discount": ("Discount Amount",),
    "ordered_at": ("Created at",),
    "quantity": ("Lineitem quantity",),
    "product_name": ("Lineitem name",),
    "unit_price": ("Lineitem price",),
    "product_code": ("Lineitem sku",),
    "full_name": ("Billing Name",),
    "company": ("Billing Company",),
    "billing_city": ("Billing City",),
    "address1": ("Billing Address1",),
    "address2": ("Billing Address2",),
    "postal_code": ("Billing Zip",),
    "prefecture": ("Billing Province",),
    "phone": ("Billing Phone",),
    "order_phone": ("Phone",),
    "shipping_name": ("Shipping Name",),
    "cancelled_at": ("Cancelled at",),
    "payment_method": ("Payment Method", "Payment Gateway"),
}

# Shopify writes Japanese provinces as ISO 3166-2 codes (JP-13) or as their romanised names.
_ROMAJI = (
    "hokkaido", "aomori", "iwate", "miyagi", "akita", "yamagata", "fukushima", "ibaraki",
    "tochigi", "gunma", "saitama", "chiba", "tokyo", "kanagawa", "niigata", "toyama", "ishikawa",
    "fukui", "yamanashi", "nagano", "gifu", "shizuoka", "aichi", "mie", "shiga", "kyoto",
    "osaka", "hyogo", "nara", "wakayama", "tottori", "shimane", "okayama", "hiroshima",
    "yamaguchi", "tokushima", "kagawa", "ehime", "kochi", "fukuoka", "saga", "nagasaki",
    "kumamoto", "oita", "miyazaki", "kagoshima", "okinawa",
)  # fmt: skip
_ROMAJI_CODE = {name: index + 1 for index, name in enumerate(_ROMAJI)}
_SUFFIXES = (" prefecture", "-ken", "-to", "-fu", " ken", " to", " fu")


def looks_like_orders(header: Header) -> bool:
    return header.has("Name") and header.has("Lineitem quantity")


def province(text: str) -> int:
    """A Shopify province ("JP-13", "Tokyo", "Tōkyō", "東京都") as its JIS code."""
    value = jp.nfkc(text)
    if value.upper().startswith("JP-"):
        value = value[3:]
    ascii_name = "".join(
        ch for ch in unicodedata.normalize("NFKD", value) if not unicodedata.combining(ch)
    ).lower()
    for suffix in _SUFFIXES:
        ascii_name = ascii_name.removesuffix(suffix)
    if ascii_name in _ROMAJI_CODE:
        return _ROMAJI_CODE[ascii_name]
    try:
        return values.check_prefecture(value)
    except CellError:
        raise CellError("都道府県として読めません(例: JP-13、Tokyo、東京都)") from None


def _price(text: str) -> int:
    return values.parse_int(text, label="金額", unit="円")


class ShopifyOrders:
    info = INFO

    def __init__(self, header: Header, *, given_first: bool = True) -> None:
        require_columns(
            header,
            self.info.label,
            {
                name: COLUMNS[name]
                for name in ("order_number", "ordered_at", "quantity", "unit_price")
            },
        )
        self.columns = bind_all(header, COLUMNS)
        self.given_first = given_first

    def key(self, record: Record) -> str:
        column = self.columns["order_number"]
        return jp.nfkc(column.get(record)) if column is not None else ""

    def parse(self, key: str, records: list[Record]) -> ParsedOrder:
        cols = self.columns
        errors: list[RowError] = []
        first = Cells(records[0], errors, key)
        if not key:
            first.require(cols["order_number"], "Name(注文番号)")
            raise_if(errors)
        ordered_at = None
        if first.require(cols["ordered_at"], "Created at(注文日時)"):
            ordered_at = first.read(cols["ordered_at"], values.parse_datetime, None)
        lines = self._lines(records, errors, key)
        status, shipped_on, cancelled_at = self._status(first)
        identities, profile = customer_cells(
            first, cols, given_first=self.given_first, prefecture=province
        )
        if not profile.get("family_name"):
            shipping_name = first.text(cols["shipping_name"])
            if shipping_name:
                family, given = values.split_name(shipping_name, given_first=self.given_first)
                profile.update({"family_name": family, "given_name": given})
        city = first.text(cols["billing_city"])
        if city:
            profile["address1"] = f"{city}{profile.get('address1', '')}"
        check_profile(first, cols, profile)
        check_one_customer(records, cols, errors, key)
        if IdentityKind.PHONE not in identities:
            phone = first.read(cols["order_phone"], values.check_phone, "")
            if phone:
                identities[IdentityKind.PHONE] = phone
        opt_in = first.read(cols["accepts_marketing"], values.parse_flag, None)
        shipping_fee = first.read(cols["shipping_fee"], _price, 0)
        discount = first.read(cols["discount"], _price, 0)
        payment_method = first.fits(
            cols["payment_method"], PAYMENT_METHOD, first.text(cols["payment_method"])
        )
        raise_if(errors)
        assert ordered_at is not None  # noqa: S101 - a missing date was recorded as an error
        profile.setdefault("registered_at", ordered_at)
        profile["member_status"] = MemberStatus.GUEST
        order = OrderInput(
            number=key,
            ordered_at=ordered_at,
            lines=tuple(lines),
            status=status,
            shipping_fee=shipping_fee,
            discount=discount,
            payment_method=payment_method,
            source=self.info.source,
            shipped_on=shipped_on,
            cancelled_at=cancelled_at,
        )
        raise_if(check_order(order, line=records[0].line, columns=cols))
        return ParsedOrder(
            key=key,
            lines=[record.line for record in records],
            order=order,
            customer=ParsedCustomer(
                identities,
                profile,
                email_opt_in=opt_in,
                consent_at=ordered_at,
                line=records[0].line,
            ),
        )

    def _lines(self, records: list[Record], errors: list[RowError], key: str) -> list[LineInput]:
        """The order's line items, one a row; a bad cell is recorded in `errors`."""
        cols = self.columns
        lines: list[LineInput] = []
        for record in records:
            cells = Cells(record, errors, key)
            name = cells.text(cols["product_name"])
            code = jp.nfkc(cells.text(cols["product_code"])) or self._code_from_name(name)
            quantity = cells.quantity(cols["quantity"])
            price = cells.read(cols["unit_price"], _price, 0)
            if price < 0 and cols["unit_price"] is not None:
                cells.fail(cols["unit_price"].name, "金額がマイナスです")
            if not code:
                cells.fail(
                    column_name(cols["product_code"], "Lineitem sku"),
                    "商品コード(SKU)も商品名も空です",
                )
            elif cells.text(cols["product_code"]):
                cells.fits(cols["product_code"], PRODUCT_CODE, code, "SKU")
            else:
                # No SKU: the code is made from the name, so the name is what to shorten.
                label = "商品コード(SKUが空のため「SHOPIFY:商品名」)"
                cells.fits(cols["product_name"], PRODUCT_CODE, code, label)
            cells.fits(cols["product_name"], PRODUCT_NAME, name)
            lines.append(LineInput(code, name or code, price, quantity))
        return lines

    @staticmethod
    def _code_from_name(name: str) -> str:
        # Many Shopify shops leave SKUs empty; the line item's name still tells products apart.
        return f"SHOPIFY:{jp.nfkc(name)}" if name else ""

    def _status(self, cells: Cells) -> tuple[OrderStatus, dt.date | None, dt.datetime | None]:
        cols = self.columns
        financial = jp.nfkc(cells.text(cols["financial_status"])).lower()
        fulfillment = jp.nfkc(cells.text(cols["fulfillment_status"])).lower()
        cancelled_at = cells.read(cols["cancelled_at"], values.parse_datetime, None)
        fulfilled_on = cells.read(cols["fulfilled_at"], values.parse_date, None)
        shipped = fulfillment in ("fulfilled", "partial")
        if cancelled_at is not None or financial == "voided":
            return OrderStatus.CANCELLED, fulfilled_on if shipped else None, cancelled_at
        if financial == "refunded":
            status = OrderStatus.RETURNED if shipped else OrderStatus.CANCELLED
            return status, fulfilled_on if shipped else None, None
        if shipped:
            return OrderStatus.SHIPPED, fulfilled_on, None
        return OrderStatus.RECEIVED, None, None
