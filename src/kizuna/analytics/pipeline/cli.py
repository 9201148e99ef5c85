"""The `run` and `report` subcommands of `kizuna analytics` (the command file calls these lazily).

    kizuna analytics run [--as-of 2025-06-30] [--backend duckdb|postgres|pyspark]
                         [--enqueue | --schedule-nightly]
    kizuna analytics report --transactions FILE [--columns customer=…,date=…,amount=…]
                            --as-of DATE --out DIR

Errors a user can fix (a bad date, a missing file or column) end as CommandError with a
Japanese message; progress is one line per step on the terminal.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from django.core.management.base import CommandError

from kizuna.analytics.pipeline.backends import BackendUnavailableError
from kizuna.analytics.pipeline.config import AsOfError, Backend
from kizuna.analytics.pipeline.steps import STEP_LABELS, OnStep


def parse_day(value: str | dt.date | None, *, option: str = "--as-of") -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    if value is None or not value.strip():
        return None
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise CommandError(
            f"{option} の日付を読めません: {value}(YYYY-MM-DD の形で指定してください)"
        ) from exc


def _printer(out: TextIO) -> OnStep:
    started = time.perf_counter()

    def on_step(name: str, index: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        out.write(f"[{index + 1}/{total}] {STEP_LABELS.get(name, name)} …({elapsed:.1f}秒経過)\n")
        out.flush()

    return on_step


def _out(options: Mapping[str, Any]) -> TextIO:
    stream = options.get("stdout")
    return stream if stream is not None else sys.stdout


def run_command(options: Mapping[str, Any]) -> None:
    from kizuna.analytics.pipeline.run import AnalyticsRunError, run_analytics
    from kizuna.analytics.tasks import enqueue_run, schedule_nightly
    from kizuna.core.audit import Actor

    out = _out(options)
    as_of = parse_day(options.get("as_of"))
    backend = Backend(options.get("backend") or Backend.DUCKDB.value)
    if options.get("schedule_nightly"):
        when = schedule_nightly()
        if when is None:
            out.write("夜間の自動実行はすでに登録されています\n")
        else:
            out.write(f"夜間の自動実行を登録しました(次回: {when:%Y-%m-%d %H:%M} 日本時間)\n")
        return
    if options.get("enqueue"):
        try:
            run_id = enqueue_run(as_of=as_of, backend=backend)
        except AsOfError as exc:
            raise CommandError(str(exc)) from exc
        out.write(
            f"分析の実行をバックグラウンド処理に登録しました(実行番号 {run_id}、kizuna worker が実行します)\n"
        )
        return
    try:
        run = run_analytics(
            acting_user=Actor.system("analytics-command"),
            as_of=as_of,
            backend=backend,
            trigger="command",
            on_step=_printer(out),
            extract_method=options.get("extract") or "auto",
        )
    except (AnalyticsRunError, BackendUnavailableError) as exc:
        raise CommandError(str(exc)) from exc
    total = sum(run.timings.values())
    out.write(
        f"完了: 基準日 {run.as_of}、購入のある顧客 {run.customers:,}人、購入 {run.purchases:,}件、"
        f"{total:.1f}秒(エンジン: {run.backend}、実行番号 {run.pk})\n"
    )
    if run.predictions.get("error"):
        out.write(f"注意: 予測は計算されませんでした — {run.predictions['error']}\n")


def report_command(options: Mapping[str, Any]) -> None:
    from kizuna.analytics.pipeline.report import ColumnsError, write_report
    from kizuna.analytics.pipeline.tables import TransactionsFileError

    out = _out(options)
    as_of = parse_day(options.get("as_of"))
    if as_of is None:
        raise CommandError("--as-of(基準日)を指定してください")
    try:
        from kizuna.analytics.pipeline.report import parse_columns

        files = write_report(
            transactions=Path(str(options["transactions"])),
            as_of=as_of,
            out=Path(str(options["out"])),
            columns=parse_columns(options.get("columns")),
            on_step=_printer(out),
        )
    except (ColumnsError, TransactionsFileError) as exc:
        raise CommandError(str(exc)) from exc
    headline = files.result.kpis.get("headline", {})
    out.write(
        f"完了: 顧客 {headline.get('customers', 0):,}人、購入 {headline.get('purchases', 0):,}件\n"
        f"  {files.customers_csv}\n  {files.customers_parquet}\n  {files.kpis_json}\n"
    )
    if files.result.predictions.get("error"):
        out.write(f"注意: 予測は計算されませんでした — {files.result.predictions['error']}\n")
