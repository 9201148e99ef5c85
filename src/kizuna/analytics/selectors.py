"""Reads of the analytics snapshots for pages, segments and the API. Nothing here computes:
everything comes from the stored snapshot of a finished run."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.db.models import Count, Q, QuerySet

from kizuna.analytics.models import (
    AnalyticsRun,
    AnalyticsSettings,
    CustomerScore,
    KpiTable,
    RunStatus,
    SegmentCount,
    engine_label,
)
from kizuna.analytics.pipeline import config
from kizuna.analytics.pipeline.segments import CPM_SEGMENTS, RFM_GRID, RFM_SEGMENTS, WhatIfError
from kizuna.analytics.pipeline.steps import STEP_LABELS
from kizuna.core.audit import actor_display
from kizuna.customers.models import AcquisitionChannel


def latest_run(
    *, as_of: dt.date | None = None, with_customers: bool = False
) -> AnalyticsRun | None:
    """The newest finished run (for `as_of` if given); with_customers: one whose per-customer
    rows are still kept."""
    runs = AnalyticsRun.objects.filter(status=RunStatus.DONE)
    if as_of is not None:
        runs = runs.filter(as_of=as_of)
    if with_customers:
        runs = runs.filter(customer_rows_kept=True)
    return runs.order_by("-as_of", "-id").first()


@dataclass(frozen=True)
class RunProgress:
    run_id: int
    status: str
    status_label: str
    step_label: str
    percent: int
    message: str
    finished: bool


def run_progress(run_id: int) -> RunProgress | None:
    """What a progress display shows for one run."""
    run = AnalyticsRun.objects.filter(pk=run_id).first()
    if run is None:
        return None
    return RunProgress(
        run_id=run.pk,
        status=run.status,
        status_label=run.get_status_display(),
        step_label=STEP_LABELS.get(run.step, ""),
        percent=run.progress_percent,
        message=run.message,
        finished=run.status in (RunStatus.DONE, RunStatus.FAILED),
    )


@dataclass(frozen=True)
class SegmentRow:
    code: str
    label: str
    customers: int
    revenue: int
    share: float | None


def segment_counts(run: AnalyticsRun, kind: str) -> list[SegmentRow]:
    """Segments of one kind ("cpm", "rfm", "rf") in display order, empty segments included
    for CPM and RFM (a page shows all ten CPM cells even when some are empty)."""
    stored = {row.segment: row for row in SegmentCount.objects.filter(run=run, kind=kind)}
    labels: dict[str, str]
    if kind == SegmentCount.Kind.CPM:
        labels = CPM_SEGMENTS
    elif kind == SegmentCount.Kind.RFM:
        labels = RFM_SEGMENTS
    else:
        labels = {code: code for code in sorted(stored)}
    total = sum(row.customers for row in stored.values())
    out = []
    for code, label in labels.items():
        row = stored.get(code)
        n = row.customers if row else 0
        out.append(
            SegmentRow(
                code=code,
                label=label,
                customers=n,
                revenue=row.revenue if row else 0,
                share=round(n / total, 6) if total else None,
            )
        )
    return out


def kpi_table(run: AnalyticsRun, name: str) -> Any:
    """One stored KPI table's rows (see docs/analytics.md for each table's columns)."""
    table = KpiTable.objects.filter(run=run, name=name).first()
    return None if table is None else table.rows


def kpi_names(run: AnalyticsRun) -> list[str]:
    return list(KpiTable.objects.filter(run=run).order_by("name").values_list("name", flat=True))


def customer_score(customer_id: int, *, run: AnalyticsRun | None = None) -> CustomerScore | None:
    """A customer's scores in `run`, or in the latest run that still holds per-customer rows."""
    chosen = run or latest_run(with_customers=True)
    if chosen is None:
        return None
    return CustomerScore.objects.filter(run=chosen, customer_id=customer_id).first()


def scores_in_segment(
    run: AnalyticsRun, *, cpm: str | None = None, rfm: str | None = None
) -> QuerySet[CustomerScore]:
    """The per-customer rows of a run in a CPM and/or RFM segment (for segments and lists)."""
    scores = CustomerScore.objects.filter(run=run)
    if cpm is not None:
        scores = scores.filter(cpm_segment=cpm)
    if rfm is not None:
        scores = scores.filter(rfm_segment=rfm)
    return scores.order_by("customer_id")


def segment_trend(kind: str, segment: str) -> list[tuple[dt.date, int]]:
    """(as_of, customers) for one segment across all finished runs, one point per as-of day
    (the latest run of that day)."""
    rows = (
        SegmentCount.objects.filter(kind=kind, segment=segment, run__status=RunStatus.DONE)
        .order_by("as_of", "run_id")
        .values_list("as_of", "customers")
    )
    return list(dict(rows).items())


# --- pages and the API (web/analytics.py, api/v1/analytics.py) ----------------------------------
# Shaping for display happens here, on the stored snapshot, so views only choose and render.

HEAT_LEVELS = 5


def heat_level(value: float | None, top: float | None) -> int:
    """0 (empty) … HEAT_LEVELS (the largest value of its table), for heat-table shading."""
    if not value or not top or value <= 0:
        return 0
    return max(1, min(HEAT_LEVELS, round(HEAT_LEVELS * value / top)))


# How a run was started (AnalyticsRun.trigger), as staff read it.
TRIGGER_LABELS = {
    "demo": "デモ作成",
    "web": "画面から",
    "nightly": "夜間実行",
    "command": "コマンド",
    "task": "バックグラウンド処理",
    "manual": "手動",
}


@dataclass(frozen=True)
class RunLabels:
    """A run's engine, how it was started and by whom, in the words the pages show."""

    engine: str
    trigger: str
    requested_by: str


def run_labels(run: AnalyticsRun) -> RunLabels:
    """The settings form's engine name, 「画面から」 for "web", 「システム(デモデータ)」 for
    "system:demo" (a code not known here is shown as it is)."""
    return RunLabels(
        engine=engine_label(run.backend),
        trigger=TRIGGER_LABELS.get(run.trigger, run.trigger),
        requested_by=actor_display(run.requested_by) if run.requested_by else "",
    )


def recent_runs() -> QuerySet[AnalyticsRun]:
    """Every run, newest first (queued, running, done and failed)."""
    return AnalyticsRun.objects.order_by("-id")


def run_in_progress() -> AnalyticsRun | None:
    """The newest run still queued or running, if any (a page offers no second start then)."""
    return (
        AnalyticsRun.objects.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING))
        .order_by("-id")
        .first()
    )


def previous_run(run: AnalyticsRun) -> AnalyticsRun | None:
    """The newest finished run of an earlier 基準日 than `run`'s. Not an earlier run of the same
    day: after a manual re-run every 前回比 would read ±0 and hide the change since the day
    before, which is what the column is read for."""
    earlier = AnalyticsRun.objects.filter(status=RunStatus.DONE, as_of__lt=run.as_of)
    return earlier.order_by("-as_of", "-id").first()


def run_timings(run: AnalyticsRun) -> list[tuple[str, float]]:
    """(step label, seconds) in the order the steps ran."""
    return [(STEP_LABELS.get(step, step), seconds) for step, seconds in run.timings.items()]


@dataclass(frozen=True)
class SegmentChangeRow:
    code: str
    label: str
    customers: int
    revenue: int
    share: float | None
    previous: int | None
    change: int | None
    level: int


def segments_with_change(run: AnalyticsRun, kind: str) -> list[SegmentChangeRow]:
    """A kind's segments with the change in customers since the previous finished run."""
    before = previous_run(run)
    old = (
        dict(SegmentCount.objects.filter(run=before, kind=kind).values_list("segment", "customers"))
        if before is not None
        else None
    )
    rows = segment_counts(run, kind)
    top = max((row.customers for row in rows), default=0)
    return [
        SegmentChangeRow(
            code=row.code,
            label=row.label,
            customers=row.customers,
            revenue=row.revenue,
            share=row.share,
            previous=None if old is None else old.get(row.code, 0),
            change=None if old is None else row.customers - old.get(row.code, 0),
            level=heat_level(row.customers, top),
        )
        for row in rows
    ]


@dataclass(frozen=True)
class GridCell:
    code: str
    customers: int
    share: float | None
    revenue: int
    segment_label: str
    level: int


@dataclass(frozen=True)
class GridRow:
    r: int
    cells: list[GridCell]


def rf_grid(run: AnalyticsRun) -> list[GridRow]:
    """The R×F heat table: R5 (most recent) at the top, F1…F5 from left to right."""
    stored = {row.code: row for row in segment_counts(run, SegmentCount.Kind.RF)}
    top = max((row.customers for row in stored.values()), default=0)
    out = []
    for r in range(5, 0, -1):
        cells = []
        for f in range(1, 6):
            code = f"R{r}F{f}"
            row = stored.get(code)
            n = row.customers if row else 0
            cells.append(
                GridCell(
                    code=code,
                    customers=n,
                    share=row.share if row else (0.0 if stored else None),
                    revenue=row.revenue if row else 0,
                    segment_label=RFM_SEGMENTS[RFM_GRID[(r, f)]],
                    level=heat_level(n, top),
                )
            )
        out.append(GridRow(r=r, cells=cells))
    return out


def empty_scores(run: AnalyticsRun) -> list[str]:
    """The R and F scores no customer has in a run with customers, e.g. ["F2", "F3"].

    With quantile scores, customers with the same value share a score, so when most customers
    bought once or twice the cut points fall on the same value and some scores stay empty (a
    2-purchase customer then jumps to F4). The dashboard warns about it.
    """
    stored = {row.code: row.customers for row in segment_counts(run, SegmentCount.Kind.RF)}
    if not any(stored.values()):
        return []
    out = []
    for letter, position in (("R", 1), ("F", 3)):  # codes read "R4F2"
        for score in range(1, 6):
            if not any(n for code, n in stored.items() if code[position] == str(score)):
                out.append(f"{letter}{score}")
    return out


# Repeat KPIs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowCell:
    window_days: int
    eligible: int
    complete: bool
    rates: dict[str, float | None]  # "f2", "f3", "f4" or "upgrade" → rate


@dataclass(frozen=True)
class CohortWindows:
    cohort: str
    customers: int
    cells: list[WindowCell | None]  # one per window, None when the table has no such row


def windows_of(run: AnalyticsRun) -> list[int]:
    """The windows (days) the run used, from its settings."""
    return [int(w) for w in run.settings.get("windows_days", [])]


def _by_cohort(
    rows: list[dict[str, Any]], windows: list[int], *, size: str, rates: dict[str, str]
) -> list[CohortWindows]:
    cohorts: dict[str, dict[int, dict[str, Any]]] = {}
    sizes: dict[str, int] = {}
    for row in rows:
        cohorts.setdefault(row["cohort"], {})[int(row["window_days"])] = row
        sizes[row["cohort"]] = int(row[size])
    out = []
    for cohort in sorted(cohorts, reverse=True):
        cells: list[WindowCell | None] = []
        for window in windows:
            found = cohorts[cohort].get(window)
            cells.append(
                None
                if found is None
                else WindowCell(
                    window_days=window,
                    eligible=int(found["eligible"]),
                    complete=bool(found["complete"]),
                    rates={name: found[column] for name, column in rates.items()},
                )
            )
        out.append(CohortWindows(cohort=cohort, customers=sizes[cohort], cells=cells))
    return out


def f_conversion_by_cohort(run: AnalyticsRun) -> list[CohortWindows]:
    """F2/F3/F4 転換率 per first-purchase month (newest first), one cell per window."""
    rows = kpi_table(run, "f_conversion") or []
    rates = {"f2": "f2_rate", "f3": "f3_rate", "f4": "f4_rate"}
    return _by_cohort(rows, windows_of(run), size="customers", rates=rates)


def upgrade_by_cohort(run: AnalyticsRun) -> list[CohortWindows]:
    """引き上げ率 per first-purchase month (newest first), one cell per window."""
    rows = kpi_table(run, "upgrade") or []
    return _by_cohort(rows, windows_of(run), size="trial_first", rates={"upgrade": "rate"})


# Cohorts -------------------------------------------------------------------------------------

COHORT_SPLITS: dict[str, str] = {
    "all": "全体",
    "channel": "獲得チャネル",
    "first_product": "初回商品",
}


@dataclass(frozen=True)
class CohortCell:
    months_since_first: int
    active: int
    retention: float | None
    ltv: float | None
    complete: bool
    retention_level: int
    ltv_level: int


@dataclass(frozen=True)
class CohortRow:
    cohort: str
    customers: int
    cells: list[CohortCell]


@dataclass(frozen=True)
class CohortTable:
    split: str
    groups: list[tuple[str, str]]  # (stored group, label)
    group: str | None
    months: list[int]
    rows: list[CohortRow]  # newest cohort first


def _group_label(split: str, group: str | None) -> str:
    if split == "channel" and group is not None:
        return str(dict(AcquisitionChannel.choices).get(group, group))
    return group or "(不明)"


def cohort_table(run: AnalyticsRun, split: str, group: str | None = None) -> CohortTable | None:
    """Retention and cumulative LTV by months since first purchase, for one group of a split
    ("all", "channel", "first_product"); the first group when `group` is not one of them.
    None when the run stored no such split (no channels or products in the data)."""
    rows = kpi_table(run, f"cohorts:{split}")
    if rows is None:
        return None
    stored_groups = sorted({str(row["group"]) for row in rows if row["group"] is not None})
    groups = [(g, _group_label(split, g)) for g in stored_groups]
    chosen = group if group in stored_groups else (stored_groups[0] if stored_groups else None)
    mine = [row for row in rows if row["group"] == chosen]
    top_retention = max(
        (row["retention"] or 0 for row in mine if row["months_since_first"] > 0), default=0
    )
    top_ltv = max((row["ltv"] or 0 for row in mine), default=0)
    cohorts: dict[str, list[dict[str, Any]]] = {}
    for row in mine:
        cohorts.setdefault(row["cohort"], []).append(row)
    months = sorted({int(row["months_since_first"]) for row in mine})
    table_rows = []
    for cohort in sorted(cohorts, reverse=True):
        cells = [
            CohortCell(
                months_since_first=int(row["months_since_first"]),
                active=int(row["active"]),
                retention=row["retention"],
                ltv=row["ltv"],
                complete=bool(row["complete"]),
                # Month 0 is 100% by definition; shading it would drown the rest.
                retention_level=0
                if row["months_since_first"] == 0
                else heat_level(row["retention"], top_retention),
                ltv_level=heat_level(row["ltv"], top_ltv),
            )
            for row in sorted(cohorts[cohort], key=lambda r: int(r["months_since_first"]))
        ]
        table_rows.append(
            CohortRow(cohort=cohort, customers=int(cohorts[cohort][0]["customers"]), cells=cells)
        )
    return CohortTable(split=split, groups=groups, group=chosen, months=months, rows=table_rows)


# Subscriptions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContinuationTable:
    label: str
    rows: list[dict[str, Any]]  # delivery, reached, continued, stopped, rate, churn, survival


def continuation_tables(run: AnalyticsRun) -> list[ContinuationTable]:
    """定期 回数別継続率: all products first, then each product."""
    rows = kpi_table(run, "continuation") or []
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    ordered = sorted(groups, key=lambda g: (g is not None, g or ""))
    return [
        ContinuationTable(
            label="全商品" if group is None else str(group),
            rows=sorted(groups[group], key=lambda r: int(r["delivery"])),
        )
        for group in ordered
    ]


# The renewals the sBG page shows (the stored fit projects 12), and what a start cohort needs
# for a fit of its own.
SBG_SHOWN = (1, 2, 3, 5, 11)
SBG_MIN_COHORT = {
    "subscriptions": config.SBG_MIN_COHORT,
    "cancelled": config.SBG_MIN_CANCELLED,
    "renewals": config.SBG_MIN_RENEWALS,
}


def sbg_fits(run: AnalyticsRun) -> list[dict[str, Any]]:
    """sBG fits of 定期 continuation: the fit over all subscriptions first, then the start
    cohorts newest first, each with the projected retention at the renewals SBG_SHOWN and the
    share expected to remain after 12 renewals."""
    rows = kpi_table(run, "subscription_sbg") or []
    ordered = sorted(rows, key=lambda r: (r["cohort"] is not None, str(r["cohort"] or "")))
    everyone, cohorts = ordered[:1], ordered[1:]
    return [
        {
            **row,
            "label": "全体" if row["cohort"] is None else f"{row['cohort']} 開始",
            "shown": [(n + 1, row["retention"][n - 1]) for n in SBG_SHOWN],
            "remaining": row["survival"][-1],
        }
        for row in everyone + cohorts[::-1]
    ]


def churn_by_month(run: AnalyticsRun) -> list[dict[str, Any]]:
    """月次解約率, newest month first."""
    rows = kpi_table(run, "churn_month") or []
    return sorted(rows, key=lambda r: str(r["month"]), reverse=True)


# Predictions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bin:
    label: str
    customers: int
    share: float | None
    level: int


# (label, low inclusive, high exclusive); None = unbounded.
P_ALIVE_BINS: list[tuple[str, float | None, float | None]] = [
    (f"{low}〜{low + 10}%", low / 100, (low + 10) / 100 if low < 90 else None)
    for low in range(0, 100, 10)
]
PURCHASE_BINS: list[tuple[str, float | None, float | None]] = [
    ("0.25回未満", None, 0.25),
    ("0.25〜0.5回", 0.25, 0.5),
    ("0.5〜1回", 0.5, 1.0),
    ("1〜2回", 1.0, 2.0),
    ("2〜3回", 2.0, 3.0),
    ("3〜5回", 3.0, 5.0),
    ("5回以上", 5.0, None),
]
CLV_BINS: list[tuple[str, float | None, float | None]] = [
    ("1,000円未満", None, 1000),
    ("1,000〜3,000円", 1000, 3000),
    ("3,000〜5,000円", 3000, 5000),
    ("5,000〜1万円", 5000, 10_000),
    ("1万〜2万円", 10_000, 20_000),
    ("2万〜5万円", 20_000, 50_000),
    ("5万円以上", 50_000, None),
]


Bins = list[tuple[str, float | None, float | None]]


def _bin_counts(column: str, bins: Bins) -> dict[str, Any]:
    """Count() expressions, one per bin of `column` and one for customers without a value."""
    counts: dict[str, Any] = {}
    for i, (_, low, high) in enumerate(bins):
        condition = Q(**{f"{column}__isnull": False})
        if low is not None:
            condition &= Q(**{f"{column}__gte": low})
        if high is not None:
            condition &= Q(**{f"{column}__lt": high})
        counts[f"{column}_{i}"] = Count("id", filter=condition)
    counts[f"{column}_missing"] = Count("id", filter=Q(**{f"{column}__isnull": True}))
    return counts


def _bins(found: dict[str, Any], column: str, bins: Bins) -> list[Bin]:
    """The counted bins; customers without a value are a last bin (予測なし) when there are any."""
    values = [(label, int(found[f"{column}_{i}"] or 0)) for i, (label, _, _) in enumerate(bins)]
    if found[f"{column}_missing"]:
        values.append(("予測なし", int(found[f"{column}_missing"])))
    total = sum(n for _, n in values)
    top = max((n for _, n in values), default=0)
    return [
        Bin(label, n, round(n / total, 6) if total else None, heat_level(n, top))
        for label, n in values
    ]


@dataclass(frozen=True)
class PredictionSummary:
    p_alive: list[Bin]
    expected_purchases: list[Bin]
    clv_12m: list[Bin]


def prediction_histograms(run: AnalyticsRun) -> PredictionSummary | None:
    """Distributions of P(alive), expected purchases and 12-month CLV in `run`, counted in one
    pass over the run's rows; None when its per-customer rows are no longer kept.

    Kept in the cache per run: a finished run's rows never change, and counting them takes
    about a second at a million customers, on every view of the predictions page."""
    if not run.customer_rows_kept:
        return None
    if run.status != RunStatus.DONE:
        return _count_predictions(run)
    key = f"kizuna:analytics:prediction-histograms:{run.pk}"
    summary: PredictionSummary | None = cache.get(key)
    if summary is None:
        summary = _count_predictions(run)
        cache.set(key, summary, PREDICTION_HISTOGRAMS_SECONDS)
    return summary


PREDICTION_HISTOGRAMS_SECONDS = 24 * 3600


def _count_predictions(run: AnalyticsRun) -> PredictionSummary:
    columns: dict[str, Bins] = {
        "p_alive": P_ALIVE_BINS,
        "expected_purchases": PURCHASE_BINS,
        "clv_12m": CLV_BINS,
    }
    counts: dict[str, Any] = {}
    for column, bins in columns.items():
        counts.update(_bin_counts(column, bins))
    found = CustomerScore.objects.filter(run=run).aggregate(**counts)
    return PredictionSummary(
        **{column: _bins(found, column, bins) for column, bins in columns.items()}
    )


def top_customers_by_clv(run: AnalyticsRun) -> QuerySet[CustomerScore]:
    """The run's customers by 12-month CLV, highest first (with the customer for names)."""
    return (
        CustomerScore.objects.filter(run=run, clv_12m__isnull=False)
        .select_related("customer")
        .order_by("-clv_12m", "customer_id")
    )


# Segment export ------------------------------------------------------------------------------


def segment_label(kind: str, code: str) -> str | None:
    """The Japanese name of a CPM or RFM segment code, None when the code is unknown."""
    if kind == SegmentCount.Kind.CPM:
        return CPM_SEGMENTS.get(code)
    if kind == SegmentCount.Kind.RFM:
        return RFM_SEGMENTS.get(code)
    return None


def scores_page(
    run: AnalyticsRun, *, segment: str | None, after: int | None, limit: int
) -> list[CustomerScore]:
    """Up to `limit` per-customer rows of a run by customer id after `after`, optionally in
    one CPM or RFM segment (the codes of the two kinds are distinct)."""
    scores = CustomerScore.objects.filter(run=run)
    if segment in CPM_SEGMENTS:
        scores = scores.filter(cpm_segment=segment)
    elif segment is not None:
        scores = scores.filter(rfm_segment=segment)
    if after is not None:
        scores = scores.filter(customer_id__gt=after)
    return list(scores.order_by("customer_id")[:limit])


@dataclass(frozen=True)
class ModelSummary:
    code: str  # "bgnbd", "mbgnbd", "pareto" ("" when the run has no model)
    label: str
    params: list[tuple[str, float]]
    spend_params: list[tuple[str, float]]
    log_likelihood: float | None
    customers: int | None
    converged: bool
    horizon_days: float | None
    error: str


_FIT_FACTS = ("log_likelihood", "n_customers", "converged")


def model_summary(run: AnalyticsRun) -> ModelSummary:
    """The fitted purchase and spend models of a run (AnalyticsRun.predictions) for display."""
    info = run.predictions or {}
    params = info.get("params") or {}
    spend = info.get("spend_params") or {}
    labels = dict(AnalyticsSettings.Model.choices)
    return ModelSummary(
        code=str(info.get("model", "")),
        label=str(labels.get(info.get("model", ""), info.get("model", ""))),
        params=[(k, float(v)) for k, v in params.items() if k not in _FIT_FACTS],
        spend_params=[(k, float(v)) for k, v in spend.items() if k not in _FIT_FACTS],
        log_likelihood=params.get("log_likelihood"),
        customers=params.get("n_customers"),
        converged=bool(params.get("converged", False)),
        horizon_days=info.get("horizon_days"),
        error=str(info.get("error", "")),
    )


# --- customer-count dynamics and fan indicators (web/analytics_dynamics.py) --------------------
# The stored tables are described in docs/analytics.md (「顧客数の推移・予測」「ファン化指標」).


@dataclass(frozen=True)
class DynamicsMonth:
    month: str
    partial: bool
    counts: list[int]  # customers per CPM segment (CPM_SEGMENTS order) at the month end
    active: int
    total: int
    revenue: int


@dataclass(frozen=True)
class CauseRow:
    label: str
    partial: bool
    start: int
    new: int
    became_f2: int
    moved_up: int
    lapsed: int
    reactivated: int
    end: int

    @property
    def active_change(self) -> int:
        """The month's change in 現役 customers (for a month's "all" row, whose causes are
        customer counts): new and reactivated customers join, lapsed ones leave."""
        return self.new + self.reactivated - self.lapsed


@dataclass(frozen=True)
class ForecastMonth:
    month: str
    counts: list[float]
    active: float
    total: float
    revenue: int


@dataclass(frozen=True)
class BacktestView:
    origin: str
    months: list[str]
    rows: list[tuple[str, float, int, float | None]]  # month, forecast total, actual, error
    segment_errors: list[tuple[str, float | None]]  # (segment label, MAPE)
    mape_total: float | None
    mape_active: float | None
    mape_revenue: float | None


@dataclass(frozen=True)
class DynamicsView:
    segments: list[tuple[str, str]]  # (code, label)
    months: list[DynamicsMonth]
    causes: list[CauseRow]  # per month: customers moved by each cause
    latest_month: str
    latest_changes: list[CauseRow]  # per segment, net change by cause in the latest month
    transition_months: list[str]
    transitions: list[tuple[str, list[float]]]  # (from label, probabilities per to-segment)
    forecast_origin: str
    forecast: list[ForecastMonth]
    forecast_revenue: int
    backtest: BacktestView | None


def _active_mask() -> list[bool]:
    return [not code.endswith("_lapsed") for code in CPM_SEGMENTS]


def _cause_row(row: dict[str, Any], label: str) -> CauseRow:
    return CauseRow(
        label=label,
        partial=bool(row["partial"]),
        start=row["start"],
        new=row["new"],
        became_f2=row["became_f2"],
        moved_up=row["moved_up"],
        lapsed=row["lapsed"],
        reactivated=row["reactivated"],
        end=row["end"],
    )


def _backtest_view(stored: dict[str, Any] | None) -> BacktestView | None:
    if not stored or not stored.get("available"):
        return None
    active = _active_mask()
    rows = []
    for month, predicted, actual in zip(
        stored["months"], stored["forecast"], stored["actual"], strict=True
    ):
        f = sum(v for v, a in zip(predicted, active, strict=True) if a)
        n = sum(v for v, a in zip(actual, active, strict=True) if a)
        rows.append((month, round(f, 1), n, round(abs(f - n) / n, 6) if n else None))
    return BacktestView(
        origin=stored["origin"],
        months=stored["months"],
        rows=rows,
        segment_errors=[(CPM_SEGMENTS[code], stored["mape"][code]) for code in CPM_SEGMENTS],
        mape_total=stored["mape_total"],
        mape_active=stored["mape_active"],
        mape_revenue=stored["mape_revenue"],
    )


def customer_dynamics(run: AnalyticsRun) -> DynamicsView | None:
    """Counts per CPM segment per month, the causes of change, the transition matrix, the
    forecast and its back-test, from one run (None for a run made before they existed)."""
    monthly = kpi_table(run, "cpm_monthly")
    changes = kpi_table(run, "cpm_changes")
    transitions = kpi_table(run, "cpm_transitions")
    forecast = kpi_table(run, "cpm_forecast")
    if monthly is None or changes is None or transitions is None or forecast is None:
        return None
    codes = list(CPM_SEGMENTS)
    active = _active_mask()
    by_month: dict[str, dict[str, Any]] = {}
    for row in monthly:
        entry = by_month.setdefault(
            row["month"], {"partial": row["partial"], "counts": {}, "revenue": 0}
        )
        entry["counts"][row["segment"]] = row["customers"]
        entry["revenue"] += row["revenue"]
    months = []
    for month, entry in by_month.items():
        counts = [entry["counts"].get(code, 0) for code in codes]
        months.append(
            DynamicsMonth(
                month=month,
                partial=entry["partial"],
                counts=counts,
                active=sum(n for n, a in zip(counts, active, strict=True) if a),
                total=sum(counts),
                revenue=entry["revenue"],
            )
        )
    causes = [_cause_row(row, row["month"]) for row in changes if row["segment"] == "all"]
    latest = causes[-1].label if causes else ""
    latest_changes = [
        _cause_row(row, CPM_SEGMENTS[row["segment"]])
        for row in changes
        if row["month"] == latest and row["segment"] != "all"
    ]
    model = forecast["model"]
    forecast_months = []
    for month, counts, revenue in zip(
        forecast["months"], forecast["counts"], forecast["revenue"], strict=True
    ):
        forecast_months.append(
            ForecastMonth(
                month=month,
                counts=counts,
                active=round(sum(n for n, a in zip(counts, active, strict=True) if a), 1),
                total=round(sum(counts), 1),
                revenue=sum(revenue),
            )
        )
    return DynamicsView(
        segments=list(CPM_SEGMENTS.items()),
        months=months,
        causes=causes,
        latest_month=latest,
        latest_changes=latest_changes,
        transition_months=transitions["months"],
        transitions=[
            (CPM_SEGMENTS[code], row)
            for code, row in zip(codes, transitions["probabilities"], strict=True)
        ],
        forecast_origin=model["origin"],
        forecast=forecast_months,
        forecast_revenue=sum(m.revenue for m in forecast_months),
        backtest=_backtest_view(kpi_table(run, "cpm_forecast_backtest")),
    )


@dataclass(frozen=True)
class WhatIfMonth:
    month: str
    base_active: int  # people, rounded to whole customers
    changed_active: int
    base_revenue: int
    changed_revenue: int

    @property
    def active_difference(self) -> int:
        return self.changed_active - self.base_active

    @property
    def revenue_difference(self) -> int:
        return self.changed_revenue - self.base_revenue


@dataclass(frozen=True)
class WhatIfView:
    before: str
    after: str
    probability_before: float
    probability_after: float
    months: list[WhatIfMonth]
    # label, base, changed, difference at the horizon, in whole customers
    segments: list[tuple[str, int, int, int]]
    base_revenue: int
    changed_revenue: int

    @property
    def revenue_difference(self) -> int:
        return self.changed_revenue - self.base_revenue


def forecast_what_if(run: AnalyticsRun, *, before: str, after: str, points: float) -> WhatIfView:
    """The stored forecast with P(before → after) changed by `points` percentage points (the
    rest of the row rescaled). Raises WhatIfError (Japanese) for a change that cannot be made
    or when the run holds no forecast. The one computation a page asks for: twelve products of
    a 10×10 matrix, from the model stored with the run."""
    # Imported here, the one selector that computes: every other page and the API read stored
    # rows, and their processes should not load numpy and the pipeline for them.
    import numpy as np

    from kizuna.analytics.pipeline.dynamics import MarkovModel, what_if

    stored = kpi_table(run, "cpm_forecast")
    if stored is None:
        raise WhatIfError("この分析結果には予測がありません。分析を実行し直してください")
    model = MarkovModel.from_json(stored["model"], settings=run.settings)
    result = what_if(model, {(before, after): points / 100})
    active = np.array(_active_mask())
    a, b = list(CPM_SEGMENTS).index(before), list(CPM_SEGMENTS).index(after)
    base, changed = result.base, result.changed
    months = [
        WhatIfMonth(
            month=month,
            base_active=round(float(base.counts[h, active].sum())),
            changed_active=round(float(changed.counts[h, active].sum())),
            base_revenue=round(float(base.revenue[h].sum())),
            changed_revenue=round(float(changed.revenue[h].sum())),
        )
        for h, month in enumerate(base.months)
    ]
    last = len(base.months) - 1
    # People are shown as whole customers; a difference is that of the numbers shown, so a row
    # reads 1,011人 → 1,012人 (+1人), not a fraction of a customer.
    segments = []
    for s, label in enumerate(CPM_SEGMENTS.values()):
        was, now = round(float(base.counts[last, s])), round(float(changed.counts[last, s]))
        segments.append((label, was, now, now - was))
    return WhatIfView(
        before=CPM_SEGMENTS[before],
        after=CPM_SEGMENTS[after],
        probability_before=float(model.probabilities[a, b]),
        probability_after=float(result.probabilities[a, b]),
        months=months,
        segments=segments,
        base_revenue=sum(m.base_revenue for m in months),
        changed_revenue=sum(m.changed_revenue for m in months),
    )


@dataclass(frozen=True)
class FanValue:
    label: str
    customers: int
    loyal: int
    lapsed: int
    loyal_rate: float | None
    loyal_rate_others: float | None
    difference: float | None
    difference_low: float | None
    difference_high: float | None
    odds_ratio: float | None
    share_of_loyal: float | None
    share_of_lapsed: float | None

    @property
    def difference_text(self) -> str:
        """The difference in 優良 rate in points with its 95% interval: "+12.3(+5.0〜+19.6)"."""
        if self.difference is None:
            return "—"
        text = f"{self.difference * 100:+.1f}"
        if self.difference_low is not None and self.difference_high is not None:
            text += f"({self.difference_low * 100:+.1f}〜{self.difference_high * 100:+.1f})"
        return text


@dataclass(frozen=True)
class FanBehaviour:
    label: str
    cramers_v: float
    strength: str
    p_value: float | None
    summary: str
    values: list[FanValue]


@dataclass(frozen=True)
class FanView:
    judge_days: int
    window_days: int
    loyal: int
    lapsed: int
    behaviours: list[FanBehaviour]


def _strength(v: float) -> str:
    """Cramér's V in words (Cohen's conventions for a 2-column table)."""
    if v >= 0.5:
        return "とても強い"
    if v >= 0.3:
        return "強い"
    if v >= 0.1:
        return "中程度〜弱い"
    return "ほとんど差なし"


# A value needs this many customers before the page's one-line summary leads with it (a rate
# from a handful of customers is noise however large it looks).
FAN_SUMMARY_MIN_CUSTOMERS = 30


def _headline_value(values: list[FanValue]) -> FanValue | None:
    """The value with the highest 優良 rate among those with enough customers (values arrive
    sorted by rate), else the most common value."""
    for value in values:
        if value.customers >= FAN_SUMMARY_MIN_CUSTOMERS:
            return value
    return max(values, key=lambda v: v.customers, default=None)


def _fan_summary(behaviour: str, value: FanValue | None) -> str:
    if value is None or value.loyal_rate is None or value.loyal_rate_others is None:
        return "比べられる顧客がいません。"
    text = (
        f"{behaviour}が「{value.label}」の顧客は {value.loyal_rate * 100:.1f}% が優良客になり、"
        f"それ以外の顧客({value.loyal_rate_others * 100:.1f}%)より "
        f"{(value.difference or 0) * 100:+.1f} ポイント"
    )
    if value.difference_low is not None and value.difference_high is not None:
        text += (
            f"(95%信頼区間 {value.difference_low * 100:+.1f}〜{value.difference_high * 100:+.1f})"
        )
    if value.odds_ratio is not None:
        text += f"、オッズ比 {value.odds_ratio:.2f} 倍"
    return text + "。"


def fan_indicators(run: AnalyticsRun) -> FanView | None:
    """The early behaviours ranked by how well they separate 優良 from lapsed customers."""
    stored = kpi_table(run, "fan_indicators")
    if stored is None:
        return None
    channels = dict(AcquisitionChannel.choices)
    behaviours = []
    for b in stored["behaviours"]:
        values = [
            FanValue(
                label=channels.get(v["label"], v["label"])
                if b["behaviour"] == "channel"
                else v["label"],
                customers=v["customers"],
                loyal=v["loyal"],
                lapsed=v["lapsed"],
                loyal_rate=v["loyal_rate"],
                loyal_rate_others=v["loyal_rate_others"],
                difference=v["difference"],
                difference_low=v["difference_low"],
                difference_high=v["difference_high"],
                odds_ratio=v["odds_ratio"],
                share_of_loyal=v["share_of_loyal"],
                share_of_lapsed=v["share_of_lapsed"],
            )
            for v in b["values"]
        ]
        v_value = float(b["cramers_v"] or 0.0)
        behaviours.append(
            FanBehaviour(
                label=b["label"],
                cramers_v=v_value,
                strength=_strength(v_value),
                p_value=b["p_value"],
                summary=_fan_summary(b["label"], _headline_value(values)),
                values=values,
            )
        )
    return FanView(
        judge_days=stored["judge_days"],
        window_days=stored["window_days"],
        loyal=stored["loyal"],
        lapsed=stored["lapsed"],
        behaviours=behaviours,
    )
