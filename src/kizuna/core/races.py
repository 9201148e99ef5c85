"""Creation races: two writers adding the same new row (an identity, an order number, a consent)
at once. The database's unique index lets one win; the loser rolls back to a savepoint, reads
again and does its work against the winner's row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.db import IntegrityError, transaction

T = TypeVar("T")
# A chunk that keeps losing is tried this often before the error reaches the caller.
ATTEMPTS = 3


def unique_clash(*names: str) -> Callable[[IntegrityError], bool]:
    """Whether an IntegrityError is the refusal of one particular unique index: PostgreSQL's
    message names the constraint, SQLite's the table and column — give whichever `names`
    appear in them."""

    def clashed(exc: IntegrityError) -> bool:
        text = str(exc)
        return any(name in text for name in names)

    return clashed


def retry_lost_race(
    work: Callable[[], T], *, lost: Callable[[IntegrityError], bool] = lambda exc: True
) -> T:
    """`work()` in a savepoint, run again (up to ATTEMPTS times) after an IntegrityError that
    `lost` recognises as a lost race; any other IntegrityError is raised at once."""
    for attempt in range(ATTEMPTS):
        try:
            with transaction.atomic():
                return work()
        except IntegrityError as exc:
            if attempt == ATTEMPTS - 1 or not lost(exc):
                raise
    raise AssertionError("unreachable")  # pragma: no cover
