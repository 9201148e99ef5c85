"""Letting the database work on the other core while Python works on this one.

A scenario tick that queues 100,000 messages spends about a third of its time in Python
(rendering each message) and the rest waiting for the database: reading each customer's
template context, and inserting the dispatch and outbox rows. Both SQLite and psycopg release
Python's lock (the GIL) while the database works, so that waiting can overlap the rendering —
two threads, each with work the other does not need:

- `read_ahead` runs a read for the next chunk on a thread with a connection of its own, while
  the caller renders the chunk before. A second connection sees only what is committed, so it
  is used only when the caller is outside any transaction (`can_overlap`); inside one (a test's,
  or a caller's atomic block) the reads run in line, on the caller's connection, in order.
- `writes_behind` runs writes, in the order given, on one thread that shares the caller's
  connection — the same transactions, the same savepoints — while the caller renders the next
  chunk. The caller must not use that connection until the block ends: Django's connection
  objects are not made for two threads at once, and nothing here checks. In line when
  `overlap` is false.

Both keep order and hand the first error back to the caller, unchanged (an IntegrityError stays
an IntegrityError), and nothing runs after it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections

T = TypeVar("T")
R = TypeVar("R")

# How many chunks a reader may fetch before the caller takes them: enough to keep it busy
# while the caller renders, little enough to bound memory (a chunk is 10,000 contexts).
READ_AHEAD = 2


def can_overlap(using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether a second connection would see what the caller's sees: only outside a
    transaction (and not on an in-memory SQLite database, which a second connection cannot
    share without table locks)."""
    connection = connections[using]
    if connection.in_atomic_block:
        return False
    name = str(connection.settings_dict["NAME"])
    return not (connection.vendor == "sqlite" and (name == ":memory:" or "mode=memory" in name))


def read_ahead(
    read: Callable[[T], R], chunks: Iterable[T], *, overlap: bool, using: str = DEFAULT_DB_ALIAS
) -> Generator[R, None, None]:
    """`read(chunk)` for each chunk, in order; with `overlap`, computed on a thread with its own
    connection, up to READ_AHEAD chunks ahead of the caller."""
    if not overlap:
        for chunk in chunks:
            yield read(chunk)
        return
    results: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=READ_AHEAD)
    stop = threading.Event()

    def work() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                results.put((True, read(chunk)))
            results.put((False, None))
        except BaseException as exc:  # handed to the caller, who raises it
            results.put((False, exc))
        finally:
            connections[using].close()  # this thread's own connection

    reader = threading.Thread(target=work, name="kizuna-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            more, value = results.get()
            if not more:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        # The caller stopped early (an error while rendering): let the reader finish its
        # current read and go, so its connection is closed before the caller goes on.
        stop.set()
        while reader.is_alive():
            with contextlib.suppress(queue.Empty):
                results.get(timeout=0.05)
        reader.join()


class WritesBehind:
    """Writes submitted in order, run by `writes_behind` (in line or on its thread)."""

    def __init__(self, using: str, overlap: bool) -> None:
        self._using = using
        self._overlap = overlap
        self._jobs: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        """Run `job(*args)` after the jobs submitted before it; in line, now. After an error
        nothing more runs (in line, the error is raised here)."""
        if not self._overlap:
            job(*args)
            return
        if self._error is None:
            self._jobs.put((job, args))

    def _start(self) -> None:
        if not self._overlap:
            return
        connection = connections[self._using]
        connection.ensure_connection()
        connection.inc_thread_sharing()
        self._thread = threading.Thread(
            target=self._work, args=(connection,), name="kizuna-writes-behind", daemon=True
        )
        self._thread.start()

    def _work(self, connection: Any) -> None:
        # This thread's Django code (transaction.atomic, core.bulk) uses the caller's
        # connection object: the same transaction state, the same savepoints.
        connections[self._using] = connection
        while (item := self._jobs.get()) is not None:
            if self._error is not None:
                continue
            job, args = item
            try:
                job(*args)
            except BaseException as exc:  # handed to the caller, who raises it
                self._error = exc

    def _finish(self) -> BaseException | None:
        if self._thread is None:
            return None
        self._jobs.put(None)
        self._thread.join()
        connections[self._using].dec_thread_sharing()
        return self._error


@contextlib.contextmanager
def writes_behind(*, overlap: bool, using: str = DEFAULT_DB_ALIAS) -> Iterator[WritesBehind]:
    """A writer for the block; it has run every job (or stopped at an error, raised here) when
    the block ends. The caller must not use the `using` connection inside the block."""
    writer = WritesBehind(using, overlap)
    writer._start()
    try:
        yield writer
    finally:
        error = writer._finish()
    if error is not None:
        raise error
