"""Base model and the append-only audit log."""

from __future__ import annotations

from typing import Any, TypeVar

from django.db import models

_M = TypeVar("_M", bound=models.Model)


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField("作成日時", auto_now_add=True)
    updated_at = models.DateTimeField("更新日時", auto_now=True)

    class Meta:
        abstract = True


class AppendOnlyQuerySet(models.QuerySet[_M]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError(f"{self.model.__name__} は追記専用です(更新できません)")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError(f"{self.model.__name__} は追記専用です(削除できません)")


class AppendOnlyError(RuntimeError):
    """Something tried to change or remove a row of an append-only table."""


AppendOnlyManager = models.Manager.from_queryset(AppendOnlyQuerySet)


class AppendOnlyModel(models.Model):
    """A row that is written once and never changed or deleted.

    The ORM refuses here; the database refuses too (triggers added by each table's migration),
    so raw SQL and other clients cannot rewrite history either.
    """

    objects = AppendOnlyManager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} は追記専用です(更新できません)")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError(f"{type(self).__name__} は追記専用です(削除できません)")


class AuditLog(AppendOnlyModel):
    """Who changed what, when, from what to what (RELIABILITY D3).

    `customer_id` is a plain column, not a foreign key, so the trail outlives the record it
    describes; `actor_label` keeps the staff member's login as it was at the time.
    """

    at = models.DateTimeField("日時", db_index=True)
    actor_id = models.BigIntegerField("操作者ID", null=True, blank=True)
    actor_label = models.CharField("操作者", max_length=150)
    action = models.CharField("操作", max_length=64)
    entity = models.CharField("対象", max_length=64)
    entity_id = models.CharField("対象ID", max_length=64)
    customer_id = models.BigIntegerField("顧客ID", null=True, blank=True)
    changes = models.JSONField("変更内容", default=dict)

    class Meta:
        verbose_name = "監査ログ"
        verbose_name_plural = "監査ログ"
        indexes = [
            models.Index(fields=["customer_id", "at"], name="audit_customer_at"),
            models.Index(fields=["entity", "entity_id"], name="audit_entity"),
        ]

    def __str__(self) -> str:
        when = f"{self.at:%Y-%m-%d %H:%M}"
        return f"{when} {self.actor_label} {self.action} {self.entity}#{self.entity_id}"
