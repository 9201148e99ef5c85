"""Writing audit rows. Services call `audit_record` inside their own transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models
from django.utils import timezone

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
    return AuditLog.objects.create(
        at=timezone.now(),
        actor_id=actor.user_id,
        actor_label=actor.label,
        action=action,
        entity=instance._meta.label,
        entity_id=str(instance.pk),
        customer_id=customer_id,
        changes=dict(changes or {}),
    )
