"""Why messages wait in 確認待ち, as the scenario page says it: a scheduler that did not run
while they came due (stopped, restored, or never run yet — a new installation, a demo built up
to yesterday) is told apart from data that arrived days after the moment it describes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import Backlog, TickLog
from kizuna.campaigns.automation.scheduler import tick
from tests.factories import make_customer, make_order
from tests.test_scenarios_kit import jst, scenario

pytestmark = pytest.mark.django_db
Login = Callable[[Role], Client]
STOPPED = "スケジューラが停止していた間(またはバックアップからの復元)に期限が来たメッセージ"
LATE_DATA = "基準日のデータが遅れて届き、送信予定から大きく遅れたメッセージ"


def _buyer(at: dt.datetime) -> None:
    make_order(make_customer(), ordered_at=at)


def test_the_first_run_ever_holds_what_came_due_before_it_as_a_stopped_scheduler(
    client_for: Login,
) -> None:
    # given: a scenario started on 1 May, customers who bought on 3 May, and no scheduler run
    s = scenario(trigger={"kind": "first_purchase"}, activated_at=jst(2026, 5, 1))
    _buyer(jst(2026, 5, 3, 9))
    _buyer(jst(2026, 5, 3, 9))
    assert not TickLog.objects.exists()
    # when: the scheduler runs for the first time, two days later
    tick(jst(2026, 5, 5, 10))
    # then: held, and the page says the scheduler was not running — not that data came late
    backlog = Backlog.objects.get()
    assert (backlog.size, backlog.reason) == (2, STOPPED)
    page = client_for(Role.MARKETER).get(reverse("scenarios:detail", args=[s.pk]))
    html = page.content.decode()
    assert STOPPED in html
    assert "基準日のデータが遅れて届き" not in html


def test_data_that_arrives_late_while_the_scheduler_runs_says_so() -> None:
    # given: a scheduler running every minute
    scenario(trigger={"kind": "first_purchase"}, activated_at=jst(2026, 5, 1))
    tick(jst(2026, 5, 5, 9, 59))
    # when: an order placed two days ago is imported now
    _buyer(jst(2026, 5, 3, 9))
    tick(jst(2026, 5, 5, 10))
    # then: held as late data
    assert Backlog.objects.get().reason == LATE_DATA


def test_after_a_stop_the_page_says_the_scheduler_was_stopped() -> None:
    scenario(trigger={"kind": "first_purchase"}, activated_at=jst(2026, 5, 1))
    tick(jst(2026, 5, 2, 10))
    _buyer(jst(2026, 5, 3, 9))
    report = tick(jst(2026, 5, 5, 10))
    assert report.backlog_mode
    assert Backlog.objects.get().reason == STOPPED
