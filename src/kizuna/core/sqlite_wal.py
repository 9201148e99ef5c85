"""Writing SQLite's write-ahead log back into the database file on a thread of its own.

In WAL mode every commit appends the changed pages to the `-wal` file, and SQLite copies them
back into the database file (a checkpoint) once the log is longer than `wal_autocheckpoint`
pages — inside the commit that crossed the line, on the committing thread. For a scenario tick
that queues 100,000 messages that copy is about half a second of its time, spent while the
machine's other core idles. SQLite's documentation suggests the way out used here: turn the
automatic checkpoint off on the writing connection and run checkpoints from another thread
with its own connection. A PASSIVE checkpoint never blocks a reader or a writer; it copies the
pages of transactions already committed, so the write-back of one transaction runs while the
next one is being prepared.

Nothing about durability changes: a commit is in the log before it returns, as before, and a
checkpoint cut short by a crash is finished by the next one (or by the next connection to open
the database).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

# How often the thread copies what was committed since its last pass. A pass with nothing to
# copy reads the log's index and returns.
CHECKPOINT_EVERY_S = 0.1


@contextlib.contextmanager
def wal_written_back_in_background(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """For a long run of writes on SQLite: its commits do not copy the log back themselves; a
    thread does, meanwhile and once more when the block ends. Elsewhere it does nothing.

    The block does not wait for the last copy: it finishes on its thread while the caller goes
    on (the next commit after the block, with automatic checkpoints back on, would otherwise
    do it)."""
    connection = connections[using]
    if connection.vendor != "sqlite":
        yield
        return
    path = str(connection.settings_dict["NAME"])
    if path == ":memory:" or "mode=memory" in path:
        yield
        return
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint=0")
    stop = threading.Event()
    writer = threading.Thread(
        target=_write_back, args=(path, stop), name="kizuna-wal-checkpoint", daemon=True
    )
    writer.start()
    _writers[:] = [*(w for w in _writers if w.is_alive()), writer]
    try:
        yield
    finally:
        stop.set()
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA wal_autocheckpoint={settings.SQLITE_WAL_AUTOCHECKPOINT}")


# The threads started, until they end: for `wait_for_write_back`.
_writers: list[threading.Thread] = []


def wait_for_write_back(timeout: float | None = None) -> None:
    """Wait until the write-back threads started so far have finished (a benchmark that counts
    the copy, a command about to exit that wants the log written back)."""
    while _writers:
        _writers.pop().join(timeout)


def _write_back(path: str, stop: threading.Event) -> None:
    """Checkpoint every CHECKPOINT_EVERY_S until `stop`, then once more, and close."""
    try:
        database = sqlite3.connect(path, timeout=0, check_same_thread=False)
    except sqlite3.Error:
        return  # the database went away (a test's, at teardown): nothing to write back
    try:
        while not stop.wait(CHECKPOINT_EVERY_S):
            _checkpoint(database)
        # The last pass copies everything, unless a reader keeps some pages for a while.
        for _ in range(FINAL_TRIES):
            if _checkpoint(database):
                return
            time.sleep(CHECKPOINT_EVERY_S)
    finally:
        database.close()


# How many passes (CHECKPOINT_EVERY_S apart) the last write-back makes before leaving what a
# reader still holds to the next checkpoint.
FINAL_TRIES = 50


def _checkpoint(database: sqlite3.Connection) -> bool:
    """One PASSIVE checkpoint — as much as no reader still needs, never waiting for a lock;
    True when the whole log is now in the database."""
    try:
        busy, frames, copied = database.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error:
        return False
    return not busy and copied == frames
