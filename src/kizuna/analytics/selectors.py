"""Reads of the analytics snapshots for pages, segments and the API. Nothing here computes:
everything comes from the stored snapshot of a finished run."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from kizuna.analytics.models import AnalyticsRun, CustomerScore, KpiTable, RunStatus, SegmentCount
from kizuna.analytics.pipeline.compute import STEP_LABELS
from kizuna.analytics.pipeline.segments import CPM_SEGMENTS, RFM_SEGMENTS


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
