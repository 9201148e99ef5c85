"""Reads of scenario enrollments shared by the pages and the lift: how many customers a
scenario enrolled (treated and held out), and what the customer page shows of the scenarios a
customer is in; and the scenarios as filters on other pages list them.

An operator on the phone is asked "why did I get this mail?" and a marketer checks whether a
customer was held out: each recent enrollment with its scenario, state, holdout and what became
of each step — sent, skipped with the reason, held out — in a few indexed queries (enrollments
by enrollment_customer, their step records by dispatch_once, the messages by the outbox's
customer index).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Count

from kizuna.campaigns.automation.models import (
    DispatchStatus,
    Enrollment,
    EnrollmentStatus,
    ExitRule,
    Scenario,
    ScenarioStatus,
    ScenarioStep,
    StepAnchor,
    StepDispatch,
)
from kizuna.campaigns.automation.triggers import sending_purpose
from kizuna.campaigns.models import Channel, OutboxMessage, OutboxStatus, Purpose
from kizuna.campaigns.timing import in_quiet_hours
from kizuna.customers.models import Customer

RECENT_ENROLLMENTS = 10


def enrollment_counts(scenario_id: int) -> dict[bool, int]:
    """The scenario's enrollments by holdout: {False: treated, True: held out} (absent: 0)."""
    return dict(
        Enrollment.objects.filter(scenario_id=scenario_id)
        .order_by()
        .values_list("holdout")
        .annotate(n=Count("pk"))
        .values_list("holdout", "n")
    )


def scenario_choices() -> list[tuple[int, str]]:
    """Every scenario as a filter lists it, 「名前(識別名)」: names differ since they must, but
    two saved with the same name before that rule are told apart by their keys. Archived ones
    stay (their past messages are still looked up), marked 「(アーカイブ)」."""
    return [
        (pk, f"{name}({key})" + ("(アーカイブ)" if status == ScenarioStatus.ARCHIVED else ""))
        for pk, name, key, status in Scenario.objects.order_by("name", "id").values_list(
            "pk", "name", "key", "status"
        )
    ]


def timing_label(
    step: ScenarioStep, scenario: Scenario, *, quiet: tuple[dt.time, dt.time] | None = None
) -> str:
    """When a step runs, as a marketer would say it. `quiet` (the delivery settings' quiet
    hours, start and end) adds when a marketing step timed inside them really goes out: the
    worker moves it to the end of the quiet hours."""
    anchor = StepAnchor(step.anchor).label
    if step.anchor == StepAnchor.FIRST_USE:
        anchor = f"使用開始日(お届けの{scenario.first_use_days}日後)"
    if step.offset_days > 0:
        when = f"{anchor}の{step.offset_days}日後"
    elif step.offset_days < 0:
        when = f"{anchor}の{-step.offset_days}日前"
    else:
        when = f"{anchor}の当日"
        if step.anchor == StepAnchor.TRIGGER:
            when = "きっかけの直後" if step.send_time is None else "きっかけの当日"
    if step.send_time is not None:
        when += f" {step.send_time:%H:%M}"
        if step.offset_days == 0:
            # Due at that time of the anchor's day: an entry made later that day is already
            # past it and goes at once (an entry at 12:27 is not held until tomorrow 10:00).
            when += "(過ぎていればすぐ)"
        if (
            quiet is not None
            and sending_purpose(scenario) == Purpose.MARKETING
            and in_quiet_hours(step.send_time, start=quiet[0], end=quiet[1])
        ):
            when += f"※送信しない時間帯のため{quiet[1]:%H:%M}以降に送信"
    if step.repeat_monthly:
        when += f"(以後毎月同じ日に{step.repeat_monthly}回)"
    return when


EXIT_LABELS = {**dict(ExitRule.choices), "expired": "期限切れで終了"}


@dataclass(frozen=True)
class StepOutcome:
    step: str  # when it runs, as timing_label says it (購入の30日後 10:00)
    key: str  # the step's key, for whoever edits the scenario
    label: str  # 送信済(メール), 見送り: 配信同意がありません, ホールドアウト(送らない) …
    problem: bool  # skipped or failed: worth a second look on a call


@dataclass
class EnrollmentRow:
    enrollment: Enrollment
    status_label: str
    steps: list[StepOutcome] = field(default_factory=list)


def _message_label(message: OutboxMessage) -> tuple[str, bool]:
    channel = Channel(message.sent_channel or message.channel).label
    if message.status == OutboxStatus.SENT:
        if message.delivery_list_id is not None:
            # Printed, packed or called once the list is handed over, not yet.
            return f"リストに追加済({channel} #{message.delivery_list_id})", False
        return f"送信済({channel})", False
    if message.status in (OutboxStatus.SKIPPED, OutboxStatus.FAILED):
        return f"{message.get_status_display()}({channel}): {message.reason}", True
    return f"{message.get_status_display()}({channel})", False


def customer_enrollments(customer: Customer) -> list[EnrollmentRow]:
    """The customer's most recent enrollments, newest first, with each step's outcome."""
    enrollments = list(
        Enrollment.objects.filter(customer=customer)
        .select_related("scenario")
        .order_by("-enrolled_at", "-id")[:RECENT_ENROLLMENTS]
    )
    if not enrollments:
        return []
    ids = [e.pk for e in enrollments]
    dispatches: dict[int, list[StepDispatch]] = defaultdict(list)
    for dispatch in (
        StepDispatch.objects.filter(enrollment_id__in=ids)
        .select_related("step")
        .order_by("due_at", "id")
    ):
        dispatches[dispatch.enrollment_id].append(dispatch)
    messages = {
        (m.enrollment_id, m.step_key): m
        for m in OutboxMessage.objects.filter(customer=customer, enrollment_id__in=ids).order_by(
            "id"
        )
    }
    rows = []
    for enrollment in enrollments:
        status = enrollment.get_status_display()
        if enrollment.status == EnrollmentStatus.EXITED and enrollment.exit_reason:
            status += f"({EXIT_LABELS.get(enrollment.exit_reason, enrollment.exit_reason)})"
        row = EnrollmentRow(enrollment, status)
        for dispatch in dispatches[enrollment.pk]:
            when = timing_label(dispatch.step, enrollment.scenario)
            if dispatch.repeat:
                when += f"({dispatch.repeat + 1}回目)"
            message = messages.get((enrollment.pk, dispatch.step.key))
            if dispatch.status == DispatchStatus.QUEUED and message is not None:
                label, problem = _message_label(message)
            else:
                label = dispatch.get_status_display()
                problem = dispatch.status == DispatchStatus.SKIPPED
            row.steps.append(StepOutcome(when, dispatch.step.key, label, problem))
        rows.append(row)
    return rows
