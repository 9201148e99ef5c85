"""「ポイント失効N日前のお知らせ」: only points the customer still holds, the amount left of them
and their date, once per (customer, expiry date), and nothing when they were used meanwhile.

Spending takes the soonest-expiring points first: a notice naming points already used told
customers that points they no longer had would expire."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kizuna.campaigns.automation import triggers
from kizuna.campaigns.automation.models import DispatchStatus, Enrollment, Scenario, StepDispatch
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.automation.templating import customer_contexts
from kizuna.campaigns.models import OutboxMessage
from kizuna.customers.models import Customer
from kizuna.loyalty.services import points_earn, points_redeem
from tests.factories import make_customer
from tests.test_scenarios_kit import STAFF, jst, scenario, step, template

pytestmark = pytest.mark.django_db
START = jst(2026, 5, 1)
# Points earned 2025-06-09 with 365 days' validity expire on 2026-06-09; 30 days before:
NOTICE_DAY = jst(2026, 5, 10, 9)
DAY_MINUTES = 24 * 60


def _scenario() -> None:
    notice = template(
        "points-expiry",
        subject="{{ points_expiring }}ポイントが{{ points_expiry_date|jdate }}に失効します",
        text="{{ name }} 様\n{{ points_expiry_date|jdate }}に{{ points_expiring }}ポイントが失効します。",
    )
    scenario(
        trigger={"kind": "points_expiring", "days": 30},
        steps=[step(template=notice.key)],
        activated_at=START,
    )


def _earn(customer: Customer, amount: int, at: dt.datetime, days: int = 365) -> None:
    points_earn(
        customer=customer, amount=amount, acting_user=STAFF, reason="購入", at=at, valid_days=days
    )


def _use(customer: Customer, amount: int, at: dt.datetime) -> None:
    points_redeem(customer=customer, amount=amount, acting_user=STAFF, reason="利用", at=at)


def _subjects() -> dict[int, str]:
    return {
        m.customer_id: m.content["subject"]
        for m in OutboxMessage.objects.filter(scenario_id__isnull=False)
    }


def test_the_notice_states_the_points_left_after_those_used() -> None:
    # given: 100 points expiring on 6/9, of which 60 were used, and 200 expiring later
    _scenario()
    customer = make_customer()
    _earn(customer, 100, jst(2025, 6, 9, 12))
    _earn(customer, 200, jst(2025, 10, 1, 12))
    _use(customer, 60, jst(2025, 12, 1, 12))
    # when
    tick(NOTICE_DAY)
    # then
    assert _subjects() == {customer.pk: "40ポイントが2026年6月9日に失効します"}


def test_no_notice_when_the_points_were_all_used() -> None:
    # given: 100 points expiring on 6/9, all used; newer points (expiring later) remain
    _scenario()
    customer = make_customer()
    _earn(customer, 100, jst(2025, 6, 9, 12))
    _use(customer, 100, jst(2025, 12, 1, 12))
    _earn(customer, 49, jst(2026, 1, 5, 12))
    # when
    tick(NOTICE_DAY)
    # then: not enrolled for 6/9, and nothing sent
    assert not Enrollment.objects.exists()
    assert _subjects() == {}


def test_two_lots_expiring_the_same_day_are_summed() -> None:
    # given: two earnings expiring on 6/9 and a third later; 30 used (taken from 6/9's)
    _scenario()
    customer = make_customer()
    _earn(customer, 100, jst(2025, 6, 9, 10))
    _earn(customer, 50, jst(2025, 6, 9, 18))
    _earn(customer, 70, jst(2025, 8, 1, 12))
    _use(customer, 30, jst(2025, 12, 1, 12))
    # when
    tick(NOTICE_DAY)
    # then: one notice, for 120 points
    assert _subjects() == {customer.pk: "120ポイントが2026年6月9日に失効します"}
    assert list(Enrollment.objects.values_list("occurrence", flat=True)) == ["expiry:2026-06-09"]


def test_points_used_after_enrolment_and_before_the_send_are_not_announced(settings: Any) -> None:
    settings.KIZUNA_SCHEDULER_BACKLOG_MINUTES = DAY_MINUTES  # ticks an hour apart are on time
    # given: a notice at 10:00 on the day it is due; enrolled at 9:00
    notice = template(
        "points-expiry",
        subject="{{ points_expiring }}ポイントが{{ points_expiry_date|jdate }}に失効します",
    )
    scenario(
        trigger={"kind": "points_expiring", "days": 30},
        steps=[step(template=notice.key, send_time="10:00")],
        activated_at=START,
    )
    used_up, partly = make_customer(), make_customer()
    for customer in (used_up, partly):
        _earn(customer, 100, jst(2025, 6, 9, 12))
    tick(NOTICE_DAY)
    assert Enrollment.objects.count() == 2
    assert _subjects() == {}
    # when: between enrolment and the send, one uses them all, the other 70
    _use(used_up, 100, jst(2026, 5, 10, 9, 30))
    _use(partly, 70, jst(2026, 5, 10, 9, 30))
    tick(jst(2026, 5, 10, 10, 5))
    # then: the amount is the one left when it is sent; nothing is sent for nothing
    assert _subjects() == {partly.pk: "30ポイントが2026年6月9日に失効します"}
    statuses = dict(StepDispatch.objects.values_list("enrollment__customer_id", "status"))
    assert statuses[used_up.pk] == DispatchStatus.SKIPPED


def test_one_notice_per_expiry_date_at_n_days_before(settings: Any) -> None:
    settings.KIZUNA_SCHEDULER_BACKLOG_MINUTES = 2 * DAY_MINUTES  # daily ticks are on time
    # given: points expiring on 6/9 and on 7/9
    _scenario()
    customer = make_customer()
    _earn(customer, 100, jst(2025, 6, 9, 12))
    _earn(customer, 40, jst(2025, 7, 9, 12))
    # when: every day from 5/1 to 6/12
    day = dt.date(2026, 5, 1)
    while day <= dt.date(2026, 6, 12):
        tick(jst(day.year, day.month, day.day, 9))
        day += dt.timedelta(days=1)
    # then: each date announced once, 30 days before it, with its own amount
    sent = sorted(
        (m.send_after, m.content["subject"])
        for m in OutboxMessage.objects.filter(scenario_id__isnull=False)
    )
    assert [subject for _, subject in sent] == [
        "100ポイントが2026年6月9日に失効します",
        "40ポイントが2026年7月9日に失効します",
    ]
    assert sorted(Enrollment.objects.values_list("anchor_date", flat=True)) == [
        dt.date(2026, 5, 10),
        dt.date(2026, 6, 9),
    ]


def test_the_demo_history_counts_the_ledger_as_it_was_on_the_notice_day() -> None:
    # given: 100 points expiring on 6/9 held on 5/10 (the notice day), used on 5/20
    _scenario()
    held, gone = make_customer(), make_customer()
    for customer in (held, gone):
        _earn(customer, 100, jst(2025, 6, 9, 12))
    _use(gone, 100, jst(2026, 5, 1, 12))
    _use(held, 100, jst(2026, 5, 20, 12))
    scn = Scenario.objects.get()
    # when: enrolments written as history on 5/25
    window = triggers.Window(now=jst(2026, 5, 25, 9), since=START)
    rows = triggers.enrollment_rows(scn, window, at_trigger=True)
    # then: `held` had them on 5/10 and was enrolled then; `gone` had used them before
    assert [(row[1], row[6]) for row in rows] == [(held.pk, dt.date(2026, 5, 10))]


def test_the_template_values_name_the_soonest_points_still_held() -> None:
    # given: 6/9's points all used, 7/9's partly
    customer = make_customer()
    _earn(customer, 100, jst(2025, 6, 9, 12))
    _earn(customer, 80, jst(2025, 7, 9, 12))
    _use(customer, 130, jst(2025, 12, 1, 12))
    # when
    context = customer_contexts([customer.pk], today=dt.date(2026, 5, 10))[customer.pk]
    # then
    assert (context["points_expiring"], context["points_expiry_date"]) == (
        50,
        dt.date(2026, 7, 9),
    )
    assert context["points_balance"] == 50
