"""顧客分析 pages: what each page shows from a real (small) pipeline run, the empty state before
the first run, starting a run and following its progress, the settings form, and the CSV export
of a segment's customers."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from kizuna.accounts.models import Role
from kizuna.analytics import selectors
from kizuna.analytics.models import (
    AnalyticsRun,
    AnalyticsSettings,
    CustomerScore,
    RunStatus,
    SegmentCount,
)
from kizuna.analytics.pipeline.segments import CPM_SEGMENTS
from kizuna.analytics.tasks import analytics_nightly, analytics_run
from kizuna.core.models import AuditLog
from tests.analytics_shop import Shop, build_varied_shop, kpi, run

pytestmark = pytest.mark.django_db
AS_OF = dt.date(2025, 6, 30)
EARLIER = dt.date(2025, 3, 31)
SNAPSHOT_PAGES = [
    "analytics:dashboard",
    "analytics:repeat",
    "analytics:cohorts",
    "analytics:subscriptions",
    "analytics:predictions",
]

ClientFor = Callable[[Role], Client]


@pytest.fixture
def snapshot() -> AnalyticsRun:
    build_varied_shop()
    return run(AS_OF)


def _html(client: Client, name: str, **params: str) -> str:
    response = client.get(reverse(name), params)
    assert response.status_code == 200
    return response.content.decode()


def test_a_run_of_a_day_not_yet_over_says_up_to_when_it_counts(
    client_for: ClientFor, snapshot: AnalyticsRun
) -> None:
    # given: the run was started on its 基準日 itself, at 06:48 Japan time (from the page)
    started = dt.datetime(
        AS_OF.year, AS_OF.month, AS_OF.day, 6, 48, tzinfo=dt.timezone(dt.timedelta(hours=9))
    )
    AnalyticsRun.objects.filter(pk=snapshot.pk).update(started_at=started)
    html = _html(client_for(Role.ANALYST), "analytics:dashboard")
    # then the page does not claim the whole day's purchases
    assert "その日の 23:59 までの購入" not in html
    assert f"({AS_OF:%Y-%m-%d} 06:48 までの購入)" in html
    # and a run started after the day ended does
    AnalyticsRun.objects.filter(pk=snapshot.pk).update(started_at=started + dt.timedelta(days=1))
    assert "その日の 23:59 までの購入" in _html(client_for(Role.ANALYST), "analytics:dashboard")


# --- empty state ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SNAPSHOT_PAGES)
def test_before_the_first_run_every_page_says_how_to_run_the_analysis(
    client_for: ClientFor, name: str
) -> None:
    html = _html(client_for(Role.ANALYST), name)
    assert "まだ分析結果がありません" in html
    assert "今すぐ分析を実行" in html
    assert reverse("analytics:runs") in html
    # staff read the way to do it in the UI, not a command they have no terminal for
    assert "kizuna " not in html


def test_the_menu_offers_analytics_to_the_roles_that_may_open_it(client_for: ClientFor) -> None:
    assert reverse("analytics:dashboard") in _html(client_for(Role.MARKETER), "web:home")
    assert reverse("analytics:dashboard") not in _html(client_for(Role.OPERATOR), "web:home")


# --- dashboard --------------------------------------------------------------------------------


def test_the_dashboard_shows_the_runs_headline_and_all_ten_cpm_segments(
    client_for: ClientFor, snapshot: AnalyticsRun
) -> None:
    response = client_for(Role.ANALYST).get(reverse("analytics:dashboard"))
    html = response.content.decode()
    headline = kpi(snapshot, "headline")
    assert isinstance(headline, dict)
    assert f"{headline['customers']:,}" in html
    assert f"¥{headline['revenue']:,}" in html
    # the same card writes money one way: ¥, not ¥ above and 円 below
    assert f"顧客あたり ¥{round(headline['revenue_per_customer']):,}" in html
    stored = dict(
        SegmentCount.objects.filter(run=snapshot, kind="cpm").values_list("segment", "customers")
    )
    shown = {row.code: row.customers for row in response.context["cpm"]}
    assert shown == {code: stored.get(code, 0) for code in CPM_SEGMENTS}
    for label in CPM_SEGMENTS.values():
        assert label in html
    assert "2025年6月30日" in html  # the run's as-of
    assert "前回の分析がないため" in html


def test_the_dashboard_compares_each_segment_with_the_previous_run(
    client_for: ClientFor,
) -> None:
    build_varied_shop()
    before = run(EARLIER)
    latest = run(AS_OF)
    response = client_for(Role.MARKETER).get(reverse("analytics:dashboard"))
    old = dict(
        SegmentCount.objects.filter(run=before, kind="cpm").values_list("segment", "customers")
    )
    new = dict(
        SegmentCount.objects.filter(run=latest, kind="cpm").values_list("segment", "customers")
    )
    changes = {row.code: row.change for row in response.context["cpm"]}
    assert changes == {code: new.get(code, 0) - old.get(code, 0) for code in CPM_SEGMENTS}
    assert any(changes.values()), "the two as-of days should differ somewhere"
    assert "2025年3月31日" in response.content.decode()


def test_a_rerun_of_the_same_day_still_compares_with_the_day_before(
    client_for: ClientFor,
) -> None:
    build_varied_shop()
    before = run(EARLIER)
    run(AS_OF)
    run(AS_OF)  # started again by hand the same day
    response = client_for(Role.MARKETER).get(reverse("analytics:dashboard"))
    assert response.context["previous"] == before
    assert any(row.change for row in response.context["cpm"])
    assert "2025年3月31日" in response.content.decode()


def test_the_rf_grid_has_every_cell_with_its_stored_count(
    client_for: ClientFor, snapshot: AnalyticsRun
) -> None:
    response = client_for(Role.ANALYST).get(reverse("analytics:dashboard"))
    grid = response.context["grid"]
    assert [row.r for row in grid] == [5, 4, 3, 2, 1]
    cells = {cell.code: cell.customers for row in grid for cell in row.cells}
    assert len(cells) == 25
    stored = dict(
        SegmentCount.objects.filter(run=snapshot, kind="rf").values_list("segment", "customers")
    )
    assert {code: n for code, n in cells.items() if n} == {
        code: n for code, n in stored.items() if n
    }
    assert sum(cells.values()) == snapshot.customers


# --- repeat, cohorts, subscriptions, predictions ----------------------------------------------


def _pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def test_the_repeat_page_shows_conversion_per_cohort_and_window(
    client_for: ClientFor, snapshot: AnalyticsRun
) -> None:
    response = client_for(Role.ANALYST).get(reverse("analytics:repeat"))
    html = response.content.decode()
    rows = kpi(snapshot, "f_conversion")
    assert isinstance(rows, list)
    shown = {c.cohort: c for c in response.context["conversion"]}  # the newest cohorts
    row = next(r for r in rows if r["cohort"] in shown and r["f2"])
    cell = shown[row["cohort"]].cells[response.context["windows"].index(row["window_days"])]
    assert cell.rates["f2"] == row["f2_rate"]
    assert _pct(row["f2_rate"]) in html
    for heading in ("F2 / F3 / F4 転換率", "引き上げ率", "リピート率"):
        assert heading in html
    overall = kpi(snapshot, "f_conversion_overall")
    assert isinstance(overall, list)
    assert _pct(overall[0]["f2_rate"]) in html


@pytest.mark.parametrize(
    ("page", "figures"),
    [
        ("analytics:dashboard", "購入・売上の集計と CPM・RFM セグメント"),
        ("analytics:repeat", "転換率・引き上げ率・リピート率"),
        ("analytics:cohorts", "継続率と累計 LTV"),
        ("analytics:predictions", "生存確率・予測購入回数・CLV"),
        ("analytics:fans", "ファン化指標"),
        ("analytics:dynamics", "顧客数の推移と予測"),
    ],
)
def test_each_page_of_a_shop_without_purchases_says_there_is_no_data(
    client_for: ClientFor, page: str, figures: str
) -> None:
    # given a finished run of a shop that has no orders yet
    assert run(AS_OF).customers == 0
    # then the page says so, naming what it cannot show yet, instead of empty tables, zeros
    # (顧客あたり 0円) and 直近0か月; the dashboard still tells what was run
    html = _html(client_for(Role.ANALYST), page)
    assert "データがありません" in html
    assert f"までに購入がないため、{figures}はまだ出せません" in html
    assert reverse("analytics:runs") in html
    assert "顧客あたり" not in html
    assert "直近0か月" not in html
    tables = html.count("<table")
    assert tables == (1 if page == "analytics:dashboard" else 0)


def test_the_repeat_page_without_trial_customers_heads_the_upgrade_table_without_0_months(
    client_for: ClientFor,
) -> None:
    # given a shop whose customers never started with a trial product
    shop = Shop()
    customer = shop.customer()
    for day in (dt.date(2025, 1, 10), dt.date(2025, 3, 1)):
        shop.buy(customer, day, 3000)
    run(AS_OF)
    html = _html(client_for(Role.ANALYST), "analytics:repeat")
    assert "トライアル商品から始まった顧客がいないため" in html
    assert "直近0か月" not in html
    assert "データがありません" not in html


def test_cohorts_split_by_channel_show_the_channels_japanese_names(
    client_for: ClientFor, snapshot: AnalyticsRun
) -> None:
    client = client_for(Role.MARKETER)
    html = _html(client, "analytics:cohorts", split="channel", group="line")
    assert "LINE" in html
    response = client.get(reverse("analytics:cohorts"), {"split": "channel", "group": "line"})
    table = response.context["table"]
    assert table.group == "line"
    stored = [r for r in kpi(snapshot, "cohorts:channel") if r["group"] == "line"]  # type: ignore[union-attr]
    first = table.rows[-1]  # the oldest cohort comes last
    expected = [r for r in stored if r["cohort"] == first.cohort]
    assert [c.retention for c in first.cells] == [
        r["retention"] for r in sorted(expected, key=lambda r: r["months_since_first"])
    ]


def test_an_unknown_cohort_split_falls_back_to_all(
    client_for: ClientFor, snapshot: AnalyticsRun
) -> None:
    response = client_for(Role.ANALYST).get(reverse("analytics:cohorts"), {"split": "nope"})
    assert response.status_code == 200
    assert response.context["split"] == "all"


def test_the_subscriptions_page_shows_continuation_and_churn(
    client_for: ClientFor, snapshot: AnalyticsRun
) -> None:
    response = client_for(Role.ANALYST).get(reverse("analytics:subscriptions"))
    html = response.content.decode()
    rows = kpi(snapshot, "continuation")
    assert isinstance(rows, list)
    overall = [r for r in rows if r["group"] is None]
    assert response.context["continuation"][0].label == "全商品"
    assert response.context["continuation"][0].rows == sorted(overall, key=lambda r: r["delivery"])
    assert "回数別継続率" in html
    assert "月次解約率" in html


def test_the_subscriptions_page_shows_the_sbg_fit_of_every_subscription(
    client_for: ClientFor, snapshot: AnalyticsRun
) -> None:
    response = client_for(Role.ANALYST).get(reverse("analytics:subscriptions"))
    stored = kpi(snapshot, "subscription_sbg")
    assert isinstance(stored, list)
    everyone = next(r for r in stored if r["cohort"] is None)
    shown = response.context["sbg"][0]
    assert (shown["label"], shown["alpha"], shown["beta"]) == (
        "全体",
        everyone["alpha"],
        everyone["beta"],
    )
    # the columns are the projected retention into boxes 2, 3, 4, 6 and 12
    assert [n for n, _ in shown["shown"]] == [2, 3, 4, 6, 12]
    assert shown["shown"][0][1] == everyone["retention"][0]
    assert "継続の予測(sBG モデル)" in response.content.decode()


def test_the_predictions_page_counts_every_customer_once_and_ranks_by_clv(
    client_for: ClientFor, snapshot: AnalyticsRun
) -> None:
    response = client_for(Role.MARKETER).get(reverse("analytics:predictions"))
    histograms = response.context["histograms"]
    for bins in (histograms.p_alive, histograms.expected_purchases, histograms.clv_12m):
        assert sum(b.customers for b in bins) == snapshot.customers
    top = list(response.context["top"])
    best = CustomerScore.objects.filter(run=snapshot).order_by("-clv_12m").first()
    assert best is not None
    assert top[0].customer_id == best.customer_id
    html = response.content.decode()
    assert reverse("web:customer_detail", args=[best.customer_id]) in html
    assert "当てはめたモデル" in html
    assert "BG/NBD" in html


def test_a_finished_runs_prediction_histograms_are_counted_once(
    snapshot: AnalyticsRun, django_assert_num_queries: Any
) -> None:
    # given: the page counted them once (about a second over a million customers)
    first = selectors.prediction_histograms(snapshot)
    # when: the page is viewed again
    with django_assert_num_queries(0):
        again = selectors.prediction_histograms(snapshot)
    # then: the same distributions, without reading the run's rows again
    assert again == first


def test_analysts_see_customer_ids_but_no_names_or_links(
    client_for: ClientFor, snapshot: AnalyticsRun
) -> None:
    best = CustomerScore.objects.filter(run=snapshot).order_by("-clv_12m").first()
    assert best is not None
    name = f"{best.customer.family_name} {best.customer.given_name}"
    html = _html(client_for(Role.ANALYST), "analytics:predictions")
    assert f"顧客ID {best.customer_id}" in html
    assert "/customers/" not in html
    assert name not in html
    assert name in _html(client_for(Role.MARKETER), "analytics:predictions")


# --- runs and progress ------------------------------------------------------------------------


def test_the_run_button_queues_one_run_and_the_page_polls_its_progress(
    client_for: ClientFor,
) -> None:
    build_varied_shop()
    client = client_for(Role.ANALYST)
    response = client.post(reverse("analytics:run_start"), follow=True)
    html = response.content.decode()
    queued = AnalyticsRun.objects.get()
    assert (queued.status, queued.trigger) == (RunStatus.QUEUED, "web")
    assert queued.requested_by == "analyst-user"
    assert DBTaskResult.objects.filter(
        task_path=analytics_run.module_path, status="READY", args_kwargs__args=[queued.pk]
    ).exists()
    assert "分析の実行を受け付けました" in html
    progress_url = reverse("analytics:run_progress", args=[queued.pk])
    assert f'hx-get="{progress_url}"' in html
    assert "待機中" in html

    # A second press while the first is waiting starts nothing.
    again = client.post(reverse("analytics:run_start"), follow=True)
    assert AnalyticsRun.objects.count() == 1
    assert "すでに実行中" in again.content.decode()

    # The worker carries it out; the polled fragment then shows the end and stops polling.
    analytics_run.call(queued.pk)
    fragment = client.get(progress_url, headers={"HX-Request": "true"}).content.decode()
    assert "完了" in fragment
    assert "100%" in fragment
    assert "hx-get" not in fragment
    assert AnalyticsRun.objects.get().requested_by == "analyst-user"


def test_the_nightly_run_is_started_and_stopped_from_the_runs_page(
    client_for: ClientFor,
) -> None:
    client = client_for(Role.MARKETER)
    nightly = DBTaskResult.objects.filter(task_path=analytics_nightly.module_path, status="READY")
    assert "設定されていません" in _html(client, "analytics:runs")

    # Starting it queues one run for 02:00 JST, and the page says when.
    started = client.post(reverse("analytics:run_nightly"), {"on": "1"}, follow=True)
    waiting = nightly.get()
    expected = timezone.localtime(waiting.run_after)
    assert (expected.hour, expected.minute) == (2, 0)
    html = started.content.decode()
    assert "毎晩の自動実行を設定しました" in html
    assert f"{expected:%Y-%m-%d %H:%M}" in html
    assert "毎晩の自動実行をやめる" in html
    # a second press (two tabs) does not make the analysis run twice a night
    client.post(reverse("analytics:run_nightly"), {"on": "1"})
    assert nightly.count() == 1

    # Stopping withdraws the waiting run; the page offers to start it again.
    stopped = client.post(reverse("analytics:run_nightly"), {"on": "0"}, follow=True)
    assert not nightly.exists()
    assert "毎晩の自動実行をやめました" in stopped.content.decode()
    assert "毎晩の自動実行を始める" in stopped.content.decode()


def test_a_failed_run_shows_its_message(client_for: ClientFor) -> None:
    failed = AnalyticsRun.objects.create(
        as_of=AS_OF, backend="duckdb", status=RunStatus.FAILED, message="予測: 収束しませんでした"
    )
    html = _html(client_for(Role.MARKETER), "analytics:runs")
    assert "失敗" in html
    assert "予測: 収束しませんでした" in html
    fragment = client_for(Role.MARKETER).get(reverse("analytics:run_progress", args=[failed.pk]))
    assert "分析に失敗しました: 予測: 収束しませんでした" in fragment.content.decode()


def test_progress_of_an_unknown_run_is_404(client_for: ClientFor) -> None:
    assert (
        client_for(Role.ANALYST).get(reverse("analytics:run_progress", args=[999])).status_code
        == 404
    )


# --- settings ---------------------------------------------------------------------------------


def _settings_post(**changes: object) -> dict[str, object]:
    row = AnalyticsSettings.load()
    data: dict[str, object] = {
        name: getattr(row, name)
        for name in (
            "rfm_method",
            "recency_days",
            "frequency_counts",
            "monetary_yen",
            "cpm_lapse_days",
            "cpm_toddler_tenure_days",
            "cpm_loyal_tenure_days",
            "cpm_amount_yen",
            "windows_days",
            "prediction_model",
            "prediction_horizon_days",
            "keep_customer_runs",
            "nightly_backend",
        )
    }
    data.update(changes)
    return data


def test_settings_are_saved_and_audited(client_for: ClientFor) -> None:
    response = client_for(Role.ANALYST).post(
        reverse("analytics:settings"),
        _settings_post(windows_days="30、９０", cpm_lapse_days=180),
        follow=True,
    )
    assert "分析設定を保存しました" in response.content.decode()
    row = AnalyticsSettings.load()
    assert (row.cpm_lapse_days, row.to_config().windows_days) == (180, (30, 90))
    audit = AuditLog.objects.get(action="analytics_settings.update")
    assert audit.actor_label == "analyst-user"
    assert audit.changes["cpm_lapse_days"] == [240, 180]


def test_amounts_are_read_with_thousands_commas_and_full_width_digits(
    client_for: ClientFor,
) -> None:
    for typed, stored in (("70,000", 70_000), ("８０，０００", 80_000), ("９０", 90)):
        response = client_for(Role.ANALYST).post(
            reverse("analytics:settings"),
            _settings_post(cpm_amount_yen=typed, cpm_toddler_tenure_days="９０"),
        )
        assert response.status_code == 302, typed
        row = AnalyticsSettings.load()
        assert (row.cpm_amount_yen, row.cpm_toddler_tenure_days) == (stored, 90)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"recency_days": "30,abc"}, "整数をカンマ区切りで入力してください"),
        ({"frequency_counts": "5,3,2,10"}, "小さい順に"),
        ({"cpm_toddler_tenure_days": 300}, "よちよち"),
        ({"cpm_lapse_days": ""}, "このフィールドは必須です"),
        # a window listed twice was counted twice (対象 doubled, two 30日以内 columns)
        ({"windows_days": "30,30,60"}, "期間(日)は小さい順に、重複なく"),
        ({"windows_days": "60,30"}, "期間(日)は小さい順に、重複なく"),
        ({"windows_days": "30,99999"}, "1〜3,650日の範囲"),
        ({"monetary_yen": "-1,0,1,2"}, "M(累計購入金額)の閾値は0以上"),
        ({"prediction_horizon_days": 99_999}, "予測期間は1〜3,650日の範囲"),
        ({"prediction_horizon_days": 0}, "予測期間は1〜3,650日の範囲"),
    ],
)
def test_unusable_settings_are_refused_in_japanese_and_nothing_changes(
    client_for: ClientFor, changes: dict[str, object], message: str
) -> None:
    before = AnalyticsSettings.load()
    response = client_for(Role.ADMIN).post(reverse("analytics:settings"), _settings_post(**changes))
    assert response.status_code == 400
    assert message in response.content.decode()
    if "期間" in message or "0以上" in message:  # shown on the field it is about
        (field,) = changes
        assert message in str(response.context["form"].errors[field])
    after = AnalyticsSettings.load()
    assert (after.recency_days, after.frequency_counts, after.cpm_toddler_tenure_days) == (
        before.recency_days,
        before.frequency_counts,
        before.cpm_toddler_tenure_days,
    )
    assert (after.windows_days, after.monetary_yen) == (before.windows_days, before.monetary_yen)
    assert not AuditLog.objects.filter(action="analytics_settings.update").exists()


def test_every_unusable_setting_is_shown_at_once_beside_its_field(
    client_for: ClientFor,
) -> None:
    # given a form with four mistakes in different fields
    response = client_for(Role.ADMIN).post(
        reverse("analytics:settings"),
        _settings_post(
            recency_days="30,abc",
            frequency_counts="5,3,2,10",
            windows_days="30,30",
            cpm_toddler_tenure_days=300,
            prediction_horizon_days=99_999,
        ),
    )
    # then the page names each of them, not only the first, so one correction round is enough
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "整数をカンマ区切り" in str(errors["recency_days"])
    assert "F(購入回数)の閾値は小さい順に" in str(errors["frequency_counts"])
    assert "小さい順に、重複なく" in str(errors["windows_days"])
    assert "予測期間は1〜3,650日" in str(errors["prediction_horizon_days"])
    assert "よちよち客の上限 < 優良客の下限" in errors["__all__"][0]
    assert not AuditLog.objects.filter(action="analytics_settings.update").exists()


def test_marketers_may_not_change_the_settings(client_for: ClientFor) -> None:
    response = client_for(Role.MARKETER).post(reverse("analytics:settings"), _settings_post())
    assert response.status_code == 403
    assert "分析設定" not in _html(client_for(Role.MARKETER), "analytics:runs").split("<h1>")[0]


# --- CSV export -------------------------------------------------------------------------------


def _read_csv(content: bytes) -> list[list[str]]:
    text = content.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))


def test_the_export_holds_exactly_the_segments_customers_and_is_audited(
    client_for: ClientFor, snapshot: AnalyticsRun
) -> None:
    code = (
        SegmentCount.objects.filter(run=snapshot, kind="cpm", customers__gt=0)
        .order_by("-customers")
        .values_list("segment", flat=True)
        .first()
    )
    assert code is not None
    response = client_for(Role.MARKETER).post(
        reverse("analytics:segment_export", args=["cpm", code])
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = _read_csv(b"".join(response.streaming_content))  # type: ignore[attr-defined]
    assert rows[0][:4] == ["顧客ID", "姓", "名", "CPMセグメント"]
    expected = CustomerScore.objects.filter(run=snapshot, cpm_segment=code).order_by("customer_id")
    assert [int(r[0]) for r in rows[1:]] == [s.customer_id for s in expected]
    assert {r[3] for r in rows[1:]} == {CPM_SEGMENTS[code]}
    first = expected.first()
    assert first is not None
    assert rows[1][9] == str(first.total_spend)
    audit = AuditLog.objects.get(action="analytics.segment_export")
    assert audit.changes == {"segment": [None, f"cpm:{code}"], "rows": [None, len(rows) - 1]}


def test_an_unknown_segment_is_404_and_get_is_refused(
    client_for: ClientFor, snapshot: AnalyticsRun
) -> None:
    client = client_for(Role.MARKETER)
    assert client.post(reverse("analytics:segment_export", args=["cpm", "nope"])).status_code == 404
    assert client.post(reverse("analytics:segment_export", args=["rf", "R5F5"])).status_code == 404
    assert (
        client.get(reverse("analytics:segment_export", args=["cpm", "first_active"])).status_code
        == 405
    )
    assert not AuditLog.objects.filter(action="analytics.segment_export").exists()


def test_analysts_may_not_export_customers(client_for: ClientFor, snapshot: AnalyticsRun) -> None:
    url = reverse("analytics:segment_export", args=["cpm", "first_active"])
    assert client_for(Role.ANALYST).post(url).status_code == 403
    assert url not in _html(client_for(Role.ANALYST), "analytics:dashboard")
    assert url in _html(client_for(Role.MARKETER), "analytics:dashboard")


# --- engines this install can run ---------------------------------------------------------------


def _without_java(monkeypatch: pytest.MonkeyPatch) -> None:
    import kizuna.analytics.models as analytics_models

    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(analytics_models.shutil, "which", lambda name: None)


def test_an_engine_this_install_cannot_run_is_refused_saying_which_it_can(
    client_for: ClientFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a server without Java, where Spark cannot start
    _without_java(monkeypatch)
    # when an admin picks PySpark as the nightly engine
    response = client_for(Role.ADMIN).post(
        reverse("analytics:settings"), _settings_post(nightly_backend="pyspark")
    )
    # then the form refuses it beside the field, saying why and what this server can use
    assert response.status_code == 400
    error = str(response.context["form"].errors["nightly_backend"])
    assert "PySpark はこのサーバーでは使えません" in error
    assert "Java" in error
    assert "使えるエンジン: DuckDB(標準・このサーバー内)" in error
    assert AnalyticsSettings.load().nightly_backend == "duckdb"
    assert not AuditLog.objects.filter(action="analytics_settings.update").exists()


def test_postgresql_engine_is_refused_on_an_sqlite_install(client_for: ClientFor) -> None:
    from django.db import connection

    response = client_for(Role.ADMIN).post(
        reverse("analytics:settings"), _settings_post(nightly_backend="postgres")
    )
    if connection.vendor == "postgresql":
        assert response.status_code == 302
        assert AnalyticsSettings.load().nightly_backend == "postgres"
    else:
        assert response.status_code == 400
        error = str(response.context["form"].errors["nightly_backend"])
        assert "業務データベースが PostgreSQL のときだけ使えます" in error
        assert "このサーバーのデータベース: SQLite" in error
        assert "PostgreSQL(業務DB上で計算)" not in error.split("使えるエンジン:")[1]
        assert AnalyticsSettings.load().nightly_backend == "duckdb"


def test_the_settings_service_refuses_an_engine_this_install_cannot_run(
    users: dict[Role, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.exceptions import ValidationError

    from kizuna.analytics.services import analytics_settings_update

    _without_java(monkeypatch)
    with pytest.raises(ValidationError, match="PySpark はこのサーバーでは使えません"):
        analytics_settings_update(
            changes={"nightly_backend": "pyspark"}, acting_user=users[Role.ADMIN]
        )
    assert AnalyticsSettings.load().nightly_backend == "duckdb"


def test_a_run_failing_before_its_first_step_names_the_engine_without_empty_brackets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kizuna.analytics.pipeline import backends
    from kizuna.analytics.pipeline.run import AnalyticsRunError

    # given a server without Java, and a run on PySpark (as the nightly setting saved earlier)
    _without_java(monkeypatch)

    def no_spark(*args: object, **kwargs: object) -> None:
        raise backends.BackendUnavailableError("Java gateway process exited")

    monkeypatch.setattr(backends, "connect", no_spark)
    with pytest.raises(AnalyticsRunError):
        run(AS_OF, "pyspark")
    # then staff read the engine's name and why, with no 「()」 for a step that never started
    message = AnalyticsRun.objects.latest("id").message
    assert message == (
        "分析の実行に失敗しました: PySpark はこのサーバーでは使えません。"
        "Spark に必要な Java がインストールされていません"
    )


def test_the_runs_table_names_engines_and_starters_as_staff_read_them(
    client_for: ClientFor,
) -> None:
    # given runs started by the demo, from the page, by the nightly task and by a command
    for backend, trigger, who in (
        ("duckdb", "demo", "system:demo"),
        ("postgres", "web", "analyst-user"),
        ("pyspark", "nightly", "system:analytics-nightly"),
        ("duckdb", "command", ""),
    ):
        AnalyticsRun.objects.create(
            as_of=AS_OF,
            backend=backend,
            trigger=trigger,
            requested_by=who,
            status=RunStatus.FAILED,
            message="x",
        )
    html = _html(client_for(Role.MARKETER), "analytics:runs")
    cells = html.split("<tbody>")[1]
    # then the engine, how it started and who started it are words, not codes
    for shown in (
        "DuckDB(標準・このサーバー内)",
        "PostgreSQL(業務DB上で計算)",
        "PySpark",
        "デモ作成",
        "画面から",
        "夜間実行",
        "コマンド",
        "システム(デモデータ)",
        "システム(夜間の分析)",
        "analyst-user",
    ):
        assert shown in cells, shown
    for code in ("<td>duckdb</td>", "<td>postgres</td>", ">demo<", ">web<", "system:demo"):
        assert code not in cells, code


def test_the_dashboard_names_the_engine_of_its_snapshot(
    snapshot: AnalyticsRun, client_for: ClientFor
) -> None:
    html = _html(client_for(Role.ANALYST), "analytics:dashboard")
    assert "計算エンジン DuckDB(標準・このサーバー内)" in html
    assert "<dd>DuckDB(標準・このサーバー内)</dd>" in html
    assert "<dd>duckdb</dd>" not in html


@pytest.mark.parametrize(
    ("field", "typed", "message"),
    [
        ("cpm_lapse_days", "-5", "離脱とみなす日数は1〜3,650日の範囲で指定してください"),
        (
            "cpm_lapse_days",
            "99999999999999999999",
            "離脱とみなす日数は1〜3,650日の範囲で指定してください",
        ),
        (
            "cpm_toddler_tenure_days",
            "-1",
            "よちよち客の在籍期間は1〜3,650日の範囲で指定してください",
        ),
        (
            "cpm_loyal_tenure_days",
            "9223372036854775808",
            "優良客の在籍期間は1〜3,650日の範囲で指定してください",
        ),
        (
            "cpm_amount_yen",
            "-70,000",
            "累計購入金額の閾値は0〜1,000,000,000円の範囲で指定してください",
        ),
        (
            "cpm_amount_yen",
            "99999999999999999999",
            "累計購入金額の閾値は0〜1,000,000,000円の範囲で指定してください",
        ),
        ("prediction_horizon_days", "-1", "予測期間は1〜3,650日の範囲で指定してください"),
        (
            "keep_customer_runs",
            "-3",
            "顧客別スナップショットの保持回数は1〜100回の範囲で指定してください",
        ),
        (
            "keep_customer_runs",
            "99999999999999999999",
            "顧客別スナップショットの保持回数は1〜100回の範囲で指定してください",
        ),
    ],
)
def test_a_number_out_of_range_gets_the_fields_own_range_message(
    client_for: ClientFor, field: str, typed: str, message: str
) -> None:
    response = client_for(Role.ADMIN).post(
        reverse("analytics:settings"), _settings_post(**{field: typed})
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert [str(e) for e in errors[field]] == [message]
    html = response.content.decode()
    assert "9223372036854775807" not in html
    assert "この値は" not in html
    assert not AuditLog.objects.filter(action="analytics_settings.update").exists()


def test_the_settings_service_gives_the_same_range_message(users: dict[Role, Any]) -> None:
    from django.core.exceptions import ValidationError

    from kizuna.analytics.services import analytics_settings_update

    with pytest.raises(ValidationError) as caught:
        analytics_settings_update(changes={"cpm_lapse_days": 10**20}, acting_user=users[Role.ADMIN])
    assert caught.value.message_dict == {
        "cpm_lapse_days": ["離脱とみなす日数は1〜3,650日の範囲で指定してください"]
    }


def _run_with_rf_grid(method: str, cells: dict[str, int]) -> AnalyticsRun:
    done = AnalyticsRun.objects.create(
        as_of=AS_OF,
        backend="duckdb",
        status=RunStatus.DONE,
        customers=sum(cells.values()),
        settings={"rfm_method": method, "cpm_lapse_days": 240},
    )
    for code, n in cells.items():
        SegmentCount.objects.create(
            run=done, as_of=AS_OF, kind=SegmentCount.Kind.RF, segment=code, customers=n, revenue=0
        )
    return done


def test_the_dashboard_warns_when_quantile_cut_points_collapse(client_for: ClientFor) -> None:
    # given quantile scores where most customers bought once or twice: F2 and F3 are empty
    # and every 2-purchase customer got F4
    _run_with_rf_grid(
        "quantile",
        {f"R{r}F{f}": 10 * r for r in range(1, 6) for f in (1, 4, 5)},
    )
    html = _html(client_for(Role.MARKETER), "analytics:dashboard")
    # then the caption does not promise five equal parts, and the page says which scores are
    # empty and suggests fixed thresholds
    assert "分位数で5等分" not in html
    assert "同じ値の顧客は必ず同じ点になる" in html
    warning = html.split('id="rfm-empty-scores"', 1)[1].split("</div>", 1)[0]
    assert "F2・F3 に当てはまる顧客がいません" in warning
    assert "固定の閾値" in warning


def test_no_warning_when_every_score_has_customers(client_for: ClientFor) -> None:
    _run_with_rf_grid("quantile", {f"R{r}F{f}": 3 for r in range(1, 6) for f in range(1, 6)})
    html = _html(client_for(Role.MARKETER), "analytics:dashboard")
    assert 'id="rfm-empty-scores"' not in html


def test_the_predictions_page_warns_about_one_time_buyers_under_bgnbd_only(
    snapshot: AnalyticsRun, client_for: ClientFor
) -> None:
    # given the default model, BG/NBD, where one-time buyers are always alive
    assert snapshot.predictions["model"] == "bgnbd"
    html = _html(client_for(Role.MARKETER), "analytics:predictions")
    warning = html.split('id="bgnbd-one-time-buyers"', 1)[1].split("</div>", 1)[0]
    assert "1 回だけ購入したお客様" in warning
    assert "MBG/NBD" in warning
    assert "分析設定" in warning
    # and under MBG/NBD the caveat does not apply
    snapshot.predictions = {**snapshot.predictions, "model": "mbgnbd"}
    snapshot.save(update_fields=["predictions"])
    html = _html(client_for(Role.MARKETER), "analytics:predictions")
    assert 'id="bgnbd-one-time-buyers"' not in html
