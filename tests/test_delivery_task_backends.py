"""Both task backends run tasks, and message delivery works with either (issue 5, part 6).

The database backend is the default (`kizuna worker` runs its tasks); the Redis backend is
chosen with KIZUNA_TASK_BACKEND=django_tasks_rq.RQBackend and its tasks run in
`kizuna rqworker`. The Redis test uses the server CI provides at 127.0.0.1:6379.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator

import pytest

from kizuna.campaigns.models import OutboxStatus
from tests.delivery_support import (
    REPO,
    SmtpServer,
    consenting_customer,
    mail,
    open_all_day,
    run_worker,
    worker_env,
)
from tests.delivery_tasks import leave_mark

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
REDIS_URL = os.environ.get("KIZUNA_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
AUTOMATION_DOC = REPO / "docs" / "automation.md"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def env(smtp: SmtpServer, tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    open_all_day()
    # The test task lives in tests/, which the child process must be able to import.
    return worker_env(smtp.port, KIZUNA_DATA_DIR=str(tmp_path), PYTHONPATH=str(REPO))


def kizuna(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(  # noqa: S603 - our own console script
        [sys.executable, "-m", "kizuna", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode() + result.stderr.decode()


def test_database_backend_tasks_and_delivery_run_in_kizuna_worker(smtp, env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    mark = tmp_path / "db-task"
    leave_mark.enqueue(str(mark), "database")
    message = mail(consenting_customer(), "db-backend")
    run_worker(env)
    assert mark.read_text(encoding="utf-8") == "database"
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert len(smtp.handler.received) == 1


def test_redis_backend_runs_tasks_in_rqworker_and_delivery_still_works(smtp, env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env.update({"KIZUNA_TASK_BACKEND": "django_tasks_rq.RQBackend", "KIZUNA_REDIS_URL": REDIS_URL})
    mark = tmp_path / "rq-task"
    # given a task enqueued through the Tasks API with the Redis backend
    kizuna(
        env,
        "shell",
        "-c",
        f"from tests.delivery_tasks import leave_mark; leave_mark.enqueue({str(mark)!r}, 'redis')",
    )
    assert not mark.exists()
    # when an RQ worker drains the queue, the task ran
    kizuna(env, "rqworker", "--burst", "--job-class", "django_tasks_rq.Job", "default")
    assert mark.read_text(encoding="utf-8") == "redis"
    # and `kizuna worker` still delivers the outbox with that backend configured
    message = mail(consenting_customer(), "rq-backend")
    run_worker(env)
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT


def documented_rqworker_args() -> list[str]:
    """The task-worker command an operator copies from docs/automation.md ("Task backends")."""
    text = " ".join(AUTOMATION_DOC.read_text(encoding="utf-8").split())
    found = re.search(r"`kizuna (rqworker [^`]+)`", text)
    assert found, "docs/automation.md no longer names the rqworker command"
    return shlex.split(found.group(1))


def test_documented_rqworker_runs_tasks_queued_for_later(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The nightly analytics run is such a task: queued for 02:00 JST, it must run then, on the
    # task workers started exactly as the docs say (RQ keeps it aside until its scheduler,
    # which a worker runs only when told to, moves it to the queue).
    env.update({"KIZUNA_TASK_BACKEND": "django_tasks_rq.RQBackend", "KIZUNA_REDIS_URL": REDIS_URL})
    mark = tmp_path / "rq-later"
    # given a task queued to run at a given time, which has now come
    kizuna(
        env,
        "shell",
        "-c",
        "from django.utils import timezone; from tests.delivery_tasks import leave_mark; "
        f"leave_mark.using(run_after=timezone.now()).enqueue({str(mark)!r}, 'later')",
    )
    # when the documented task worker runs (in burst mode, to end once the queue is empty)
    kizuna(env, *documented_rqworker_args(), "--burst")
    # then the task ran
    assert mark.read_text(encoding="utf-8") == "later"


def test_the_nightly_analytics_run_is_registered_once_with_redis(env) -> None:  # type: ignore[no-untyped-def]
    import redis

    env.update({"KIZUNA_TASK_BACKEND": "django_tasks_rq.RQBackend", "KIZUNA_REDIS_URL": REDIS_URL})
    connection = redis.Redis.from_url(REDIS_URL)
    connection.flushdb()
    try:
        # when an operator registers the nightly run twice (a rerun deploy script, say)
        first = kizuna(env, "analytics", "run", "--schedule-nightly")
        second = kizuna(env, "analytics", "run", "--schedule-nightly")
        # then one run waits for 02:00, not two (which would run the analytics twice a night)
        assert connection.zcard("rq:scheduled:default") == 1, (first, second)
        # and the 分析の実行 page's "stop" withdraws it from Redis too
        stopped = kizuna(
            env,
            "shell",
            "-c",
            "from kizuna.analytics.tasks import unschedule_nightly, nightly_queued_at; "
            "print(nightly_queued_at().hour, unschedule_nightly(), nightly_queued_at())",
        )
        assert stopped.split()[-3:] == ["17", "1", "None"], stopped  # 02:00 JST is 17:00 UTC
        assert connection.zcard("rq:scheduled:default") == 0
    finally:
        connection.flushdb()
