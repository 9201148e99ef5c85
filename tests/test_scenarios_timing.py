"""When each step is sent: offsets from each anchor, send times on the JST calendar (S9),
monthly repeats, exits, conditions and the holdout group."""

from __future__ import annotations

import datetime as dt

import pytest

from kizuna.campaigns.automation.models import (
    DispatchStatus,
    Enrollment,
    EnrollmentStatus,
    StepDispatch,
)
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.automation.triggers import holdout_draw
from kizuna.campaigns.models import OutboxMessage
from kizuna.commerce.models import Shipment
from kizuna.customers.models import ConsentChannel, ConsentMethod
from kizuna.customers.services import consent_grant, consent_withdraw
from tests.factories import make_customer, make_order, make_subscription
from tests.test_scenarios_kit import STAFF, jst, one, scenario, segment, step

pytestmark = pytest.mark.django_db
START = jst(2026, 5, 1)
UTC = dt.UTC


@pytest.fixture(autouse=True)
def _daily_ticks_are_normal_running(settings):  # type: ignore[no-untyped-def]
    # These tests tick once a day to walk through months; in production the scheduler ticks
    # every minute, so a day between ticks would rightly count as a stopped scheduler.
    settings.KIZUNA_SCHEDULER_BACKLOG_MINUTES = 3 * 24 * 60


def sent() -> list[tuple[str, dt.datetime]]:
    return sorted(OutboxMessage.objects.values_list("step_key", "send_after"))


def delivered_order(ordered: dt.datetime, delivered: dt.date):  # type: ignore[no-untyped-def]
    customer = make_customer()
    order = make_order(customer, ordered_at=ordered)
    Shipment.objects.create(
        order=order, shipped_on=delivered - dt.timedelta(days=1), delivered_on=delivered
    )
    return customer, order


def test_birthday_at_0030_jst_is_already_the_birthday() -> None:
    # given: born on 10 May; 00:30 JST on 10 May is 15:30 UTC on 9 May
    scenario(trigger={"kind": "birthday"}, activated_at=START)
    customer = make_customer(birthday=dt.date(1985, 5, 10))
    # when: 23:30 JST on the 9th (14:30 UTC)
    tick(dt.datetime(2026, 5, 9, 14, 30, tzinfo=UTC))
    # then: not yet
    assert not Enrollment.objects.exists()
    # when: 00:30 JST on the 10th (15:30 UTC on the 9th)
    tick(dt.datetime(2026, 5, 9, 15, 30, tzinfo=UTC))
    # then: the birthday message, anchored at 0:00 JST on the 10th
    enrollment = Enrollment.objects.get()
    assert (enrollment.customer_id, enrollment.occurrence) == (customer.pk, "birthday:2026")
    assert sent() == [("s1", jst(2026, 5, 10))]


def test_a_send_time_waits_for_that_jst_hour_on_the_right_day() -> None:
    scenario(
        trigger={"kind": "birthday"},
        steps=[step("morning", send_time="09:00")],
        activated_at=START,
    )
    make_customer(birthday=dt.date(1985, 5, 10))
    tick(jst(2026, 5, 10, 8, 59))
    assert sent() == []
    tick(jst(2026, 5, 10, 9, 0))
    assert sent() == [("morning", jst(2026, 5, 10, 9))]


def test_steps_at_offsets_from_purchase_delivery_and_first_use() -> None:
    # given: ordered 1 May 20:00 JST, delivered 3 May; "first use" is delivery + 3 days
    scenario(
        trigger={"kind": "first_purchase"},
        steps=[
            step("thanks", anchor="purchase", offset_days=0),
            step("arrived", anchor="delivery", offset_days=0, send_time="10:00"),
            step("how-is-it", anchor="first_use", offset_days=7, send_time="10:00"),
            step("day-30", anchor="purchase", offset_days=30, send_time="10:00"),
            step("day-90", anchor="purchase", offset_days=90, send_time="10:00"),
        ],
        first_use_days=3,
        activated_at=START,
    )
    delivered_order(jst(2026, 5, 1, 20), dt.date(2026, 5, 3))
    # when: a tick every day at 10:00 JST for 100 days
    for day in range(101):
        tick(jst(2026, 5, 1, 10) + dt.timedelta(days=day))
    # then
    assert sent() == [
        ("arrived", jst(2026, 5, 3, 10)),
        ("day-30", jst(2026, 5, 31, 10)),
        ("day-90", jst(2026, 7, 30, 10)),
        ("how-is-it", jst(2026, 5, 13, 10)),
        ("thanks", jst(2026, 5, 1, 20)),
    ]
    assert Enrollment.objects.get().status == EnrollmentStatus.COMPLETED


def test_a_delivery_step_waits_until_the_delivery_is_known() -> None:
    scenario(
        trigger={"kind": "first_purchase"},
        steps=[step("arrived", anchor="delivery", send_time="10:00")],
        activated_at=START,
    )
    customer = make_customer()
    order = make_order(customer, ordered_at=jst(2026, 5, 1, 12))
    tick(jst(2026, 5, 5, 10))
    assert sent() == []
    Shipment.objects.create(
        order=order, shipped_on=dt.date(2026, 5, 3), delivered_on=dt.date(2026, 5, 5)
    )
    tick(jst(2026, 5, 5, 10, 1))
    assert sent() == [("arrived", jst(2026, 5, 5, 10))]


def test_before_delivery_counts_back_from_the_next_delivery_date() -> None:
    scenario(
        trigger={"kind": "subscription_before_delivery", "days": 7},
        steps=[
            step("week-before", anchor="trigger", send_time="10:00"),
            step("three-days-before", anchor="next_delivery", offset_days=-3, send_time="10:00"),
            step("on-the-day", anchor="next_delivery", offset_days=0, send_time="08:00"),
        ],
        activated_at=START,
    )
    make_subscription(
        make_customer(), started_on=dt.date(2026, 4, 20), next_delivery_on=dt.date(2026, 5, 20)
    )
    for day in range(25):
        tick(jst(2026, 5, 1, 10, 30) + dt.timedelta(days=day))
    assert sent() == [
        ("on-the-day", jst(2026, 5, 20, 8)),
        ("three-days-before", jst(2026, 5, 17, 10)),
        ("week-before", jst(2026, 5, 13, 10)),
    ]


def test_monthly_steps_land_on_the_delivery_day_or_the_month_end() -> None:
    # given: delivered on 31 January; a tip each month on the delivery day
    scenario(
        trigger={"kind": "delivery"},
        steps=[step("monthly", anchor="delivery", send_time="10:00", repeat_monthly=3)],
        activated_at=jst(2026, 1, 30),
    )
    delivered_order(jst(2026, 1, 28), dt.date(2026, 1, 31))
    # when
    for day in range(120):
        tick(jst(2026, 1, 30, 11) + dt.timedelta(days=day))
    # then: 31 Jan, 28 Feb (no 31st), 31 Mar, 30 Apr
    assert [at for _, at in sent()] == [
        jst(2026, 1, 31, 10),
        jst(2026, 2, 28, 10),
        jst(2026, 3, 31, 10),
        jst(2026, 4, 30, 10),
    ]
    keys = sorted(OutboxMessage.objects.values_list("dedupe_key", flat=True))
    assert [k.rsplit(":", 1)[-1] for k in keys][-3:] == ["1", "2", "3"]


def test_buying_ends_the_scenario_before_its_later_steps() -> None:
    scenario(
        trigger={"kind": "first_purchase"},
        steps=[
            step("thanks", anchor="purchase"),
            step("coupon", anchor="purchase", offset_days=10, send_time="10:00"),
        ],
        exit_on=["purchase"],
        activated_at=START,
    )
    customer = make_customer()
    make_order(customer, ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    make_order(customer, ordered_at=jst(2026, 5, 6, 9))  # converted before the coupon
    tick(jst(2026, 5, 12, 10))
    assert [key for key, _ in sent()] == ["thanks"]
    enrollment = Enrollment.objects.get()
    assert (enrollment.status, enrollment.exit_reason) == (EnrollmentStatus.EXITED, "purchase")


def test_opting_out_ends_a_marketing_scenario() -> None:
    scenario(
        trigger={"kind": "first_purchase"},
        steps=[step("later", anchor="purchase", offset_days=5, send_time="10:00")],
        activated_at=START,
    )
    customer = make_customer()
    consent_grant(
        customer=customer, channel=ConsentChannel.EMAIL, method=ConsentMethod.WEB_FORM,
        source_form="test", wording_version="v1", acting_user=STAFF, at=jst(2026, 4, 1),
    )  # fmt: skip
    make_order(customer, ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    consent_withdraw(
        customer=customer, channel=ConsentChannel.EMAIL, method=ConsentMethod.UNSUBSCRIBE,
        acting_user=STAFF, at=jst(2026, 5, 3),
    )  # fmt: skip
    tick(jst(2026, 5, 8, 10))
    assert sent() == []
    assert Enrollment.objects.get().exit_reason == "opt_out"


def test_a_step_condition_skips_customers_outside_its_segment() -> None:
    tokyo = segment("tokyo", one("prefecture", "in", ["13"]))
    scenario(
        trigger={"kind": "first_purchase"},
        steps=[step("tokyo-only", anchor="purchase", condition=tokyo.key)],
        activated_at=START,
    )
    inside, outside = make_customer(prefecture=13), make_customer(prefecture=27)
    for customer in (inside, outside):
        make_order(customer, ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    assert list(OutboxMessage.objects.values_list("customer_id", flat=True)) == [inside.pk]
    skipped = StepDispatch.objects.get(status=DispatchStatus.SKIPPED)
    assert skipped.enrollment.customer_id == outside.pk


def test_the_holdout_is_enrolled_but_never_messaged() -> None:
    s = scenario(trigger={"kind": "first_purchase"}, holdout_percent=10, activated_at=START)
    customers = [make_customer() for _ in range(300)]
    for customer in customers:
        make_order(customer, ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    held = set(Enrollment.objects.filter(holdout=True).values_list("customer_id", flat=True))
    messaged = set(OutboxMessage.objects.values_list("customer_id", flat=True))
    assert Enrollment.objects.count() == 300
    assert 12 <= len(held) <= 48  # 10% of 300, give or take chance
    assert held.isdisjoint(messaged)
    assert len(messaged) == 300 - len(held)
    assert held == {c.pk for c in customers if holdout_draw(s.key, c.pk, 10)}
    assert StepDispatch.objects.filter(status=DispatchStatus.HELD_OUT).count() == len(held)


def test_the_holdout_draw_is_stable_and_differs_between_scenarios() -> None:
    ids = range(1, 2001)
    a = {i for i in ids if holdout_draw("welcome", i, 10)}
    assert a == {i for i in ids if holdout_draw("welcome", i, 10)}
    b = {i for i in ids if holdout_draw("win-back", i, 10)}
    assert 150 <= len(a) <= 250
    assert len(a & b) < 60  # independent draws overlap by about 1%
    assert not any(holdout_draw("welcome", i, 0) for i in ids)
