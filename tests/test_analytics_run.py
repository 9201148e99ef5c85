"""Running the analytics: progress and timings on the run row, retention of snapshots, failures
recorded with a reason, settings, the command, the nightly task and the reads pages use."""

from __future__ import annotations

import datetime as dt
import importlib
import re
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.apps import apps as django_apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from kizuna.analytics import selectors
from kizuna.analytics.models import (
    AnalyticsRun,
    AnalyticsSettings,
    CustomerScore,
    KpiTable,
    RunStatus,
    SegmentCount,
)
from kizuna.analytics.pipeline import run as run_module
from kizuna.analytics.pipeline.config import AnalyticsConfig, AsOfError
from kizuna.analytics.pipeline.run import AnalyticsRunError, run_analytics
from kizuna.analytics.tasks import (
    analytics_nightly,
    analytics_run,
    enqueue_run,
    next_nightly_time,
    schedule_nightly,
)
from tests.analytics_shop import ROBOT, Shop, run

pytestmark = pytest.mark.django_db
JST = ZoneInfo("Asia/Tokyo")
AS_OF = dt.date(2025, 6, 30)


def _small_shop() -> Shop:
    shop = Shop()
    for n in range(5):
        c = shop.customer()
        shop.buy(c, dt.date(2025, 1, 1 + n), 1000 * (n + 1))
        if n % 2:
            shop.buy(c, dt.date(2025, 5, 1 + n), 2000)
    return shop


def test_a_run_records_each_step_as_it_starts_and_its_timings() -> None:
    # given
    _small_shop()
    seen: list[tuple[str, str, int]] = []

    def on_step(name: str, index: int, total: int) -> None:
        # what a page polling the run row would see at this moment
        row = AnalyticsRun.objects.latest("id")
        seen.append((name, row.step, row.progress_percent))

    # when
    done = run_analytics(acting_user=ROBOT, as_of=AS_OF, on_step=on_step)
    # then every step was visible on the row as it started, in order, with rising progress
    names = [s[0] for s in seen]
    assert names == [
        "extract",
        "load",
        "summary",
        "predictions",
        "repeat",
        "cohorts",
        "subscriptions",
        "dynamics",
        "fans",
        "store",
    ]
    assert all(name == on_row for name, on_row, _ in seen)
    percents = [p for _, _, p in seen]
    assert percents == sorted(percents)
    assert percents[0] == 0
    assert percents[-1] < 100
    assert done.status == RunStatus.DONE
    assert done.progress_percent == 100
    assert set(done.timings) == set(names)
    assert all(seconds >= 0 for seconds in done.timings.values())
    assert (done.customers, done.purchases, done.requested_by) == (5, 7, ROBOT.label)
    assert done.settings["cpm_lapse_days"] == 240


def test_a_shop_without_orders_gets_an_empty_snapshot_not_an_error() -> None:
    done = run(AS_OF)
    assert done.status == RunStatus.DONE
    assert done.customers == 0
    assert KpiTable.objects.get(run=done, name="headline").rows["customers"] == 0
    assert "error" in done.predictions


def test_only_the_last_n_runs_keep_per_customer_rows_but_aggregates_stay() -> None:
    # given a shop that keeps two runs of per-customer rows
    _small_shop()
    settings = AnalyticsSettings.load()
    settings.keep_customer_runs = 2
    settings.save()
    # when three days are computed
    first, second, third = (run(AS_OF + dt.timedelta(days=n)) for n in range(3))
    # then the oldest lost its customer rows and kept its aggregates
    first.refresh_from_db()
    assert not first.customer_rows_kept
    assert not CustomerScore.objects.filter(run=first).exists()
    assert CustomerScore.objects.filter(run=second).count() == 5
    assert CustomerScore.objects.filter(run=third).count() == 5
    for each in (first, second, third):
        assert SegmentCount.objects.filter(run=each, kind="cpm").exists()
        assert KpiTable.objects.filter(run=each, name="f_conversion").exists()


def test_a_failing_step_marks_the_run_failed_with_the_step_and_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _small_shop()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("ディスクがいっぱいです")

    monkeypatch.setattr(run_module, "store_result", broken)
    with pytest.raises(AnalyticsRunError, match="ディスクがいっぱいです"):
        run(AS_OF)
    failed = AnalyticsRun.objects.latest("id")
    assert failed.status == RunStatus.FAILED
    assert "スナップショットの保存" in failed.message
    assert failed.finished_at is not None
    assert "summary" in failed.timings
    assert not CustomerScore.objects.exists()


def test_unusable_settings_stop_the_run_with_a_clear_message() -> None:
    settings = AnalyticsSettings.load()
    settings.recency_days = "90,30,180,365"
    settings.save()
    with pytest.raises(AnalyticsRunError, match=r"分析設定に誤りがあります.*小さい順"):
        run(AS_OF)


def test_settings_take_full_width_digits_and_japanese_commas() -> None:
    settings = AnalyticsSettings.load()
    settings.recency_days = "３０，９０、１８０, 365"
    settings.windows_days = "30,60"
    assert settings.to_config() == AnalyticsConfig(
        recency_days=(30, 90, 180, 365), windows_days=(30, 60)
    )
    settings.monetary_yen = "5000,たくさん"
    with pytest.raises(Exception, match="整数をカンマ区切り"):
        settings.full_clean()


def test_the_settings_row_is_a_singleton() -> None:
    AnalyticsSettings.load()
    extra = AnalyticsSettings(cpm_lapse_days=180)
    extra.save()
    assert AnalyticsSettings.objects.count() == 1
    assert AnalyticsSettings.load().cpm_lapse_days == 180


def test_the_command_prints_one_line_per_step_and_a_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _small_shop()
    call_command("analytics", "run", "--as-of", "2025-06-30")
    out = capsys.readouterr().out
    assert "[1/10] 業務データの読み出し" in out
    assert "[10/10] スナップショットの保存" in out
    assert "完了: 基準日 2025-06-30、購入のある顧客 5人、購入 7件" in out


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (dt.datetime(2025, 7, 1, 1, 59, tzinfo=JST), dt.datetime(2025, 7, 1, 2, 0, tzinfo=JST)),
        (dt.datetime(2025, 7, 1, 2, 0, tzinfo=JST), dt.datetime(2025, 7, 2, 2, 0, tzinfo=JST)),
        # 17:30 UTC on 6/30 is 02:30 JST on 7/1: the next run is 7/2 02:00 JST
        (
            dt.datetime(2025, 6, 30, 17, 30, tzinfo=dt.UTC),
            dt.datetime(2025, 7, 2, 2, 0, tzinfo=JST),
        ),
    ],
)
def test_the_nightly_run_is_at_two_in_the_morning_tokyo_time(
    now: dt.datetime, expected: dt.datetime
) -> None:
    assert next_nightly_time(now) == expected


def test_scheduling_the_nightly_run_twice_queues_it_once() -> None:
    now = dt.datetime(2025, 7, 1, 12, 0, tzinfo=JST)
    assert schedule_nightly(now=now) == dt.datetime(2025, 7, 2, 2, 0, tzinfo=JST)
    assert schedule_nightly(now=now) is None
    queued = DBTaskResult.objects.filter(task_path=analytics_nightly.module_path, status="READY")
    assert queued.count() == 1
    assert queued.get().run_after == dt.datetime(2025, 7, 2, 2, 0, tzinfo=JST)


def test_the_nightly_task_computes_yesterday_and_queues_the_next_night() -> None:
    _small_shop()
    run_id = analytics_nightly.call()
    done = AnalyticsRun.objects.get(pk=run_id)
    assert (done.status, done.trigger) == (RunStatus.DONE, "nightly")
    assert done.as_of == timezone.localdate() - dt.timedelta(days=1)
    assert DBTaskResult.objects.filter(
        task_path=analytics_nightly.module_path, status="READY"
    ).exists()


def test_a_queued_run_shows_at_once_and_the_worker_completes_that_same_row() -> None:
    _small_shop()
    run_id = enqueue_run(as_of=AS_OF, backend="duckdb")
    queued = AnalyticsRun.objects.get(pk=run_id)
    assert (queued.status, queued.progress_percent) == (RunStatus.QUEUED, 0)
    assert selectors.run_progress(run_id).status_label == "待機中"  # type: ignore[union-attr]
    assert analytics_run.call(run_id) == run_id
    done = selectors.run_progress(run_id)
    assert done is not None
    assert done.finished
    assert done.percent == 100
    assert AnalyticsRun.objects.count() == 1


def test_selectors_read_the_latest_snapshot() -> None:
    # given two runs
    shop = _small_shop()
    first = run(AS_OF - dt.timedelta(days=30))
    shop.buy(shop.customer(), AS_OF, 90_000)
    latest = run(AS_OF)
    # then the latest run is found, all ten CPM segments are listed (empty ones as 0)
    assert selectors.latest_run() == latest
    assert selectors.latest_run(as_of=first.as_of) == first
    cpm = selectors.segment_counts(latest, "cpm")
    assert [row.code for row in cpm][:2] == ["first_active", "first_lapsed"]
    assert len(cpm) == 10
    assert sum(row.customers for row in cpm) == 6
    assert sum(row.share or 0 for row in cpm) == pytest.approx(1.0)
    # a customer's own scores, and a segment's members
    newest = CustomerScore.objects.filter(run=latest).order_by("-customer_id").first()
    assert newest is not None
    assert selectors.customer_score(newest.customer_id) == newest
    members = selectors.scores_in_segment(latest, cpm="first_active")
    assert newest in members
    # the trend of a segment across runs, one point per as-of day
    trend = selectors.segment_trend("cpm", "first_active")
    assert [day for day, _ in trend] == [first.as_of, latest.as_of]
    assert selectors.kpi_table(latest, "headline")["customers"] == 6
    assert "cohorts:all" in selectors.kpi_names(latest)


# --- the as-of day: not after today ----------------------------------------------------------

# 15:30 UTC on 30 June is 00:30 on 1 July in Japan: "today" is 1 July there.
JUST_AFTER_MIDNIGHT_IN_TOKYO = dt.datetime(2025, 6, 30, 15, 30, tzinfo=dt.UTC)


@pytest.fixture
def tokyo_today(monkeypatch: pytest.MonkeyPatch) -> dt.date:
    monkeypatch.setattr(timezone, "now", lambda: JUST_AFTER_MIDNIGHT_IN_TOKYO)
    return dt.date(2025, 7, 1)


def test_an_as_of_day_after_today_in_japan_is_refused_everywhere_a_run_starts(
    tokyo_today: dt.date,
) -> None:
    # given a shop, at 00:30 in Japan (still the day before in UTC)
    _small_shop()
    tomorrow = tokyo_today + dt.timedelta(days=1)
    # then the service, the command (now or queued) and the queue refuse tomorrow, in Japanese
    refused = re.escape("基準日 2025-07-02 は今日(2025-07-01、日本時間)より後の日付です")
    with pytest.raises(AnalyticsRunError, match=refused):
        run_analytics(acting_user=ROBOT, as_of=tomorrow)
    for extra in ([], ["--enqueue"]):
        with pytest.raises(CommandError, match="今日以前の日付を指定してください"):
            call_command("analytics", "run", "--as-of", "2099-01-01", *extra)
    with pytest.raises(AsOfError, match="より後の日付です"):
        enqueue_run(as_of=tomorrow, backend="duckdb")
    # and nothing was recorded, queued or stored
    assert not AnalyticsRun.objects.exists()
    assert not DBTaskResult.objects.exists()
    # while today in Japan (tomorrow in UTC) is fine
    assert run_analytics(acting_user=ROBOT, as_of=tokyo_today).status == RunStatus.DONE


def test_a_queued_run_whose_day_is_refused_ends_failed_with_the_reason(
    tokyo_today: dt.date,
) -> None:
    # given a run row queued for a future day (as rows queued before the check could be)
    queued = AnalyticsRun.objects.create(as_of=dt.date(2099, 1, 1), backend="duckdb")
    # when the worker takes it
    with pytest.raises(AnalyticsRunError):
        analytics_run.call(queued.pk)
    # then it is not left waiting: it failed, and says why
    queued.refresh_from_db()
    assert queued.status == RunStatus.FAILED
    assert "今日以前の日付" in queued.message
    assert queued.finished_at is not None


def test_the_demo_may_compute_as_of_its_own_today(tokyo_today: dt.date) -> None:
    # the demo's history may end after the real today; it passes that day as its today
    _small_shop()
    future = dt.date(2027, 3, 31)
    done = run_analytics(acting_user=ROBOT, as_of=future, today=future, trigger="demo")
    assert (done.status, done.as_of) == (RunStatus.DONE, future)


def test_the_upgrade_voids_shop_runs_with_a_future_as_of_and_keeps_the_demos(
    tokyo_today: dt.date,
) -> None:
    # given runs finished before future days were refused: a shop's command with 2099-01-01
    # (and its customer rows), a real run, and a demo built as of a day ahead
    _small_shop()
    real = run(tokyo_today)
    stuck, demo = (
        run_analytics(acting_user=ROBOT, as_of=day, today=day, trigger=trigger)
        for day, trigger in ((dt.date(2099, 1, 1), "command"), (dt.date(2027, 3, 31), "demo"))
    )
    assert selectors.latest_run() == stuck
    # when the data migration runs
    migration = importlib.import_module(
        "kizuna.analytics.migrations.0002_void_runs_with_a_future_as_of"
    )
    migration.void_future_runs(django_apps, connection.schema_editor())
    # then the shop's future run is failed with the reason and holds no customer rows, and
    # the latest is the demo's (its own calendar), then the real run
    stuck.refresh_from_db()
    assert (stuck.status, stuck.customer_rows_kept) == (RunStatus.FAILED, False)
    assert "未来" in stuck.message
    assert not CustomerScore.objects.filter(run=stuck).exists()
    assert selectors.latest_run() == demo
    AnalyticsRun.objects.filter(pk=demo.pk).delete()
    assert selectors.latest_run() == real
