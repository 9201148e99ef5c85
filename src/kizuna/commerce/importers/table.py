"""CSV records with the line each starts on, and columns found by their header."""

from __future__ import annotations

import csv
import itertools
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from kizuna.commerce.importers.errors import ImportRefused

# The longest value (cell) a CSV file may hold. Python's csv module refuses a field longer than
# its limit, 131,072 characters by default: a file with one 140,000-character name was refused
# whole, its good rows with it, instead of that row being reported as too long (the limits of
# what is stored are far smaller and are checked per row: base.check_profile, Cells.fits).
# The limit still bounds memory (a runaway quote swallowing the rest of a large file stops
# here), so a value beyond it refuses the file with its line. The limit is process-wide; this
# module, which every CSV import reads through, is the one place that sets it.
MAX_FIELD_CHARS = 10_000_000
csv.field_size_limit(MAX_FIELD_CHARS)


def header_key(name: str) -> str:
    """A header as it is matched: NFKC, no spaces, lower case, so "お名前（姓）",
    "お名前(姓)" and "Lineitem Quantity" meet their column."""
    return "".join(unicodedata.normalize("NFKC", name).split()).lower()


@dataclass(frozen=True)
class Record:
    line: int
    values: list[str]
    # The header row again further down: two exports joined into one file (copy a.csv+b.csv,
    # cat, or pasted in Excel) keep the second one's header.
    repeats_header: bool = False


class Header:
    """The header row. Carts repeat some names (EC-CUBE's 受注CSV has two 送料 columns: the
    order's and the shipment's); the first one wins, as it does when people read the sheet."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = [name.strip() for name in names]
        self._index: dict[str, int] = {}
        for index, name in enumerate(self.names):
            self._index.setdefault(header_key(name), index)

    def find(self, *aliases: str) -> int | None:
        for alias in aliases:
            index = self._index.get(header_key(alias))
            if index is not None:
                return index
        return None

    def has(self, *aliases: str) -> bool:
        return self.find(*aliases) is not None

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class Column:
    """A field bound to the header: its position and the header name shown in errors."""

    index: int
    name: str

    def get(self, record: Record) -> str:
        values = record.values
        return values[self.index].strip() if self.index < len(values) else ""


def bind(header: Header, *aliases: str) -> Column | None:
    index = header.find(*aliases)
    return None if index is None else Column(index, header.names[index])


class CsvTable:
    """The records of a CSV file after its header, blank lines skipped.

    `line` is the physical line a record starts on, as a text editor numbers it (a quoted
    field with a line break makes a record span several lines).

    A file whose last line has no line break and fewer cells than the header was cut off (a
    download or copy that stopped): that record would be read with its missing cells empty,
    or a number cut short, so the file is refused like one that ends inside quotes.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        lines = iter(lines)
        leading: list[str] = []  # up to the header line, which decides the delimiter
        for text in lines:
            leading.append(text)
            if text.strip("\ufeff \t\r\n"):
                break
        header_line = leading[-1] if leading else ""
        # A spreadsheet's 「テキスト(タブ区切り)」 saves a .txt with tabs: the header of such a
        # file has tabs and no commas, while a comma file's header has commas (a header name
        # with a tab in it is not something carts or Excel write).
        self.delimiter = "\t" if "\t" in header_line and "," not in header_line else ","
        self._lines = itertools.chain(leading, lines)
        self._last_text = "\n"  # the last physical line the reader took
        self._reader = csv.reader(self._tracked(), strict=True, delimiter=self.delimiter)
        self._last_line = 0
        self._width = 0
        self._header_cells: list[str] = []  # none while the header itself is read
        self.rows_read = 0
        first = self._next()
        if first is None:
            raise ImportRefused("ファイルが空です(見出し行がありません)。")
        self.header = Header(first.values)
        self._width = len(first.values)
        self._header_cells = _header_cells(first.values)

    def _tracked(self) -> Iterator[str]:
        for text in self._lines:
            self._last_text = text
            # Two UTF-8 exports joined byte for byte leave the second one's BOM at the start of
            # its header line, where the reader would take `"Name"` for a value with quotes in
            # it; a zero-width character at the start of a line is never data.
            yield text.removeprefix("\ufeff")

    def _next(self) -> Record | None:
        while True:
            start = self._last_line + 1
            try:
                values = next(self._reader)
            except StopIteration:
                return None
            except csv.Error as exc:
                if "field larger than field limit" in str(exc):
                    raise _value_too_long(start) from exc
                line = self._reader.line_num
                raise ImportRefused(
                    f"{line}行目付近をCSVとして読めません({_csv_reason(exc)})。", line=line
                ) from exc
            self._last_line = self._reader.line_num
            if not any(value.strip() for value in values):
                continue
            if not self._last_text.endswith("\n") and len(values) < self._width:
                raise ImportRefused(
                    f"{start}行目(ファイルの最後の行)が途中で切れています"
                    f"(見出しは{self._width}列、この行は{len(values)}列)。"
                    "ファイルが最後まで出力・コピーされているか確認してください。",
                    line=start,
                )
            return Record(start, values, self._repeats_header(values))

    def _repeats_header(self, values: list[str]) -> bool:
        # A data row differs in its first cell already (an order number, not 注文番号): only
        # rows that do not are compared cell by cell, which keeps a million rows fast.
        if not self._header_cells or header_key(values[0]) != self._header_cells[0]:
            return False
        return _header_cells(values) == self._header_cells

    def __iter__(self) -> Iterator[Record]:
        while True:
            record = self._next()
            if record is None:
                return
            self.rows_read += 1
            yield record


def _header_cells(values: list[str]) -> list[str]:
    """A row as a header is compared: each cell as `header_key` matches it, without the empty
    cells a spreadsheet adds at the end."""
    cells = [header_key(value) for value in values]
    while cells and not cells[-1]:
        cells.pop()
    return cells


def _value_too_long(line: int) -> ImportRefused:
    return ImportRefused(
        f"{line}行目から始まる行に、{MAX_FIELD_CHARS:,}文字を超える値があります。"
        '取り込みを中止しました(何も取り込んでいません)。引用符(")が閉じられていないと、'
        "そこから後ろが1つの値として読まれます。その行を確かめてください。",
        line=line,
    )


def _csv_reason(exc: csv.Error) -> str:
    text = str(exc)
    if "NUL" in text:
        return "NUL文字が含まれています"
    if "new-line character" in text:
        return (
            "引用符で囲まれていない値の中に改行(CR)があります。改行が CR だけのファイル"
            "(古い Mac の Excel など)は、CRLF か LF で保存し直してください"
        )
    if "unexpected end of data" in text or "EOF" in text:
        return '引用符(")が閉じられていません'
    if "quotechar" in text or "delimiter" in text or "expected" in text:
        return '引用符(")の使い方が正しくありません'
    return "形式が正しくありません"
