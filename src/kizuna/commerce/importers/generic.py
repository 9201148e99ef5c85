"""Any CSV, with a YAML mapping file that says which column holds which of our fields.

The format of the mapping file is documented, with a full example, in docs/ingest.md; an example
ships as src/kizuna/web/static/web/examples/generic-orders.yml (the import page offers it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    check_one_customer,
    check_order,
    check_profile,
    column_name,
    customer_cells,
    raise_if,
    read_registered_at,
)
from kizuna.commerce.importers.eccube import member_status
from kizuna.commerce.importers.errors import CellError, ImportRefused, RowError, UsageError
from kizuna.commerce.importers.table import Column, Header, Record, bind
from kizuna.commerce.models import Order, OrderStatus
from kizuna.commerce.services import LineInput, OrderInput
from kizuna.core import jp, yamlfile
from kizuna.core.limits import TextLimit
from kizuna.customers.models import Consent, IdentityKind, MemberStatus

CUSTOMER_FIELDS = (
    "member_id", "email", "phone", "family_name", "given_name", "full_name", "family_kana",
    "given_kana", "full_kana", "company", "postal_code", "prefecture", "address1", "address2",
    "birthday", "gender", "email_opt_in", "registered_at", "member_status",
)  # fmt: skip
ORDER_FIELDS = (
    "order_number", "ordered_at", "status", "shipped_on", "delivered_on", "cancelled_at",
    "tracking_number", "carrier", "payment_method", "shipping_fee", "discount", "points_used",
    "updated_at", "product_code", "product_name", "unit_price", "quantity",
)  # fmt: skip
REQUIRED = {
    "orders": ("order_number", "ordered_at", "product_code", "unit_price", "quantity"),
    "customers": (),
}
_TOP_KEYS = {
    "kind", "source", "consent_form", "name_order", "date_formats", "columns", "status_map",
    "skip_statuses",
}  # fmt: skip
_STATUS_WORDS = {status.value: status for status in OrderStatus} | {
    str(status.label): status for status in OrderStatus
}


@dataclass
class ColumnMapping:
    kind: str
    columns: dict[str, str]
    source: str = "CSV"
    consent_form: str = "CSV取込"
    given_first: bool = False
    date_formats: tuple[str, ...] = values.DATETIME_FORMATS
    status_map: dict[str, OrderStatus | None] = field(default_factory=dict)


def load_mapping(path: Path, *, kind: str) -> ColumnMapping:
    """Read and check a mapping file. Every problem is a UsageError naming the key at fault."""
    try:
        raw = yamlfile.load(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UsageError(f"マッピングファイルが見つかりません: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"マッピングファイルではなくフォルダが指定されています: {path}") from None
    except PermissionError:
        raise UsageError(f"マッピングファイルを読む権限がありません: {path}") from None
    except OSError:
        raise UsageError(f"マッピングファイルを読めません: {path}") from None
    except UnicodeDecodeError:
        raise UsageError("マッピングファイルは文字コード UTF-8 で保存してください") from None
    except yamlfile.YamlError as exc:
        raise UsageError(f"マッピングファイルの書き方が正しくありません({exc})") from None
    return parse_mapping(raw, kind=kind)


def parse_mapping(raw: Any, *, kind: str) -> ColumnMapping:
    if not isinstance(raw, dict):
        raise UsageError("マッピングファイルの中身が空か、「項目: 値」の形になっていません")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise UsageError(
            f"マッピングファイルに知らない項目があります: {', '.join(sorted(unknown))}"
        )
    file_kind = str(raw.get("kind", kind))
    if file_kind != kind:
        raise UsageError(
            f"このマッピングファイルは kind: {file_kind} 用です({kind} の取り込みには使えません)"
        )
    columns = raw.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise UsageError("マッピングファイルに columns(項目と列名の対応)がありません")
    allowed = CUSTOMER_FIELDS + (ORDER_FIELDS if kind == "orders" else ())
    bad = [name for name in columns if name not in allowed]
    if bad:
        raise UsageError(
            f"columns に使えない項目があります: {', '.join(map(str, bad))}"
            f"(使える項目: {', '.join(allowed)})"
        )
    for name, column in columns.items():
        if not isinstance(column, str) or not column.strip():
            raise UsageError(f"columns の {name} に列名(文字列)を書いてください")
    missing = [name for name in REQUIRED[kind] if name not in columns]
    if kind == "customers" and not {"family_name", "full_name"} & set(columns):
        missing.append("family_name(または full_name)")
    if missing:
        raise UsageError(f"columns に必須の項目がありません: {', '.join(missing)}")
    name_order = raw.get("name_order", "family_first")
    if name_order not in ("family_first", "given_first"):
        raise UsageError("name_order は family_first か given_first です")
    formats = raw.get("date_formats", list(values.DATETIME_FORMATS))
    if isinstance(formats, str):
        formats = [formats]
    if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
        raise UsageError('date_formats は書式(例: "%Y/%m/%d %H:%M")のリストです')
    source, consent_form = _recorded_names(raw)
    return ColumnMapping(
        kind=kind,
        columns={name: str(column) for name, column in columns.items()},
        source=source,
        consent_form=consent_form,
        given_first=name_order == "given_first",
        date_formats=tuple(formats),
        status_map=_status_map(raw.get("status_map", {}), raw.get("skip_statuses", [])),
    )


def _recorded_names(raw: dict[str, Any]) -> tuple[str, str]:
    """`source` and `consent_form`, which every order and consent of the file records: cut
    short, the evidence of where a consent was given would be wrong on all of them."""
    source = str(raw.get("source", "CSV"))
    consent_form = str(raw.get("consent_form", "CSV取込"))
    for key, value, limit in (
        ("source", source, TextLimit.of(Order, "source")),
        ("consent_form", consent_form, TextLimit.of(Consent, "source_form")),
    ):
        if len(value) > limit.chars:
            raise UsageError(f"{key} は{limit.chars}文字までです(いま{len(value)}文字)")
    return source, consent_form


def _status_map(raw: Any, skip: Any) -> dict[str, OrderStatus | None]:
    if not isinstance(raw, dict):
        raise UsageError("status_map は「ファイルの値: received/shipped/…」の対応表です")
    result: dict[str, OrderStatus | None] = {}
    for their, ours in raw.items():
        status = _STATUS_WORDS.get(str(ours))
        if status is None:
            choices = ", ".join(s.value for s in OrderStatus)
            raise UsageError(
                f"status_map の「{their}」の値「{ours}」は使えません(使える値: {choices})"
            )
        result[jp.nfkc(str(their))] = status
    if not isinstance(skip, list):
        raise UsageError("skip_statuses は値のリストです")
    for value in skip:
        result[jp.nfkc(str(value))] = None
    return result


HEADER_NAMES_SHOWN = 60


def _bind_columns(header: Header, mapping: ColumnMapping) -> dict[str, Column | None]:
    missing = [column for column in mapping.columns.values() if not header.has(column)]
    if missing:
        named = [name for name in header.names if name]
        # Every name up to a long cart export's width, so a column that is there is not
        # taken for missing; past that, how many more.
        found = "、".join(named[:HEADER_NAMES_SHOWN])
        if len(named) > HEADER_NAMES_SHOWN:
            found += f"…ほか{len(named) - HEADER_NAMES_SHOWN}列"
        raise ImportRefused(
            f"マッピングファイルで指定した列がCSVにありません: {'、'.join(missing)}。"
            f"(ファイルの見出し: {found})"
        )
    return {name: bind(header, column) for name, column in mapping.columns.items()}


class _Columns(dict[str, Column | None]):
    """Unmapped fields read as absent."""

    def __missing__(self, key: str) -> Column | None:
        return None


class _MappedFormat:
    """What both generic importers start from: the mapping and the header's columns bound."""

    def __init__(self, header: Header, mapping: ColumnMapping) -> None:
        self.mapping = mapping
        self.columns: Mapping[str, Column | None] = _Columns(_bind_columns(header, mapping))
        self.info = FormatInfo(
            name="generic",
            label="汎用CSV(マッピング指定)",
            source=mapping.source,
            consent_form=mapping.consent_form,
        )


class GenericOrders(_MappedFormat):
    def key(self, record: Record) -> str:
        column = self.columns["order_number"]
        return jp.nfkc(column.get(record)) if column is not None else ""

    def _datetime(self, text: str) -> Any:
        return values.parse_datetime(text, self.mapping.date_formats)

    def _date(self, text: str) -> Any:
        return values.parse_date(text, self.mapping.date_formats)

    def _status(self, text: str) -> OrderStatus | None:
        key = jp.nfkc(text)
        if key in self.mapping.status_map:
            return self.mapping.status_map[key]
        status = _STATUS_WORDS.get(key)
        if status is None:
            raise CellError(f"状態「{key}」は status_map にありません")
        return status

    def parse(self, key: str, records: list[Record]) -> ParsedOrder | Skipped:
        cols = self.columns
        errors: list[RowError] = []
        first = Cells(records[0], errors, key)
        lines = [record.line for record in records]
        if not key:
            first.require(cols["order_number"], "注文番号")
            raise_if(errors)
        received: OrderStatus | None = OrderStatus.RECEIVED
        status = first.read(cols["status"], self._status, received)
        if status is None:
            return Skipped(key, lines, "マッピングの skip_statuses に当たるため取り込みません")
        ordered_at = None
        if first.require(cols["ordered_at"], "受注日時"):
            ordered_at = first.read(cols["ordered_at"], self._datetime, None)
        line_inputs: list[LineInput] = []
        for record in records:
            cells = Cells(record, errors, key)
            code = jp.nfkc(cells.require(cols["product_code"], "商品コード"))
            cells.fits(cols["product_code"], PRODUCT_CODE, code)
            quantity = cells.quantity(cols["quantity"])
            price = cells.read(cols["unit_price"], values.parse_money, 0)
            if price < 0:
                cells.fail(column_name(cols["unit_price"], "単価"), "単価がマイナスです")
            name = cells.fits(cols["product_name"], PRODUCT_NAME, cells.text(cols["product_name"]))
            line_inputs.append(LineInput(code, name or code, price, quantity))
        identities, profile = customer_cells(first, cols, given_first=self.mapping.given_first)
        check_profile(first, cols, profile)
        check_one_customer(records, cols, errors, key)
        opt_in = first.read(cols["email_opt_in"], values.parse_flag, None)
        # A new customer's 登録日 and 会員ステータス, when the file has them (else the order's
        # date, and member or guest by whether the row has a member ID).
        registered = read_registered_at(first, cols["registered_at"], self._datetime)
        status_of_member = member_status(first, cols["member_status"])
        order_fields = {
            "shipping_fee": first.read(cols["shipping_fee"], values.parse_money, 0),
            "discount": first.read(cols["discount"], values.parse_money, 0),
            "points_used": first.read(cols["points_used"], values.parse_points, 0),
            "shipped_on": first.read(cols["shipped_on"], self._date, None),
            "delivered_on": first.read(cols["delivered_on"], self._date, None),
            "cancelled_at": first.read(cols["cancelled_at"], self._datetime, None),
            "source_updated_at": first.read(cols["updated_at"], self._datetime, None),
        }
        order_texts = {
            name: first.fits(cols[name], limit, first.text(cols[name]))
            for name, limit in (
                ("payment_method", PAYMENT_METHOD),
                ("carrier", CARRIER),
                ("tracking_number", TRACKING_NUMBER),
            )
        }
        raise_if(errors)
        assert ordered_at is not None  # noqa: S101 - a missing date was recorded as an error
        profile["registered_at"] = registered or ordered_at
        profile["member_status"] = status_of_member or (
            MemberStatus.MEMBER if IdentityKind.CART_MEMBER in identities else MemberStatus.GUEST
        )
        order = OrderInput(
            number=key,
            ordered_at=ordered_at,
            lines=tuple(line_inputs),
            status=status,
            payment_method=order_texts["payment_method"],
            carrier=order_texts["carrier"],
            tracking_number=order_texts["tracking_number"],
            source=self.info.source,
            **order_fields,
        )
        raise_if(check_order(order, line=records[0].line, columns=cols))
        return ParsedOrder(
            key=key,
            lines=lines,
            order=order,
            customer=ParsedCustomer(
                identities, profile, email_opt_in=opt_in, consent_at=ordered_at, line=lines[0]
            ),
        )


class GenericCustomers(_MappedFormat):
    def key(self, record: Record) -> str:
        """The member ID a row is named by in the report, as an EC-CUBE 会員CSV row is."""
        member = self.columns["member_id"]
        return jp.nfkc(member.get(record)) if member is not None else ""

    def parse(self, record: Record) -> ParsedCustomer:
        cols = self.columns
        errors: list[RowError] = []
        cells = Cells(record, errors, self.key(record))
        identities, profile = customer_cells(cells, cols, given_first=self.mapping.given_first)
        check_profile(cells, cols, profile)
        if not profile.get("family_name"):
            cells.require(cols["family_name"] or cols["full_name"], "姓")
        if not identities:
            cells.fail("", "会員ID・メールアドレス・電話番号のいずれもありません")
        registered = read_registered_at(
            cells,
            cols["registered_at"],
            lambda t: values.parse_datetime(t, self.mapping.date_formats),
        )
        if registered is not None:
            profile["registered_at"] = registered
        status = member_status(cells, cols["member_status"])
        if status:
            profile["member_status"] = status
        opt_in = cells.read(cols["email_opt_in"], values.parse_flag, None)
        raise_if(errors)
        return ParsedCustomer(
            identities, profile, email_opt_in=opt_in, consent_at=registered, line=record.line
        )
