"""Resuming a paused 「セグメントに入った」 scenario: its next check sees everyone who entered the
segment while it was stopped as new entrants and enrolls them all at once, so 稼働させる first
says how many that is and lets the user send to them too or resume without them; the message
after resuming says which happened. Other scenarios resume in one click, with a message that
says what happens to the pause's triggers and overdue messages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import Role
from kizuna.campaigns.automation import scheduler
from kizuna.campaigns.automation.models import (
    Enrollment,
    Scenario,
    ScenarioStatus,
    StepDispatch,
)
from kizuna.campaigns.automation.services import scenario_activate, scenario_pause, scenario_save
from kizuna.customers.models import Customer, MemberStatus
from tests.factories import make_customer, make_order
from tests.test_scenarios_kit import STAFF, jst, one, segment, step

pytestmark = pytest.mark.django_db
Login = Callable[[Role], Client]


def _buyers(n: int) -> None:
    for _ in range(n):
        make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))


def _paused_after_running(*, kind: str = "segment_entered") -> Scenario:
    """A scenario that ran (checked once, 3 buyers as its baseline), then was stopped."""
    segment("buyers", one("order_count", "gte", 1))
    _buyers(3)
    trigger = {"kind": kind, "segment": "buyers"} if kind == "segment_entered" else {"kind": kind}
    spec = {"key": "coupon", "name": "購入者クーポン", "trigger": trigger, "steps": [step()]}
    saved = scenario_save(scenario=None, spec=spec, acting_user=STAFF)
    started = timezone.now() - dt.timedelta(hours=2)
    scenario_activate(scenario=saved, acting_user=STAFF, at=started)
    scheduler.tick(now=started + dt.timedelta(minutes=1))
    scenario_pause(scenario=saved, acting_user=STAFF)
    # The scheduler keeps running (every minute) while the scenario is stopped.
    scheduler.tick(now=timezone.now() - dt.timedelta(minutes=1))
    saved.refresh_from_db()
    return saved


def _tick_after_resume() -> None:
    scheduler.tick(now=timezone.now() + dt.timedelta(minutes=1))


def test_resuming_asks_about_who_entered_while_paused_and_can_send_to_them(
    client_for: Login,
) -> None:
    scenario = _paused_after_running()
    assert Enrollment.objects.filter(scenario=scenario).count() == 0  # the 3 are a baseline
    _buyers(5)  # enter the segment while it is stopped
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:activate", args=[scenario.pk])
    # when: 稼働させる is pressed
    page = client.post(url)
    # then: a confirmation with how many entered while stopped, and nothing resumed yet
    html = page.content.decode()
    assert page.status_code == 200
    assert "停止中にセグメントに入った 5 人がいます" in html
    assert 'name="paused_entrants" value="send"' in html
    assert 'name="paused_entrants" value="skip"' in html
    scenario.refresh_from_db()
    assert scenario.status == ScenarioStatus.PAUSED
    # when: resumed sending to them too
    done = client.post(url, {"paused_entrants": "send"}, follow=True)
    message = done.content.decode()
    assert "停止中にセグメントに入った5人がエントリーします" in message
    _tick_after_resume()
    # then: the 5 are enrolled at the next run, the baseline 3 are not, and the first step
    # (right after the trigger) is queued for those not held out
    enrolled = Enrollment.objects.filter(scenario=scenario)
    assert enrolled.count() == 5
    treated = enrolled.filter(holdout=False).count()
    assert treated > 0
    queued = StepDispatch.objects.filter(enrollment__scenario=scenario, status="queued")
    assert queued.count() == treated


def test_resuming_without_those_who_entered_while_paused_enrolls_only_later_entrants(
    client_for: Login,
) -> None:
    scenario = _paused_after_running()
    _buyers(5)
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:activate", args=[scenario.pk])
    done = client.post(url, {"paused_entrants": "skip"}, follow=True)
    scenario.refresh_from_db()
    assert scenario.status == ScenarioStatus.ACTIVE
    message = done.content.decode()
    assert "停止中にセグメントに入ったお客様は対象にせず" in message
    assert "エントリーします" not in message
    _tick_after_resume()
    assert Enrollment.objects.filter(scenario=scenario).count() == 0
    # someone who enters after resuming is still enrolled
    _buyers(1)
    scheduler.tick(now=timezone.now() + dt.timedelta(hours=2))  # its next hourly check
    assert Enrollment.objects.filter(scenario=scenario).count() == 1


def test_nobody_entered_while_paused_resumes_in_one_click(client_for: Login) -> None:
    scenario = _paused_after_running()
    client = client_for(Role.MARKETER)
    done = client.post(reverse("scenarios:activate", args=[scenario.pk]), follow=True)
    scenario.refresh_from_db()
    assert scenario.status == ScenarioStatus.ACTIVE
    assert "停止中にセグメントに入ったお客様は対象にせず" in done.content.decode()


def test_other_scenarios_resume_in_one_click_saying_what_happens_to_the_pause(
    client_for: Login,
) -> None:
    scenario = _paused_after_running(kind="first_purchase")
    client = client_for(Role.MARKETER)
    done = client.post(reverse("scenarios:activate", args=[scenario.pk]), follow=True)
    scenario.refresh_from_db()
    assert scenario.status == ScenarioStatus.ACTIVE
    html = done.content.decode()
    assert "稼働を再開しました。停止中に起きたきっかけは対象にならず" in html
    assert "確認待ちのメッセージ" in html


def test_who_entered_while_paused_counts_only_those_who_can_enter(client_for: Login) -> None:
    scenario = _paused_after_running()
    _buyers(4)  # enter the segment while it is stopped; one of them then withdraws
    withdrawn = Customer.objects.order_by("-pk").first()
    assert withdrawn is not None
    withdrawn.member_status = MemberStatus.WITHDRAWN
    withdrawn.save(update_fields=["member_status"])
    url = reverse("scenarios:activate", args=[scenario.pk])
    client = client_for(Role.MARKETER)
    html = client.post(url).content.decode()
    assert "停止中にセグメントに入った 3 人がいます" in html
    assert "うち退会などで対象外の 1 人を除く" in html
    client.post(url, {"paused_entrants": "send"})
    _tick_after_resume()
    assert Enrollment.objects.filter(scenario=scenario).count() == 3
