"""Back-test of a purchase model: fit on a calibration period, predict a holdout period, compare.

The comparison is the one Fader, Hardie & Lee show for CDNOW: per customer, the conditional
expectation E[Y(t) | x, t_x, T] of holdout purchases against what each customer actually did,
in total and averaged by number of calibration repeat purchases (0, 1, …, 7+). As a second
check on the population-level fit, the expected total from the unconditional curve
Σ_i E[X(T_i + t)] - E[X(T_i)] (the "tracking" forecast) is shown too. With amounts, the
Gamma-Gamma model's expected spend per purchase is compared with the holdout's actual average.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from kizuna.analytics.clv import PURCHASE_MODELS, gammagamma
from kizuna.analytics.clv.common import weighted_count
from kizuna.analytics.clv.summary import CustomerSummary

Unit = Literal["day", "week"]
UNIT_DAYS: dict[Unit, float] = {"day": 1.0, "week": 7.0}
UNIT_LABELS: dict[Unit, str] = {"day": "日", "week": "週"}
PARAMETER_LABELS = {"alpha": "α", "beta": "β", "gamma": "γ"}
TOP_BUCKET = 7


@dataclass(frozen=True, slots=True)
class FrequencyRow:
    """Customers with `repeat_purchases` calibration repeat purchases ("7+" for 7 or more)."""

    repeat_purchases: str
    customers: int
    actual: float
    predicted: float

    @property
    def actual_mean(self) -> float:
        return self.actual / self.customers if self.customers else 0.0

    @property
    def predicted_mean(self) -> float:
        return self.predicted / self.customers if self.customers else 0.0


@dataclass(frozen=True, slots=True)
class SpendCheck:
    params: dict[str, float]
    log_likelihood: float
    fitted_customers: int
    converged: bool
    compared_customers: int
    actual_mean: float
    predicted_mean: float


@dataclass(frozen=True, slots=True)
class BacktestResult:
    model: str
    model_label: str
    unit: Unit
    first_purchase: dt.date
    calibration_end: dt.date
    holdout_end: dt.date
    holdout_length: float
    customers: int
    params: dict[str, float]
    log_likelihood: float
    converged: bool
    actual_total: float
    predicted_total: float
    predicted_total_unconditional: float
    by_frequency: tuple[FrequencyRow, ...]
    spend: SpendCheck | None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("first_purchase", "calibration_end", "holdout_end"):
            data[key] = data[key].isoformat()
        data["by_frequency"] = [
            {**asdict(row), "actual_mean": row.actual_mean, "predicted_mean": row.predicted_mean}
            for row in self.by_frequency
        ]
        return data


def run_backtest(
    summary: CustomerSummary,
    *,
    model: str,
    calibration_end: dt.date,
    holdout_end: dt.date,
    unit: Unit = "day",
) -> BacktestResult:
    """Fit `model` on the summary's calibration data and score its holdout predictions.

    `summary` must come from `summarise(..., calibration_end=, holdout_end=,
    unit_days=UNIT_DAYS[unit])` with the same dates.
    """
    if model not in PURCHASE_MODELS:
        raise ValueError(
            f"モデル「{model}」はありません。{'、'.join(PURCHASE_MODELS)} から選んでください"
        )
    if summary.holdout_purchases is None:
        raise ValueError("検証期間の購入回数がない集計です(holdout_end を指定して集計してください)")
    purchase_model = PURCHASE_MODELS[model]
    holdout = (holdout_end - calibration_end).days / UNIT_DAYS[unit]
    x, t_x, T = summary.x, summary.t_x, summary.T

    params = purchase_model.fit(x, t_x, T)
    predicted = purchase_model.expected_purchases(params, holdout, x, t_x, T)
    unconditional = purchase_model.expected_purchases_new(
        params, T + holdout
    ) - purchase_model.expected_purchases_new(params, T)
    actual = summary.holdout_purchases

    bucket = np.minimum(x, TOP_BUCKET).astype(np.intp)
    customers = np.bincount(bucket, minlength=TOP_BUCKET + 1)
    actual_sum = weighted_count(bucket, actual, TOP_BUCKET + 1)
    predicted_sum = weighted_count(bucket, predicted, TOP_BUCKET + 1)
    rows = tuple(
        FrequencyRow(
            repeat_purchases=f"{k}+" if k == TOP_BUCKET else str(k),
            customers=int(customers[k]),
            actual=float(actual_sum[k]),
            predicted=float(predicted_sum[k]),
        )
        for k in range(TOP_BUCKET + 1)
    )

    return BacktestResult(
        model=model,
        model_label=purchase_model.label,
        unit=unit,
        first_purchase=summary.first.min().astype(dt.date),
        calibration_end=calibration_end,
        holdout_end=holdout_end,
        holdout_length=holdout,
        customers=summary.customers,
        params=params.values(),
        log_likelihood=params.log_likelihood,
        converged=params.converged,
        actual_total=float(actual.sum()),
        predicted_total=float(predicted.sum()),
        predicted_total_unconditional=float(unconditional.sum()),
        by_frequency=rows,
        spend=_spend_check(summary),
    )


def _spend_check(summary: CustomerSummary) -> SpendCheck | None:
    """Gamma-Gamma fitted on calibration repeat spend, scored on holdout average spend."""
    if (
        summary.monetary is None
        or summary.holdout_monetary is None
        or summary.holdout_purchases is None
    ):
        return None
    repeat = (summary.x > 0) & (summary.monetary > 0)
    if not repeat.any():
        return None
    params = gammagamma.fit(summary.x[repeat], summary.monetary[repeat])
    if params.q <= 1:
        return SpendCheck(
            params.values(), params.log_likelihood, params.n_customers, False, 0, np.nan, np.nan
        )
    compared = repeat & (summary.holdout_purchases > 0)
    predicted = gammagamma.expected_average_spend(
        params, summary.x[compared], summary.monetary[compared]
    )
    return SpendCheck(
        params=params.values(),
        log_likelihood=params.log_likelihood,
        fitted_customers=params.n_customers,
        converged=params.converged,
        compared_customers=int(compared.sum()),
        actual_mean=float(np.mean(summary.holdout_monetary[compared]))
        if compared.any()
        else np.nan,
        predicted_mean=float(np.mean(predicted)) if compared.any() else np.nan,
    )


def _params_text(params: dict[str, float]) -> str:
    return "  ".join(f"{PARAMETER_LABELS.get(k, k)} = {v:.4g}" for k, v in params.items())


def _difference(predicted: float, actual: float) -> str:
    if actual == 0:
        return "—"
    return f"{(predicted - actual) / actual:+.1%}"


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _table_row(cells: tuple[str, ...], width: int = 12) -> str:
    return "  " + "".join(" " * max(width - _display_width(c), 1) + c for c in cells)


def format_text(result: BacktestResult) -> str:
    """The back-test as plain Japanese text for a terminal or a report."""
    unit = UNIT_LABELS[result.unit]
    yes_no = "はい" if result.converged else "いいえ(結果は参考値です)"
    lines = [
        f"バックテスト: {result.model_label} モデル",
        f"較正期間: {result.first_purchase:%Y-%m-%d} 〜 {result.calibration_end:%Y-%m-%d}"
        f"(この期間に初回購入のある顧客 {result.customers:,} 人)",
        f"検証期間: {result.calibration_end + dt.timedelta(days=1):%Y-%m-%d} 〜 "
        f"{result.holdout_end:%Y-%m-%d}({result.holdout_length:g} {unit})",
        f"時間の単位: {unit}(同じ日の複数の注文は1回の購入として数えます)",
        "",
        f"推定パラメータ: {_params_text(result.params)}",
        f"対数尤度: {result.log_likelihood:,.2f}  収束: {yes_no}",
        "",
        "検証期間の購入回数(予測と実績)",
        f"  実績: {result.actual_total:,.0f} 回",
        f"  予測: {result.predicted_total:,.1f} 回(差 "
        f"{_difference(result.predicted_total, result.actual_total)})",
        f"  参考 新規顧客の平均曲線からの予測: {result.predicted_total_unconditional:,.1f} 回(差 "
        f"{_difference(result.predicted_total_unconditional, result.actual_total)})",
        "",
        "較正期間のリピート回数別 1人あたり検証期間の購入回数",
        _table_row(("リピート回数", "顧客数", "実績", "予測")),
    ]
    lines += [
        _table_row(
            (
                row.repeat_purchases,
                f"{row.customers:,}",
                f"{row.actual_mean:.3f}",
                f"{row.predicted_mean:.3f}",
            )
        )
        for row in result.by_frequency
    ]
    spend = result.spend
    if spend is not None:
        lines += [
            "",
            f"購入単価(Gamma-Gamma、リピート購入のある {spend.fitted_customers:,} 人で推定)",
            f"  推定パラメータ: {_params_text(spend.params)}",
        ]
        if spend.compared_customers:
            lines.append(
                f"  検証期間にも購入した {spend.compared_customers:,} 人の平均単価: "
                f"実績 {spend.actual_mean:,.2f} / 予測 {spend.predicted_mean:,.2f}"
                f"(差 {_difference(spend.predicted_mean, spend.actual_mean)})"
            )
        else:
            lines.append("  検証期間にも購入した顧客がいないため、単価は比較できません")
    return "\n".join(lines)
