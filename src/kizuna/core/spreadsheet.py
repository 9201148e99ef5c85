"""Rows for CSV files that staff open in Excel.

Names, addresses and message texts come from the shop's cart and its customers. Excel reads a
CSV cell that starts with "=", "+", "-" or "@" as a formula, so a customer who registers as
`=HYPERLINK("http://…","…")` would run it on the PC of whoever opens the export (CSV
injection, OWASP). Such a cell gets a leading apostrophe, which Excel shows and never
evaluates; a plain signed number ("-300", "+81…") is left alone. The Excel files need none of
this: they write every value as a text cell.

Excel also reads a CSV cell of digits as a number, so a phone number or postal code opened from
a CSV loses its leading zero; the Excel files (`xlsx_bytes`) keep them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from typing import Any

# Excel's last row is 1,048,576: the header and this many rows.
XLSX_MAX_ROWS = 1_048_575
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SIGNED_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def safe_cell(value: Any) -> Any:
    if (
        isinstance(value, str)
        and value.startswith(FORMULA_START)
        and not _SIGNED_NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value


def safe_row(row: Iterable[Any]) -> list[Any]:
    return [safe_cell(value) for value in row]


class _Echo:
    """A file-like object whose write returns the line, for csv.writer into a stream."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[list[Any]]) -> Iterator[str]:
    """`rows` as the lines of a CSV file for a streamed download, each row made safe
    (safe_row). A BOM first, so Excel on a Japanese PC opens the file as UTF-8 rather than
    Shift_JIS."""
    writer = csv.writer(_Echo())
    yield "\ufeff"
    for row in rows:
        yield writer.writerow(safe_row(row))


def xlsx_bytes(header: list[str], rows: Iterable[list[Any]], *, title: str) -> tuple[bytes, int]:
    """An Excel workbook of one sheet (`title`, cut to Excel's 31 characters): the header, then
    the rows, every non-empty string a text cell. Returns the file and the number of rows."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import Cell

    book = Workbook(write_only=True)
    sheet = book.create_sheet(title=title[:31])

    def text(value: str) -> Cell:
        # Names and addresses come from the shop's cart: "=…" stays text, never a formula.
        cell = WriteOnlyCell(sheet, value=value)
        cell.data_type = "s"
        return cell

    sheet.append(header)
    count = 0
    # Postal codes, phone numbers and order numbers stay text, so Excel keeps leading zeros.
    for count, row in enumerate(rows, start=1):  # noqa: B007 - the count is used below
        sheet.append([text(value) if isinstance(value, str) and value else value for value in row])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue(), count
