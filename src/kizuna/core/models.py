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


class IdempotencyKey(models.Model):
    """One `Idempotency-Key` an API client sent with a write, and the answer it got
    (RELIABILITY I4).

    The row is inserted before the request runs (the unique constraint makes that insert the
    claim: of two concurrent requests with the same key only one can insert), and the status
    and body are filled in when it finishes. `status_code` is empty while the request runs.
    """

    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.CASCADE, related_name="+")
    key = models.CharField("キー", max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=500)
    body_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    created_at = models.DateTimeField("作成日時")
    completed_at = models.DateTimeField("完了日時", null=True, blank=True)

    class Meta:
        verbose_name = "冪等キー"
        verbose_name_plural = "冪等キー"
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_key_per_api_key"),
        ]
        indexes = [models.Index(fields=["api_key", "created_at"], name="idempotency_expiry")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.key}"


class FormSubmission(models.Model):
    """A web form's one-time token that has been sent (kizuna.web.formtokens), and what that
    send made.

    The row is the claim: inserting it is the first thing a guarded form's POST does once the
    form is valid, and the unique key lets exactly one of two concurrent sends (a double click)
    insert it; the other is told the form was already sent. `result` stays empty until the
    first send has done its work.
    """

    key = models.CharField("キー", max_length=100, unique=True)
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField("送信日時", db_index=True)

    class Meta:
        verbose_name = "フォーム送信"
        verbose_name_plural = "フォーム送信"

    def __str__(self) -> str:
        return self.key


class WebhookSource(TimeStampedModel):
    """A system that posts webhooks to Kizuna (the cart), with the secret it signs them with.

    The secret is kept as is, because checking an HMAC needs it; it is shown to the admin once,
    when the source is created or its secret reissued, for pasting into the cart's settings.
    """

    name = models.CharField("名前", max_length=100)
    slug = models.SlugField("識別名(URLに入ります)", max_length=50, unique=True)
    secret = models.CharField(max_length=100, editable=False)
    # After 秘密鍵を再発行, the replaced secret still verifies until previous_secret_until, so
    # the cart can be switched over without losing the deliveries signed in between.
    previous_secret = models.CharField(max_length=100, editable=False, blank=True, default="")
    previous_secret_until = models.DateTimeField("旧秘密鍵の受付期限", null=True, blank=True)
    created_by = models.ForeignKey(
        "accounts.User", on_delete=models.SET_NULL, null=True, related_name="+"
    )
    last_received_at = models.DateTimeField("最終受信日時", null=True, blank=True)
    revoked_at = models.DateTimeField("失効日時", null=True, blank=True)

    class Meta:
        verbose_name = "Webhook送信元"
        verbose_name_plural = "Webhook送信元"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class WebhookEvent(models.Model):
    """A webhook event that was applied, keyed by the sender's event id (RELIABILITY I2).

    It is written in the same transaction as the change the event made, and (source, event_id)
    is unique, so a redelivered event — one after the other or at the same moment — finds its
    row and changes nothing.
    """

    source = models.ForeignKey(WebhookSource, on_delete=models.PROTECT, related_name="events")
    event_id = models.CharField("イベントID", max_length=200)
    topic = models.CharField("種類", max_length=32)
    received_at = models.DateTimeField("受信日時")
    # The sender's own change time; a customer event older than one already applied is stale.
    source_updated_at = models.DateTimeField(null=True, blank=True)
    customer_id = models.BigIntegerField(null=True, blank=True)
    ref = models.CharField("対象", max_length=64, blank=True)
    outcome = models.CharField("結果", max_length=16, blank=True)

    class Meta:
        verbose_name = "Webhook受信"
        verbose_name_plural = "Webhook受信"
        constraints = [
            models.UniqueConstraint(fields=["source", "event_id"], name="webhook_event_once"),
        ]
        indexes = [
            models.Index(
                fields=["topic", "customer_id", "source_updated_at"], name="webhook_customer_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source_id}:{self.event_id}"
