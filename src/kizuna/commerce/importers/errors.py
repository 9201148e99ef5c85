"""What can go wrong in an import, in words the shop's staff can act on."""

from __future__ import annotations

from dataclasses import dataclass
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


class ImportRefused(Exception):  # noqa: N818 - an outcome the user acts on, named as they see it
    """The whole file is refused (undecodable byte, missing columns…); nothing was imported."""

    def __init__(self, message: str, *, line: int | None = None, byte_offset: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.byte_offset = byte_offset


class UsageError(Exception):
    """The command was asked for something impossible (bad option, unreadable mapping file)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
