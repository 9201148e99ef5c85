"""The sent journal: what a delivery worker has handed over, before the database knows it.

Recording "sent" in the database after every message costs a transaction per message (2–7 ms,
more than the SMTP exchange itself). Instead the worker appends one line to its own journal
file the moment the remote side accepted a message — a single write(2), which survives the
worker process being killed, since the data is in the kernel — and writes the accumulated
marks to the outbox in one transaction per group (`DeliveryWorker._flush`).

A worker holds an exclusive flock on its journal while it lives. A journal whose lock is free
belongs to a dead worker: before claiming, every worker replays such journals (`orphans`),
so the messages they list are marked sent and never go out again, however long ago their
worker died. Journals live in KIZUNA_DATA_DIR/outbox-journal, tagged with the database they
belong to, so workers sharing a data directory never apply each other's database's marks.

What this does not cover: a crash of the machine itself (power loss) may lose the last
journal lines from the page cache; those messages are sent again with the same Message-ID,
the same trade SQLite's synchronous=NORMAL and PostgreSQL's synchronous_commit=off make. A
worker on another machine claims a dead worker's rows only after their lease (default 5
minutes), by which time the dead worker's own machine has usually restarted it and replayed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SentMark:
    """One message the remote side accepted, as the outbox row should record it."""

    outbox_id: int
    token: str  # the claim token the worker held the row with
    sent_at: str  # ISO 8601, aware
    channel: str
    address: str
    message_id: str
    attempts: int

    @property
    def when(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.sent_at)

    def line(self) -> bytes:
        # vars(), not dataclasses.asdict: the fields are flat, and asdict's deep copy is most
        # of the cost of a line.
        return json.dumps(vars(self), ensure_ascii=False).encode("utf-8") + b"\n"


def directory() -> Path:
    return Path(settings.DATA_DIR) / "outbox-journal"


def database_tag() -> str:
    """A short name for the database this process writes to (engine, host, port, name)."""
    db = connection.settings_dict
    label = f"{db['ENGINE']}|{db.get('HOST', '')}|{db.get('PORT', '')}|{db['NAME']}"
    return hashlib.sha256(label.encode("utf-8")).hexdigest()[:12]


class Journal:
    """One worker process's journal file, locked for as long as it is open."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self._fd: int | None = None
        self.path = directory() / f"{database_tag()}.{worker_id}.{os.getpid()}.jsonl"

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._fd = fd
        return self._fd

    def append(self, mark: SentMark) -> None:
        os.write(self._open(), mark.line())

    def clear(self) -> None:
        """Forget the lines written so far: the database has them now."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)

    def close(self) -> None:
        """Remove the journal; only call once everything in it is in the database."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def read_marks(path: Path) -> list[SentMark]:
    marks = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            marks.append(SentMark(**json.loads(raw)))
        except (ValueError, TypeError):
            # Only the last line can be cut short (the process died inside write(2)); the
            # message it names was accepted but its mark is lost, so it is sent once more.
            logger.warning("unreadable line %s in %s", number, path.name)
    return marks


@contextlib.contextmanager
def orphans() -> Iterator[list[tuple[Path, list[SentMark]]]]:
    """Journals of dead workers on this database, locked while the caller records them; they
    are deleted when the block ends without an error."""
    folder = directory()
    if not folder.is_dir():
        yield []
        return
    held: list[tuple[Path, int, list[SentMark]]] = []
    try:
        for path in sorted(folder.glob(f"{database_tag()}.*.jsonl")):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # another worker replayed it a moment ago
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its worker is alive
                os.close(fd)
                continue
            if not path.exists():  # replayed and removed while we waited for the lock
                os.close(fd)
                continue
            held.append((path, fd, read_marks(path)))
        yield [(path, marks) for path, _, marks in held]
        for path, _, _ in held:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        for _, fd, _ in held:
            os.close(fd)
