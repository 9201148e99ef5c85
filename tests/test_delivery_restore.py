"""RELIABILITY D8: a database restored from a backup (or copied) starts with sending paused, so
the messages that were pending when the backup was taken are not mailed a second time."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.db import connection

from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.delivery import DeliveryWorker
from kizuna.campaigns.models import DeliverySettings, OutboxStatus
from kizuna.campaigns.restore import database_identity
from kizuna.campaigns.services import sending_pause
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from tests.delivery_support import (
    SmtpServer,
    consenting_customer,
    database_url,
    mail,
    open_all_day,
    run_worker,
    worker_env,
)

ADMIN = Actor.system("test-admin")
# What a dump taken on another server carries: that server's identity.
ELSEWHERE = "postgresql:7000000000000000001:16384"


@pytest.mark.django_db
def test_a_restored_database_holds_every_message_until_an_admin_resumes(smtp) -> None:  # type: ignore[no-untyped-def]
    # given a database whose worker has run here before
    open_all_day()
    DeliveryWorker().drain()
    assert DeliverySettings.load().database_identity == database_identity() != ""
    assert not DeliverySettings.load().paused
    # and the same data arriving from a backup of another server, with a message pending
    DeliverySettings.objects.filter(pk=1).update(database_identity=ELSEWHERE)
    message = mail(consenting_customer(), "pending-in-backup")
    # when the worker starts on it
    DeliveryWorker().drain()
    # then nothing is sent, the message waits, and the pause is on record
    assert smtp.handler.received == []
    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    config = DeliverySettings.load()
    assert config.paused
    assert config.paused_by == "system:restore-check"
    audit = AuditLog.objects.get(action="delivery.pause")
    assert audit.changes["paused"] == [False, True]
    assert audit.changes["database_identity"] == [ELSEWHERE, database_identity()]
    # when an admin has checked the queue and resumes sending
    sending_pause(paused=False, acting_user=ADMIN)
    DeliveryWorker().drain()
    # then the message goes out, once, and the instance does not pause itself again
    assert len(smtp.handler.received) == 1
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert not DeliverySettings.load().paused


@pytest.mark.django_db
def test_a_fresh_installation_records_where_it_lives_without_pausing() -> None:
    DeliverySettings.load()
    DeliveryWorker().drain()
    config = DeliverySettings.load()
    assert config.database_identity == database_identity()
    assert not config.paused
    assert not AuditLog.objects.filter(action="delivery.pause").exists()


@pytest.mark.django_db
def test_the_scheduler_pauses_sending_on_a_restored_database_too() -> None:
    DeliverySettings.objects.update_or_create(pk=1, defaults={"database_identity": ELSEWHERE})
    tick(dt.datetime(2026, 5, 1, 1, 0, tzinfo=dt.UTC))
    assert DeliverySettings.load().paused


def _copy_database(target: str) -> str:
    """A copy of the test database as the backup drill makes it; the copy's URL."""
    if connection.vendor == "sqlite":
        path = f"{connection.settings_dict['NAME']}.restored-{target}"
        source, copy = sqlite3.connect(connection.settings_dict["NAME"]), sqlite3.connect(path)
        try:
            source.backup(copy)
        finally:
            source.close()
            copy.close()
        return f"sqlite:///{path}"
    parts = urlsplit(database_url())
    name = f"{parts.path.lstrip('/')}_{target}"
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    dump = subprocess.run(  # noqa: S603 - fixed arguments
        ["pg_dump", "--no-owner", database_url()],  # noqa: S607 - the system's pg_dump
        check=True,
        capture_output=True,
    )
    restored = urlunsplit(parts._replace(path=f"/{name}"))
    subprocess.run(  # noqa: S603 - fixed arguments
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", restored],  # noqa: S607 - the system's psql
        input=dump.stdout,
        check=True,
        capture_output=True,
    )
    return restored


def _pause_state(url: str) -> tuple[object, str]:
    sql = "SELECT paused, paused_by FROM campaigns_deliverysettings"
    if url.startswith("postgres"):
        with psycopg.connect(url) as pg:
            row = pg.execute(sql).fetchone()
    else:
        lite = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            row = lite.execute(sql).fetchone()
        finally:
            lite.close()
    assert row is not None
    return row[0], str(row[1])


def _drop_copy(url: str) -> None:
    if url.startswith("sqlite:///"):
        for suffix in ("", "-wal", "-shm", ".outbox-lock"):
            subprocess.run(["rm", "-f", url.removeprefix("sqlite:///") + suffix], check=True)  # noqa: S603, S607
        return
    parts = urlsplit(url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_backup_drill_restored_copy_starts_paused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # given an instance that has been sending, with one message pending when the backup runs
    open_all_day()
    with SmtpServer() as smtp:
        env = worker_env(smtp.port, KIZUNA_DATA_DIR=str(tmp_path))
        run_worker(env)
        message = mail(consenting_customer(), "pending-at-backup")
        # when the backup is restored into a fresh database and a worker starts on it
        restored = _copy_database("restored")
        try:
            run_worker({**env, "DATABASE_URL": restored})
            # then the copy sent nothing and is paused
            assert smtp.handler.received == []
            paused, by = _pause_state(restored)
            assert (bool(paused), by) == (True, "system:restore-check")
        finally:
            _drop_copy(restored)
        # while the original instance keeps sending as before
        run_worker(env)
        assert len(smtp.handler.received) == 1
        message.refresh_from_db()
        assert message.status == OutboxStatus.SENT
