"""顧客分析 snapshots, read-only: runs, segment counts, KPI tables and per-customer scores.

Everything is read from stored snapshots (kizuna.analytics.selectors); nothing is computed on
a request. Reads name a finished run: the latest one, or the latest of a day with `as_of`.
Keys need the `analytics:read` scope. Definitions of every table: docs/analytics.md.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from django.http import HttpRequest
from ninja import Path, Query, Router, Schema
from ninja.decorators import decorate_view
from pydantic import Field

from kizuna.accounts.models import ApiScope
from kizuna.analytics import selectors
from kizuna.analytics.models import AnalyticsRun, CustomerScore
from kizuna.analytics.pipeline.segments import CPM_SEGMENTS, RFM_SEGMENTS
from kizuna.api.auth import ApiKeyAuth
from kizuna.api.errors import ApiError
from kizuna.api.query import known_query
from kizuna.api.schemas import ObjectId, chars
from kizuna.api.v1.responses import read_errors

router = Router(tags=["顧客分析"])
AUTH = ApiKeyAuth(ApiScope.ANALYTICS_READ)
RUNS_LIMIT_MAX = 100
SCORES_LIMIT_MAX = 1000

AsOf = Annotated[
    dt.date | None,
    Field(default=None, description="基準日(YYYY-MM-DD)。省略時は最新の完了した分析"),
]


class RunOut(Schema):
    id: int
    as_of: dt.date = Field(description="基準日(この日の 23:59:59 までの購入で計算)")
    status: Literal["queued", "running", "done", "failed"]
    backend: str = Field(description="計算エンジン(duckdb / postgres / pyspark)")
    trigger: str = Field(description="起動元(nightly / web / manual など)")
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    step: str = Field(description="実行中の処理")
    progress_percent: int = Field(ge=0, le=100)
    timings: dict[str, float] = Field(description="処理ごとの秒数")
    customers: int = Field(description="購入のある顧客数")
    purchases: int = Field(description="購入件数")
    settings: dict[str, Any] = Field(description="この実行で使った分析設定")
    predictions: dict[str, Any] = Field(description="当てはめた予測モデルとそのパラメータ")
    customer_rows_kept: bool = Field(description="顧客別スコアがまだ保存されているか")
    message: str = Field(description="失敗したときの理由")


class RunListOut(Schema):
    results: list[RunOut]
    next_cursor: int | None = Field(description="次のページの cursor(最後のページなら null)")


class RunPage(Schema):
    limit: int = Field(default=20, ge=1, le=RUNS_LIMIT_MAX, description="最大件数")
    cursor: ObjectId | None = Field(
        default=None, description="前のページの next_cursor(これより古い実行を返します)"
    )


class SegmentOut(Schema):
    code: str = Field(description="セグメントのコード(R×F は R5F1 など)")
    label: str = Field(description="表示名")
    customers: int
    revenue: int = Field(description="累計購入金額(円)")
    share: float | None = Field(description="顧客数の割合(0〜1)")


class SegmentsOut(Schema):
    run_id: int
    as_of: dt.date
    kind: Literal["cpm", "rfm", "rf"]
    segments: list[SegmentOut]


class SegmentQuery(Schema):
    kind: Literal["cpm", "rfm", "rf"] = Field(
        description="cpm: CPM 10区分 / rfm: RFMセグメント / rf: R×F の 25 マス"
    )
    as_of: AsOf


class AsOfQuery(Schema):
    as_of: AsOf


class KpiNamesOut(Schema):
    run_id: int
    as_of: dt.date
    names: list[str]


class KpiOut(Schema):
    run_id: int
    as_of: dt.date
    name: str
    rows: Any = Field(description="表の行(列は docs/analytics.md の各指標の節)")


class ScoreOut(Schema):
    customer_id: int
    run_id: int
    as_of: dt.date
    first_purchase_on: dt.date
    last_purchase_on: dt.date
    purchase_count: int
    total_spend: int
    avg_spend: int
    tenure_days: int
    days_since_last: int
    r_score: int
    f_score: int
    m_score: int
    rfm_segment: str
    cpm_segment: str
    expected_purchases: float | None
    p_alive: float | None
    expected_avg_spend: float | None
    clv_12m: float | None
    expected_next_purchase_on: dt.date | None


class ScoreListOut(Schema):
    run_id: int
    as_of: dt.date
    results: list[ScoreOut]
    next_cursor: int | None = Field(description="次のページの cursor(最後のページなら null)")


class ScoreQuery(Schema):
    segment: Annotated[str, chars(24, min_length=1)] | None = Field(
        default=None,
        description="CPM または RFM セグメントのコード(例: loyal_active、champions)",
    )
    limit: int = Field(default=100, ge=1, le=SCORES_LIMIT_MAX, description="最大件数")
    cursor: ObjectId | None = Field(
        default=None, description="前のページの next_cursor(この顧客IDより後を返します)"
    )
    as_of: AsOf


def _run_out(run: AnalyticsRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "as_of": run.as_of,
        "status": run.status,
        "backend": run.backend,
        "trigger": run.trigger,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "step": run.step,
        "progress_percent": run.progress_percent,
        "timings": run.timings,
        "customers": run.customers,
        "purchases": run.purchases,
        "settings": run.settings,
        "predictions": run.predictions,
        "customer_rows_kept": run.customer_rows_kept,
        "message": run.message,
    }


def _score_out(score: CustomerScore) -> dict[str, Any]:
    return {
        "customer_id": score.customer_id,
        "run_id": score.run_id,
        **{
            name: getattr(score, name)
            for name in ScoreOut.model_fields
            if name not in ("customer_id", "run_id")
        },
    }


def _finished_run(as_of: dt.date | None, *, with_customers: bool = False) -> AnalyticsRun:
    run = selectors.latest_run(as_of=as_of, with_customers=with_customers)
    if run is None:
        what = "顧客別スコアが残っている" if with_customers else ""
        day = "指定の基準日の" if as_of is not None else ""
        raise ApiError(404, "no_snapshot", f"{day}{what}完了した分析がありません")
    return run


@router.get(
    "/analytics/runs",
    response={200: RunListOut, **read_errors()},
    auth=AUTH,
    summary="分析の実行を新しい順に一覧する",
)
@decorate_view(known_query(RunPage))
def list_analytics_runs(request: HttpRequest, query: Query[RunPage]) -> dict[str, Any]:
    """実行中・失敗を含むすべての実行。次のページは `cursor` に前の応答の `next_cursor` を指定します。"""
    runs = selectors.recent_runs()
    if query.cursor is not None:
        runs = runs.filter(id__lt=query.cursor)
    found = list(runs[: query.limit + 1])
    page = found[: query.limit]
    return {
        "results": [_run_out(run) for run in page],
        "next_cursor": page[-1].pk if len(found) > query.limit else None,
    }


@router.get(
    "/analytics/runs/{run_id}",
    response={200: RunOut, **read_errors()},
    auth=AUTH,
    summary="分析の実行を1件取得する",
)
def get_analytics_run(request: HttpRequest, run_id: Path[ObjectId]) -> dict[str, Any]:
    run = AnalyticsRun.objects.filter(pk=run_id).first()
    if run is None:
        raise ApiError(404, "not_found", "分析の実行が見つかりません")
    return _run_out(run)


@router.get(
    "/analytics/segments",
    response={200: SegmentsOut, **read_errors()},
    auth=AUTH,
    summary="セグメント別の顧客数と金額を取得する",
)
@decorate_view(known_query(SegmentQuery))
def list_analytics_segments(request: HttpRequest, query: Query[SegmentQuery]) -> dict[str, Any]:
    """CPM と RFM は顧客のいないセグメントも 0 人として含みます(表示順)。"""
    run = _finished_run(query.as_of)
    rows = selectors.segment_counts(run, query.kind)
    return {
        "run_id": run.pk,
        "as_of": run.as_of,
        "kind": query.kind,
        "segments": [
            {
                "code": row.code,
                "label": row.label,
                "customers": row.customers,
                "revenue": row.revenue,
                "share": row.share,
            }
            for row in rows
        ],
    }


@router.get(
    "/analytics/kpis",
    response={200: KpiNamesOut, **read_errors()},
    auth=AUTH,
    summary="KPI 表の名前を一覧する",
)
@decorate_view(known_query(AsOfQuery))
def list_analytics_kpis(request: HttpRequest, query: Query[AsOfQuery]) -> dict[str, Any]:
    run = _finished_run(query.as_of)
    return {"run_id": run.pk, "as_of": run.as_of, "names": selectors.kpi_names(run)}


@router.get(
    "/analytics/kpis/{name}",
    response={200: KpiOut, **read_errors()},
    auth=AUTH,
    summary="KPI 表を1つ取得する",
)
@decorate_view(known_query(AsOfQuery))
def get_analytics_kpi(
    request: HttpRequest,
    name: Path[Annotated[str, chars(64, min_length=1)]],
    query: Query[AsOfQuery],
) -> dict[str, Any]:
    """`headline`、`f_conversion`、`cohorts:all` など(名前は GET /analytics/kpis)。"""
    run = _finished_run(query.as_of)
    rows = selectors.kpi_table(run, name)
    if rows is None:
        raise ApiError(
            404,
            "unknown_kpi",
            "この名前の KPI 表はありません。名前は GET /api/v1/analytics/kpis で確認できます",
        )
    return {"run_id": run.pk, "as_of": run.as_of, "name": name, "rows": rows}


@router.get(
    "/analytics/customers/{customer_id}/scores",
    response={200: ScoreOut, **read_errors()},
    auth=AUTH,
    summary="顧客1人の最新の分析スコアを取得する",
)
def get_customer_scores(request: HttpRequest, customer_id: Path[ObjectId]) -> dict[str, Any]:
    """顧客別スコアが残っている最新の分析から返します。その分析の時点で購入のない顧客は 404 です。"""
    run = _finished_run(None, with_customers=True)
    score = selectors.customer_score(customer_id, run=run)
    if score is None:
        raise ApiError(
            404, "not_found", "この顧客の分析スコアはありません(購入がないか、顧客がいません)"
        )
    return _score_out(score)


@router.get(
    "/analytics/scores",
    response={200: ScoreListOut, **read_errors()},
    auth=AUTH,
    summary="顧客別の分析スコアを顧客ID順に一覧する",
)
@decorate_view(known_query(ScoreQuery))
def list_analytics_scores(request: HttpRequest, query: Query[ScoreQuery]) -> dict[str, Any]:
    """`segment` で CPM または RFM の 1 セグメントに絞れます。次のページは `cursor` に前の応答の
    `next_cursor` を指定します。"""
    if query.segment is not None and query.segment not in {*CPM_SEGMENTS, *RFM_SEGMENTS}:
        raise ApiError(
            422,
            "invalid_request",
            "入力内容に誤りがあります",
            {"segment": "CPM または RFM セグメントのコードを指定してください(例: loyal_active)"},
        )
    run = _finished_run(query.as_of, with_customers=True)
    found = selectors.scores_page(
        run, segment=query.segment, after=query.cursor, limit=query.limit + 1
    )
    page = found[: query.limit]
    return {
        "run_id": run.pk,
        "as_of": run.as_of,
        "results": [_score_out(score) for score in page],
        "next_cursor": page[-1].customer_id if len(found) > query.limit else None,
    }
