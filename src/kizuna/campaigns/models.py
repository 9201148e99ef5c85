"""The outbox, the lists that paper channels accumulate into, suppressions and sending settings."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import models

from kizuna.core.models import TimeStampedModel


class Channel(models.TextChoices):
    EMAIL = "email", "メール"
    LINE = "line", "LINE"
    SMS = "sms", "SMS"
    POSTAL = "postal", "郵送DM"
    INSERT = "insert", "同梱物"
    ONSITE = "onsite", "サイト内メッセージ"
    CALL = "call", "架電リスト"
    # Resolved when the message is sent, from the customer's channel, consents and bounces.
    BEST = "best", "最適チャネル"


class Purpose(models.TextChoices):
    MARKETING = "marketing", "販促"
    TRANSACTIONAL = "transactional", "取引連絡"


class OutboxStatus(models.TextChoices):
    PENDING = "pending", "送信待ち"
    CLAIMED = "claimed", "送信処理中"
    SENT = "sent", "送信済"
    SKIPPED = "skipped", "送信見送り"
    FAILED = "failed", "失敗"


class OutboxMessage(models.Model):
    """One message a decision asked to send, written in the decision's transaction (S1).

    Workers claim pending rows with a lease (`claimed_by`, `lease_until`); a row whose lease ran
    out is claimable again, so a killed worker loses nothing. `dedupe_key` is unique: asking
    twice for the same message stores it once.
    """

    # No index of its own: outbox_customer_cap starts with the customer (a tick writes up to
    # one row per customer, and each index costs a write).
    customer = models.ForeignKey(
        "customers.Customer",
        on_delete=models.CASCADE,
        related_name="outbox_messages",
        verbose_name="顧客",
        db_index=False,
    )
    channel = models.CharField("チャネル", max_length=8, choices=Channel.choices)
    # The channel actually used; differs from `channel` only for "best".
    sent_channel = models.CharField(
        "送信チャネル", max_length=8, choices=Channel.choices, blank=True
    )
    purpose = models.CharField("目的", max_length=16, choices=Purpose.choices)
    dedupe_key = models.CharField("重複防止キー", max_length=200, unique=True)
    content = models.JSONField("内容", default=dict)
    send_after = models.DateTimeField("送信予定日時")
    # When a worker may next try: send_after, moved by quiet hours, send-time choice and retries.
    next_attempt_at = models.DateTimeField("次回送信日時")
    # Plain ids, not foreign keys: automation depends on this app, not the other way round.
    scenario_id = models.BigIntegerField("シナリオID", null=True, blank=True)
    step_key = models.CharField("ステップ", max_length=64, blank=True)
    enrollment_id = models.BigIntegerField("エントリーID", null=True, blank=True)
    # Marketing only: send at the hour this customer usually buys (JST), within a day of
    # send_after.
    prefer_customer_hour = models.BooleanField("顧客ごとの送信時刻", default=False)
    status = models.CharField(
        "状態", max_length=8, choices=OutboxStatus.choices, default=OutboxStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField("試行回数", default=0)
    claimed_by = models.CharField("処理ワーカー", max_length=64, blank=True)
    lease_until = models.DateTimeField("処理期限", null=True, blank=True)
    sent_at = models.DateTimeField("送信日時", null=True, blank=True)
    # Where it went: e-mail, LINE user ID, phone (E.164), 〒 for postal DM, order number for
    # a 同梱物, cart member ID for on-site messages.
    address = models.CharField("宛先", max_length=254, blank=True)
    # Set when the frequency cap let this message through; claimed or sent rows with it set
    # count against the cap, so two workers cannot both pass a customer's last free slot.
    cap_counted_at = models.DateTimeField(null=True, blank=True)
    message_id = models.CharField("Message-ID", max_length=200, blank=True)
    reason = models.CharField("理由", max_length=200, blank=True)
    last_error = models.TextField("最後のエラー", blank=True)
    # Indexed only where set (outbox_list): e-mail, LINE and SMS messages never have one.
    delivery_list = models.ForeignKey(
        "DeliveryList",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="messages",
        verbose_name="出力リスト",
        db_index=False,
    )
    created_at = models.DateTimeField("作成日時", auto_now_add=True)

    class Meta:
        verbose_name = "送信キュー"
        verbose_name_plural = "送信キュー"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="outbox_due"),
            # Only claimed rows have a lease to run out: pending and finished rows (nearly
            # all of them) stay out of this index, and a tick's insert of 100,000 messages
            # writes one index fewer.
            models.Index(
                fields=["status", "lease_until"],
                condition=models.Q(status="claimed"),
                name="outbox_lease",
            ),
            models.Index(fields=["customer", "cap_counted_at"], name="outbox_customer_cap"),
            models.Index(
                fields=["delivery_list"],
                condition=models.Q(delivery_list__isnull=False),
                name="outbox_list",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(status="claimed")
                | (models.Q(lease_until__isnull=False) & ~models.Q(claimed_by="")),
                name="outbox_claim_has_lease",
            ),
            models.CheckConstraint(
                condition=~models.Q(status="sent") | models.Q(sent_at__isnull=False),
                name="outbox_sent_has_time",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.channel} {self.status}"


class DeliveryList(models.Model):
    """Postal DM, 同梱物 or call-list messages gathered for printing, packing or calling.

    Workers add to the channel's open list; staff close it (締め) when they hand it over, and
    the next message starts a new list. At most one list per channel is open.
    """

    channel = models.CharField("チャネル", max_length=8, choices=Channel.choices)
    created_at = models.DateTimeField("作成日時")
    closed_at = models.DateTimeField("締め日時", null=True, blank=True)
    closed_by = models.CharField("締めた人", max_length=150, blank=True)

    class Meta:
        verbose_name = "出力リスト"
        verbose_name_plural = "出力リスト"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["channel"],
                condition=models.Q(closed_at__isnull=True),
                name="delivery_list_one_open_per_channel",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} #{self.pk} {self.created_at:%Y-%m-%d %H:%M}"


class SuppressionKind(models.TextChoices):
    EMAIL = "email", "メールアドレス"
    PHONE = "phone", "電話番号"
    LINE_USER = "line_user", "LINEユーザーID"


class SuppressionReason(models.TextChoices):
    BOUNCE = "bounce", "不達(バウンス)"
    COMPLAINT = "complaint", "迷惑メール報告"
    SMTP_REJECT = "smtp_reject", "送信先サーバーが拒否"
    MANUAL = "manual", "手動登録"


class Suppression(TimeStampedModel):
    """An address nothing may be sent to (except what the law requires to be sent).

    The address is normalised with kizuna.core.jp, the same way identities are, so a match is
    an equality lookup.
    """

    kind = models.CharField("種類", max_length=16, choices=SuppressionKind.choices)
    address = models.CharField("宛先(正規化)", max_length=254)
    reason = models.CharField("理由", max_length=16, choices=SuppressionReason.choices)
    detail = models.CharField("詳細", max_length=500, blank=True)
    created_by = models.CharField("登録者", max_length=150)

    class Meta:
        verbose_name = "配信停止アドレス"
        verbose_name_plural = "配信停止アドレス"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "address"], name="suppression_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.address}"


class DeliverySettings(models.Model):
    """The shop's sending rules: one row (pk=1), edited by admins on the delivery page.

    Blank sender fields fall back to the KIZUNA_SENDER_* environment settings.
    """

    SINGLETON_ID = 1

    paused = models.BooleanField("送信を一時停止", default=False)
    paused_at = models.DateTimeField("停止日時", null=True, blank=True)
    paused_by = models.CharField("停止した人", max_length=150, blank=True)
    quiet_start = models.TimeField("送信しない時間帯(開始)", default=dt.time(21, 0))
    quiet_end = models.TimeField("送信しない時間帯(終了)", default=dt.time(8, 0))
    cap_messages = models.PositiveSmallIntegerField("販促の上限(通)", default=2)
    cap_days = models.PositiveSmallIntegerField("販促の上限(日数)", default=7)
    sender_name = models.CharField("送信者名", max_length=100, blank=True)
    sender_address = models.CharField("送信者の住所", max_length=200, blank=True)
    sender_contact = models.CharField("苦情・問い合わせ先", max_length=200, blank=True)
    updated_at = models.DateTimeField("更新日時", auto_now=True)
    updated_by = models.CharField("更新した人", max_length=150, blank=True)
    # Where this database lives (kizuna.campaigns.restore): a restored or copied database
    # carries its origin's value, and sending pauses until an admin resumes it (D8).
    database_identity = models.CharField("データベースの識別子", max_length=200, blank=True)

    class Meta:
        verbose_name = "配信設定"
        verbose_name_plural = "配信設定"
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="delivery_settings_singleton"),
            models.CheckConstraint(
                condition=models.Q(cap_days__gte=1), name="delivery_settings_cap_days"
            ),
        ]

    def __str__(self) -> str:
        return "配信設定"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.pk = self.SINGLETON_ID
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> DeliverySettings:
        row, _ = cls.objects.get_or_create(pk=cls.SINGLETON_ID)
        return row
