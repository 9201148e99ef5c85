"""Analytics snapshots: one AnalyticsRun per computation, its per-customer scores and its
aggregates, and the shop's analytics settings (a single row admins edit).

Per-customer rows are kept for the last N runs only (settings: keep_customer_runs); the
aggregates (segment counts, KPI tables) of every run are kept, so trends can be drawn.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import unicodedata
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import connections, models
from django.utils import timezone

from kizuna.analytics.pipeline.config import (
    PREDICTION_MODELS,
    AnalyticsConfig,
    RfmMethod,
    ThresholdError,
)
from kizuna.analytics.pipeline.segments import CPM_SEGMENTS, RFM_SEGMENTS
from kizuna.core.models import TimeStampedModel

_DEFAULTS = AnalyticsConfig()


def _csv(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def parse_int_list(text: str, *, label: str) -> tuple[int, ...]:
    """ "30, 90,180" → (30, 90, 180); full-width digits and commas are accepted."""
    normalised = unicodedata.normalize("NFKC", text).replace("、", ",")
    parts = [part.strip().replace("_", "") for part in normalised.split(",") if part.strip()]
    try:
        return tuple(int(part) for part in parts)
    except ValueError as exc:
        raise ValidationError(
            {label: "整数をカンマ区切りで入力してください(例: 30,90,180,365)"}
        ) from exc


ENGINE_LABELS = {
    "duckdb": "DuckDB(標準・このサーバー内)",
    "postgres": "PostgreSQL(業務DB上で計算)",
    "pyspark": "PySpark",
}
_DATABASE_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def engine_label(code: str) -> str:
    """An engine's name as the settings form shows it (a code it does not know, as it is)."""
    return ENGINE_LABELS.get(code, code)


def engine_unavailable_reason(code: str, *, using: str = "default") -> str | None:
    """Why engine `code` cannot run on this install (Japanese), or None when it can.

    The one check of what an install can run: the settings refuse an engine it names and a run
    that fails to connect reports its words. It imports nothing heavy (pages call it): PostgreSQL
    needs the operational database to be PostgreSQL, PySpark needs pyspark and Java.
    """
    if code == "postgres":
        vendor = connections[using].vendor
        if vendor != "postgresql":
            return (
                "業務データベースが PostgreSQL のときだけ使えます"
                f"(このサーバーのデータベース: {_DATABASE_NAMES.get(vendor, vendor)})"
            )
    elif code == "pyspark":
        if importlib.util.find_spec("pyspark") is None:
            return "pyspark がインストールされていません(pip install pyspark)"
        if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
            return "Spark に必要な Java がインストールされていません"
    elif code != "duckdb":
        return "この名前のエンジンはありません"
    return None


def available_engines(*, using: str = "default") -> list[str]:
    """The labels of the engines this install can run, in the settings form's order."""
    return [
        label
        for code, label in ENGINE_LABELS.items()
        if engine_unavailable_reason(code, using=using) is None
    ]


def engine_refusal(code: str, *, using: str = "default") -> str | None:
    """The settings page's message for an engine this install cannot run, or None."""
    reason = engine_unavailable_reason(code, using=using)
    if reason is None:
        return None
    return (
        f"{engine_label(code)} はこのサーバーでは使えません。{reason}。"
        f"使えるエンジン: {'、'.join(available_engines(using=using))}"
    )


# Each number field's range and the message shown beside it when a value is outside it
# (a negative, or a number too large for the database): the same words the settings page uses
# for the thresholds' other rules, instead of Django's generic 「この値は … 以下」.
INTEGER_RANGES: dict[str, tuple[int, int, str]] = {
    "cpm_lapse_days": (1, 3650, "離脱とみなす日数は1〜3,650日の範囲で指定してください"),
    "cpm_toddler_tenure_days": (
        1,
        3650,
        "よちよち客の在籍期間は1〜3,650日の範囲で指定してください",
    ),
    "cpm_loyal_tenure_days": (1, 3650, "優良客の在籍期間は1〜3,650日の範囲で指定してください"),
    "cpm_amount_yen": (
        0,
        1_000_000_000,
        "累計購入金額の閾値は0〜1,000,000,000円の範囲で指定してください",
    ),
    "prediction_horizon_days": (1, 3650, "予測期間は1〜3,650日の範囲で指定してください"),
    "keep_customer_runs": (
        1,
        100,
        "顧客別スナップショットの保持回数は1〜100回の範囲で指定してください",
    ),
}


class AnalyticsSettings(TimeStampedModel):
    """The shop's thresholds (one row, id 1). Defaults follow PRODUCT.md section 2."""

    class Method(models.TextChoices):
        QUANTILE = RfmMethod.QUANTILE.value, "分位数(顧客を5等分)"
        FIXED = RfmMethod.FIXED.value, "固定の閾値"

    class Model(models.TextChoices):
        BGNBD = "bgnbd", "BG/NBD"
        MBGNBD = "mbgnbd", "MBG/NBD"
        PARETO = "pareto", "Pareto/NBD"

    class EngineChoice(models.TextChoices):
        DUCKDB = "duckdb", ENGINE_LABELS["duckdb"]
        POSTGRES = "postgres", ENGINE_LABELS["postgres"]
        PYSPARK = "pyspark", ENGINE_LABELS["pyspark"]

    rfm_method = models.CharField(
        "RFMスコアの付け方", max_length=16, choices=Method.choices, default=Method.QUANTILE
    )
    recency_days = models.CharField(
        "R: 最終購入からの日数の閾値",
        max_length=100,
        default=_csv(_DEFAULTS.recency_days),
        help_text="固定の閾値のときに使います。小さい順に4つ(例: 30,90,180,365 → 30日以内が5)",
    )
    frequency_counts = models.CharField(
        "F: 購入回数の閾値",
        max_length=100,
        default=_csv(_DEFAULTS.frequency_counts),
        help_text="小さい順に4つ(例: 2,3,5,10 → 10回以上が5、1回が1)",
    )
    monetary_yen = models.CharField(
        "M: 累計購入金額の閾値(円)",
        max_length=100,
        default=_csv(_DEFAULTS.monetary_yen),
        help_text="小さい順に4つ(例: 5000,15000,40000,100000 → 10万円以上が5)",
    )
    cpm_lapse_days = models.PositiveIntegerField(
        "CPM: 離脱とみなす日数",
        default=_DEFAULTS.cpm_lapse_days,
        help_text="最終購入からこの日数以上たつと「離脱」",
    )
    cpm_toddler_tenure_days = models.PositiveIntegerField(
        "CPM: よちよち客の在籍期間(日・未満)",
        default=_DEFAULTS.cpm_toddler_tenure_days,
        help_text="2回以上購入し、在籍期間(初回購入から最終購入まで)がこの日数未満なら「よちよち客」",
    )
    cpm_loyal_tenure_days = models.PositiveIntegerField(
        "CPM: 優良客の在籍期間(日・以上)",
        default=_DEFAULTS.cpm_loyal_tenure_days,
        help_text="累計購入金額が閾値を超え、在籍期間がこの日数以上なら「優良客」(未満は「流行客」)",
    )
    cpm_amount_yen = models.PositiveIntegerField(
        "CPM: 累計購入金額の閾値(円)",
        default=_DEFAULTS.cpm_amount_yen,
        help_text="この金額以下は「コツコツ客」、超えると「流行客」か「優良客」",
    )
    windows_days = models.CharField(
        "F2転換率・引き上げ率の期間(日)",
        max_length=100,
        default=_csv(_DEFAULTS.windows_days),
        help_text="初回購入から何日以内の転換を数えるか。カンマ区切り(例: 30,60,90,180,365)",
    )
    prediction_model = models.CharField(
        "購入予測モデル", max_length=16, choices=Model.choices, default=_DEFAULTS.prediction_model
    )
    prediction_horizon_days = models.PositiveIntegerField(
        "予測期間(日)", default=_DEFAULTS.prediction_horizon_days
    )
    keep_customer_runs = models.PositiveIntegerField(
        "顧客別スナップショットの保持回数",
        default=_DEFAULTS.keep_customer_runs,
        help_text="これより古い実行の顧客別スコアは削除します(集計値はすべて残ります)",
    )
    nightly_backend = models.CharField(
        "夜間実行のエンジン",
        max_length=16,
        choices=EngineChoice.choices,
        default=EngineChoice.DUCKDB,
    )

    class Meta:
        verbose_name = "分析設定"
        verbose_name_plural = "分析設定"

    def __str__(self) -> str:
        return "分析設定"

    @classmethod
    def load(cls) -> AnalyticsSettings:
        """The shop's settings row, created with the defaults the first time it is asked for."""
        settings, _ = cls.objects.get_or_create(pk=1)
        return settings

    def to_config(self) -> AnalyticsConfig:
        """The thresholds as the pipeline takes them; ValidationError (Japanese) when unusable."""
        # Every unusable field at once, so the settings page shows them all in one go: a field
        # that cannot be read is reported and the default stands in for it while the others
        # are checked.
        errors: dict[str, list[str]] = {}
        lists: dict[str, tuple[int, ...]] = {}
        for name in ("recency_days", "frequency_counts", "monetary_yen", "windows_days"):
            try:
                lists[name] = parse_int_list(getattr(self, name), label=name)
            except ValidationError as exc:
                errors.update(exc.message_dict)
                lists[name] = getattr(_DEFAULTS, name)
        model = self.prediction_model
        if model not in PREDICTION_MODELS:
            errors["prediction_model"] = ["予測モデルを選んでください"]
            model = _DEFAULTS.prediction_model
        try:
            config = AnalyticsConfig(
                rfm_method=RfmMethod(self.rfm_method),
                recency_days=lists["recency_days"],  # type: ignore[arg-type]
                frequency_counts=lists["frequency_counts"],  # type: ignore[arg-type]
                monetary_yen=lists["monetary_yen"],  # type: ignore[arg-type]
                cpm_lapse_days=self.cpm_lapse_days,
                cpm_toddler_tenure_days=self.cpm_toddler_tenure_days,
                cpm_loyal_tenure_days=self.cpm_loyal_tenure_days,
                cpm_amount_yen=self.cpm_amount_yen,
                windows_days=lists["windows_days"],
                prediction_model=model,
                prediction_horizon_days=self.prediction_horizon_days,
                keep_customer_runs=self.keep_customer_runs,
            )
        except ThresholdError as exc:
            # Each on the field it is about, when it is one (the settings page shows it there).
            for field, message in exc.problems:
                errors.setdefault(field or NON_FIELD_ERRORS, []).append(message)
            raise ValidationError(errors) from exc
        if errors:
            raise ValidationError(errors)
        return config

    def clean_fields(self, exclude: Any = None) -> None:
        # A number outside its range gets the field's own message (INTEGER_RANGES), and Django's
        # generic range check is then skipped for it; clean() leaves that field's rules aside.
        excluded = set(exclude or ())
        errors: dict[str, list[str]] = {}
        self._out_of_range: set[str] = set()
        for name, (low, high, message) in INTEGER_RANGES.items():
            value = getattr(self, name)
            if name not in excluded and isinstance(value, int) and not low <= value <= high:
                errors[name] = [message]
                self._out_of_range.add(name)
        try:
            super().clean_fields(exclude=excluded | self._out_of_range)
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors.setdefault(name, []).extend(messages)
        if errors:
            raise ValidationError(errors)

    def clean(self) -> None:
        # The thresholds as a run checks them, and the nightly engine: one this install cannot
        # run (PostgreSQL on SQLite, PySpark without Java) would fail every run it starts.
        errors: dict[str, list[str]] = {}
        try:
            self.to_config()
        except ValidationError as exc:
            out_of_range: set[str] = getattr(self, "_out_of_range", set())
            errors.update(
                {
                    name: found
                    for name, found in exc.message_dict.items()
                    if name not in out_of_range
                }
            )
        refusal = engine_refusal(self.nightly_backend)
        if refusal is not None:
            errors.setdefault("nightly_backend", []).append(refusal)
        if errors:
            raise ValidationError(errors)

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.pk = 1  # one row per shop: a second instance replaces the first
        if self._state.adding:
            created = type(self).objects.filter(pk=1).values_list("created_at", flat=True).first()
            if created is not None:
                self.created_at = created
                self._state.adding = False
        super().save(*args, **kwargs)


class RunStatus(models.TextChoices):
    QUEUED = "queued", "待機中"
    RUNNING = "running", "実行中"
    DONE = "done", "完了"
    FAILED = "failed", "失敗"


class AnalyticsRun(TimeStampedModel):
    """One computation of the analytics as of a day: its progress, timings and outcome."""

    as_of = models.DateField("基準日")
    backend = models.CharField("計算エンジン", max_length=16)
    status = models.CharField(
        "状態", max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED
    )
    trigger = models.CharField("起動元", max_length=32, blank=True)
    requested_by = models.CharField("実行者", max_length=150, blank=True)
    started_at = models.DateTimeField("開始日時", null=True, blank=True)
    finished_at = models.DateTimeField("終了日時", null=True, blank=True)
    step = models.CharField("実行中の処理", max_length=32, blank=True)
    step_index = models.PositiveSmallIntegerField("処理番号", default=0)
    step_total = models.PositiveSmallIntegerField("処理数", default=0)
    timings = models.JSONField("処理時間(秒)", default=dict, blank=True)
    customers = models.PositiveIntegerField("顧客数(購入あり)", default=0)
    purchases = models.PositiveIntegerField("購入件数", default=0)
    settings = models.JSONField("使った設定", default=dict, blank=True)
    predictions = models.JSONField("予測モデル", default=dict, blank=True)
    customer_rows_kept = models.BooleanField("顧客別スコアを保持中", default=False)
    message = models.TextField("メッセージ", blank=True)

    class Meta:
        verbose_name = "分析の実行"
        verbose_name_plural = "分析の実行"
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "-as_of", "-id"], name="analytics_run_latest")]

    def __str__(self) -> str:
        return f"{self.as_of} {self.get_status_display()}({self.backend})"

    @property
    def day_complete(self) -> bool:
        """Whether the run started after its 基準日 had ended (Japan time), so it holds that
        whole day's purchases; a run of today, started from the page in the morning, holds
        them only up to its start."""
        if self.started_at is None:
            return True
        return timezone.localtime(self.started_at).date() > self.as_of

    @property
    def progress_percent(self) -> int:
        if self.status == RunStatus.DONE:
            return 100
        if not self.step_total:
            return 0
        return int(100 * self.step_index / self.step_total)


class CustomerScore(models.Model):
    """One customer's analytics as of a run. Written in bulk (COPY / executemany) by the run."""

    run = models.ForeignKey(AnalyticsRun, on_delete=models.CASCADE, related_name="scores")
    as_of = models.DateField("基準日")
    # No database constraint: snapshots are written in bulk and must not block erasing a
    # customer (APPI); the relation still gives segments and pages their ORM joins.
    customer = models.ForeignKey(
        "customers.Customer",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="analytics_scores",
        verbose_name="顧客",
    )
    first_purchase_on = models.DateField("初回購入日")
    last_purchase_on = models.DateField("最終購入日")
    purchase_count = models.PositiveIntegerField("購入回数")
    total_spend = models.BigIntegerField("累計購入金額")
    avg_spend = models.BigIntegerField("平均購入金額")
    tenure_days = models.PositiveIntegerField("在籍日数")
    days_since_last = models.PositiveIntegerField("最終購入からの日数")
    r_score = models.PositiveSmallIntegerField("R")
    f_score = models.PositiveSmallIntegerField("F")
    m_score = models.PositiveSmallIntegerField("M")
    rfm_segment = models.CharField(
        "RFMセグメント", max_length=24, choices=list(RFM_SEGMENTS.items())
    )
    cpm_segment = models.CharField(
        "CPMセグメント", max_length=24, choices=list(CPM_SEGMENTS.items())
    )
    expected_purchases = models.FloatField("予測購入回数", null=True, blank=True)
    p_alive = models.FloatField("生存確率", null=True, blank=True)
    expected_avg_spend = models.FloatField("予測平均購入金額", null=True, blank=True)
    clv_12m = models.FloatField("12か月CLV", null=True, blank=True)
    expected_next_purchase_on = models.DateField("次回購入予測日", null=True, blank=True)

    class Meta:
        verbose_name = "顧客別スコア"
        verbose_name_plural = "顧客別スコア"
        constraints = [
            models.UniqueConstraint(fields=["run", "customer"], name="score_one_per_run"),
        ]

    def __str__(self) -> str:
        return f"{self.as_of} #{self.customer_id} {self.get_cpm_segment_display()}"


class SegmentCount(models.Model):
    """Customers and revenue per segment in a run: CPM, RFM and the R×F grid. Kept forever."""

    class Kind(models.TextChoices):
        CPM = "cpm", "CPM"
        RFM = "rfm", "RFM"
        RF = "rf", "R×F"

    run = models.ForeignKey(AnalyticsRun, on_delete=models.CASCADE, related_name="segments")
    as_of = models.DateField("基準日")
    kind = models.CharField("種類", max_length=8, choices=Kind.choices)
    segment = models.CharField("セグメント", max_length=24)
    customers = models.PositiveIntegerField("顧客数")
    revenue = models.BigIntegerField("累計購入金額")

    class Meta:
        verbose_name = "セグメント別顧客数"
        verbose_name_plural = "セグメント別顧客数"
        constraints = [
            models.UniqueConstraint(fields=["run", "kind", "segment"], name="segment_count_once"),
        ]
        indexes = [models.Index(fields=["kind", "segment", "as_of"], name="segment_count_trend")]

    def __str__(self) -> str:
        return f"{self.as_of} {self.kind}:{self.segment} {self.customers}"


class KpiTable(models.Model):
    """One KPI table of a run (F2転換率, リピート率, コホート…) as JSON rows. Kept forever."""

    run = models.ForeignKey(AnalyticsRun, on_delete=models.CASCADE, related_name="kpis")
    as_of = models.DateField("基準日")
    name = models.CharField("指標", max_length=64)
    rows = models.JSONField("値")

    class Meta:
        verbose_name = "KPI表"
        verbose_name_plural = "KPI表"
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="kpi_table_once")]

    def __str__(self) -> str:
        return f"{self.as_of} {self.name}"
