"""Rows for CSV files that staff open in Excel.

Names, addresses and message texts come from the shop's cart and its customers. Excel reads a
CSV cell that starts with "=", "+", "-" or "@" as a formula, so a customer who registers as
`=HYPERLINK("http://…","…")` would run it on the PC of whoever opens the export (CSV
injection, OWASP). Such a cell gets a leading apostrophe, which Excel shows and never
evaluates; a plain signed number ("-300", "+81…") is left alone. The Excel lists need none of
this: they write every value as a text cell.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

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
