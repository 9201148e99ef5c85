"""顧客分析 pages: the latest snapshot's segments and KPIs, the runs with a start button and a
polled progress display, the analytics settings, and a CSV export of a segment's customers.

Everything shown comes from the stored snapshot through `kizuna.analytics.selectors`; these
views only pick the run, page the tables and render. Marketers and analysts read the pages;
the export holds customers' names (marketers, admins), the settings change every later run
(analysts, admins).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role
from kizuna.analytics import selectors
from kizuna.analytics.models import AnalyticsRun, AnalyticsSettings, SegmentCount
from kizuna.analytics.services import (
    SETTINGS_FIELDS,
    analytics_settings_update,
    segment_export_rows,
)
from kizuna.analytics.tasks import (
    enqueue_run,
    nightly_queued_at,
    schedule_nightly,
    unschedule_nightly,
)
from kizuna.core.paging import Paginator
from kizuna.core.spreadsheet import csv_lines
from kizuna.web.http import HtmxHttpRequest, int_or_text, posted
from kizuna.web.templatetags.kizuna import jdatetime

READ_ROLES = (Role.MARKETER, Role.ANALYST)
EXPORT_ROLES = (Role.MARKETER,)
SETTINGS_ROLES = (Role.ANALYST,)
COHORTS_PER_PAGE = 12
CUSTOMERS_PER_PAGE = 50
RUNS_PER_PAGE = 20


def _page(request: HtmxHttpRequest, rows: Any, per_page: int) -> Any:
    return Paginator(rows, per_page).get_page(request.GET.get("page"))


def _latest(request: HtmxHttpRequest, **extra: Any) -> dict[str, Any]:
    """The context every snapshot page starts from: the latest finished run (None before the
    first one, which the pages show as the empty state) and any run still going."""
    run = selectors.latest_run()
    return {
        "run": run,
        "run_labels": selectors.run_labels(run) if run is not None else None,
        "in_progress": selectors.run_in_progress(),
        **extra,
    }


@allow_roles(*READ_ROLES)
@never_cache
@require_GET
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    context = _latest(request, current="dashboard")
    run: AnalyticsRun | None = context["run"]
    if run is not None:
        context.update(
            headline=selectors.kpi_table(run, "headline") or {},
            previous=selectors.previous_run(run),
            cpm=selectors.segments_with_change(run, SegmentCount.Kind.CPM),
            rfm=selectors.segments_with_change(run, SegmentCount.Kind.RFM),
            grid=selectors.rf_grid(run),
            empty_scores=selectors.empty_scores(run),
            timings=selectors.run_timings(run),
        )
    return render(request, "analytics/dashboard.html", context)


@allow_roles(*READ_ROLES)
@never_cache
@require_GET
def repeat(request: HtmxHttpRequest) -> HttpResponse:
    context = _latest(request, current="repeat")
    run: AnalyticsRun | None = context["run"]
    if run is not None:
        context.update(
            windows=selectors.windows_of(run),
            overall=selectors.kpi_table(run, "f_conversion_overall") or [],
            upgrade_overall=selectors.kpi_table(run, "upgrade_overall") or [],
            conversion=_page(request, selectors.f_conversion_by_cohort(run), COHORTS_PER_PAGE),
            upgrade=selectors.upgrade_by_cohort(run)[:COHORTS_PER_PAGE],
            repeat_year=selectors.kpi_table(run, "repeat_rate_year") or [],
            repeat_month=list(reversed(selectors.kpi_table(run, "repeat_rate_month") or []))[
                :COHORTS_PER_PAGE
            ],
        )
    return render(request, "analytics/repeat.html", context)


@allow_roles(*READ_ROLES)
@never_cache
@require_GET
def cohorts(request: HtmxHttpRequest) -> HttpResponse:
    split = request.GET.get("split", "all")
    if split not in selectors.COHORT_SPLITS:
        split = "all"
    context = _latest(
        request,
        current="cohorts",
        split=split,
        split_label=selectors.COHORT_SPLITS[split],
        splits=selectors.COHORT_SPLITS,
    )
    run: AnalyticsRun | None = context["run"]
    if run is not None:
        table = selectors.cohort_table(run, split, request.GET.get("group"))
        context.update(
            table=table,
            rows=_page(request, table.rows if table else [], COHORTS_PER_PAGE),
            # The pager keeps the chosen split and group.
            query=urlencode({"split": split, "group": table.group or ""}) + "&" if table else "",
        )
    return render(request, "analytics/cohorts.html", context)


@allow_roles(*READ_ROLES)
@never_cache
@require_GET
def subscriptions(request: HtmxHttpRequest) -> HttpResponse:
    context = _latest(request, current="subscriptions")
    run: AnalyticsRun | None = context["run"]
    if run is not None:
        context.update(
            continuation=selectors.continuation_tables(run),
            sbg=selectors.sbg_fits(run),
            sbg_min=selectors.SBG_MIN_COHORT,
            churn=_page(request, selectors.churn_by_month(run), COHORTS_PER_PAGE),
        )
    return render(request, "analytics/subscriptions.html", context)


@allow_roles(*READ_ROLES)
@never_cache
@require_GET
def predictions(request: HtmxHttpRequest) -> HttpResponse:
    context = _latest(request, current="predictions")
    run: AnalyticsRun | None = context["run"]
    if run is not None:
        context.update(
            model=selectors.model_summary(run),
            histograms=selectors.prediction_histograms(run),
            top=_page(request, selectors.top_customers_by_clv(run), CUSTOMERS_PER_PAGE),
        )
    return render(request, "analytics/predictions.html", context)


# --- runs -------------------------------------------------------------------------------------


@allow_roles(*READ_ROLES)
@never_cache
@require_GET
def runs(request: HtmxHttpRequest) -> HttpResponse:
    context = _latest(
        request,
        current="runs",
        runs=_page(request, selectors.recent_runs(), RUNS_PER_PAGE),
        engine=AnalyticsSettings.load().get_nightly_backend_display(),
        nightly_at=nightly_queued_at(),
    )
    context["rows"] = [(r, selectors.run_labels(r)) for r in context["runs"]]
    progress = context["in_progress"]
    context["progress"] = selectors.run_progress(progress.pk) if progress else None
    return render(request, "analytics/runs.html", context)


@allow_roles(*READ_ROLES)
@never_cache
@require_POST
def run_start(request: HtmxHttpRequest) -> HttpResponse:
    """Queue a run as of today with the shop's engine for the worker; one at a time."""
    going = selectors.run_in_progress()
    if going is not None:
        messages.error(request, "分析はすでに実行中(または待機中)です。終わるまでお待ちください。")
    else:
        enqueue_run(
            as_of=None,
            backend=AnalyticsSettings.load().nightly_backend,
            trigger="web",
            requested_by=request.user.get_username(),
        )
        messages.success(
            request,
            "分析の実行を受け付けました。バックグラウンド処理が順に実行します。",
        )
    return redirect("analytics:runs")


@allow_roles(*READ_ROLES)
@never_cache
@require_POST
def run_nightly(request: HtmxHttpRequest) -> HttpResponse:
    """Start (on=1) or stop (on=0) the nightly run of the previous day's analysis."""
    if request.POST.get("on") == "1":
        when = schedule_nightly() or nightly_queued_at()
        if when is not None:
            messages.success(
                request,
                f"毎晩の自動実行を設定しました。次回は {jdatetime(when)} に前日分を実行します。",
            )
    elif unschedule_nightly():
        messages.success(
            request, "毎晩の自動実行をやめました。分析は「今すぐ分析を実行」で行えます。"
        )
    return redirect("analytics:runs")


@allow_roles(*READ_ROLES)
@never_cache
@require_GET
def run_progress(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The progress of one run; htmx polls it until the run is done or has failed."""
    progress = selectors.run_progress(pk)
    if progress is None:
        raise Http404("この実行は見つかりません")
    return render(request, "analytics/_progress.html", {"progress": progress})


# --- settings ---------------------------------------------------------------------------------


class AnalyticsSettingsForm(forms.ModelForm[AnalyticsSettings]):
    """The model's fields with its Japanese labels and help; the model's clean() checks the
    combination (order of thresholds, よちよち < 優良 …) with the same rules the run uses."""

    class Meta:
        model = AnalyticsSettings
        fields = SETTINGS_FIELDS
        widgets = {"rfm_method": forms.RadioSelect}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            if isinstance(field, forms.IntegerField):
                # The range is the model's (AnalyticsSettings.clean_fields), with each field's
                # own message, not the form's generic 「この値は 0 以上…」.
                field.validators = []
                field.min_value = field.max_value = None
                field.widget.attrs.pop("min", None)
                field.widget.attrs.pop("max", None)
        if self.is_bound:
            # Numbers as every form of Kizuna reads them (web.http.int_or_text): the page says
            # full-width digits are fine, and an amount is typed as 70,000 or ７０，０００.
            data = dict(self.data.items())
            for name, field in self.fields.items():
                if isinstance(field, forms.IntegerField) and name in data:
                    data[name] = str(int_or_text(data[name]))
            self.data = data


@allow_roles(*SETTINGS_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def settings(request: HtmxHttpRequest) -> HttpResponse:
    row = AnalyticsSettings.load()
    form = AnalyticsSettingsForm(posted(request), instance=row)
    if request.method == "POST":
        if form.is_valid():
            changes = {name: form.cleaned_data[name] for name in SETTINGS_FIELDS}
            try:
                analytics_settings_update(changes=changes, acting_user=request.user)
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                messages.success(request, "分析設定を保存しました。次の分析の実行から使われます。")
                return redirect("analytics:settings")
        context = {"form": form, "current": "settings"}
        return render(request, "analytics/settings.html", context, status=400)
    return render(request, "analytics/settings.html", {"form": form, "current": "settings"})


# --- export -----------------------------------------------------------------------------------


@allow_roles(*EXPORT_ROLES)
@never_cache
@require_POST
def segment_export(request: HtmxHttpRequest, kind: str, code: str) -> StreamingHttpResponse:
    """A CPM or RFM segment's customers in the latest run that keeps per-customer rows, as
    CSV (the export is audited first)."""
    run = selectors.latest_run(with_customers=True)
    if run is None or selectors.segment_label(kind, code) is None:
        raise Http404("このセグメントの顧客別データはありません")
    rows = segment_export_rows(run=run, kind=kind, code=code, acting_user=request.user)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response = StreamingHttpResponse(csv_lines(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="analytics-{kind}-{code}-{run.as_of:%Y%m%d}-{stamp}.csv"'
    )
    return response
