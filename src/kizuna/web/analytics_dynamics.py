"""顧客数の推移・予測 and ファン化指標 pages.

The dynamics page shows the latest snapshot's counts per CPM segment per month (a table and an
inline SVG chart drawn here, no chart scripts), the causes of each month's change, the
12-month forecast with its back-test error, and a what-if form: htmx posts the form to the same
URL and gets back the changed forecast (or the form with a Japanese error). The fans page
ranks early behaviours by how well they separate 優良客 from lapsed customers.
Everything comes from the stored snapshot through `kizuna.analytics.selectors`.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass
from typing import Any

from django import forms
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role
from kizuna.analytics import selectors
from kizuna.analytics.pipeline.config import ODDS_RATIO_MIN_CUSTOMERS
from kizuna.analytics.pipeline.segments import CPM_SEGMENTS, WhatIfError
from kizuna.web.http import HtmxHttpRequest, wants_fragment

READ_ROLES = (Role.MARKETER, Role.ANALYST)
POINTS_LIMIT = 100.0

# One colour per CPM stage, light to dark up the ladder (現役 only are drawn).
STAGE_COLOURS = {
    "first": "#c6dbef",
    "toddler": "#9ecae1",
    "steady": "#4292c6",
    "trendy": "#fd8d3c",
    "loyal": "#d94801",
}
CHART_WIDTH, CHART_HEIGHT, CHART_TOP, CHART_BOTTOM = 760, 260, 10, 30


def _parse_points(raw: str) -> float:
    """ "+5", "-2.5", "5pt", "+5ポイント" (full-width too) → 5.0 / -2.5 …"""
    text = unicodedata.normalize("NFKC", raw).strip()
    for unit in ("ポイント", "pt", "%"):
        text = text.removesuffix(unit).strip()
    try:
        return float(text)
    except ValueError as exc:
        raise forms.ValidationError("数値で入力してください(例: +5 や -3)") from exc


class WhatIfForm(forms.Form):
    before = forms.ChoiceField(label="移動元のセグメント", choices=list(CPM_SEGMENTS.items()))
    after = forms.ChoiceField(label="移動先のセグメント", choices=list(CPM_SEGMENTS.items()))
    points = forms.CharField(
        label="確率の変化(ポイント)",
        max_length=20,
        help_text="例: +5 は、移動元の顧客が 1 か月で移動先へ移る確率を 5 ポイント上げます",
    )

    def clean_points(self) -> float:
        value = _parse_points(self.cleaned_data["points"])
        if value == 0:
            raise forms.ValidationError("0 以外の値を入力してください")
        if not -POINTS_LIMIT <= value <= POINTS_LIMIT:
            raise forms.ValidationError("-100〜+100 ポイントの範囲で入力してください")
        return value


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    forecast: bool
    partial: bool
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, str]]
    top_label: str
    baseline: float
    legend: list[tuple[str, str]]
    note: str  # how to read the last actual month and the forecast bars


def _chart(view: selectors.DynamicsView, as_of: dt.date) -> Chart:
    """Stacked bars of 現役 customers per segment: the past months, then the forecast (paler).

    One bar per month. The forecast starts from the last closed month; when the as-of day is
    inside a month, that month is drawn once, as the actual count up to the as-of day (outlined
    and marked 途中), and its forecast (for the month end) is left to the forecast table."""
    active = [(i, code, label) for i, (code, label) in enumerate(view.segments) if "active" in code]
    actual = {m.month for m in view.months}
    columns: list[tuple[str, list[float], bool, bool]] = [
        (m.month, [float(n) for n in m.counts], False, m.partial) for m in view.months
    ]
    columns += [(f.month, f.counts, True, False) for f in view.forecast if f.month not in actual]
    top = max((sum(c[i] for i, _, _ in active) for _, c, _, _ in columns), default=0.0) or 1.0
    plot = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    step = CHART_WIDTH / max(len(columns), 1)
    day = f"{as_of.month}/{as_of.day}"
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    for n, (month, counts, is_forecast, partial) in enumerate(columns):
        x = n * step
        base = float(CHART_TOP + plot)
        kind = "予測" if is_forecast else (f"途中・{day}まで" if partial else "実績")
        for i, code, label in active:
            h = plot * counts[i] / top
            base -= h
            bars.append(
                Bar(
                    x=round(x + step * 0.1, 1),
                    y=round(base, 1),
                    width=round(step * 0.8, 1),
                    height=round(h, 1),
                    colour=STAGE_COLOURS[code.rsplit("_", 1)[0]],
                    forecast=is_forecast,
                    partial=partial,
                    title=f"{month}({kind}){label}: {counts[i]:,.0f}人",
                )
            )
        if n % 6 == 0:
            # kept clear of the edges so a centred label is not cut off
            centre = min(max(x + step / 2, 24.0), CHART_WIDTH - 24.0)
            labels.append((round(centre, 1), month))
    partial_months = [m.month for m in view.months if m.partial]
    drawn = [month for month, _, is_forecast, _ in columns if is_forecast]
    note = f"薄い色は予測({view.forecast_origin} 末までの実績から計算"
    if drawn:
        note += f"、{drawn[0]}〜{drawn[-1]}"
    note += ")"
    if partial_months:
        note = (
            f"点線で囲んだ {partial_months[-1]} は基準日 {day} までの途中の人数です(実績)。"
            f"{note}。{partial_months[-1]} 末の予測は下の「12 か月の予測」の表にあります"
        )
    return Chart(
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        bars=bars,
        labels=labels,
        top_label=f"{top:,.0f}人",
        baseline=CHART_TOP + plot,
        legend=[(label, STAGE_COLOURS[code.rsplit("_", 1)[0]]) for _, code, label in active],
        note=note,
    )


def _context(request: HtmxHttpRequest, current: str) -> dict[str, Any]:
    run = selectors.latest_run()
    return {
        "run": run,
        "run_labels": selectors.run_labels(run) if run is not None else None,
        "in_progress": selectors.run_in_progress(),
        "current": current,
    }


@allow_roles(*READ_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def dynamics(request: HtmxHttpRequest) -> HttpResponse:
    context = _context(request, "dynamics")
    run = context["run"]
    view = selectors.customer_dynamics(run) if run is not None else None
    form = WhatIfForm(
        request.POST if request.method == "POST" else None,
        initial={"before": "toddler_active", "after": "steady_active", "points": "+5"},
    )
    result = None
    if request.method == "POST" and form.is_valid():
        if run is None or view is None:
            form.add_error(None, "予測がまだありません。分析を実行してから試してください")
        else:
            try:
                result = selectors.forecast_what_if(
                    run,
                    before=form.cleaned_data["before"],
                    after=form.cleaned_data["after"],
                    points=form.cleaned_data["points"],
                )
            except WhatIfError as exc:
                form.add_error(None, str(exc))
    context.update(view=view, form=form, result=result)
    if view is not None:
        context["chart"] = _chart(view, run.as_of)
    if request.method == "POST" and wants_fragment(request):
        return render(request, "analytics/_what_if.html", context)
    return render(request, "analytics/dynamics.html", context)


@allow_roles(*READ_ROLES)
@never_cache
@require_GET
def fans(request: HtmxHttpRequest) -> HttpResponse:
    context = _context(request, "fans")
    run = context["run"]
    context["fans"] = selectors.fan_indicators(run) if run is not None else None
    context["min_customers"] = ODDS_RATIO_MIN_CUSTOMERS
    return render(request, "analytics/fans.html", context)
