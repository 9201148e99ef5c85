"""RELIABILITY D8: a database restored from a backup starts with sending paused.

A backup holds the outbox as it was when it was taken: messages sent since then are pending
again in it, and scenario steps due since then look due. Restored and started as it is, the
instance would mail those customers a second time. So each database remembers the identity of
the place it lives in (`DeliverySettings.database_identity`): the PostgreSQL cluster's system
identifier and the database's OID, or the SQLite file's device and inode. A dump restored into
a fresh database, or a copied SQLite file, carries the old identity; the first delivery batch
or scheduler tick that sees the difference pauses all sending, audited, and an admin resumes it
on the delivery page after checking the queue (the scheduler holds its own backlog for
confirmation as well, S10).

Not detected: restoring in place over the same SQLite file (same inode, e.g. `cp backup.db
kizuna.sqlite3` onto the existing file) — restore into a fresh file, as the drill does.
"""

from __future__ import annotations

import functools
import logging
import os

from django.db import connection, transaction
from django.utils import timezone

from kizuna.campaigns.models import DeliverySettings
from kizuna.core.audit import Actor, audit_record

logger = logging.getLogger(__name__)

RESTORE_ACTOR = Actor.system("restore-check")


@functools.cache
def _postgres_identity(name: str, host: str, port: str) -> str:
    """Asked once per process and database: a server's identity cannot change under a live
    connection."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT system_identifier FROM pg_control_system()),"
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        system, oid = cursor.fetchone()
    return f"postgresql:{system}:{oid}"


def database_identity() -> str:
    """Where this database lives; "" when that cannot be told (in-memory SQLite, other engines)."""
    db = connection.settings_dict
    name = str(db["NAME"])
    if connection.vendor == "sqlite":
        if not name or name == ":memory:" or "mode=memory" in name:
            return ""  # an in-memory database has no backup to come from
        # Not cached: a file moved into place under a running worker is a new inode.
        stat = os.stat(name)
        return f"sqlite:{stat.st_dev}:{stat.st_ino}"
    if connection.vendor == "postgresql":
        return _postgres_identity(name, str(db.get("HOST") or ""), str(db.get("PORT") or ""))
    return ""


def restore_check(config: DeliverySettings | None = None) -> bool:
    """Pause sending if this database was restored or copied from elsewhere; True when this
    call paused it. The first check on a database only records where it lives."""
    current = database_identity()
    row = config or DeliverySettings.load()
    if not current or row.database_identity == current:
        return False
    with transaction.atomic():
        row = DeliverySettings.objects.select_for_update().get(pk=row.pk)
        previous = row.database_identity
        if previous == current:
            return False
        row.database_identity = current
        if not previous:
            row.save(update_fields=["database_identity"])
            return False
        was_paused = row.paused
        row.paused = True
        row.paused_at = timezone.now()
        row.paused_by = RESTORE_ACTOR.label
        row.save(update_fields=["database_identity", "paused", "paused_at", "paused_by"])
        audit_record(
            actor=RESTORE_ACTOR,
            action="delivery.pause",
            instance=row,
            customer_id=None,
            changes={"paused": [was_paused, True], "database_identity": [previous, current]},
        )
    logger.warning(
        "this database was restored or copied (%s, now %s): sending is paused until an admin "
        "resumes it",
        previous,
        current,
    )
    if config is not None:
        config.paused = True
    return True
