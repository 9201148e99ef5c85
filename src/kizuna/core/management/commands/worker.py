"""`kizuna worker`: background tasks, message delivery and the scenario scheduler in one process.

One loop, three duties:

- the task queue (django-tasks-db's worker) when the database task backend is in use; with
  the Redis backend, `kizuna rqworker --job-class django_tasks_rq.Job` runs tasks instead;
- the outbox delivery loop (kizuna.campaigns.delivery);
- once a minute, the scenario scheduler tick (`kizuna.campaigns.automation.scheduler.tick`)
  when that module exists; it guarantees itself that two schedulers never double-fire (S10).

Several workers may run, on one machine or many: outbox rows are claimed with a lease, so each
message is sent once. `--once` does everything that is due, then exits (cron, tests). Each pass
that did something prints one line of counts (never a customer's data, D3); an idle pass prints
nothing, and `-v 0` nothing at all. SIGTERM or Ctrl+C finishes the message or task at hand,
gives the rest of the batch back and exits; a second signal exits at once (leases return the
rows later).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import sys
import time
from argparse import ArgumentParser
from collections.abc import Callable
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand
from django.db import close_old_connections
from django.utils.crypto import get_random_string

from kizuna.campaigns.delivery import BatchResult, DeliveryWorker

logger = logging.getLogger("kizuna.worker")

TICK_SECONDS = 60.0
SLEEP_SLICE = 0.2


def scheduler_tick() -> Callable[[], Any] | None:
    """The scenario scheduler's tick, or None while the scenario engine is not installed."""
    try:
        module = importlib.import_module("kizuna.campaigns.automation.scheduler")
    except ModuleNotFoundError as exc:
        if exc.name and "kizuna.campaigns.automation.scheduler".startswith(exc.name):
            return None
        raise
    tick: Callable[[], Any] | None = getattr(module, "tick", None)
    return tick


def delivery_summary(result: BatchResult) -> str:
    """What one delivery batch did, as counts; "" when it claimed nothing."""
    if not result.claimed:
        return ""
    text = f"送信 {result.sent}件・見送り {result.skipped}件・失敗 {result.failed}件"
    # Rarer outcomes only when they happened, to keep the usual line short.
    for label, count in (
        ("延期", result.deferred),
        ("再試行待ち", result.retried),
        ("送信待ちに戻し", result.released),
    ):
        if count:
            text += f"・{label} {count}件"
    return text


def scenario_summary(report: Any) -> str:
    """What a scheduler tick did; "" for the usual minute in which it changed nothing, or when
    another worker's scheduler held the lease, so a long-running worker stays quiet."""
    if not getattr(report, "ran", False):
        return ""
    scenarios = report.scenarios
    if not any(value for s in scenarios for name, value in vars(s).items() if name != "key"):
        return ""
    text = "シナリオ実行 済"
    # Both need a person: held steps wait on the scenario page, errors are on the tick log and
    # the scenario page (the message itself may quote customer data, so only the count here).
    waiting = report.total("pending_confirmation")
    if waiting:
        text += f"・確認待ち {waiting}件"
    errors = sum(1 for s in scenarios if s.error)
    if errors:
        text += f"・エラー {errors}件"
    return text


class TaskRunner:
    """Runs the database task queue's ready tasks, then returns.

    django-tasks-db's own `Worker.run` loops and logs its start and stop on every call; this
    takes tasks one at a time the way it does (claim under the queue's lock, then run through
    `Worker.run_task`) so the loop above can interleave tasks with deliveries.
    """

    def __init__(self, worker_id: str) -> None:
        from django_tasks_db.management.commands.db_worker import Worker

        self.worker_id = worker_id
        self.worker = Worker(
            queue_names=["*"],
            interval=0,
            batch=True,
            backend_name="default",
            startup_delay=False,
            max_tasks=None,
            worker_id=worker_id,
            excluded_queue_names=[],
        )

    def run_ready(self) -> int:
        from django.db.utils import OperationalError
        from django_tasks_db.models import DBTaskResult
        from django_tasks_db.utils import exclusive_transaction, is_locked_database_exception

        ran = 0
        while self.worker.running:
            ready = DBTaskResult.objects.ready().filter(backend_name="default")
            with exclusive_transaction(ready.db):
                try:
                    task_result = ready.get_locked()
                    if task_result is not None:
                        task_result.claim(self.worker_id)
                except OperationalError as exc:
                    # Another process holds SQLite's write lock: try again next round.
                    if is_locked_database_exception(exc):
                        return ran
                    raise
            if task_result is None:
                return ran
            self.worker.run_task(task_result)
            ran += 1
        return ran

    def stop(self) -> None:
        self.worker.running = False


def database_task_backend() -> bool:
    from django_tasks import task_backends
    from django_tasks_db.backend import DatabaseBackend

    return isinstance(task_backends["default"], DatabaseBackend)


class Command(BaseCommand):
    help = "バックグラウンド処理(タスク・メッセージ配信・シナリオ実行)を行います"
    # The checks import every URLconf (and with it the analytics stack): seconds of start-up
    # for a process that serves no URL. `kizuna check` and the web server still run them.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="いま処理できるものをすべて処理したら終了します(cron・テスト向け)",
        )
        parser.add_argument("--interval", type=float, default=1.0, help="キューを確認する間隔(秒)")
        parser.add_argument("--no-tasks", action="store_true", help="タスクキューを処理しません")
        parser.add_argument("--no-delivery", action="store_true", help="メッセージを配信しません")
        parser.add_argument("--no-scheduler", action="store_true", help="シナリオを実行しません")
        parser.add_argument("--batch-size", type=int, default=None, help="1回に確保する配信件数")

    def handle(self, *args: Any, **options: Any) -> None:
        worker_id = f"{socket.gethostname()[:20]}-{os.getpid()}-{get_random_string(6)}"
        self.stopping = False
        tasks = None
        if not options["no_tasks"] and database_task_backend():
            tasks = TaskRunner(worker_id)
        delivery = (
            None
            if options["no_delivery"]
            else DeliveryWorker(worker_id=worker_id, batch_size=options["batch_size"])
        )
        tick = None if options["no_scheduler"] else scheduler_tick()

        def shutdown(signum: int, frame: FrameType | None) -> None:
            if self.stopping:
                logger.warning("second %s: exiting now", signal.strsignal(signum))
                sys.exit(1)
            logger.info("%s: finishing the current message, then exiting", signal.strsignal(signum))
            self.stopping = True
            if delivery is not None:
                delivery.stop_requested = True
            if tasks is not None:
                tasks.stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, shutdown)

        last_tick = float("-inf")
        try:
            while not self.stopping:
                close_old_connections()
                busy = False
                scenario_part = task_part = delivery_part = ""
                if tick is not None and time.monotonic() - last_tick >= TICK_SECONDS:
                    last_tick = time.monotonic()
                    scenario_part = self._tick(tick)
                if tasks is not None:
                    ran = tasks.run_ready()
                    busy |= ran > 0
                    task_part = f"タスク {ran}件" if ran else ""
                if delivery is not None and not self.stopping:
                    result = delivery.run_batch()
                    busy |= result.claimed > 0
                    delivery_part = delivery_summary(result)
                parts = (delivery_part, task_part, scenario_part)
                line = "、".join(part for part in parts if part)
                if line and options["verbosity"] > 0:
                    self.stdout.write(line)
                    self.stdout.flush()  # a piped stdout (systemd, a log file) shows it at once
                if options["once"] and not busy:
                    break
                if not busy:
                    self._sleep(options["interval"])
        finally:
            if delivery is not None:
                delivery.close()

    def _tick(self, tick: Callable[[], Any]) -> str:
        try:
            report = tick()
        except Exception:
            # The scheduler's own failures are its to record; the worker keeps delivering.
            logger.exception("scenario scheduler tick failed")
            return "シナリオ実行 失敗"
        return scenario_summary(report)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(SLEEP_SLICE, max(deadline - time.monotonic(), 0)))
