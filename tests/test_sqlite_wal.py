"""The write-ahead log of a long run of writes is copied back by a thread, not by its commits
(core.sqlite_wal); a scenario tick runs that way."""

from __future__ import annotations

import sqlite3

import pytest
from django.conf import settings
from django.db import connection, transaction

from kizuna.core.sqlite_wal import wait_for_write_back, wal_written_back_in_background
from kizuna.customers.models import Tag

pytestmark = pytest.mark.django_db(transaction=True)


def _pragma(sql: str) -> tuple[int, ...]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return tuple(cursor.fetchone())


def _write(batch: int, n: int) -> None:
    with transaction.atomic():
        Tag.objects.bulk_create(Tag(name=f"wal-{batch}-{i}") for i in range(n))


def test_commits_leave_the_write_back_to_a_thread_that_finishes_it() -> None:
    if connection.vendor != "sqlite":
        # PostgreSQL has no such log to copy: the block changes nothing there
        with wal_written_back_in_background():
            _write(0, 10)
        assert Tag.objects.count() == 10
        return
    with wal_written_back_in_background():
        # inside, commits do not copy the log back themselves
        assert _pragma("PRAGMA wal_autocheckpoint") == (0,)
        for batch in range(5):
            _write(batch, 200)
    # after it, they do again, and once the thread is done the rows are in the database file
    # itself, not only in the log (read with immutable=1, which ignores the log)
    assert _pragma("PRAGMA wal_autocheckpoint") == (settings.SQLITE_WAL_AUTOCHECKPOINT,)
    wait_for_write_back(timeout=30)
    path = connection.settings_dict["NAME"]
    file_only = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        table = Tag._meta.db_table
        (in_file,) = file_only.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    finally:
        file_only.close()
    assert in_file == 1000
