"""`kizuna scenarios run|export|load`: run the scheduler once, or move scenarios to and from a
YAML file (docs/automation.md, "Scenario file format")."""

from __future__ import annotations

import datetime as dt
import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any, TextIO

from django.core.management.base import CommandError
from django.utils import timezone

from kizuna.campaigns.automation.clock import JST
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.automation.yaml_io import (
    PAUSE_ENTRANTS,
    ScenarioFileError,
    export_yaml,
    load_yaml,
)
from kizuna.core.audit import Actor
from kizuna.core.cli import JapaneseCommand, JapaneseCommandParser, read_named_file


def _moment(value: str) -> dt.datetime:
    """An ISO date-time; without a zone it is Japanese time."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"--now は 2026-05-01T09:00 の形で指定してください: {value}") from exc
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=JST)


class Command(JapaneseCommand):
    help = "シナリオの実行(run)、ファイルへの書き出し(export)・読み込み(load)"
    # `load -` reads standard input; call_command(stdin=…) may pass another stream.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: ArgumentParser) -> None:
        # Each subcommand's own mistakes (a missing FILE, a misspelt --now) in Japanese too.
        sub = parser.add_subparsers(
            dest="action", required=True, parser_class=JapaneseCommandParser
        )
        run = sub.add_parser(
            "run", help="すべての稼働中シナリオを1回評価し、送信キューに登録します"
        )
        run.add_argument(
            "--now", default=None, help="評価する時刻(既定: 現在。例 2026-05-01T09:00)"
        )
        export = sub.add_parser("export", help="全シナリオをYAMLファイルに書き出します")
        export.add_argument("file", help="書き出すファイル(- で標準出力)")
        load = sub.add_parser("load", help="YAMLファイルのシナリオを読み込みます(識別名で上書き)")
        load.add_argument("file", help="読み込むファイル(- で標準入力)")
        load.add_argument(
            "--pause-entrants",
            choices=PAUSE_ENTRANTS,
            default=None,
            help="停止中の「セグメントに入った」シナリオを再開するとき、停止中にセグメントに入った"
            "人にも送る(send)か、送らずにこれ以降に入った人から対象にする(skip)か。"
            "そういう人がいるシナリオを再開するファイルでは必須",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "run":
            self._run(options["now"])
        elif action == "export":
            self._export(options["file"])
        else:
            # call_command(stdin=…) passes its own (tests); from a terminal it is sys.stdin.
            stdin = options.get("stdin") or sys.stdin
            self._load(options["file"], stdin, options["pause_entrants"])

    def _run(self, now: str | None) -> None:
        report = tick(_moment(now) if now else None)
        if not report.ran:
            self.stdout.write(self.style.WARNING(report.note))
            return
        if report.note:
            self.stdout.write(self.style.WARNING(report.note))
        for s in report.scenarios:
            line = (
                f"{s.key}: エントリー {s.enrolled + s.holdout}(うちホールドアウト {s.holdout})、"
                f"送信キュー {s.queued + s.released}、確認待ち {s.pending_confirmation}、"
                f"見送り {s.skipped}、終了 {s.exited + s.completed}"
            )
            self.stdout.write(self.style.ERROR(f"{line} エラー: {s.error}") if s.error else line)
        self.stdout.write(f"完了({report.seconds:.2f}秒、シナリオ {len(report.scenarios)}件)")

    def _export(self, file: str) -> None:
        text = export_yaml()
        if file == "-":
            self.stdout.write(text, ending="")
            return
        try:
            Path(file).write_text(text, encoding="utf-8")
        except IsADirectoryError:
            raise CommandError(
                f"書き出し先がフォルダです。ファイル名まで指定してください: {file}"
            ) from None
        except FileNotFoundError:
            raise CommandError(f"書き出し先のフォルダがありません: {file}") from None
        except OSError:
            raise CommandError(f"ファイルに書き込めません: {file}") from None
        self.stdout.write(f"書き出しました: {file}")

    def _load(self, file: str, stdin: TextIO, pause_entrants: str | None) -> None:
        text = read_named_file(file, stdin)
        try:
            report = load_yaml(
                text, acting_user=Actor.system("scenarios-load"), pause_entrants=pause_entrants
            )
        except ScenarioFileError as exc:
            raise CommandError("読み込めませんでした(何も変更していません):\n" + str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"読み込みました: {report.summary()}"))
