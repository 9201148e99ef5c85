"""What can go wrong in an import, in words the shop's staff can act on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class RowError:
    """One bad cell or row: the line in the file (as an editor numbers it), the column's
    header and the reason, in Japanese. `order` names the order the row belongs to."""

    line: int
    column: str
    reason: str
    order: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "reason": self.reason,
            "order": self.order,
        }


class RowErrors(Exception):  # noqa: N818 - a bundle of row errors, not a failure of the program
    """The rows of one order or customer could not be read."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(f"{len(errors)}件の誤り")
        self.errors = errors


class CellError(ValueError):
    """A cell's value cannot be read; the message says why, in Japanese."""


class Remedy(StrEnum):
    """What to do about a refused file, when the answer is a choice made where the import was
    started. The web form and the command offer the same choices under different names (a
    select, an option), so the importer only names the remedy and each front end words it:
    `run_import(remedies=…)` takes the front end's wording of each."""

    GENERIC_FORMAT = "generic_format"  # another cart's CSV: the generic format and a mapping
    KIND_CUSTOMERS = "kind_customers"  # a member file sent as orders
    KIND_ORDERS = "kind_orders"  # an order file sent as customers
    ENCODING_UTF8 = "encoding_utf8"  # a UTF-8 file sent as Shift_JIS (CP932)


class ImportRefused(Exception):  # noqa: N818 - an outcome the user acts on, named as they see it
    """The whole file is refused (undecodable byte, missing columns…); nothing was imported.

    `message` says what is wrong with the file; `remedy`, when set, what to choose instead,
    which `worded` adds in the front end's terms."""

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        byte_offset: int | None = None,
        remedy: Remedy | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.line = line
        self.byte_offset = byte_offset
        self.remedy = remedy

    def worded(self, remedies: Mapping[Remedy, str] | None) -> str:
        """The message followed by the remedy as `remedies` words it (none: the message)."""
        if self.remedy is None or remedies is None:
            return self.message
        return self.message + remedies[self.remedy]


class UsageError(Exception):
    """The command was asked for something impossible (bad option, unreadable mapping file)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
