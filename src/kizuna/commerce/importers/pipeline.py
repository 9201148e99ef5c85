"""The import run: read a file as a stream, group the rows of each order, write in batches.

Every file is read twice, as a stream, so memory stays flat however large it grows:

1. a checking pass decodes every byte and reads every record, so an undecodable byte or a
   broken quote refuses the file before anything is written;
2. the import pass writes through the bulk services every ingest route uses —
   `orders_upsert_many`, which resolves customers with `customers_resolve_many`; for a member
   file, `customers_resolve_many`, `customers_update_many` and `consents_grant_many` — one
   batch of `batch_size` orders or members at a time, in a constant number of statements per
   batch, committing every batch (lenient), or everything in one transaction (strict: if any
   row is bad, whether the values or the database refused it, every row is still written so
   that all bad rows are named, and then all of it is rolled back), or nothing (dry run: the
   same writes, rolled back).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from django.core.exceptions import ValidationError
from django.db import DatabaseError, DataError, IntegrityError, transaction

from kizuna.commerce.importers import eccube, generic, shopify
from kizuna.commerce.importers.base import (
    FormatInfo,
    ParsedCustomer,
    ParsedOrder,
    Skipped,
    validation_errors,
)
from kizuna.commerce.importers.decoding import ENCODINGS, StreamDecoder, lines
from kizuna.commerce.importers.errors import (
    ImportRefused,
    Remedy,
    RowError,
    RowErrors,
    UsageError,
)
from kizuna.commerce.importers.table import Column, CsvTable, Header, Record
from kizuna.commerce.services import OrderItem, OrderResult, UpsertOutcome, orders_upsert_many
from kizuna.core.audit import Actor
from kizuna.customers.models import (
    Consent,
    ConsentChannel,
    ConsentMethod,
    Customer,
    Identity,
    IdentityKind,
)
from kizuna.customers.resolution import Resolution, ResolveRequest, customers_resolve_many
from kizuna.customers.services import (
    ConsentGrant,
    ProfileChange,
    consents_grant_many,
    customers_update_many,
    normalize_identity,
)

KINDS = ("orders", "customers")
FORMATS = ("auto", "eccube", "shopify", "generic")
NAME_ORDERS = ("auto", "family_first", "given_first")
BATCH_SIZE = 500
# A batch's reads name every order number and identity in it, one SQL parameter each; SQLite
# takes at most 32,766 parameters per statement.
MAX_BATCH_SIZE = 5000

_Outcome = TypeVar("_Outcome")

# What the key a row error names (RowError.order) is, by the kind of import: an order's
# number, or for a member file the member ID.
RECORD_KEY_LABELS = {"orders": "注文番号", "customers": "会員ID"}


@dataclass(frozen=True)
class ImportOptions:
    kind: str
    format: str = "auto"
    encoding: str = "auto"
    mapping: Path | None = None
    dry_run: bool = False
    strict: bool = False
    consent_wording: str = "import"
    name_order: str = "auto"
    batch_size: int = BATCH_SIZE

    def check(self) -> None:
        """Refuse impossible combinations before the file is opened (exit code 2)."""
        if self.kind not in KINDS:
            raise UsageError(f"取り込む種類は {' / '.join(KINDS)} のどれかです")
        if self.format not in FORMATS:
            raise UsageError(f"--format は {' / '.join(FORMATS)} のどれかです")
        if self.encoding not in ENCODINGS:
            raise UsageError(f"--encoding は {' / '.join(ENCODINGS)} のどれかです")
        if self.name_order not in NAME_ORDERS:
            raise UsageError(f"--name-order は {' / '.join(NAME_ORDERS)} のどれかです")
        if self.format == "generic" and self.mapping is None:
            raise UsageError(
                "--format generic には --mapping でマッピングファイルを指定してください"
            )
        if self.mapping is not None and self.format not in ("auto", "generic"):
            raise UsageError("--mapping は --format generic(または auto)と一緒に使います")
        if self.kind == "customers" and self.format == "shopify":
            raise UsageError("Shopify の顧客CSVには対応していません(注文CSVから顧客も取り込めます)")
        if not self.consent_wording.strip():
            raise UsageError("--consent-wording を空にはできません(同意の証跡として記録します)")
        # Longer, PostgreSQL would refuse every consenting row and SQLite store it uncut.
        limit = Consent._meta.get_field("wording_version").max_length or 0
        if len(self.consent_wording) > limit:
            raise UsageError(
                f"--consent-wording は{limit}文字までです(いま{len(self.consent_wording)}文字)"
            )
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise UsageError(f"--batch-size は1〜{MAX_BATCH_SIZE:,}で指定してください")


@dataclass(frozen=True)
class Progress:
    phase: str  # "check" | "import"
    rows: int
    total_rows: int
    bytes_read: int
    total_bytes: int


class ErrorLog:
    """Bad rows, spooled to a temporary file so a file with a million bad rows stays flat."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self.count = 0

    def add(self, error: RowError) -> None:
        self._file.write(json.dumps(error.as_dict(), ensure_ascii=False) + "\n")
        self.count += 1

    def __iter__(self) -> Iterator[RowError]:
        self._file.flush()
        self._file.seek(0)
        for text in self._file:
            yield RowError(**json.loads(text))
        self._file.seek(0, 2)

    def close(self) -> None:
        self._file.close()


SKIPPED_ORDERS_LISTED = 100


@dataclass
class ImportResult:
    kind: str
    file: str
    dry_run: bool
    strict: bool
    format: str = ""
    format_label: str = ""
    encoding: str = ""
    rows_read: int = 0
    rows_imported: int = 0
    rows_rejected: int = 0
    rows_skipped: int = 0
    orders: Counter[str] = field(default_factory=Counter)
    # Orders left out on purpose (対象外), by the reason the format gives (購入処理中…).
    skip_reasons: Counter[str] = field(default_factory=Counter)
    # The first of them by order number and reason, for the report to name (not all: a file
    # of abandoned checkouts could leave out most of a million orders).
    skipped_orders: list[tuple[str, str]] = field(default_factory=list)
    customers: Counter[str] = field(default_factory=Counter)
    consents_granted: int = 0
    refused: bool = False
    message: str = ""
    refused_line: int | None = None
    refused_byte_offset: int | None = None
    seconds: float = 0.0
    errors: ErrorLog = field(default_factory=ErrorLog)

    @property
    def status(self) -> str:
        if self.refused:
            return "refused"
        return "rejected_rows" if self.rows_rejected else "ok"

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "ok" else 1

    def counts(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "file": self.file,
            "format": self.format,
            "encoding": self.encoding,
            "dry_run": self.dry_run,
            "strict": self.strict,
            "status": self.status,
            "message": self.message,
            "rows_read": self.rows_read,
            "rows_imported": self.rows_imported,
            "rows_rejected": self.rows_rejected,
            "rows_skipped": self.rows_skipped,
            "customers": {k: self.customers[k] for k in ("created", "matched", "updated")},
            "consents_granted": self.consents_granted,
            "seconds": round(self.seconds, 3),
        }
        if self.kind == "orders":
            keys = ("created", "updated", "unchanged", "stale", "skipped", "rejected")
            data["orders"] = {k: self.orders[k] for k in keys}
            data["skipped_orders"] = [
                {"order": key, "reason": reason} for key, reason in self.skipped_orders
            ]
        if self.refused_line is not None:
            data["refused_at"] = {
                "line": self.refused_line,
                "byte_offset": self.refused_byte_offset,
            }
        return data

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary: the counts and every rejected row."""
        return {**self.counts(), "errors": [error.as_dict() for error in self.errors]}


class OrderFormat(Protocol):
    info: FormatInfo
    columns: Any

    def key(self, record: Record) -> str: ...

    def parse(self, key: str, records: list[Record]) -> ParsedOrder | Skipped: ...


class CustomerFormat(Protocol):
    info: FormatInfo
    columns: Any

    def key(self, record: Record) -> str: ...

    def parse(self, record: Record) -> ParsedCustomer: ...


def choose_format(header: Header, options: ImportOptions) -> OrderFormat | CustomerFormat:
    """The format named by --format, or the one the header shows (auto)."""
    mapping = generic.load_mapping(options.mapping, kind=options.kind) if options.mapping else None
    name = options.format
    if name == "auto":
        name = _detect(header, options.kind, mapping is not None)
    given_first = options.name_order == "given_first"
    if name == "generic":
        assert mapping is not None  # noqa: S101 - ImportOptions.check and _detect ensure it
        if options.name_order != "auto":
            mapping.given_first = given_first
        if options.kind == "orders":
            return generic.GenericOrders(header, mapping)
        return generic.GenericCustomers(header, mapping)
    if name == "shopify":
        return shopify.ShopifyOrders(header, given_first=options.name_order != "family_first")
    if options.kind == "orders":
        return eccube.EccubeOrders(header, given_first=given_first)
    return eccube.EccubeMembers(header, given_first=given_first)


def _detect(header: Header, kind: str, has_mapping: bool) -> str:
    if has_mapping:
        return "generic"
    if kind == "orders":
        if shopify.looks_like_orders(header):
            return "shopify"
        if eccube.looks_like_orders(header):
            return "eccube"
    elif eccube.looks_like_members(header):
        return "eccube"
    what = "注文" if kind == "orders" else "顧客"
    # The kind chosen (注文 or 顧客) is the easiest thing to get wrong.
    if kind == "orders" and eccube.looks_like_members(header):
        raise ImportRefused("EC-CUBE の会員CSVのようです。", remedy=Remedy.KIND_CUSTOMERS)
    if kind == "customers" and (
        eccube.looks_like_orders(header) or shopify.looks_like_orders(header)
    ):
        raise ImportRefused("注文CSVのようです。", remedy=Remedy.KIND_ORDERS)
    missing = eccube.missing_order_markers(header) if kind == "orders" else []
    if len(missing) == 1 and header.has(*eccube.EC_CUBE_ONLY):
        # EC-CUBE's own name columns and all its markers but one: a column renamed or dropped
        # when the export was edited (other carts share 注文番号 and 個数, not お名前(姓)).
        raise ImportRefused(
            f"EC-CUBE の受注CSVに必要な列が見つかりません: {missing[0]}。"
            "見出しの名前を確かめてください。",
            remedy=Remedy.GENERIC_FORMAT,
        )
    found = "、".join(name for name in header.names[:8] if name)
    raise ImportRefused(
        f"{what}CSVの形式を判定できませんでした(見出し: {found} …)。",
        remedy=Remedy.GENERIC_FORMAT,
    )


@dataclass
class _Unit:
    """One order (its consecutive rows) or one customer row, parsed or refused."""

    key: str
    lines: list[int]
    parsed: ParsedOrder | ParsedCustomer | Skipped | None
    errors: list[RowError]
    is_record: bool = True  # False: a repeated header row, which is no order or customer


class _SeenOrders:
    """Order numbers met so far in this file, on disk (a million orders stay flat in memory).

    An order's rows must be consecutive; if the same number turns up again further down, the
    file was re-sorted and the later rows would silently replace the earlier lines.
    """

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="kizuna-import-")
        self._db = sqlite3.connect(str(Path(self._dir.name) / "seen.sqlite3"))
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE seen (number TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID;"
        )

    def first_line(self, number: str, line: int) -> int | None:
        """None the first time a number is met; else the line where it was first met."""
        cursor = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (number, line))
        if cursor.rowcount:
            return None
        row = self._db.execute("SELECT line FROM seen WHERE number = ?", (number,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()


class Importer:
    """One run over one file. `run()` returns the result; it never raises for bad data."""

    def __init__(
        self,
        path: Path,
        options: ImportOptions,
        *,
        acting_user: Any,
        progress: Callable[[Progress], None] | None = None,
        remedies: Mapping[Remedy, str] | None = None,
    ) -> None:
        self.path = path
        self.options = options
        self.actor = acting_user
        self._progress = progress
        self._remedies = remedies
        self.result = ImportResult(
            kind=options.kind, file=str(path), dry_run=options.dry_run, strict=options.strict
        )
        self._total_bytes = 0
        self._bytes_read = 0
        self._total_rows = 0
        self._format: OrderFormat | CustomerFormat | None = None

    # -- reading ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _table(self) -> Iterator[CsvTable]:
        encoding = self.result.encoding or self.options.encoding
        with self.path.open("rb") as raw:
            decoder = StreamDecoder(raw, encoding, on_bytes=self._on_bytes)
            table = CsvTable(lines(iter(decoder)))
            if not self.result.encoding and decoder.encoding:
                self.result.encoding = decoder.encoding
            yield table
            if not self.result.encoding:
                self.result.encoding = decoder.encoding or "utf-8"  # ASCII only: either works

    def _on_bytes(self, offset: int) -> None:
        self._bytes_read = offset

    def _units(self, table: CsvTable, fmt: OrderFormat | CustomerFormat) -> Iterator[_Unit]:
        if self.options.kind == "customers":
            parse_customer: Callable[[Record], ParsedCustomer] = fmt.parse  # type: ignore[assignment]
            member_key = fmt.key
            for record in table:
                if record.repeats_header:
                    yield _repeated_header(record)
                else:
                    yield self._customer_unit(parse_customer, member_key(record), record)
            return
        order_fmt: OrderFormat = fmt  # type: ignore[assignment]
        seen = _SeenOrders()
        try:
            for key, records in _groups(table, order_fmt):
                if records[0].repeats_header:
                    yield _repeated_header(records[0])
                else:
                    yield self._order_unit(order_fmt, seen, key, records)
        finally:
            seen.close()

    def _customer_unit(
        self, parse: Callable[[Record], ParsedCustomer], key: str, record: Record
    ) -> _Unit:
        """A member row, keyed by its member ID: errors found only when writing (the stored
        customer or the database refusing it) name the row by it, as read errors do."""
        try:
            parsed = parse(record)
        except RowErrors as exc:
            return _Unit(key, [record.line], None, exc.errors)
        return _Unit(key, [record.line], parsed, [])

    def _order_unit(
        self, fmt: OrderFormat, seen: _SeenOrders, key: str, records: list[Record]
    ) -> _Unit:
        lines_ = [record.line for record in records]
        earlier = seen.first_line(key, lines_[0]) if key else None
        if earlier is not None:
            column = fmt.columns.get("order_number")
            error = RowError(
                lines_[0],
                column.name if column is not None else "",
                f"同じ注文番号の行が{earlier}行目にもあり、連続していません。"
                "注文番号の順に並べ替えてから取り込み直してください",
                key,
            )
            return _Unit(key, lines_, None, [error])
        try:
            parsed = fmt.parse(key, records)
        except RowErrors as exc:
            return _Unit(key, lines_, None, exc.errors)
        return _Unit(key, lines_, parsed, [])

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> ImportResult:
        started = time.perf_counter()
        try:
            self._total_bytes = self.path.stat().st_size
            self._check_pass()
            self._import_pass()
        except ImportRefused as exc:
            self._refuse(exc.worded(self._remedies), line=exc.line, byte_offset=exc.byte_offset)
        self.result.seconds = time.perf_counter() - started
        if not self.result.message:
            self.result.message = summary_sentence(self.result)
        return self.result

    def _refuse(
        self, message: str, *, line: int | None = None, byte_offset: int | None = None
    ) -> None:
        self.result.refused = True
        self.result.message = message
        self.result.refused_line = line
        self.result.refused_byte_offset = byte_offset

    def _report(self, phase: str, rows: int) -> None:
        if self._progress is not None:
            self._progress(
                Progress(phase, rows, self._total_rows, self._bytes_read, self._total_bytes)
            )

    def _check_pass(self) -> None:
        """Decode and read the whole file."""
        with self._table() as table:
            fmt = choose_format(table.header, self.options)
            self._format = fmt
            self.result.format = fmt.info.name
            self.result.format_label = fmt.info.label
            for count, _record in enumerate(table, 1):
                if count % 10000 == 0:
                    self._report("check", count)
            self._total_rows = self.result.rows_read = table.rows_read
        self._report("check", self._total_rows)

    def _import_pass(self) -> None:
        if self.options.strict:
            # Every row is written, even after a bad one, so that the rows only the database
            # refuses are named too; then, if any row was bad, all of it is rolled back.
            with transaction.atomic():
                self._write_all()
                if self.result.errors.count:
                    transaction.set_rollback(True)
                    self._refuse_strict()
                elif self.options.dry_run:
                    transaction.set_rollback(True)
            return
        with transaction.atomic() if self.options.dry_run else contextlib.nullcontext():
            self._write_all()
            if self.options.dry_run:
                transaction.set_rollback(True)

    def _write_all(self) -> None:
        assert self._format is not None  # noqa: S101 - set by the checking pass
        with self._table() as table:
            batch: list[_Unit] = []
            for unit in self._units(table, self._format):
                batch.append(unit)
                if len(batch) >= self.options.batch_size:
                    self._write_batch(batch)
                    batch = []
                    self._report("import", table.rows_read)
            if batch:
                self._write_batch(batch)
            self._report("import", table.rows_read)

    def _write_batch(self, batch: list[_Unit]) -> None:
        with transaction.atomic():
            orders: list[_Unit] = []
            members: list[_Unit] = []
            for unit in batch:
                if unit.errors:
                    self._reject(unit, unit.errors)
                    continue
                if isinstance(unit.parsed, Skipped):
                    self._skip(unit, unit.parsed)
                elif isinstance(unit.parsed, ParsedOrder):
                    orders.append(unit)
                else:
                    members.append(unit)
            if orders:
                self._write_units(orders, self._upsert, self._outcome)
            if members:
                self._write_units(members, self._members, self._member_outcome)

    def _write_units(
        self,
        units: list[_Unit],
        write: Callable[[list[_Unit]], list[_Outcome]],
        outcome: Callable[[_Unit, _Outcome], None],
    ) -> None:
        """The batch through the bulk services (`write`), in a savepoint. Should the database
        refuse a row the checks let through (a value too long for its column, say), or a
        stored customer refuse the file's profile, the batch is rolled back and written again
        unit by unit, to name the row and keep the others."""
        try:
            with transaction.atomic():
                results = write(units)
        except (IntegrityError, DataError, ValidationError):
            for unit in units:
                try:
                    with transaction.atomic():
                        (result,) = write([unit])
                except (IntegrityError, DataError, ValidationError) as exc:
                    self._refuse_or_reject(unit, exc)
                else:
                    outcome(unit, result)
            return
        for unit, result in zip(units, results, strict=True):
            outcome(unit, result)

    # -- writing orders, a batch at a time -----------------------------------------------------

    def _upsert(self, units: list[_Unit]) -> list[tuple[OrderResult, bool]]:
        """Upsert the orders, then record the e-mail consents they carry: (result, consent)."""
        assert self._format is not None  # noqa: S101 - set by the checking pass
        parsed = [unit.parsed for unit in units if isinstance(unit.parsed, ParsedOrder)]
        results = orders_upsert_many(
            [
                OrderItem(
                    p.order,
                    # The order's identities as of its order date: an old order's address
                    # does not take over from one the customer gave since.
                    who=ResolveRequest(
                        identities=p.customer.identities,
                        profile=p.customer.profile,
                        observed_at=p.order.ordered_at,
                    ),
                )
                for p in parsed
            ],
            acting_user=self.actor,
            source=self._format.info.source,
        )
        customers = [r.order.customer if r.order is not None else None for r in results]
        granted = self._consents([p.customer for p in parsed], customers)
        return list(zip(results, granted, strict=True))

    def _outcome(self, unit: _Unit, outcome: tuple[OrderResult, bool]) -> None:
        result, consent = outcome
        if result.error is not None:
            self._refuse_or_reject(unit, result.error)
            return
        self._tally(
            unit, {"order": result.outcome, "created": result.customer_created, "consent": consent}
        )

    def _refuse_or_reject(self, unit: _Unit, exc: ValidationError | DatabaseError) -> None:
        """The row the services or the database refused; strict mode refuses the file at the
        end of the run (`_refuse_strict`), once every bad row is known."""
        self._reject(unit, self._write_errors(unit, exc))

    def _refuse_strict(self) -> None:
        """Nothing was imported: the counts of what was written (and rolled back) go back to
        zero; the rows read, the rows skipped and the rejected rows with their reasons stay."""
        result = self.result
        result.rows_imported = 0
        result.customers.clear()
        result.consents_granted = 0
        for key in ("created", "updated", "unchanged", "stale"):
            result.orders.pop(key, None)
        self._refuse(
            f"{result.rows_rejected:,}行に誤りがあるため、何も取り込みませんでした"
            "(「1行でも誤りがあれば何も取り込まない」を指定したため)。"
        )

    def _consents(
        self, parsed: list[ParsedCustomer], customers: list[Customer | None]
    ) -> list[bool]:
        """Record e-mail consent the file shows, for a customer who holds the row's address,
        unless they already consented or have opted out since: an old export must never
        re-subscribe someone who left. The batch's customers' consents are read in one query;
        only new grants are written, all at once."""
        assert self._format is not None  # noqa: S101 - set by the checking pass
        wanted = _address_holders(parsed, customers)
        ids = {customer.pk for customer in wanted if customer is not None}
        if not ids:
            return [False] * len(parsed)
        settled = set(
            Consent.objects.filter(customer_id__in=ids, channel=ConsentChannel.EMAIL)
            .exclude(granted=False, opted_out_at__isnull=True)
            .values_list("customer_id", flat=True)
        )
        granted: list[bool] = []
        grants: list[ConsentGrant] = []
        for p, customer in zip(parsed, wanted, strict=True):
            if customer is None or customer.pk in settled:
                granted.append(False)
                continue
            grants.append(
                ConsentGrant(
                    customer=customer,
                    channel=ConsentChannel.EMAIL,
                    method=ConsentMethod.IMPORT,
                    source_form=self._format.info.consent_form,
                    wording_version=self.options.consent_wording,
                    at=p.consent_at,
                )
            )
            settled.add(customer.pk)
            granted.append(True)
        for result in consents_grant_many(grants, acting_user=self.actor):
            if isinstance(result, ValidationError):
                raise result  # an erased record: the batch is written again to name the row
        return granted

    # -- writing members, a batch at a time ----------------------------------------------------

    def _members(self, units: list[_Unit]) -> list[dict[str, Any] | ValidationError]:
        """Resolve the rows' customers, update the matched ones from the file's profile (not
        their registration date), then record the e-mail consents the file shows: a row whose
        customer cannot be resolved gets its ValidationError and writes nothing. A profile a
        matched customer refuses raises, so the batch is written again row by row and the
        row's new identities roll back with it."""
        assert self._format is not None  # noqa: S101 - set by the checking pass
        parsed = [unit.parsed for unit in units if isinstance(unit.parsed, ParsedCustomer)]
        resolved = customers_resolve_many(
            [ResolveRequest(identities=p.identities, profile=p.profile) for p in parsed],
            acting_user=self.actor,
            source=self._format.info.source,
        )
        matched = {
            index: r.customer
            for index, r in enumerate(resolved)
            if isinstance(r, Resolution) and not r.created
        }
        updates = customers_update_many(
            [
                # The registration date is when the record began; a later file does not move it.
                # A member's address in the file is the whole of it (a column the file lacks
                # included): a move there empties what belonged to the old address.
                ProfileChange(
                    customer,
                    {k: v for k, v in parsed[index].profile.items() if k != "registered_at"},
                    whole_address=True,
                )
                for index, customer in matched.items()
            ],
            acting_user=self.actor,
        )
        updated: dict[int, bool] = {}
        for index, update in zip(matched, updates, strict=True):
            if isinstance(update, ValidationError):
                raise update
            updated[index] = update.changed
        granted = self._consents(
            parsed, [r.customer if isinstance(r, Resolution) else None for r in resolved]
        )
        return [
            r
            if isinstance(r, ValidationError)
            else {"created": r.created, "updated": updated.get(index, False), "consent": consent}
            for index, (r, consent) in enumerate(zip(resolved, granted, strict=True))
        ]

    def _member_outcome(self, unit: _Unit, outcome: dict[str, Any] | ValidationError) -> None:
        if isinstance(outcome, ValidationError):
            self._refuse_or_reject(unit, outcome)
        else:
            self._tally(unit, outcome)

    def _write_errors(self, unit: _Unit, exc: ValidationError | DatabaseError) -> list[RowError]:
        assert self._format is not None  # noqa: S101 - set by the checking pass
        line = unit.lines[0]
        if isinstance(exc, IntegrityError):
            reason = (
                "データベースの制約に反するため取り込めません"
                "(同時に別の取り込みが動いていないか確認してください)"
            )
            return [RowError(line, "", reason, unit.key)]
        if isinstance(exc, DatabaseError):
            reason = "データベースに保存できない値があります(文字数や桁数を確認してください)"
            return [RowError(line, "", reason, unit.key)]
        columns: dict[str, Column | None] = dict(self._format.columns)
        return validation_errors(exc, line=line, order=unit.key, columns=columns)

    # -- counting ------------------------------------------------------------------------------

    def _tally(self, unit: _Unit, outcome: dict[str, Any]) -> None:
        result = self.result
        result.rows_imported += len(unit.lines)
        result.customers["created" if outcome["created"] else "matched"] += 1
        if outcome.get("updated"):
            result.customers["updated"] += 1
        if outcome.get("consent"):
            result.consents_granted += 1
        order_outcome: UpsertOutcome | None = outcome.get("order")
        if order_outcome is not None:
            result.orders[order_outcome.value] += 1

    def _skip(self, unit: _Unit, skipped: Skipped) -> None:
        self.result.rows_skipped += len(unit.lines)
        self.result.orders["skipped"] += 1
        self.result.skip_reasons[skipped.reason] += 1
        if len(self.result.skipped_orders) < SKIPPED_ORDERS_LISTED:
            self.result.skipped_orders.append((unit.key, skipped.reason))

    def _reject(self, unit: _Unit, errors: list[RowError]) -> None:
        result = self.result
        bad = sorted({error.line for error in errors})
        others = [
            RowError(
                line,
                "",
                f"同じ注文の{bad[0]}行目に誤りがあるため、この行も取り込みません",
                unit.key,
            )
            for line in unit.lines
            if line not in bad
        ]
        for error in sorted([*errors, *others], key=lambda error: error.line):
            result.errors.add(error)
        result.rows_rejected += len(unit.lines)
        if self.options.kind == "orders" and unit.is_record:
            result.orders["rejected"] += 1


def _address_holders(
    parsed: list[ParsedCustomer], customers: list[Customer | None]
) -> list[Customer | None]:
    """For each row that says yes to e-mail, its customer if that customer holds the row's
    address once resolved; else None. One query.

    The yes is about that address. Resolution leaves an address another record holds with
    that record (it proposes the two as duplicates), and an existing order keeps its customer
    whatever address the row shows: recorded on such a customer, the yes would stand for an
    address it does not hold — perhaps one whose owner unsubscribed — and a merge of the two
    would subscribe that owner again."""
    offered = {
        index: normalize_identity(IdentityKind.EMAIL, p.identities[IdentityKind.EMAIL])
        for index, (p, customer) in enumerate(zip(parsed, customers, strict=True))
        if customer is not None and p.email_opt_in and IdentityKind.EMAIL in p.identities
    }
    if not offered:
        return [None] * len(parsed)
    held = set(
        Identity.objects.filter(
            kind=IdentityKind.EMAIL, value__in=set(offered.values())
        ).values_list("customer_id", "value")
    )
    return [
        customer
        if customer is not None and index in offered and (customer.pk, offered[index]) in held
        else None
        for index, customer in enumerate(customers)
    ]


REPEATED_HEADER = (
    "見出し行が重複しています(ファイルを連結した場合は、2つ目以降の見出し行を削除してください)"
)


def _repeated_header(record: Record) -> _Unit:
    """A header row met again: one error for the line, where reading it as data would give
    an unreadable date, quantity and price, none of which says what is wrong."""
    return _Unit("", [record.line], None, [RowError(record.line, "", REPEATED_HEADER)], False)


def _groups(table: CsvTable, fmt: OrderFormat) -> Iterator[tuple[str, list[Record]]]:
    """Consecutive records with the same order key; a repeated header row on its own."""
    key: str | None = None
    records: list[Record] = []
    for record in table:
        record_key = fmt.key(record)
        if records and (
            record_key != key
            or not record_key
            or record.repeats_header
            or records[-1].repeats_header
        ):
            yield key or "", records
            records = []
        key = record_key
        records.append(record)
    if records:
        yield key or "", records


def summary_sentence(result: ImportResult) -> str:
    """One Japanese sentence saying what happened, for the terminal and the web page."""
    if result.refused:
        return result.message
    if not result.rows_read:
        # Most often an export for a period with no orders, or the wrong file: say so plainly.
        return "見出しの行だけで、取り込むデータの行がありませんでした(何も変更していません)。"
    done = "取り込めます(試行のため何も書き込んでいません)" if result.dry_run else "取り込みました"
    if result.kind == "orders":
        o = result.orders
        what = f"注文 新規{o['created']:,}件・更新{o['updated']:,}件・変更なし{o['unchanged']:,}件"
    else:
        c = result.customers
        what = f"顧客 新規{c['created']:,}人・既存{c['matched']:,}人(うち更新{c['updated']:,}人)"
    sentence = f"{result.rows_read:,}行を読み、{what}を{done}。"
    if result.rows_rejected:
        sentence += f"誤りのある{result.rows_rejected:,}行は取り込んでいません。"
    return sentence


def run_import(
    path: Path,
    options: ImportOptions,
    *,
    acting_user: Any = None,
    progress: Callable[[Progress], None] | None = None,
    remedies: Mapping[Remedy, str] | None = None,
) -> ImportResult:
    """Import one file. Raises UsageError for impossible options; bad data is in the result.

    `remedies` is the calling front end's wording of what to choose instead when a file is
    refused (the web form's fields, the command's options); without it a refusal says only
    what is wrong."""
    options.check()
    if path.is_dir():
        raise UsageError(f"ファイルではなくフォルダが指定されています: {path}")
    if not path.is_file():
        raise UsageError(f"ファイルが見つかりません: {path}")
    actor = acting_user if acting_user is not None else Actor.system(f"import:{options.kind}")
    return Importer(path, options, acting_user=actor, progress=progress, remedies=remedies).run()
