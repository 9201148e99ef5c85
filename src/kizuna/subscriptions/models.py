"""定期購入 (subscriptions) and one row per delivery."""

from __future__ import annotations

from django.db import models

from kizuna.core.models import TimeStampedModel


class CycleKind(models.TextChoices):
    DAYS = "days", "日数ごと"
    MONTHLY_DAY = "monthly_day", "毎月指定日"


class SubscriptionStatus(models.TextChoices):
    ACTIVE = "active", "継続中"
    PAUSED = "paused", "休止中"
    CANCELLED = "cancelled", "解約"


class CancelReason(models.TextChoices):
    SURPLUS = "surplus", "商品が余っている"
    NO_EFFECT = "no_effect", "効果を実感できない"
    PRICE = "price", "価格・経済的な理由"
    SKIN = "skin", "肌・体質に合わない"
    SWITCHED = "switched", "他の商品に切り替え"
    MOVING = "moving", "引っ越し・長期不在"
    OTHER = "other", "その他"


class Subscription(TimeStampedModel):
    customer = models.ForeignKey(
        "customers.Customer",
        on_delete=models.PROTECT,
        related_name="subscriptions",
        verbose_name="顧客",
    )
    product = models.ForeignKey(
        "commerce.Product", on_delete=models.PROTECT, related_name="subscriptions"
    )
    quantity = models.PositiveIntegerField("数量", default=1)
    unit_price = models.PositiveIntegerField("定期価格(円)")
    cycle_kind = models.CharField("周期の種類", max_length=16, choices=CycleKind.choices)
    cycle_days = models.PositiveSmallIntegerField("周期(日)", null=True, blank=True)
    monthly_day = models.PositiveSmallIntegerField("毎月のお届け日", null=True, blank=True)
    started_on = models.DateField("開始日")
    next_delivery_on = models.DateField("次回お届け予定日", null=True, blank=True)
    delivery_count = models.PositiveIntegerField("お届け回数", default=0)
    commitment_count = models.PositiveSmallIntegerField("縛り回数", default=0)
    status = models.CharField(
        "状態", max_length=16, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE
    )
    paused_until = models.DateField("休止期限", null=True, blank=True)
    cancelled_on = models.DateField("解約日", null=True, blank=True)
    cancel_reason = models.CharField(
        "解約理由", max_length=16, choices=CancelReason.choices, blank=True
    )
    cancel_note = models.TextField("解約メモ", blank=True)

    class Meta:
        verbose_name = "定期購入"
        verbose_name_plural = "定期購入"
        indexes = [
            models.Index(fields=["status", "next_delivery_on"], name="subscription_due"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(cycle_kind="days", cycle_days__gte=7, cycle_days__lte=180)
                    | models.Q(cycle_kind="monthly_day", monthly_day__gte=1, monthly_day__lte=28)
                ),
                name="subscription_cycle_valid",
            ),
            models.CheckConstraint(
                condition=~models.Q(status="cancelled") | models.Q(cancelled_on__isnull=False),
                name="subscription_cancel_has_date",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product.name}({self.get_status_display()})"

    @property
    def cycle_label(self) -> str:
        if self.cycle_kind == CycleKind.DAYS:
            return f"{self.cycle_days}日ごと"
        return f"毎月{self.monthly_day}日"


class DeliveryStatus(models.TextChoices):
    SCHEDULED = "scheduled", "予定"
    SHIPPED = "shipped", "出荷済"
    DELIVERED = "delivered", "お届け済"
    SKIPPED = "skipped", "スキップ"
    # A delivery planned but not yet ordered when its subscription was cancelled: it will not
    # come, and the row stays so staff can see what had been planned.
    CANCELLED = "cancelled", "中止(解約)"


class SubscriptionDelivery(models.Model):
    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    sequence = models.PositiveIntegerField("回数(n回目)")
    scheduled_on = models.DateField("予定日")
    status = models.CharField("状態", max_length=16, choices=DeliveryStatus.choices)
    order = models.OneToOneField(
        "commerce.Order",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="subscription_delivery",
    )

    class Meta:
        verbose_name = "定期お届け"
        verbose_name_plural = "定期お届け"
        ordering = ["subscription", "sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "sequence"], name="delivery_unique_sequence"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sequence}回目 {self.scheduled_on}"
