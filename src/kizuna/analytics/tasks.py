"""Background analytics runs, executed by `kizuna worker`.

`analytics_nightly` computes yesterday's snapshot (the last whole day, Asia/Tokyo) and then
queues itself for 02:00 JST the next night, so once scheduled (毎晩の自動実行 on the 分析の実行
page, or `kizuna analytics run --schedule-nightly`) the task system runs it every night without cron. `analytics_run` is the
on-demand run a page or `kizuna analytics run --enqueue` queues. Both call `run_analytics`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Min
from django.utils import timezone
from django_tasks import task

from kizuna.analytics.models import AnalyticsRun, AnalyticsSettings
from kizuna.analytics.pipeline.config import Backend, check_as_of
from kizuna.core.audit import Actor

NIGHTLY_AT = dt.time(2, 0)
BUSINESS_TZ = ZoneInfo("Asia/Tokyo")


@task()
def analytics_run(run_id: int) -> int:
    """Carry out a run queued by `enqueue_run` (its row already exists, status 待機中)."""
    # Imported here: web processes import this module to enqueue runs and must not load the
    # pipeline (numpy, scipy, Ibis); only the worker that runs the task needs it.
    from kizuna.analytics.pipeline.run import run_analytics

    run = AnalyticsRun.objects.get(pk=run_id)
    # A run started from a page keeps the name of the member of staff who asked for it.
    actor = (
        Actor(user_id=None, label=run.requested_by)
        if run.requested_by
        else Actor.system("analytics-task")
    )
    done = run_analytics(
        acting_user=actor,
        as_of=run.as_of,
        backend=run.backend,
        trigger=run.trigger or "task",
        run=run,
    )
    return done.pk


@task()
def analytics_nightly() -> int:
    """Yesterday's snapshot with the shop's nightly engine; then queue tomorrow night's run."""
    from kizuna.analytics.pipeline.run import run_analytics  # as in analytics_run

    try:
        run = run_analytics(
            acting_user=Actor.system("analytics-nightly"),
            as_of=timezone.localdate() - dt.timedelta(days=1),
            backend=AnalyticsSettings.load().nightly_backend,
            trigger="nightly",
        )
    finally:
        # Even a failed night must not end the schedule.
        schedule_nightly()
    return run.pk


def enqueue_run(
    *,
    as_of: dt.date | None,
    backend: Backend | str,
    trigger: str = "queued",
    requested_by: str = "",
) -> int:
    """Record a queued AnalyticsRun (pages show it at once) and hand it to the task system.
    An as-of day after today is refused here already (AsOfError), before anything is queued."""
    day = as_of or timezone.localdate()
    check_as_of(day, today=timezone.localdate())
    run = AnalyticsRun.objects.create(
        as_of=day,
        backend=Backend(backend).value,
        trigger=trigger,
        requested_by=requested_by,
    )
    analytics_run.enqueue(run.pk)
    return run.pk


def next_nightly_time(now: dt.datetime) -> dt.datetime:
    """The next 02:00 in Asia/Tokyo strictly after `now`."""
    local = now.astimezone(BUSINESS_TZ)
    candidate = dt.datetime.combine(local.date(), NIGHTLY_AT, tzinfo=BUSINESS_TZ)
    if candidate <= local:
        candidate += dt.timedelta(days=1)
    return candidate


def _waiting_rq_nightly_jobs() -> list[Any]:
    """The nightly runs waiting in Redis (RQ keeps a task queued for later in the queue's
    scheduled registry; one whose time has come sits in the queue itself)."""
    import django_rq
    from rq.job import Job

    queue = django_rq.get_queue(analytics_nightly.queue_name)
    waiting = [*queue.scheduled_job_registry.get_job_ids(), *queue.get_job_ids()]
    jobs = Job.fetch_many(waiting, connection=queue.connection)
    return [
        job for job in jobs if job is not None and job.func_name == analytics_nightly.module_path
    ]


def _uses_rq() -> bool:
    return bool(settings.TASKS["default"]["BACKEND"].startswith("django_tasks_rq."))


def nightly_queued_at() -> dt.datetime | None:
    """When the waiting nightly run starts, in whichever task backend is configured (None: no
    nightly run is waiting, so none will run until one is scheduled again)."""
    if _uses_rq():
        import django_rq
        from rq.exceptions import NoSuchJobError

        registry = django_rq.get_queue(analytics_nightly.queue_name).scheduled_job_registry
        times = []
        for job in _waiting_rq_nightly_jobs():
            try:
                times.append(registry.get_scheduled_time(job))
            except NoSuchJobError:  # in the queue itself: its time has come
                times.append(timezone.now())
        return min(times, default=None)
    from django_tasks_db.models import DBTaskResult

    waiting = DBTaskResult.objects.filter(
        task_path=analytics_nightly.module_path, status="READY"
    ).aggregate(at=Min("run_after"))
    return cast("dt.datetime | None", waiting["at"])


def nightly_is_queued() -> bool:
    """Whether a nightly run is already waiting. Registering the nightly run twice would run
    the analytics twice every night."""
    return nightly_queued_at() is not None


def unschedule_nightly() -> int:
    """Withdraw the waiting nightly run (the analytics then run only when asked); returns how
    many were withdrawn. A nightly run already under way still queues the next night's as it
    finishes: the 分析の実行 page then shows one waiting again."""
    if _uses_rq():
        jobs = _waiting_rq_nightly_jobs()
        for job in jobs:
            job.delete()
        return len(jobs)
    from django_tasks_db.models import DBTaskResult

    deleted, _ = DBTaskResult.objects.filter(
        task_path=analytics_nightly.module_path, status="READY"
    ).delete()
    return deleted


def schedule_nightly(*, now: dt.datetime | None = None) -> dt.datetime | None:
    """Queue the next nightly run unless one is already waiting; returns when it will run."""
    if nightly_is_queued():
        return None
    when = next_nightly_time(now or timezone.now())
    analytics_nightly.using(run_after=when).enqueue()
    return when
