"""`run_analytics`: compute the analytics from the operational tables and store the snapshot.

One function behind every way a run starts — `kizuna analytics run`, the nightly task and a
web button — so they all record an AnalyticsRun with progress, timings and the outcome.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from kizuna.analytics.models import (
    AnalyticsRun,
    AnalyticsSettings,
    RunStatus,
    engine_label,
    engine_unavailable_reason,
)
from kizuna.analytics.pipeline import backends
from kizuna.analytics.pipeline.compute import compute
from kizuna.analytics.pipeline.config import AnalyticsConfig, AsOfError, Backend, check_as_of
from kizuna.analytics.pipeline.extract import snapshot_from_database
from kizuna.analytics.pipeline.steps import STEP_LABELS, OnStep, StepClock
from kizuna.analytics.pipeline.store import prune_customer_scores, store_result
from kizuna.analytics.pipeline.tables import Tables, load_snapshot, postgres_tables
from kizuna.core.audit import Actor

logger = logging.getLogger(__name__)


class AnalyticsRunError(RuntimeError):
    """The run failed; the AnalyticsRun row holds the message shown to staff."""


def _steps(backend: Backend) -> list[str]:
    first = ["load"] if backend == Backend.POSTGRES else ["extract", "load"]
    return [
        *first,
        "summary",
        "predictions",
        "repeat",
        "cohorts",
        "subscriptions",
        "dynamics",
        "fans",
        "store",
    ]


def _config_json(cfg: AnalyticsConfig) -> dict[str, Any]:
    return {
        "rfm_method": cfg.rfm_method.value,
        "recency_days": list(cfg.recency_days),
        "frequency_counts": list(cfg.frequency_counts),
        "monetary_yen": list(cfg.monetary_yen),
        "cpm_lapse_days": cfg.cpm_lapse_days,
        "cpm_toddler_tenure_days": cfg.cpm_toddler_tenure_days,
        "cpm_loyal_tenure_days": cfg.cpm_loyal_tenure_days,
        "cpm_amount_yen": cfg.cpm_amount_yen,
        "windows_days": list(cfg.windows_days),
        "prediction_model": cfg.prediction_model,
        "prediction_horizon_days": cfg.prediction_horizon_days,
        "keep_customer_runs": cfg.keep_customer_runs,
    }


def _usable_config(day: dt.date, *, today: dt.date, run: AnalyticsRun | None) -> AnalyticsConfig:
    """The shop's settings for a run as of `day`, or AnalyticsRunError (Japanese) when the day is
    after today or the settings cannot be used; a queued row then ends failed with the reason."""
    try:
        check_as_of(day, today=today)
        return AnalyticsSettings.load().to_config()
    except (AsOfError, ValidationError) as exc:
        message = (
            str(exc)
            if isinstance(exc, AsOfError)
            else "分析設定に誤りがあります: " + "; ".join(exc.messages)
        )
        if run is not None:
            run.status, run.message, run.finished_at = RunStatus.FAILED, message, timezone.now()
            run.save(update_fields=["status", "message", "finished_at"])
        raise AnalyticsRunError(message) from exc


def run_analytics(
    *,
    acting_user: Any,
    as_of: dt.date | None = None,
    backend: Backend | str = Backend.DUCKDB,
    trigger: str = "manual",
    on_step: OnStep | None = None,
    run: AnalyticsRun | None = None,
    extract_method: str = "auto",
    today: dt.date | None = None,
) -> AnalyticsRun:
    """Compute everything as of `as_of` (default: today, Asia/Tokyo) and store the snapshot.

    An as-of day after `today` (default: today in Japan) is refused (config.check_as_of); only
    the demo passes a `today` of its own, the last day of the history it made up.
    Progress is written to the AnalyticsRun row as each step starts (outside any transaction,
    so a page polling it sees it move); the snapshot itself is written in one transaction.
    On failure the row is marked failed with the reason and AnalyticsRunError is raised.
    """
    engine = Backend(backend)
    actor = Actor.of(acting_user)
    day = as_of or timezone.localdate()
    cfg = _usable_config(day, today=today or timezone.localdate(), run=run)
    steps = _steps(engine)
    if run is None:
        run = AnalyticsRun.objects.create(as_of=day, backend=engine.value)
    run.as_of, run.backend = day, engine.value
    run.status, run.trigger, run.requested_by = RunStatus.RUNNING, trigger, actor.label
    run.started_at, run.step_total, run.settings = timezone.now(), len(steps), _config_json(cfg)
    run.save()

    def step_started(name: str, index: int, total: int) -> None:
        AnalyticsRun.objects.filter(pk=run.pk).update(step=name, step_index=index)
        if on_step is not None:
            on_step(name, index, total)

    clock = StepClock(steps, step_started)
    try:
        con = backends.connect(engine)
        tables: Tables
        if engine == Backend.POSTGRES:
            with clock.step("load"):
                tables = postgres_tables(con)
        else:
            with clock.step("extract"):
                snapshot = snapshot_from_database(method=extract_method)
            with clock.step("load"):
                tables = load_snapshot(con, snapshot)
                del snapshot
        result = compute(tables, as_of=day, cfg=cfg, clock=clock)
        with clock.step("store"):
            store_result(run, result)
    except Exception as exc:
        logger.exception("analytics run %s failed", run.pk)
        run.status = RunStatus.FAILED
        run.message = _failure_message(engine, _last_step(run), exc)
        run.finished_at = timezone.now()
        run.timings = clock.timings
        run.save(update_fields=["status", "message", "finished_at", "timings"])
        raise AnalyticsRunError(run.message) from exc
    run.status = RunStatus.DONE
    run.finished_at = timezone.now()
    run.timings = clock.timings
    run.step, run.step_index = "", len(steps)
    run.save(update_fields=["status", "finished_at", "timings", "step", "step_index"])
    prune_customer_scores(keep=cfg.keep_customer_runs)
    return run


def _failure_message(engine: Backend, step: str, exc: Exception) -> str:
    """What staff read for a failed run: the step it stopped in, when it had started one, and
    the reason; an engine this install cannot run is named as the settings form names it."""
    reason = str(exc)
    if isinstance(exc, backends.BackendUnavailableError):
        why = engine_unavailable_reason(engine.value)
        reason = f"{engine_label(engine.value)} はこのサーバーでは使えません。{why or reason}"
    label = STEP_LABELS.get(step, "")
    where = f"({label})" if label else ""
    return f"分析の実行に失敗しました{where}: {reason}"


def _last_step(run: AnalyticsRun) -> str:
    """The step a run was in when it stopped (as last written to its row)."""
    return AnalyticsRun.objects.filter(pk=run.pk).values_list("step", flat=True).first() or ""
