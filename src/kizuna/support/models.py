"""Contacts with customers (the contact center grows from here)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from kizuna.core.models import TimeStampedModel


class ContactChannel(models.TextChoices):
    PHONE = "phone", "電話"
    EMAIL = "email", "メール"
    CHAT = "chat", "チャット"
    LINE = "line", "LINE"
    LETTER = "letter", "手紙・はがき"


class Direction(models.TextChoices):
    INBOUND = "inbound", "受信"
    OUTBOUND = "outbound", "発信"


class Contact(TimeStampedModel):
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="contacts"
    )
    occurred_at = models.DateTimeField("日時")
    channel = models.CharField("チャネル", max_length=8, choices=ContactChannel.choices)
    direction = models.CharField("方向", max_length=8, choices=Direction.choices)
    operator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="contacts",
        verbose_name="担当者",
    )
    reason = models.CharField("問い合わせ理由", max_length=100, blank=True)
    summary = models.CharField("要約", max_length=200)
    body = models.TextField("内容", blank=True)
    order = models.ForeignKey(
        "commerce.Order", on_delete=models.SET_NULL, null=True, blank=True, related_name="contacts"
    )
    subscription = models.ForeignKey(
        "subscriptions.Subscription",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="contacts",
    )

    class Meta:
        verbose_name = "問い合わせ"
        verbose_name_plural = "問い合わせ"
        indexes = [models.Index(fields=["customer", "-occurred_at"], name="contact_customer_time")]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d} {self.summary}"
