"""EC-CUBE 4: the 受注CSV (one row per order item) and the 会員CSV, as the admin screen exports
them (CP932 by default).

Column names follow EC-CUBE 4's default CSV definitions (dtb_csv); common variants (EC-CUBE 3,
hand-edited headers, full-width brackets) are accepted as aliases. EC-CUBE writes every order
item, not only products: 送料, 手数料, 割引, 税 and ポイント rows sit between the product rows
and are told apart by 明細区分.
"""

from __future__ import annotations

from kizuna.commerce.importers import values
from kizuna.commerce.importers.base import (
    CARRIER,
    PAYMENT_METHOD,
    PRODUCT_CODE,
    PRODUCT_NAME,
    TRACKING_NUMBER,
    Cells,
    FormatInfo,
    ParsedCustomer,
    ParsedOrder,
    Skipped,
    bind_all,
    check_one_customer,
    check_order,
    check_profile,
    column_name,
    customer_cells,
    raise_if,
    read_registered_at,
    require_columns,
)
from kizuna.commerce.importers.errors import RowError
from kizuna.commerce.importers.table import Column, Header, Record
from kizuna.commerce.models import OrderStatus
from kizuna.commerce.services import LineInput, OrderInput
from kizuna.core import jp
from kizuna.customers.models import IdentityKind, MemberStatus

ORDERS = FormatInfo(
    name="eccube", label="EC-CUBE 受注CSV", source="EC-CUBE", consent_form="EC-CUBE受注CSV"
)
MEMBERS = FormatInfo(
    name="eccube", label="EC-CUBE 会員CSV", source="EC-CUBE", consent_form="EC-CUBE会員CSV"
)

CUSTOMER_COLUMNS: dict[str, tuple[str, ...]] = {
    "member_id": ("会員ID", "顧客ID", "会員番号"),
    "family_name": ("お名前(姓)", "名前(姓)", "姓"),
    "given_name": ("お名前(名)", "名前(名)", "名"),
    "family_kana": ("お名前(セイ)", "フリガナ(セイ)", "お名前(フリガナ・姓)", "セイ"),
    "given_kana": ("お名前(メイ)", "フリガナ(メイ)", "お名前(フリガナ・名)", "メイ"),
    "company": ("会社名",),
    "postal_code": ("郵便番号",),
    "prefecture": ("都道府県(名称)", "都道府県", "都道府県(ID)"),
    "address1": ("住所1", "住所(市区町村名)"),
    "address2": ("住所2", "住所(番地・ビル名)"),
    "email": ("メールアドレス", "メール"),
    "phone": ("TEL", "電話番号", "電話"),
    "gender": ("性別(名称)", "性別", "性別(ID)"),
    "birthday": ("誕生日", "生年月日"),
}
ORDER_COLUMNS: dict[str, tuple[str, ...]] = {
    **CUSTOMER_COLUMNS,
    "order_number": ("注文番号", "受注番号", "注文ID", "受注ID"),
    "ordered_at": ("受注日", "注文日", "受注日時", "注文日時"),
    "status": ("対応状況(名称)", "対応状況", "対応状況(ID)"),
    "product_code": ("商品コード",),
    "product_class_id": ("商品規格ID",),
    "product_name": ("商品名",),
    "variant1": ("規格分類名1",),
    "variant2": ("規格分類名2",),
    "unit_price": ("価格", "販売価格", "単価"),
    "quantity": ("個数", "数量"),
    "tax_rate": ("税率",),
    "item_type": ("明細区分(名称)", "明細区分", "明細区分(ID)"),
    "subtotal": ("小計",),
    "shipping_fee": ("送料",),
    "charge": ("手数料",),
    "discount": ("値引き", "値引", "値引額"),
    "points_used": ("使用ポイント", "利用ポイント"),
    "payment_method": ("支払方法(名称)", "支払方法"),
    "shipped_on": ("発送日", "出荷日"),
    "tracking_number": ("出荷伝票番号", "お問い合わせ番号", "伝票番号"),
    "carrier": ("配送業者(名称)", "配送業者"),
}
MEMBER_COLUMNS: dict[str, tuple[str, ...]] = {
    **CUSTOMER_COLUMNS,
    "registered_at": ("会員登録日", "登録日", "入会日"),
    "member_status": ("会員ステータス(名称)", "会員ステータス", "会員ステータス(ID)"),
    "mailmaga": (
        "メルマガ",
        "メールマガジン",
        "メルマガ配信",
        "メルマガ受信",
        "メールマガジン送付について",
        "メルマガ(ID)",
        "mailmaga_flg",
    ),
}

# 対応状況 by name and by EC-CUBE 4's ID (mtb_order_status). None: not an order yet.
_STATUS: dict[str, OrderStatus | None] = {
    "新規受付": OrderStatus.RECEIVED, "1": OrderStatus.RECEIVED,
    "入金待ち": OrderStatus.RECEIVED, "取り寄せ中": OrderStatus.RECEIVED,
    "注文取消し": OrderStatus.CANCELLED, "注文取消": OrderStatus.CANCELLED,
    "キャンセル": OrderStatus.CANCELLED, "3": OrderStatus.CANCELLED,
    "対応中": OrderStatus.RECEIVED, "4": OrderStatus.RECEIVED,
    "発送済み": OrderStatus.SHIPPED, "発送済": OrderStatus.SHIPPED, "5": OrderStatus.SHIPPED,
    "入金済み": OrderStatus.RECEIVED, "6": OrderStatus.RECEIVED,
    "決済処理中": OrderStatus.RECEIVED, "7": OrderStatus.RECEIVED,
    "購入処理中": None, "8": None,
    "返品": OrderStatus.RETURNED, "9": OrderStatus.RETURNED,
}  # fmt: skip

# 明細区分 by name and ID (mtb_order_item_type).
_ITEM_TYPES = {
    "商品": "product", "1": "product",
    "送料": "shipping", "2": "shipping",
    "手数料": "charge", "3": "charge",
    "割引": "discount", "4": "discount",
    "税": "tax", "5": "tax",
    "ポイント": "points", "6": "points",
}  # fmt: skip
# Without a 明細区分 column, a row without a product code and with one of these names is not a
# product (hand-trimmed exports keep 商品名 but drop 明細区分).
_ITEM_NAMES = {
    "送料": "shipping", "手数料": "charge", "代引手数料": "charge", "決済手数料": "charge",
    "割引": "discount", "値引き": "discount", "税": "tax", "ポイント": "points",
}  # fmt: skip

_MEMBER_STATUS = {
    "仮会員": MemberStatus.MEMBER, "1": MemberStatus.MEMBER,
    "本会員": MemberStatus.MEMBER, "2": MemberStatus.MEMBER,
    "退会": MemberStatus.WITHDRAWN, "3": MemberStatus.WITHDRAWN,
}  # fmt: skip


# The columns that tell an EC-CUBE 受注CSV from any other order CSV, each with the names it may
# have (the first is the one EC-CUBE writes).
EC_CUBE_ONLY = ("お名前(姓)",)
ORDER_MARKERS = (
    ORDER_COLUMNS["order_number"],
    EC_CUBE_ONLY,
    ORDER_COLUMNS["ordered_at"],
    ORDER_COLUMNS["quantity"],
)


def missing_order_markers(header: Header) -> list[str]:
    """The EC-CUBE 受注CSV columns this header lacks, as 「個数(または 数量)」."""
    return [
        f"{names[0]}(または {'・'.join(names[1:])})" if len(names) > 1 else names[0]
        for names in ORDER_MARKERS
        if not header.has(*names)
    ]


def looks_like_orders(header: Header) -> bool:
    """EC-CUBE's own names, not just any order CSV with 注文番号 and 商品名."""
    return not missing_order_markers(header)


def looks_like_members(header: Header) -> bool:
    return (
        header.has(*CUSTOMER_COLUMNS["member_id"])
        and header.has(*CUSTOMER_COLUMNS["family_name"])
        and not header.has(*ORDER_COLUMNS["order_number"])
    )


def _tax_rate(text: str) -> int:
    return values.parse_int(text.replace("%", ""), label="税率")


def _mailmaga(text: str) -> bool:
    # EC-CUBE 4's mail-magazine plugin stores 1 (受け取る) / 2 (受け取らない).
    if jp.nfkc(text) == "2":
        return False
    return values.parse_flag(text)


class EccubeOrders:
    info = ORDERS

    def __init__(self, header: Header, *, given_first: bool = False) -> None:
        require_columns(
            header,
            self.info.label,
            {
                name: ORDER_COLUMNS[name]
                for name in ("order_number", "ordered_at", "product_name", "unit_price", "quantity")
            },
        )
        self.columns = bind_all(header, ORDER_COLUMNS)
        self.given_first = given_first

    def key(self, record: Record) -> str:
        column = self.columns["order_number"]
        return jp.nfkc(column.get(record)) if column is not None else ""

    def parse(self, key: str, records: list[Record]) -> ParsedOrder | Skipped:
        cols = self.columns
        errors: list[RowError] = []
        first = Cells(records[0], errors, key)
        lines = [record.line for record in records]
        if not key:
            first.require(cols["order_number"], "注文番号")
            raise_if(errors)
        status = self._status(first)
        if status is None and not errors:
            return Skipped(key, lines, "購入処理中(決済が完了していない注文)のため取り込みません")
        ordered_at = None
        if first.require(cols["ordered_at"], "受注日"):
            ordered_at = first.read(cols["ordered_at"], values.parse_datetime, None)

        items, fees = self._items(records, errors, key)
        shipping = first.read(cols["shipping_fee"], values.parse_money, fees["shipping"])
        charge = first.read(cols["charge"], values.parse_money, fees["charge"])
        discount = first.read(cols["discount"], values.parse_money, fees["discount"])
        points = first.read(cols["points_used"], values.parse_points, fees["points"])
        subtotal = first.read(cols["subtotal"], values.parse_money, None)
        # With a bad price or quantity the subtotal cannot match; that error is enough.
        prices = self._unit_prices(items, None if errors else subtotal, first)
        line_inputs = tuple(
            LineInput(code, name, price, quantity)
            for (code, name, _price, quantity, _rate), price in zip(items, prices, strict=True)
        )
        shipped_on = None
        tracking = carrier = ""
        for record in records:
            cells = Cells(record, errors, key)
            shipped_on = shipped_on or cells.read(cols["shipped_on"], values.optional_date, None)
            tracking = tracking or cells.fits(
                cols["tracking_number"], TRACKING_NUMBER, cells.text(cols["tracking_number"])
            )
            carrier = carrier or cells.fits(cols["carrier"], CARRIER, cells.text(cols["carrier"]))
        payment_method = first.fits(
            cols["payment_method"], PAYMENT_METHOD, first.text(cols["payment_method"])
        )
        identities, profile = customer_cells(first, cols, given_first=self.given_first)
        check_profile(first, cols, profile)
        check_one_customer(records, cols, errors, key)
        raise_if(errors)
        assert ordered_at is not None  # noqa: S101 - a missing date was recorded as an error
        profile.setdefault("registered_at", ordered_at)
        profile["member_status"] = (
            MemberStatus.MEMBER if IdentityKind.CART_MEMBER in identities else MemberStatus.GUEST
        )
        order = OrderInput(
            number=key,
            ordered_at=ordered_at,
            lines=line_inputs,
            status=status or OrderStatus.RECEIVED,
            # Kizuna's order has no 手数料 field; it travels with the shipping fee so that the
            # order total still equals what the customer paid.
            shipping_fee=shipping + charge,
            discount=discount,
            points_used=points,
            payment_method=payment_method,
            source=self.info.source,
            shipped_on=shipped_on,
            carrier=carrier,
            tracking_number=tracking,
        )
        raise_if(check_order(order, line=records[0].line, columns=cols))
        return ParsedOrder(
            key=key,
            lines=lines,
            order=order,
            customer=ParsedCustomer(identities, profile, line=records[0].line),
        )

    def _status(self, cells: Cells) -> OrderStatus | None:
        column = self.columns["status"]
        raw = jp.nfkc(cells.text(column))
        if column is None or not raw:
            return OrderStatus.RECEIVED
        if raw not in _STATUS:
            cells.fail(column.name, f"対応状況「{raw}」は取り込めません")
            return OrderStatus.RECEIVED
        return _STATUS[raw]

    def _item_type(self, cells: Cells, code: str, name: str) -> str:
        column = self.columns["item_type"]
        raw = jp.nfkc(cells.text(column))
        if column is not None and raw:
            kind = _ITEM_TYPES.get(raw)
            if kind is None:
                cells.fail(column.name, f"明細区分「{raw}」は取り込めません")
                return "product"
            return kind
        if not code and name in _ITEM_NAMES:
            return _ITEM_NAMES[name]
        return "product"

    def _items(
        self, records: list[Record], errors: list[RowError], key: str
    ) -> tuple[list[tuple[str, str, int, int, int]], dict[str, int]]:
        cols = self.columns
        fees = {"shipping": 0, "charge": 0, "discount": 0, "points": 0}
        items: list[tuple[str, str, int, int, int]] = []
        for record in records:
            cells = Cells(record, errors, key)
            code = jp.nfkc(cells.text(cols["product_code"]))
            name = cells.text(cols["product_name"])
            kind = self._item_type(cells, code, name)
            price = cells.read(cols["unit_price"], values.parse_money, 0)
            quantity = cells.read(cols["quantity"], lambda t: values.parse_int(t, label="個数"), 1)
            if kind != "product":
                amount = price * quantity
                if kind in fees:
                    fees[kind] += abs(amount) if kind in ("discount", "points") else amount
                continue
            code = code or self._fallback_code(cells)
            if not code:
                cells.fail(column_name(cols["product_code"], "商品コード"), "商品コードが空です")
            cells.fits(cols["product_code"], PRODUCT_CODE, code)
            if quantity < 1 and cols["quantity"] is not None:
                cells.fail(cols["quantity"].name, "個数は1以上にしてください")
            if price < 0 and cols["unit_price"] is not None:
                cells.fail(cols["unit_price"].name, "価格がマイナスです")
            if not name:
                cells.require(cols["product_name"], "商品名")
            variants = [cells.text(cols["variant1"]), cells.text(cols["variant2"])]
            shown = " / ".join(v for v in variants if v)
            full_name = f"{name}({shown})" if shown else name
            # Stored with its 規格, so counted with them; named by 商品名, the cell to shorten.
            label = "商品名(規格を含めて)" if shown else ""
            cells.fits(cols["product_name"], PRODUCT_NAME, full_name, label)
            rate = cells.read(cols["tax_rate"], _tax_rate, 0)
            items.append((code, full_name, price, quantity, rate))
        if not items and not errors:
            Cells(records[0], errors, key).fail(
                column_name(cols["product_name"], "商品名"),
                "商品の明細がありません",
            )
        return items, fees

    def _fallback_code(self, cells: Cells) -> str:
        # 商品コード is optional in EC-CUBE; the 商品規格ID still names the product for good.
        class_id = jp.nfkc(cells.text(self.columns["product_class_id"]))
        return f"ECCUBE-{class_id}" if class_id else ""

    def _unit_prices(
        self, items: list[tuple[str, str, int, int, int]], subtotal: int | None, cells: Cells
    ) -> list[int]:
        """Unit prices including tax.

        EC-CUBE 4 stores and exports 価格 without tax and 小計 with it; customised shops export
        prices with tax. The reading whose total matches 小計 is the right one; EC-CUBE's
        rounding (四捨五入, 切り捨て, 切り上げ) is a shop setting, so each is tried.
        """
        raw = [price for _c, _n, price, _q, _r in items]
        quantities = [quantity for _c, _n, _p, quantity, _r in items]
        candidates = [raw]
        default = raw
        if any(rate for *_rest, rate in items):
            default = [p + (p * r + 50) // 100 for _c, _n, p, _q, r in items]
            candidates += [
                default,
                [p + p * r // 100 for _c, _n, p, _q, r in items],
                [p - (-p * r // 100) for _c, _n, p, _q, r in items],
            ]
        if subtotal is None:
            return default

        def total(prices: list[int]) -> int:
            return sum(p * q for p, q in zip(prices, quantities, strict=True))

        for prices in candidates:
            if total(prices) == subtotal:
                return prices
        column = self.columns["subtotal"]
        if items and column is not None:
            cells.fail(
                column.name,
                f"明細の合計(¥{total(default):,})が小計(¥{subtotal:,})と一致しません",
            )
        return default


class EccubeMembers:
    info = MEMBERS

    def __init__(self, header: Header, *, given_first: bool = False) -> None:
        require_columns(
            header,
            self.info.label,
            {name: MEMBER_COLUMNS[name] for name in ("member_id", "family_name")},
        )
        self.columns = bind_all(header, MEMBER_COLUMNS)
        self.given_first = given_first

    def key(self, record: Record) -> str:
        column = self.columns["member_id"]
        return jp.nfkc(column.get(record)) if column is not None else ""

    def parse(self, record: Record) -> ParsedCustomer:
        cols = self.columns
        errors: list[RowError] = []
        key = self.key(record)
        cells = Cells(record, errors, key)
        cells.require(cols["member_id"], "会員ID")
        identities, profile = customer_cells(cells, cols, given_first=self.given_first)
        check_profile(cells, cols, profile)
        if not profile.get("family_name"):
            cells.require(cols["family_name"], "お名前(姓)")
        registered = read_registered_at(cells, cols["registered_at"], values.parse_datetime)
        if registered is not None:
            profile["registered_at"] = registered
        status = member_status(cells, cols["member_status"])
        if status:
            profile["member_status"] = status
        opt_in = cells.read(cols["mailmaga"], _mailmaga, None) if cols["mailmaga"] else None
        raise_if(errors)
        return ParsedCustomer(
            identities, profile, email_opt_in=opt_in, consent_at=registered, line=record.line
        )


def member_status(cells: Cells, column: Column | None) -> str:
    raw = jp.nfkc(cells.text(column))
    if column is None or not raw:
        return ""
    status = _MEMBER_STATUS.get(raw)
    if status is None:
        cells.fail(column.name, f"会員ステータス「{raw}」は取り込めません")
        return ""
    return status.value
