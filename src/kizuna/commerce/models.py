"""Products, orders, order lines, shipments, cancellations and returns. Money is integer yen."""

from __future__ import annotations

from django.db import models

from kizuna.core.models import TimeStampedModel


class ProductKind(models.TextChoices):
    TRIAL = "trial", "トライアル"
    MAIN = "main", "本品"
    SUBSCRIPTION = "subscription", "定期商品"
    SAMPLE = "sample", "サンプル"
    OTHER = "other", "その他"


class Product(TimeStampedModel):
    code = models.CharField("商品コード", max_length=64, unique=True)
    name = models.CharField("商品名", max_length=200)
    kind = models.CharField("区分", max_length=16, choices=ProductKind.choices)
    category = models.CharField("カテゴリ", max_length=50, blank=True)
    price = models.PositiveIntegerField("価格(税込・円)")
    is_active = models.BooleanField("販売中", default=True)

    class Meta:
        verbose_name = "商品"
        verbose_name_plural = "商品"
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.name}({self.code})"


class OrderStatus(models.TextChoices):
    RECEIVED = "received", "受注"
    SHIPPED = "shipped", "出荷済"
    DELIVERED = "delivered", "お届け済"
    CANCELLED = "cancelled", "キャンセル"
    RETURNED = "returned", "返品"


# How far an order has progressed. An update never moves an order to a lower rank, whatever
# order the updates arrive in; cancellation and return are final.
ORDER_STATUS_RANK = {
    OrderStatus.RECEIVED: 0,
    OrderStatus.SHIPPED: 1,
    OrderStatus.DELIVERED: 2,
    OrderStatus.CANCELLED: 3,
    OrderStatus.RETURNED: 3,
}


class SalesChannel(models.TextChoices):
    WEB = "web", "Web"
    PHONE = "phone", "電話"
    PAPER = "paper", "はがき・FAX"
    LINE = "line", "LINE"
    SUBSCRIPTION = "subscription", "定期自動"


class Order(TimeStampedModel):
    number = models.CharField("注文番号", max_length=64, unique=True)
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="orders", verbose_name="顧客"
    )
    ordered_at = models.DateTimeField("受注日時")
    status = models.CharField(
        "状態", max_length=16, choices=OrderStatus.choices, default=OrderStatus.RECEIVED
    )
    channel = models.CharField(
        "受注経路", max_length=16, choices=SalesChannel.choices, default=SalesChannel.WEB
    )
    subtotal = models.IntegerField("小計")
    discount = models.IntegerField("値引き", default=0)
    shipping_fee = models.IntegerField("送料", default=0)
    points_used = models.IntegerField("利用ポイント", default=0)
    total = models.IntegerField("合計")
    payment_method = models.CharField("支払方法", max_length=32, blank=True)
    source = models.CharField("取込元", max_length=32, blank=True)
    # When the cart last changed this order, as the cart reports it. Updates carrying an older
    # time are ignored, so a late-arriving webhook cannot roll an order back (RELIABILITY I3).
    source_updated_at = models.DateTimeField("取込元の更新日時", null=True, blank=True)

    class Meta:
        verbose_name = "注文"
        verbose_name_plural = "注文"
        # order_time: the home page's "this month" count and the scenario triggers' time
        # windows read orders by time alone.
        indexes = [
            models.Index(fields=["customer", "-ordered_at"], name="order_customer_time"),
            models.Index(fields=["ordered_at"], name="order_time"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(total__gte=0)
                & models.Q(subtotal__gte=0)
                & models.Q(discount__gte=0)
                & models.Q(shipping_fee__gte=0)
                & models.Q(points_used__gte=0),
                name="order_amounts_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return self.number


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="order_lines")
    # The name and price as sold, so later catalogue edits do not rewrite history.
    product_name = models.CharField("商品名", max_length=200)
    unit_price = models.IntegerField("単価")
    quantity = models.PositiveIntegerField("数量")
    amount = models.IntegerField("金額")

    class Meta:
        verbose_name = "注文明細"
        verbose_name_plural = "注文明細"
        constraints = [
            models.CheckConstraint(condition=models.Q(quantity__gte=1), name="line_quantity_pos"),
            models.CheckConstraint(condition=models.Q(unit_price__gte=0), name="line_price_pos"),
        ]

    def __str__(self) -> str:
        return f"{self.product_name} × {self.quantity}"


class Shipment(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="shipments")
    shipped_on = models.DateField("出荷日")
    delivered_on = models.DateField("お届け日", null=True, blank=True)
    carrier = models.CharField("配送業者", max_length=50, blank=True)
    tracking_number = models.CharField("伝票番号", max_length=50, blank=True)

    class Meta:
        verbose_name = "出荷"
        verbose_name_plural = "出荷"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(delivered_on__isnull=True)
                | models.Q(delivered_on__gte=models.F("shipped_on")),
                name="shipment_delivered_after_shipped",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.order.number} {self.shipped_on}"


class OrderReversal(models.Model):
    """A cancellation (before shipping) or a return (after delivery)."""

    class Kind(models.TextChoices):
        CANCEL = "cancel", "キャンセル"
        RETURN = "return", "返品"

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="reversals")
    kind = models.CharField("区分", max_length=8, choices=Kind.choices)
    occurred_at = models.DateTimeField("日時")
    reason = models.CharField("理由", max_length=200, blank=True)
    refund_amount = models.IntegerField("返金額", default=0)

    class Meta:
        verbose_name = "キャンセル・返品"
        verbose_name_plural = "キャンセル・返品"

    def __str__(self) -> str:
        return f"{self.order.number} {self.get_kind_display()}"


class ImportKind(models.TextChoices):
    ORDERS = "orders", "注文"
    CUSTOMERS = "customers", "顧客"


class ImportStatus(models.TextChoices):
    QUEUED = "queued", "待機中"
    RUNNING = "running", "実行中"
    DONE = "done", "完了"
    REJECTED_ROWS = "rejected_rows", "完了(取り込めない行あり)"
    REFUSED = "refused", "中止"
    FAILED = "failed", "システムエラー"


class ImportRun(TimeStampedModel):
    """One CSV upload from the web page and what became of it.

    Progress while it runs lives in a small file next to the upload (see
    kizuna.commerce.importers.runs): a dry run or a strict import holds one long transaction,
    and its own progress rows would be invisible until it ends — or rolled back with it.
    """

    kind = models.CharField("種類", max_length=16, choices=ImportKind.choices)
    file_format = models.CharField("形式", max_length=16, default="auto")
    encoding = models.CharField("文字コード", max_length=16, default="auto")
    dry_run = models.BooleanField("試行(書き込まない)", default=False)
    strict = models.BooleanField("厳格(誤りが1行でもあれば取り込まない)", default=False)
    consent_wording = models.CharField("同意文言バージョン", max_length=32, default="import")
    mapping_yaml = models.TextField("マッピング(YAML)", blank=True)
    original_name = models.CharField("ファイル名", max_length=255)
    stored_path = models.CharField("保存先", max_length=500)
    size_bytes = models.BigIntegerField("サイズ(バイト)", default=0)
    created_by = models.ForeignKey(
        "accounts.User",
        on_delete=models.SET_NULL,
        null=True,
        related_name="+",
        verbose_name="実行者",
    )
    status = models.CharField(
        "状態", max_length=16, choices=ImportStatus.choices, default=ImportStatus.QUEUED
    )
    started_at = models.DateTimeField("開始日時", null=True, blank=True)
    finished_at = models.DateTimeField("終了日時", null=True, blank=True)
    rows_read = models.PositiveIntegerField("読んだ行数", default=0)
    rows_rejected = models.PositiveIntegerField("取り込めなかった行数", default=0)
    summary = models.JSONField("結果", default=dict, blank=True)
    message = models.TextField("メッセージ", blank=True)

    class Meta:
        verbose_name = "CSV取込"
        verbose_name_plural = "CSV取込"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.original_name}({self.get_status_display()})"

    @property
    def finished(self) -> bool:
        return self.status not in (ImportStatus.QUEUED, ImportStatus.RUNNING)


class ImportRowError(models.Model):
    """A row the import could not take: line in the file, column and reason, for the report."""

    run = models.ForeignKey(ImportRun, on_delete=models.CASCADE, related_name="row_errors")
    line = models.PositiveIntegerField("行")
    column = models.CharField("列", max_length=100, blank=True)
    reason = models.CharField("理由", max_length=500)
    # An order file's rows are named by order number, a member file's by member ID
    # (RECORD_KEY_LABELS: the report names it after the run's kind).
    order_key = models.CharField("注文番号・会員ID", max_length=64, blank=True)

    class Meta:
        verbose_name = "CSV取込の誤り"
        verbose_name_plural = "CSV取込の誤り"
        indexes = [models.Index(fields=["run", "line", "id"], name="import_error_run_line")]

    def __str__(self) -> str:
        return f"{self.line}行目 {self.column}: {self.reason}"
