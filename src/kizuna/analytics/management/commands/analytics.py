"""`kizuna analytics <run|report|backtest>`: the analytics engine from the command line.

`backtest` works on a transactions file alone and never opens the database. `run` and `report`
belong to the pipeline (kizuna.analytics.pipeline.cli), imported only when used so that a
back-test does not pay for (or depend on) the pipeline's imports.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import math
from argparse import ArgumentParser, ArgumentTypeError
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from kizuna.analytics.clv import PURCHASE_MODELS
from kizuna.analytics.clv.backtest import UNIT_DAYS, format_text, run_backtest
from kizuna.analytics.clv.summary import (
    TransactionFileError,
    load_transactions,
    parse_columns,
    summarise,
)

PIPELINE_CLI = "kizuna.analytics.pipeline.cli"


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ArgumentTypeError(
            f"日付「{value}」が読めません。YYYY-MM-DD で指定してください"
        ) from None


class Command(BaseCommand):
    help = "顧客分析: run(集計の実行)・report(ファイルからのレポート)・backtest(予測モデルの検証)"
    # The back-test must run where there is no database at all.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: ArgumentParser) -> None:
        subcommands = parser.add_subparsers(dest="subcommand", required=True, title="サブコマンド")

        # --- pipeline hooks: kizuna.analytics.pipeline.cli fills these in -----------------
        run = subcommands.add_parser("run", help="顧客分析を計算してスナップショットを保存します")
        run.add_argument("--as-of", type=_date, default=None, help="基準日(YYYY-MM-DD、既定は今日)")
        run.add_argument(
            "--backend",
            choices=("duckdb", "postgres", "pyspark"),
            default="duckdb",
            help="計算エンジン(既定 duckdb)",
        )
        run_when = run.add_mutually_exclusive_group()
        run_when.add_argument(
            "--enqueue",
            action="store_true",
            help="今すぐ実行せず、バックグラウンド処理(kizuna worker)に登録します",
        )
        run_when.add_argument(
            "--schedule-nightly",
            dest="schedule_nightly",
            action="store_true",
            help="毎晩2時(日本時間)の自動実行を登録します(前日までの分を計算)",
        )
        run.add_argument(
            "--extract",
            choices=("auto", "connectorx", "copy", "cursor"),
            default="auto",
            help="業務データの読み出し方法(既定 auto)",
        )
        report = subcommands.add_parser(
            "report", help="取引ファイルから顧客別の表と KPI を書き出します(データベース不要)"
        )
        report.add_argument("--transactions", type=Path, required=True, help="取引ファイル")
        report.add_argument("--columns", default=None, help="列名の対応(例 customer=会員ID,…)")
        report.add_argument("--as-of", type=_date, required=True, help="基準日(YYYY-MM-DD)")
        report.add_argument("--out", type=Path, required=True, help="出力先ディレクトリ")

        # --- back-test ------------------------------------------------------------------
        backtest = subcommands.add_parser(
            "backtest",
            help="購入予測モデルを較正期間で推定し、検証期間の実績と比べます(データベース不要)",
        )
        backtest.add_argument(
            "--transactions",
            type=Path,
            required=True,
            help="取引ファイル(CSV または Parquet。1行 = 1注文)",
        )
        backtest.add_argument(
            "--columns",
            default=None,
            help="列名の対応。既定 customer=customer_id,date=date,amount=amount",
        )
        backtest.add_argument(
            "--calibration-end", type=_date, required=True, help="較正期間の最終日(YYYY-MM-DD)"
        )
        backtest.add_argument(
            "--holdout-end", type=_date, required=True, help="検証期間の最終日(YYYY-MM-DD)"
        )
        backtest.add_argument(
            "--model",
            choices=tuple(PURCHASE_MODELS),
            default="bgnbd",
            help="予測モデル(既定 bgnbd)",
        )
        backtest.add_argument(
            "--unit", choices=tuple(UNIT_DAYS), default="day", help="時間の単位(既定 day)"
        )
        backtest.add_argument(
            "--encoding", default="utf-8-sig", help="CSV の文字コード(既定 UTF-8、cp932 も可)"
        )
        backtest.add_argument("--json", action="store_true", help="結果を JSON で出力します")

    def handle(self, *args: Any, **options: Any) -> None:
        subcommand = options["subcommand"]
        if subcommand == "backtest":
            self._backtest(options)
            return
        if subcommand == "run":
            # Only `run` works on the database; the checks are skipped for the file-only
            # subcommands (requires_system_checks above), not for it.
            self.check()
        try:
            pipeline_cli = importlib.import_module(PIPELINE_CLI)
        except ModuleNotFoundError as error:
            if error.name is None or not PIPELINE_CLI.startswith(error.name):
                raise
            raise CommandError(
                f"「analytics {subcommand}」はまだ使えません(集計パイプライン "
                f"{PIPELINE_CLI} がインストールされていません)"
            ) from error
        handler = pipeline_cli.run_command if subcommand == "run" else pipeline_cli.report_command
        handler(options)

    def _backtest(self, options: dict[str, Any]) -> None:
        calibration_end: dt.date = options["calibration_end"]
        holdout_end: dt.date = options["holdout_end"]
        if holdout_end <= calibration_end:
            raise CommandError("--holdout-end は --calibration-end より後の日付にしてください")
        try:
            columns = parse_columns(options["columns"])
            transactions = load_transactions(
                options["transactions"],
                columns=columns,
                # Only an amount column the user named must exist; the default one is optional.
                amount_required=any(
                    part.partition("=")[0].strip() == "amount"
                    for part in (options["columns"] or "").split(",")
                ),
                encoding=options["encoding"],
            )
        except LookupError as error:
            raise CommandError(f"文字コード「{options['encoding']}」は使えません") from error
        except TransactionFileError as error:
            raise CommandError(str(error)) from error
        unit = options["unit"]
        try:
            summary = summarise(
                transactions.customer,
                transactions.day,
                transactions.amount,
                calibration_end=calibration_end,
                holdout_end=holdout_end,
                unit_days=UNIT_DAYS[unit],
            )
            result = run_backtest(
                summary,
                model=options["model"],
                calibration_end=calibration_end,
                holdout_end=holdout_end,
                unit=unit,
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        if options["json"]:
            self.stdout.write(json.dumps(_finite(result.as_dict()), ensure_ascii=False, indent=2))
        else:
            self.stdout.write(format_text(result))
            if not result.converged:
                self.stderr.write(
                    "注意: 推定が収束しませんでした。期間や単位(--unit)を見直してください。"
                )


def _finite(value: Any) -> Any:
    """JSON has no NaN: a value that could not be computed is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
