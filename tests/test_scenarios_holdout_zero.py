"""A scenario with holdout 0% sends to everyone, so its lift can never be measured: the pages
say so instead of データ不足 (which suggests waiting helps), and saving one warns."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import Enrollment, Scenario
from kizuna.campaigns.automation.scheduler import tick
from kizuna.customers.models import Customer
from tests.factories import make_customer, make_order
from tests.test_scenarios_kit import jst, scenario, scenario_form

pytestmark = pytest.mark.django_db
Login = Callable[[Role], Client]
START = jst(2026, 5, 1)


def _with_buyers(holdout_percent: int) -> Scenario:
    """A running first-purchase scenario that enrolled 40 buyers in May (windows long past)."""
    s = scenario(
        "f2",
        trigger={"kind": "first_purchase"},
        holdout_percent=holdout_percent,
        activated_at=START,
    )
    for _ in range(40):
        make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    assert Enrollment.objects.count() == Customer.objects.count() == 40
    return s


def test_with_holdout_zero_the_lift_says_it_cannot_be_measured(client_for: Login) -> None:
    s = _with_buyers(0)
    html = client_for(Role.ANALYST).get(reverse("scenarios:lift", args=[s.pk])).content.decode()
    assert "ホールドアウトが0%のため、このシナリオの効果は計測できません" in html
    assert "待っても判定は出ません" in html
    assert "ホールドアウトを1%以上" in html
    assert "計測不可" in html
    # nothing suggests that waiting for 30 customers per group would help
    assert "データ不足" not in html
    assert "各グループ30人以上で判定します" not in html
    page = client_for(Role.ANALYST).get(reverse("scenarios:detail", args=[s.pk])).content.decode()
    assert "0%(全員に送るため、効果は計測できません)" in page


def test_with_a_holdout_too_few_customers_is_still_data_to_wait_for(client_for: Login) -> None:
    s = _with_buyers(10)
    html = client_for(Role.ANALYST).get(reverse("scenarios:lift", args=[s.pk])).content.decode()
    assert "データ不足" in html
    assert "計測できません" not in html


def test_saving_a_marketing_scenario_with_holdout_zero_warns_but_saves(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    response = client.post(
        reverse("scenarios:create"), scenario_form(holdout_percent="0"), follow=True
    )
    html = response.content.decode()
    assert Scenario.objects.get(key="trial-follow").holdout_percent == 0
    assert "を保存しました" in html
    assert 'class="alert alert-warning"' in html
    assert "ホールドアウトが0%のため、このシナリオの効果(購入率・売上の差)は計測できません" in html
    # the usual 10% saves without it
    other = scenario_form(key="trial-follow-2", name="別のフォロー", holdout_percent="10")
    html = client.post(reverse("scenarios:create"), other, follow=True).content.decode()
    assert "計測できません" not in html


def test_a_transactional_notice_with_a_holdout_is_refused_in_the_form(client_for: Login) -> None:
    # given: a shipping notice as 取引連絡, with the form's usual 10% holdout left in
    data = scenario_form(
        key="shipped", name="出荷のお知らせ", trigger_kind="shipment", purpose="transactional"
    )
    data.pop("param-product_kind")
    client = client_for(Role.MARKETER)
    # when
    response = client.post(reverse("scenarios:create"), data)
    # then: not saved (10% of the buyers would never hear their parcel left); the page says
    # why, next to the field too, and keeps what was typed
    html = response.content.decode()
    assert response.status_code == 400
    assert not Scenario.objects.filter(key="shipped").exists()
    assert "ホールドアウト: 取引連絡ではホールドアウトを0%にしてください(10%になっています)" in html
    assert "その割合のお客様に出荷のお知らせなど" in html
    assert "目的が「取引連絡」なら0にしてください" in html
    assert 'value="出荷のお知らせ"' in html
    # at 0% it saves, without the 販促 warning that the lift cannot be measured
    data["holdout_percent"] = "0"
    html = client.post(reverse("scenarios:create"), data, follow=True).content.decode()
    assert Scenario.objects.get(key="shipped").holdout_percent == 0
    assert "を保存しました" in html
    assert "ホールドアウトが0%のため" not in html
