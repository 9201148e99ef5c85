"""Writing audit rows. Services call `audit_record` inside their own transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import models
from django.utils import timezone

from kizuna.core.append_only import REDACTED
from kizuna.core.models import AuditLog


class Actor:
    """Who did something: a staff user, or a named system process (import, demo, worker)."""

    def __init__(self, *, user_id: int | None, label: str) -> None:
        self.user_id = user_id
        self.label = label

    @classmethod
    def system(cls, label: str) -> Actor:
        return cls(user_id=None, label=f"system:{label}")

    @classmethod
    def of(cls, user: Any) -> Actor:
        """An Actor for a staff user, or the actor itself when one is passed."""
        if isinstance(user, Actor):
            return user
        return cls(user_id=user.pk, label=user.get_username())


# What staff read for the system processes' labels (Actor.system): the label is stable data
# in audit rows; the words are for the pages. A label with a part after ":" or "(" (which
# webhook source, whose shell account) keeps that part.
SYSTEM_ACTOR_NAMES = {
    "demo": "デモデータ",
    "delivery-worker": "配信ワーカー",
    "unsubscribe-link": "配信停止リンク",
    "campaigns-command": "配信コマンド",
    "customers-command": "顧客コマンド",
    "scenarios-load": "シナリオファイルの読み込み",
    "restore-check": "復元の検知",
    "points-expiry": "ポイント失効処理",
    "analytics-command": "分析コマンド",
    "analytics-task": "分析",
    "analytics-nightly": "夜間の分析",
    "import": "CSV取込",
    "webhook": "Webhook",
    "erasure": "削除(匿名化)",
}


def actor_display(label: str) -> str:
    """A recorded actor label as staff read it: a user name as it is, a system process as
    「システム(配信ワーカー)」, e.g. "system:webhook:ec-cube" as 「システム(Webhook ec-cube)」."""
    if not label.startswith("system:"):
        return label
    name = label.removeprefix("system:")
    detail = ""
    for separator in (":", "("):
        if separator in name:
            name, _, detail = name.partition(separator)
            detail = detail.removesuffix(")")
            break
    words = SYSTEM_ACTOR_NAMES.get(name, name)
    return f"システム({words} {detail})" if detail else f"システム({words})"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, models.Model):
        return value.pk
    return str(value)


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Fields whose value changed, as {field: [old, new]}."""
    return {
        key: [_jsonable(old.get(key)), _jsonable(value)]
        for key, value in new.items()
        if old.get(key) != value
    }


def audit_record(
    *,
    actor: Actor,
    action: str,
    instance: models.Model,
    customer_id: int | None,
    changes: Mapping[str, list[Any]] | None = None,
) -> AuditLog:
    """Write one audit row now: the row `audit_values` describes, saved through the ORM."""
    values = audit_values(
        actor=actor,
        action=action,
        entity=instance._meta.model,  # not type(): request.user is a lazy proxy
        entity_id=instance.pk,
        customer_id=customer_id,
        changes=changes,
        at=timezone.now(),
    )
    row = AuditLog(**dict(zip(AUDIT_COLUMNS, values, strict=True)))
    row.save(force_insert=True)
    return row


# The columns of `audit_values` tuples, for kizuna.core.bulk.insert_rows.
AUDIT_COLUMNS = (
    "at", "actor_id", "actor_label", "action", "entity", "entity_id", "customer_id", "changes",
)  # fmt: skip


def audit_values(
    *,
    actor: Actor,
    action: str,
    entity: type[models.Model],
    entity_id: int,
    customer_id: int | None,
    changes: Mapping[str, list[Any]] | None = None,
    at: dt.datetime,
) -> tuple[Any, ...]:
    """An audit row as a tuple in AUDIT_COLUMNS order: what bulk writers insert (insert_rows)
    and `audit_record` saves, for an instance of `entity`."""
    return (
        at,
        actor.user_id,
        actor.label,
        action,
        entity._meta.label,
        str(entity_id),
        customer_id,
        dict(changes or {}),
    )


def redacted(value: Any, *, only: frozenset[str] | None = None) -> Any:
    """`value` with its values replaced by REDACTED, keys and list lengths kept (the shape the
    audit log's guard admits). With `only`, just the strings in it are replaced; None stays None
    because it says nothing."""
    if isinstance(value, dict):
        return {key: redacted(item, only=only) for key, item in value.items()}
    if isinstance(value, list):
        return [redacted(item, only=only) for item in value]
    if value is None or (only is not None and value not in only):
        return value
    return REDACTED


def audit_redact(rows: Iterable[AuditLog], *, only: frozenset[str] | None = None) -> int:
    """Redact the recorded values of these audit rows (APPI erasure); returns how many changed.

    The one write the audit log admits besides an insert: the database guard
    (core.append_only.allow_audit_redaction) refuses anything but this replacement of values
    by REDACTED. The caller writes its own audit row saying why, in the same transaction.
    """
    count = 0
    for row in rows:
        new = redacted(row.changes, only=only)
        if new != row.changes:
            # AppendOnlyQuerySet refuses update(); the plain QuerySet's update is called on
            # purpose, for this one use, and the trigger checks that it is only a redaction.
            models.QuerySet.update(AuditLog.objects.filter(pk=row.pk), changes=new)
            count += 1
    return count


def audited_delete(
    *, actor: Actor, action: str, instance: models.Model, values: Mapping[str, Any]
) -> None:
    """Delete a row that holds no customer's data (a segment, a scenario, a template…) and
    leave an audit row of what it was: each of `values` as [value, None]."""
    audit_record(
        actor=actor,
        action=action,
        instance=instance,
        customer_id=None,
        changes={name: [value, None] for name, value in values.items()},
    )
    instance.delete()
