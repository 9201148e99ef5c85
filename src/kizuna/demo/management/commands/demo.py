"""`kizuna demo`: build the demo shop if absent, then serve it with a worker running."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
import time
from argparse import ArgumentParser
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from kizuna.accounts.models import Role, User
from kizuna.analytics.pipeline.run import run_analytics
from kizuna.analytics.tasks import schedule_nightly
from kizuna.core.audit import Actor
from kizuna.customers.models import Customer
from kizuna.demo.build import build_demo
from kizuna.demo.duplicates import seed_duplicate_candidates
from kizuna.demo.scenarios import seed_demo_scenarios
from kizuna.loyalty.tasks import expire_points

DEMO_USERS = {
    Role.ADMIN: "admin",
    Role.MARKETER: "marketer",
    Role.OPERATOR: "operator",
    Role.ANALYST: "analyst",
}


class Command(BaseCommand):
    help = "デモ用の通販ショップのデータを作成し、画面とワーカーを起動します"

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--customers", type=int, default=20_000, help="顧客数(既定 20,000)")
        parser.add_argument("--seed", type=int, default=42, help="乱数の種(同じ種なら同じデータ)")
        parser.add_argument(
            "--as-of", type=dt.date.fromisoformat, default=None, help="デモの「今日」(YYYY-MM-DD)"
        )
        parser.add_argument("--no-serve", action="store_true", help="作成だけして終了します")
        parser.add_argument("--addr", default="127.0.0.1:8000", help="待ち受けアドレス")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["customers"] < 1:
            raise CommandError("--customers は1以上にしてください")
        call_command("migrate", interactive=False, verbosity=0)
        if Customer.objects.exists():
            self.stdout.write(f"デモデータは作成済みです({Customer.objects.count():,} 人)。")
        else:
            as_of = options["as_of"] or timezone.localdate()
            self.stdout.write(
                f"デモデータを作成しています: 顧客 {options['customers']:,} 人、"
                f"{as_of:%Y-%m-%d} までの3年分…"
            )
            # Each step prints how long it took, so a slow one is visible on any size.
            started = time.perf_counter()
            summary = build_demo(
                customers=options["customers"],
                seed=options["seed"],
                as_of=as_of,
                progress=sys.stderr.isatty(),
            )
            self.stdout.write(f"作成しました{_took(started)}: {summary}")
            # Probable duplicates, so the 名寄せ queue has work on day one.
            started = time.perf_counter()
            proposed = seed_duplicate_candidates(
                count=max(5, options["customers"] // 500), seed=options["seed"]
            )
            self.stdout.write(f"名寄せの確認待ち候補: {proposed} 件{_took(started)}")
            # Running scenarios with their history, so lift is visible on day one.
            started = time.perf_counter()
            seed_demo_scenarios(as_of=as_of, seed=options["seed"])
            self.stdout.write(f"シナリオとその配信履歴を作成しました{_took(started)}。")
            # The analytics snapshot the segment builder and scenarios read. The demo's history
            # ends on its own "today" (--as-of), which may be a day after the real one: it
            # passes that day as today, the one caller allowed a future as-of.
            started = time.perf_counter()
            run = run_analytics(
                acting_user=Actor.system("demo"), as_of=as_of, today=as_of, trigger="demo"
            )
            self.stdout.write(
                f"顧客分析のスナップショットを作成しました({run.get_status_display()})"
                f"{_took(started)}。"
            )
            # As a shop would run it: every night at 02:00 (分析の実行 shows it, and stops it).
            schedule_nightly()
        password = self._ensure_users()
        if options["no_serve"]:
            # Nothing is listening yet: say how to start it rather than print an address.
            where = "作成済みです。画面とワーカーを起動するには kizuna demo を実行してください"
        else:
            where = f"http://{options['addr']}/"
        self.stdout.write(self.style.SUCCESS(f"\nKizuna デモ: {where}"))
        for role, username in DEMO_USERS.items():
            self.stdout.write(f"  {role.label:<8} ユーザー名 {username}  パスワード {password}")
        if options["no_serve"]:
            return
        self._serve(options["addr"])

    def _ensure_users(self) -> str:
        """Create one login per role. The password comes from KIZUNA_DEMO_PASSWORD, else one is
        generated once and kept under the data directory so later starts print the same."""
        path = settings.DATA_DIR / "demo-password"
        password = os.environ.get("KIZUNA_DEMO_PASSWORD", "")
        if not password:
            if not path.exists():
                path.write_text(secrets.token_urlsafe(12), encoding="utf-8")
                path.chmod(0o600)
            password = path.read_text(encoding="utf-8").strip()
        for role, username in DEMO_USERS.items():
            user, _ = User.objects.get_or_create(username=username, defaults={"role": role})
            user.role = role
            user.set_password(password)
            user.save()
        return password

    def _serve(self, addr: str) -> None:
        # Points that expired while the demo was not running are written off by the worker.
        expire_points.enqueue()
        env = worker_environment(os.environ)
        # The pages say how mail goes out (配信状況): the same way as the worker's.
        settings.EMAIL_BACKEND = env.get("KIZUNA_EMAIL_BACKEND", settings.EMAIL_BACKEND)
        worker = subprocess.Popen([sys.executable, "-m", "kizuna", "worker"], env=env)
        self.stdout.write(f"ワーカーを起動しました(pid {worker.pid})。Ctrl+C で終了します。")
        if env.get("KIZUNA_EMAIL_BACKEND") == FILE_BACKEND:
            self.stdout.write(
                f"SMTPサーバーが未設定のため、メールは送らずに {settings.EMAIL_FILE_PATH} の"
                "ファイルに書き出します(実際に送るには KIZUNA_SMTP_HOST を設定)。"
            )
        try:
            call_command("runserver", addr, use_reloader=False, use_threading=True)
        finally:
            worker.terminate()
            worker.wait(timeout=10)


FILE_BACKEND = "django.core.mail.backends.filebased.EmailBackend"


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The demo worker's environment: with no SMTP server configured, its mail is written to
    files under the data directory (KIZUNA_EMAIL_FILE_PATH) instead of failing against a
    server that is not there, so the demo's scenario mail can be read on any machine."""
    env = dict(environ)
    if not env.get("KIZUNA_EMAIL_BACKEND") and not env.get("KIZUNA_SMTP_HOST"):
        env["KIZUNA_EMAIL_BACKEND"] = FILE_BACKEND
    return env


def _took(started: float) -> str:
    return f"({time.perf_counter() - started:,.1f} 秒)"
