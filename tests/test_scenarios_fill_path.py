"""The scheduler's fill path: due enrollments read with a plain cursor (anchors converted as
Django would), completion counted in the UPDATE, confirmed backlogs found by their steps."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection

from kizuna.campaigns.automation import triggers
from kizuna.campaigns.automation.models import (
    Backlog,
    DispatchStatus,
    Enrollment,
    EnrollmentStatus,
    StepDispatch,
)
from kizuna.campaigns.automation.scheduler import (
    DUE_COLUMNS,
    anchor_value,
    due_enrollments,
    due_rows,
    tick,
)
from kizuna.campaigns.automation.services import backlog_confirm
from kizuna.campaigns.models import OutboxMessage
from kizuna.commerce.models import Shipment
from tests.factories import make_customer, make_order
from tests.test_scenarios_kit import STAFF, jst, one, scenario, segment, step

START = jst(2026, 5, 1)
UTC = dt.UTC


@pytest.fixture(autouse=True)
def _daily_ticks_are_normal_running(settings):  # type: ignore[no-untyped-def]
    settings.KIZUNA_SCHEDULER_BACKLOG_MINUTES = 3 * 24 * 60


@pytest.mark.parametrize(
    ("value", "output", "expected"),
    [
        # SQLite: an expression's value is ISO text
        ("2026-05-03", "DateField", dt.date(2026, 5, 3)),
        ("2026-05-01 11:00:00", "DateTimeField", dt.datetime(2026, 5, 1, 11, tzinfo=UTC)),
        (
            "2026-05-01 11:00:00.250000",
            "DateTimeField",
            dt.datetime(2026, 5, 1, 11, 0, 0, 250000, tzinfo=UTC),
        ),
        (
            "2026-05-01T20:00:00+09:00",
            "DateTimeField",
            dt.datetime(2026, 5, 1, 11, tzinfo=UTC),
        ),
        # SQLite: a plain column comes back through Django's registered converters, naive
        (dt.datetime(2026, 5, 1, 11), "DateTimeField", dt.datetime(2026, 5, 1, 11, tzinfo=UTC)),
        (dt.date(2026, 5, 3), "DateField", dt.date(2026, 5, 3)),
        # PostgreSQL: already dates and aware moments
        (dt.datetime(2026, 5, 1, 11, tzinfo=UTC), "DateTimeField", jst(2026, 5, 1, 20)),
    ],
)
def test_an_anchor_is_converted_as_djangos_converters_would(
    value: Any, output: str, expected: dt.date | dt.datetime
) -> None:
    converted = anchor_value(value, output, UTC)
    assert converted == expected
    assert type(converted) is type(expected)
    if isinstance(converted, dt.datetime):
        assert converted.tzinfo is not None


def test_an_anchor_that_is_not_a_date_is_refused() -> None:
    with pytest.raises(ValueError, match="DateField"):
        anchor_value("soon", "DateField", UTC)
    with pytest.raises(ValueError, match="DateTimeField"):
        anchor_value("soon", "DateTimeField", UTC)
    with pytest.raises(ValueError, match="month"):
        anchor_value("2026-13-45 09:00", "DateTimeField", UTC)


def _truth(row: tuple[Any, ...]) -> tuple[Any, ...]:
    at = {name: index for index, name in enumerate(DUE_COLUMNS)}
    values = list(row)
    for name in ("holdout", "in_condition"):
        values[at[name]] = bool(values[at[name]])
    return tuple(values)


@pytest.mark.django_db
def test_due_rows_are_what_the_orm_reads_for_moment_and_date_anchors() -> None:
    # given: steps anchored at the purchase moment, the trigger's JST date (a plain column),
    # the delivery date (a subquery) and a step condition; buyers inside and outside it
    tokyo = segment("tokyo", one("prefecture", "in", ["13"]))
    s = scenario(
        trigger={"kind": "first_purchase"},
        steps=[
            step("thanks", anchor="purchase", condition=tokyo.key),
            step("morning", anchor="trigger", send_time="09:00"),
            step("arrived", anchor="delivery", send_time="10:00", repeat_monthly=1),
        ],
        activated_at=START,
    )
    for prefecture, minute in ((13, 5), (27, 7), (13, 9)):
        order = make_order(make_customer(prefecture=prefecture), ordered_at=jst(2026, 5, 2, 8))
        order.ordered_at += dt.timedelta(minutes=minute, microseconds=1500)
        order.save(update_fields=["ordered_at"])
        Shipment.objects.create(
            order=order, shipped_on=dt.date(2026, 5, 3), delivered_on=dt.date(2026, 5, 4)
        )
    now = jst(2026, 5, 4, 11)
    triggers.enroll(s, triggers.Window(now=now, since=START))
    assert Enrollment.objects.count() == 3
    steps = list(s.steps.select_related("condition").order_by("position"))
    # when / then: every step's rows, anchors included, are the ORM's
    arrived = steps[2]
    for scenario_step, repeat, due in [*((s_, 0, 3) for s_ in steps), (arrived, 1, 0)]:
        query = due_enrollments(s, scenario_step, repeat, now=now)
        expected = list(query.values_list(*DUE_COLUMNS))
        got = due_rows(query)
        assert [_truth(row) for row in got] == [_truth(row) for row in expected]
        assert len(got) == due


@pytest.mark.django_db
def test_an_enrollment_completes_when_its_last_step_is_decided_in_a_later_tick() -> None:
    scenario(
        trigger={"kind": "first_purchase"},
        steps=[step("now"), step("later", anchor="purchase", offset_days=2)],
        activated_at=START,
    )
    make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    assert Enrollment.objects.get().status == EnrollmentStatus.ACTIVE
    tick(jst(2026, 5, 4, 10))
    enrollment = Enrollment.objects.get()
    assert (enrollment.status, enrollment.exited_at) == (
        EnrollmentStatus.COMPLETED,
        jst(2026, 5, 4, 10),
    )


@pytest.mark.django_db
def test_monthly_repeats_count_towards_completion() -> None:
    scenario(
        trigger={"kind": "first_purchase"},
        steps=[step("monthly", anchor="purchase", send_time="10:00", repeat_monthly=1)],
        activated_at=START,
    )
    make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    assert Enrollment.objects.get().status == EnrollmentStatus.ACTIVE
    tick(jst(2026, 6, 2, 10))
    assert Enrollment.objects.get().status == EnrollmentStatus.COMPLETED


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.django_db
def test_an_enrollment_decided_in_an_earlier_tick_but_left_active_completes(steps: int) -> None:
    # given: every step decided long ago, yet the enrollment still active (a tick that failed
    # after dispatching, say)
    scenario(
        trigger={"kind": "first_purchase"},
        steps=[step(f"s{n}") for n in range(steps)],
        activated_at=START,
    )
    make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    assert StepDispatch.objects.count() == steps
    Enrollment.objects.update(status=EnrollmentStatus.ACTIVE, exited_at=None)
    # when: a later tick with nothing new to decide
    tick(jst(2026, 5, 3, 10))
    # then
    assert Enrollment.objects.get().status == EnrollmentStatus.COMPLETED


@pytest.mark.django_db
def test_an_enrollment_with_a_step_left_is_not_completed() -> None:
    s = scenario(
        trigger={"kind": "first_purchase"},
        steps=[step("s0"), step("s1")],
        activated_at=START,
    )
    make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    # given: one of the two dispatches gone (as if the second step had never been decided)
    StepDispatch.objects.filter(step__key="s1").delete()
    Enrollment.objects.update(status=EnrollmentStatus.ACTIVE, exited_at=None)
    s.steps.filter(key="s1").update(offset_days=30)
    tick(jst(2026, 5, 3, 10))
    assert Enrollment.objects.get().status == EnrollmentStatus.ACTIVE


@pytest.mark.django_db
def test_confirmed_backlogs_are_found_through_the_step_index() -> None:
    s = scenario(trigger={"kind": "first_purchase"}, activated_at=START)
    tick(jst(2026, 5, 2, 10))
    make_order(make_customer(), ordered_at=jst(2026, 5, 3, 9))
    tick(jst(2026, 5, 8, 10))
    backlog_confirm(backlog=Backlog.objects.get(), acting_user=STAFF)
    approved = StepDispatch.objects.filter(
        step__in=list(s.steps.values_list("pk", flat=True)), status=DispatchStatus.APPROVED
    )
    assert approved.count() == 1
    if connection.vendor == "sqlite":
        sql, params = approved.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = " ".join(str(row) for row in cursor.fetchall())
        assert "dispatch_step_status" in plan
    tick(jst(2026, 5, 8, 10, 1))
    assert OutboxMessage.objects.count() == 1
    assert StepDispatch.objects.get().status == DispatchStatus.QUEUED
