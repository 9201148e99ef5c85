"""`kizuna worker`: run background tasks from the database queue.

A thin front for django-tasks-db's `db_worker`, so operators have one name to remember and the
flags later issues need (`--once`).
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "バックグラウンド処理(タスクキュー)を実行します"

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="キューが空になったら終了します(cron・テスト向け)"
        )
        parser.add_argument("--interval", type=float, default=1.0, help="キューを確認する間隔(秒)")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command(
            "db_worker",
            queue_name="*",
            interval=options["interval"],
            batch=options["once"],
            startup_delay=not options["once"],
            verbosity=options["verbosity"],
        )
