"""The shop's analytics thresholds as a plain value, so the pipeline runs with or without a DB.

`AnalyticsConfig()` holds the defaults of PRODUCT.md section 2; the per-shop settings row
(`kizuna.analytics.models.AnalyticsSettings`) turns into one with `.to_config()`. Models and
pages import this module, so it imports nothing of the pipeline's engines or numerics.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum


class Backend(StrEnum):
    """The engine a run computes on (connections in `backends`)."""

    DUCKDB = "duckdb"
    POSTGRES = "postgres"
    PYSPARK = "pyspark"


class RfmMethod(StrEnum):
    QUANTILE = "quantile"
    FIXED = "fixed"


PREDICTION_MODELS = ("bgnbd", "mbgnbd", "pareto")

# sBG fits of 定期 continuation (kpis.sbg_rows): a start-month cohort gets a fit of its own
# once it has this many subscriptions with a box, this many cancellations and this many
# renewals seen: a younger cohort's counts cannot tell the spread of cancellation risk from
# its mean, and its fit runs off to the boundary. Every cohort still counts in the fit over
# all subscriptions. Fixed, not a shop setting; the 定期 page states them.
SBG_MIN_COHORT = 30
SBG_MIN_CANCELLED = 10
SBG_MIN_RENEWALS = 3


class AsOfError(ValueError):
    """An as-of day a run must not use; the message says why, in Japanese."""


def check_as_of(day: dt.date, *, today: dt.date) -> None:
    """Refuse an as-of day after `today` (the shop's today in Japan; the demo passes its own).

    A future day counts no purchases that have not happened yet, and as the newest as-of its
    snapshot would stay the "latest" one — pages, segment conditions and the pruning of
    per-customer rows go by as-of day — however many real runs came after it.
    """
    if day > today:
        raise AsOfError(
            f"基準日 {day:%Y-%m-%d} は今日({today:%Y-%m-%d}、日本時間)より後の日付です。"
            "基準日には今日以前の日付を指定してください"
            "(未来の日付の分析は、まだない購入を数えないまま「最新」の結果として残ってしまいます)"
        )


# F2/F3/F4 and 引き上げ windows: from a day to ten years after the first purchase. A longer one
# has no customer old enough to count, and a window listed twice was counted twice.
MIN_WINDOW_DAYS = 1
MAX_WINDOW_DAYS = 3650


# How far ahead predictions may look: up to ten years (the CLV discounting and the models'
# assumptions mean little beyond that, and a huge value only makes the run slower).
MAX_HORIZON_DAYS = 3650


class ThresholdError(ValueError):
    """Threshold settings that cannot be used. `problems` holds every one found, as (the
    AnalyticsSettings field it belongs to, or None for a combination of fields; the Japanese
    message), so the settings page can show them all at once beside their fields."""

    def __init__(self, problems: list[tuple[str | None, str]]) -> None:
        super().__init__("/".join(message for _, message in problems))
        self.problems = problems


@dataclass(frozen=True)
class AnalyticsConfig:
    # RFM: scores 1–5. With fixed thresholds each list holds the four cut points in increasing
    # order (see docs/analytics.md for which side of a cut point a value falls on).
    rfm_method: RfmMethod = RfmMethod.QUANTILE
    recency_days: tuple[int, int, int, int] = (30, 90, 180, 365)
    frequency_counts: tuple[int, int, int, int] = (2, 3, 5, 10)
    monetary_yen: tuple[int, int, int, int] = (5_000, 15_000, 40_000, 100_000)
    # CPM (顧客ポートフォリオマネジメント).
    cpm_lapse_days: int = 240
    cpm_toddler_tenure_days: int = 90
    cpm_loyal_tenure_days: int = 210
    cpm_amount_yen: int = 70_000
    # Repeat KPIs: F2/F3/F4 and 引き上げ windows, in days after the first purchase.
    windows_days: tuple[int, ...] = (30, 60, 90, 180, 365)
    # Predictions: which purchase model (bgnbd, mbgnbd or pareto) and how far ahead.
    prediction_model: str = "bgnbd"
    prediction_horizon_days: int = 365
    # Per-customer snapshot rows are kept for this many runs; aggregates are kept forever.
    keep_customer_runs: int = 7

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ThresholdError(problems)

    def _problems(self) -> Iterator[tuple[str | None, str]]:
        yield from self._rfm_problems()
        yield from self._cpm_problems()
        windows = "F2転換率・引き上げ率の期間(日)"
        if not self.windows_days:
            yield "windows_days", f"{windows}を1つ以上指定してください"
        elif any(not MIN_WINDOW_DAYS <= n <= MAX_WINDOW_DAYS for n in self.windows_days):
            yield (
                "windows_days",
                f"{windows}は{MIN_WINDOW_DAYS}〜{MAX_WINDOW_DAYS:,}日の範囲で指定してください",
            )
        elif any(b <= a for a, b in itertools.pairwise(self.windows_days)):
            yield "windows_days", f"{windows}は小さい順に、重複なく指定してください"
        if self.prediction_model not in PREDICTION_MODELS:
            yield (
                "prediction_model",
                "予測モデルは bgnbd・mbgnbd・pareto のいずれかにしてください",
            )
        if not 1 <= self.prediction_horizon_days <= MAX_HORIZON_DAYS:
            yield (
                "prediction_horizon_days",
                f"予測期間は1〜{MAX_HORIZON_DAYS:,}日の範囲で指定してください",
            )
        if self.keep_customer_runs < 1:
            yield "keep_customer_runs", "顧客別スナップショットの保持回数は1以上にしてください"

    def _rfm_problems(self) -> Iterator[tuple[str | None, str]]:
        for field, name, values in (
            ("recency_days", "R(最終購入からの日数)", self.recency_days),
            ("frequency_counts", "F(購入回数)", self.frequency_counts),
            ("monetary_yen", "M(累計購入金額)", self.monetary_yen),
        ):
            if len(values) != 4:
                yield field, f"{name}の閾値は4つ指定してください"
            elif any(v < 0 for v in values):
                yield field, f"{name}の閾値は0以上にしてください"
            elif any(b <= a for a, b in itertools.pairwise(values)):
                yield field, f"{name}の閾値は小さい順に、重複なく指定してください"

    def _cpm_problems(self) -> Iterator[tuple[str | None, str]]:
        if self.cpm_lapse_days < 1:
            yield "cpm_lapse_days", "離脱とみなす日数は1日以上にしてください"
        if not 0 < self.cpm_toddler_tenure_days < self.cpm_loyal_tenure_days:
            yield (
                None,
                "在籍期間の閾値は「よちよち客の上限 < 優良客の下限」となるよう指定してください",
            )
        if self.cpm_amount_yen < 0:
            yield "cpm_amount_yen", "累計購入金額の閾値は0円以上にしてください"


# An odds ratio is given only for a value with at least this many customers, and as many among
# everyone else, and with 優良 and lapsed customers on both sides (no empty cell). Below that
# the ratio swings by chance, and an empty cell needs a correction (+0.5 to every cell) that
# can turn it round: 0 優良 out of 2 customers against 2.4% overall gave 8.04. The same 30 as
# the scenario lift page's データ不足 and the fans page's one-line reading. The rule is applied
# in fans.behaviour_rows, on the counts every engine produces, so the engines cannot differ.
ODDS_RATIO_MIN_CUSTOMERS = 30
