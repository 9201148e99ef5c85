"""Segments, message templates, offers, scenarios and what the scheduler did with them.

A scenario enrolls a customer once per occurrence of its trigger (an order, a birthday year, a
subscription delivery date…); each enrollment then passes through the scenario's steps. Every
step an enrollment reaches leaves one StepDispatch row: queued to the outbox, held out, skipped
by its condition, or waiting for a person to confirm a late backlog (RELIABILITY S10).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from kizuna.campaigns.models import Channel, Purpose
from kizuna.core.models import TimeStampedModel

KEY_HELP = "半角英数字とハイフン。ファイルでの読み書きとURLに使います(作成後は変えないでください)。"


class Segment(TimeStampedModel):
    """A saved rule tree over customers (see kizuna.campaigns.automation.segments)."""

    key = models.SlugField("識別名", max_length=64, unique=True, help_text=KEY_HELP)
    name = models.CharField("名前", max_length=100)
    description = models.TextField("説明", blank=True)
    rules = models.JSONField("条件", default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="作成者",
    )

    class Meta:
        verbose_name = "セグメント"
        verbose_name_plural = "セグメント"
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class MessageTemplate(TimeStampedModel):
    """What a step says. Rendered in a sandbox with a plain dict (kizuna...automation.templating).

    `subject` is the e-mail subject, and the title of a DM, 同梱物 or on-site message (the
    reason, for a call list); `text` is the body of every channel, `html` the optional HTML
    body of an e-mail.
    """

    key = models.SlugField("識別名", max_length=64, unique=True, help_text=KEY_HELP)
    name = models.CharField("名前", max_length=100)
    subject = models.CharField("件名・タイトル", max_length=200)
    text = models.TextField("本文")
    html = models.TextField("HTML本文(メールのみ・任意)", blank=True)

    class Meta:
        verbose_name = "メッセージテンプレート"
        verbose_name_plural = "メッセージテンプレート"
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class OfferKind(models.TextChoices):
    YEN_OFF = "yen_off", "円引きクーポン"
    PERCENT_OFF = "percent_off", "%引きクーポン"
    POINTS = "points", "ポイント付与"
    FREE_SHIPPING = "free_shipping", "送料無料"
    GIFT = "gift", "プレゼント"


class Offer(TimeStampedModel):
    """An incentive a step may carry: shown in the message as {{ offer.* }}."""

    key = models.SlugField("識別名", max_length=64, unique=True, help_text=KEY_HELP)
    name = models.CharField("名前", max_length=100)
    kind = models.CharField("種類", max_length=16, choices=OfferKind.choices)
    value = models.PositiveIntegerField("値(円・%・ポイント)", default=0)
    code = models.CharField("クーポンコード", max_length=50, blank=True)
    valid_days = models.PositiveSmallIntegerField("有効日数", default=14)

    class Meta:
        verbose_name = "オファー"
        verbose_name_plural = "オファー"
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def label(self) -> str:
        if self.kind == OfferKind.YEN_OFF:
            return f"{self.value:,}円OFF"
        if self.kind == OfferKind.PERCENT_OFF:
            return f"{self.value}%OFF"
        if self.kind == OfferKind.POINTS:
            return f"{self.value:,}ポイント進呈"
        if self.kind == OfferKind.FREE_SHIPPING:
            return "送料無料"
        return self.name


class TriggerKind(models.TextChoices):
    SIGNUP = "signup", "会員登録"
    FIRST_PURCHASE = "first_purchase", "初回購入"
    NTH_PURCHASE = "nth_purchase", "n回目の購入"
    SHIPMENT = "shipment", "出荷"
    DELIVERY = "delivery", "お届け"
    CART_ABANDONMENT = "cart_abandonment", "カゴ落ち"
    BROWSE_ABANDONMENT = "browse_abandonment", "閲覧離脱"
    NO_PURCHASE = "no_purchase", "一定期間購入なし"
    CPM_CHANGE = "cpm_change", "CPMセグメントの変化"
    BIRTHDAY = "birthday", "誕生日"
    FIRST_PURCHASE_ANNIVERSARY = "first_purchase_anniversary", "初回購入記念日"
    POINTS_EARNED = "points_earned", "ポイント付与"
    POINTS_EXPIRING = "points_expiring", "ポイント失効前"
    SUBSCRIPTION_BEFORE_DELIVERY = "subscription_before_delivery", "定期お届けのN日前"
    SUBSCRIPTION_SKIP = "subscription_skip", "定期のスキップ"
    SUBSCRIPTION_CANCEL = "subscription_cancel", "定期の解約"
    NPS_ANSWER = "nps_answer", "NPS回答"
    SEGMENT_ENTERED = "segment_entered", "セグメントに入った"


class ScenarioStatus(models.TextChoices):
    DRAFT = "draft", "下書き"
    ACTIVE = "active", "稼働中"
    PAUSED = "paused", "停止中"
    # Put away: a paused scenario that will not run again, hidden from the list and from
    # the choices to act on, its history and lift kept (it can be restored to 停止中).
    ARCHIVED = "archived", "アーカイブ"


class ExitRule(models.TextChoices):
    PURCHASE = "purchase", "購入したら終了"
    CANCEL = "cancel", "キャンセル・定期解約したら終了"
    OPT_OUT = "opt_out", "配信停止・退会したら終了"


class Scenario(TimeStampedModel):
    key = models.SlugField("識別名", max_length=64, unique=True, help_text=KEY_HELP)
    name = models.CharField("名前", max_length=100)
    description = models.TextField("説明", blank=True)
    trigger_kind = models.CharField("きっかけ", max_length=32, choices=TriggerKind.choices)
    trigger_params = models.JSONField("きっかけの設定", default=dict, blank=True)
    audience = models.ForeignKey(
        Segment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="audience_of",
        verbose_name="対象セグメント",
    )
    holdout_percent = models.PositiveSmallIntegerField("ホールドアウト(%)", default=10)
    purpose = models.CharField(
        "目的", max_length=16, choices=Purpose.choices, default=Purpose.MARKETING
    )
    exit_on = models.JSONField("終了条件", default=list, blank=True)
    # "First use" = delivery + this many days: when a customer has opened the box and tried it.
    first_use_days = models.PositiveSmallIntegerField("使用開始(お届けの何日後)", default=3)
    # Conversions and revenue are counted this many days after enrollment (lift.py).
    attribution_days = models.PositiveSmallIntegerField("効果の計測期間(日)", default=30)
    status = models.CharField(
        "状態", max_length=8, choices=ScenarioStatus.choices, default=ScenarioStatus.DRAFT
    )
    # Triggers consider only events from this moment on: activating a scenario never reaches
    # back into the history it was not running for.
    activated_at = models.DateTimeField("稼働開始日時", null=True, blank=True)
    # When the trigger query last ran: date-based triggers run once an hour (and at the first
    # tick of each JST day), not every minute (triggers.Trigger.every_minutes).
    trigger_checked_at = models.DateTimeField("きっかけの確認日時", null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="作成者",
    )

    class Meta:
        verbose_name = "シナリオ"
        verbose_name_plural = "シナリオ"
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(holdout_percent__lte=90), name="scenario_holdout_at_most_90"
            ),
            models.CheckConstraint(
                condition=~models.Q(status="active") | models.Q(activated_at__isnull=False),
                name="scenario_active_has_start",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class StepAnchor(models.TextChoices):
    TRIGGER = "trigger", "きっかけの日時"
    PURCHASE = "purchase", "購入日"
    SHIPMENT = "shipment", "出荷日"
    DELIVERY = "delivery", "お届け日"
    FIRST_USE = "first_use", "使用開始日(お届け+n日)"
    NEXT_DELIVERY = "next_delivery", "次回お届け予定日"


class ScenarioStep(models.Model):
    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="steps")
    key = models.SlugField("識別名", max_length=50)
    position = models.PositiveSmallIntegerField("順番")
    anchor = models.CharField(
        "基準日", max_length=16, choices=StepAnchor.choices, default=StepAnchor.TRIGGER
    )
    offset_days = models.SmallIntegerField("基準日からの日数", default=0)
    # JST time of day to send; empty = at the anchor moment plus the offset, to the minute.
    send_time = models.TimeField("送信時刻", null=True, blank=True)
    # 0 = once; n = also on the same day of each of the following n months.
    repeat_monthly = models.PositiveSmallIntegerField("毎月くり返す回数", default=0)
    channel = models.CharField("チャネル", max_length=8, choices=Channel.choices)
    template = models.ForeignKey(
        MessageTemplate, on_delete=models.PROTECT, related_name="steps", verbose_name="テンプレート"
    )
    offer = models.ForeignKey(
        Offer,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="steps",
        verbose_name="オファー",
    )
    condition = models.ForeignKey(
        Segment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="condition_of",
        verbose_name="送信条件(セグメント)",
    )

    class Meta:
        verbose_name = "シナリオのステップ"
        verbose_name_plural = "シナリオのステップ"
        ordering = ["scenario", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["scenario", "key"], name="step_key_per_scenario"),
            models.CheckConstraint(
                condition=models.Q(repeat_monthly__lte=60), name="step_repeat_at_most_60"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scenario.key}/{self.key}"


class EnrollmentStatus(models.TextChoices):
    ACTIVE = "active", "進行中"
    COMPLETED = "completed", "完了"
    EXITED = "exited", "途中終了"


class Enrollment(models.Model):
    """One customer entering one scenario for one occurrence of its trigger.

    (scenario, customer, occurrence) is unique, so two schedulers, a retried tick or a replayed
    trigger can never enroll anyone twice (S10). Holdout customers are enrolled like everyone
    else (that is what makes them a control group) but none of their steps is ever sent.
    """

    # No index of their own: enrollment_once starts with the scenario, enrollment_customer
    # with the customer (a tick writes up to one row per customer; each index costs a write).
    scenario = models.ForeignKey(
        Scenario, on_delete=models.CASCADE, related_name="enrollments", db_index=False
    )
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, related_name="enrollments", db_index=False
    )
    occurrence = models.CharField("発生キー", max_length=64)
    holdout = models.BooleanField("ホールドアウト", default=False)
    enrolled_at = models.DateTimeField("エントリー日時")
    anchor_at = models.DateTimeField("きっかけの日時")
    anchor_date = models.DateField("きっかけの日(日本時間)")
    # Indexed only where set (the partial indexes below): most triggers leave them empty.
    order = models.ForeignKey(
        "commerce.Order",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    subscription = models.ForeignKey(
        "subscriptions.Subscription",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    product = models.ForeignKey(
        "commerce.Product",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    delivery_date = models.DateField("お届け予定日", null=True, blank=True)
    status = models.CharField(
        "状態", max_length=16, choices=EnrollmentStatus.choices, default=EnrollmentStatus.ACTIVE
    )
    exited_at = models.DateTimeField("終了日時", null=True, blank=True)
    exit_reason = models.CharField("終了理由", max_length=16, blank=True)

    class Meta:
        verbose_name = "シナリオのエントリー"
        verbose_name_plural = "シナリオのエントリー"
        constraints = [
            models.UniqueConstraint(
                fields=["scenario", "customer", "occurrence"], name="enrollment_once"
            ),
        ]
        indexes = [
            models.Index(fields=["scenario", "status"], name="enrollment_scenario_status"),
            models.Index(fields=["customer", "enrolled_at"], name="enrollment_customer"),
            models.Index(
                fields=["order"], condition=models.Q(order__isnull=False), name="enrollment_order"
            ),
            models.Index(
                fields=["subscription"],
                condition=models.Q(subscription__isnull=False),
                name="enrollment_subscription",
            ),
            models.Index(
                fields=["product"],
                condition=models.Q(product__isnull=False),
                name="enrollment_product",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scenario_id}:{self.customer_id}:{self.occurrence}"


class DispatchStatus(models.TextChoices):
    QUEUED = "queued", "送信キューに登録"
    HELD_OUT = "held_out", "ホールドアウト(送信しない)"
    SKIPPED = "skipped", "送信条件に合わず見送り"
    PENDING_CONFIRMATION = "pending", "確認待ち(遅延分)"
    APPROVED = "approved", "確認済み(次回登録)"
    DISCARDED = "discarded", "破棄"


class Backlog(models.Model):
    """Step messages that became due while the scheduler was not running (or long ago), held
    until a person confirms or discards them (RELIABILITY S10)."""

    class Status(models.TextChoices):
        PENDING = "pending", "確認待ち"
        CONFIRMED = "confirmed", "送信を承認"
        DISCARDED = "discarded", "破棄"

    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="backlogs")
    created_at = models.DateTimeField("検出日時")
    reason = models.CharField("理由", max_length=200)
    oldest_due_at = models.DateTimeField("最も古い送信予定")
    size = models.PositiveIntegerField("件数", default=0)
    status = models.CharField("状態", max_length=16, choices=Status.choices, default=Status.PENDING)
    decided_at = models.DateTimeField("確認日時", null=True, blank=True)
    decided_by = models.CharField("確認者", max_length=150, blank=True)

    class Meta:
        verbose_name = "遅延した送信(確認待ち)"
        verbose_name_plural = "遅延した送信(確認待ち)"
        ordering = ["-created_at", "-id"]
        constraints = [
            # One open backlog per scenario: later ticks add to it rather than pile up batches.
            models.UniqueConstraint(
                fields=["scenario"], condition=models.Q(status="pending"), name="backlog_one_open"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scenario_id}: {self.size}件 {self.status}"


class StepDispatch(models.Model):
    """What became of one step (and one monthly repeat of it) for one enrollment."""

    # No index of their own: dispatch_once starts with the enrollment, dispatch_step_status
    # with the step (a scenario's approved dispatches are found by its steps); the backlog is
    # indexed only where set (a tick writes one row per message, and each index costs a
    # write).
    enrollment = models.ForeignKey(
        Enrollment, on_delete=models.CASCADE, related_name="dispatches", db_index=False
    )
    step = models.ForeignKey(
        ScenarioStep, on_delete=models.PROTECT, related_name="dispatches", db_index=False
    )
    repeat = models.PositiveSmallIntegerField("くり返し回", default=0)
    due_at = models.DateTimeField("送信予定日時")
    status = models.CharField("結果", max_length=16, choices=DispatchStatus.choices)
    decided_at = models.DateTimeField("判定日時")
    backlog = models.ForeignKey(
        Backlog,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="dispatches",
        db_index=False,
    )

    class Meta:
        verbose_name = "ステップの実行"
        verbose_name_plural = "ステップの実行"
        constraints = [
            models.UniqueConstraint(
                fields=["enrollment", "step", "repeat"], name="dispatch_once_per_step"
            ),
        ]
        indexes = [
            models.Index(fields=["step", "status"], name="dispatch_step_status"),
            models.Index(
                fields=["backlog"],
                condition=models.Q(backlog__isnull=False),
                name="dispatch_backlog",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.enrollment_id}/{self.step_id}#{self.repeat} {self.status}"


class SegmentMember(models.Model):
    """Who was in a "segment entered" scenario's segment at its last evaluation.

    Entering is a change, so the scheduler keeps the previous membership to compare with;
    `left_at` closes a stay and a later return opens a new row (a new occurrence).
    """

    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="members")
    customer = models.ForeignKey("customers.Customer", on_delete=models.CASCADE, related_name="+")
    entered_at = models.DateTimeField("入った日時")
    left_at = models.DateTimeField("出た日時", null=True, blank=True)
    # Members found on the scenario's first evaluation were already inside: not an entry.
    baseline = models.BooleanField(default=False)

    class Meta:
        verbose_name = "セグメント所属"
        verbose_name_plural = "セグメント所属"
        constraints = [
            models.UniqueConstraint(
                fields=["scenario", "customer"],
                condition=models.Q(left_at__isnull=True),
                name="segment_member_open_once",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scenario_id}:{self.customer_id}"


class SchedulerLease(models.Model):
    """Who may run the scheduler right now: taken and renewed with a conditional UPDATE, so
    two schedulers on two machines never tick at the same time (S10)."""

    name = models.CharField(max_length=32, unique=True)
    holder = models.CharField(max_length=128, blank=True)
    expires_at = models.DateTimeField()

    class Meta:
        verbose_name = "スケジューラのロック"
        verbose_name_plural = "スケジューラのロック"

    def __str__(self) -> str:
        return f"{self.name}: {self.holder}"


class TickLog(models.Model):
    """One scheduler run: when, for which moment, and what it did."""

    class Status(models.TextChoices):
        RUNNING = "running", "実行中"
        DONE = "done", "完了"
        FAILED = "failed", "失敗"

    # Indexed: the scenario page shows the latest run, and old runs are pruned by it.
    started_at = models.DateTimeField("開始", db_index=True)
    finished_at = models.DateTimeField("終了", null=True, blank=True)
    # The moment the tick evaluated (the clock, or --now).
    now = models.DateTimeField("評価時刻", db_index=True)
    holder = models.CharField("実行者", max_length=128)
    status = models.CharField("状態", max_length=8, choices=Status.choices)
    backlog_mode = models.BooleanField("停止明け", default=False)
    report = models.JSONField("結果", default=dict)
    error = models.TextField("エラー", blank=True)

    class Meta:
        verbose_name = "スケジューラの実行"
        verbose_name_plural = "スケジューラの実行"
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M} {self.status}"


class CoPurchase(models.Model):
    """ "Customers who bought X next bought Y": how many customers' next order after one with X
    contained Y. Recomputed in one SQL statement by recommendations.copurchase_refresh."""

    product = models.ForeignKey("commerce.Product", on_delete=models.CASCADE, related_name="+")
    next_product = models.ForeignKey("commerce.Product", on_delete=models.CASCADE, related_name="+")
    customers = models.PositiveIntegerField("人数")
    rank = models.PositiveSmallIntegerField("順位")
    computed_at = models.DateTimeField("計算日時")

    class Meta:
        verbose_name = "併買"
        verbose_name_plural = "併買"
        ordering = ["product", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["product", "next_product"], name="copurchase_pair"),
        ]

    def __str__(self) -> str:
        return f"{self.product_id}→{self.next_product_id} ({self.customers})"
