"""Starting a 「セグメントに入った」 scenario that also takes everyone already in the segment
(稼働開始時点の該当者も対象にする): it enrolls them all at the next scheduler run, so 稼働させる
first shows how many that is and starts only once confirmed; the message after starting says
what happens, with and without the current members."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import Role
from kizuna.campaigns.automation import scheduler
from kizuna.campaigns.automation.models import Enrollment, Scenario, ScenarioStatus
from kizuna.campaigns.automation.services import scenario_save
from kizuna.customers.models import Customer, MemberStatus
from tests.factories import make_customer, make_order
from tests.test_scenarios_kit import STAFF, jst, one, segment, step

pytestmark = pytest.mark.django_db
Login = Callable[[Role], Client]


def _segment_scenario(*, include_existing: bool, holdout: int = 10) -> Scenario:
    segment("buyers", one("order_count", "gte", 1))
    trigger: dict[str, Any] = {"kind": "segment_entered", "segment": "buyers"}
    if include_existing:
        trigger["include_existing"] = True
    spec = {
        "key": "coupon",
        "name": "購入者クーポン",
        "trigger": trigger,
        "holdout_percent": holdout,
        "steps": [step()],
    }
    return scenario_save(scenario=None, spec=spec, acting_user=STAFF)


def _buyers(n: int) -> None:
    for _ in range(n):
        make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    make_customer()  # no order: not in the segment


def test_taking_the_current_members_is_started_only_after_a_confirmation_with_the_count(
    client_for: Login,
) -> None:
    _buyers(20)
    scenario = _segment_scenario(include_existing=True, holdout=10)
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:activate", args=[scenario.pk])
    # when: 稼働させる is pressed
    page = client.post(url)
    # then: a confirmation with the segment's live count and the holdout, and nothing started
    html = page.content.decode()
    assert page.status_code == 200
    assert "今セグメントに該当する 20 人がすぐに対象になります" in html
    assert "ホールドアウト 10%:約 2 人はエントリーしますが送りません" in html
    assert "送信の対象は約 18 人です" in html
    assert "次回のスケジューラ実行" in html
    assert 'name="confirmed" value="1"' in html
    scenario.refresh_from_db()
    assert scenario.status == ScenarioStatus.DRAFT
    # when: confirmed
    done = client.post(url, {"confirmed": "1"}, follow=True)
    # then: started, and the message says the current members are enrolled now
    scenario.refresh_from_db()
    assert scenario.status == ScenarioStatus.ACTIVE
    message = done.content.decode()
    assert "次回のスケジューラ実行で、今セグメントに該当する20人がエントリーします" in message
    assert "うち約2人はホールドアウトで送りません" in message
    assert "これ以降のきっかけから対象になります" not in message


def test_without_the_current_members_it_starts_at_once_and_says_they_are_not_taken(
    client_for: Login,
) -> None:
    _buyers(3)
    scenario = _segment_scenario(include_existing=False)
    client = client_for(Role.MARKETER)
    done = client.post(reverse("scenarios:activate", args=[scenario.pk]), follow=True)
    scenario.refresh_from_db()
    assert scenario.status == ScenarioStatus.ACTIVE
    html = done.content.decode()
    assert "今セグメントに該当しているお客様は対象にならず" in html
    assert "すぐに対象になります" not in html


def test_other_scenarios_start_in_one_click_as_before(client_for: Login) -> None:
    spec = {
        "key": "w",
        "name": "ようこそ",
        "trigger": {"kind": "first_purchase"},
        "steps": [step()],
    }
    draft = scenario_save(scenario=None, spec=spec, acting_user=STAFF)
    client = client_for(Role.MARKETER)
    done = client.post(reverse("scenarios:activate", args=[draft.pk]), follow=True)
    draft.refresh_from_db()
    assert draft.status == ScenarioStatus.ACTIVE
    assert "稼働を開始しました。これ以降のきっかけから対象になります。" in done.content.decode()


def test_the_count_leaves_out_withdrawn_customers_who_are_never_enrolled(
    client_for: Login,
) -> None:
    _buyers(5)
    for withdrawn in Customer.objects.filter(orders__isnull=False).distinct()[:2]:
        withdrawn.member_status = MemberStatus.WITHDRAWN
        withdrawn.save(update_fields=["member_status"])
    scenario = _segment_scenario(include_existing=True, holdout=0)
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:activate", args=[scenario.pk])
    html = client.post(url).content.decode()
    # then: the count is who will enter, and the page says who is left out and why
    assert "今セグメントに該当する 3 人がすぐに対象になります" in html
    assert "うち退会などで対象外の 2 人を除く" in html
    client.post(url, {"confirmed": "1"})
    scheduler.tick(now=timezone.now() + dt.timedelta(minutes=1))
    assert Enrollment.objects.filter(scenario=scenario).count() == 3
