"""Lift: the interval formulas against published values, and a hand-built scenario history
whose conversions, repeat rates and revenues are known."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from scipy import stats

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.lift import Sample, newcombe, scenario_lift, welch, wilson
from kizuna.campaigns.automation.models import Enrollment, Scenario
from kizuna.commerce.models import OrderStatus
from kizuna.customers.models import Customer
from tests.factories import make_customer, make_order, make_product
from tests.test_scenarios_kit import jst, scenario

ANCHOR = jst(2026, 1, 10, 12)
NOW = jst(2026, 6, 1)


def test_wilson_matches_newcombes_worked_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, example 81/263
    low, high = wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_newcombe_difference_matches_the_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, method 10: 56/70 − 48/80
    diff, low, high = newcombe(56, 70, 48, 80)
    assert (round(diff, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)


def test_welch_matches_scipys_t_test_interval() -> None:
    a = [0, 0, 4980, 0, 9960, 3280, 0, 0, 4980, 980, 0, 4980]
    b = [0, 0, 0, 980, 0, 4980, 0, 0, 0, 0]

    def sample(xs: list[int]) -> Sample:
        mean = sum(xs) / len(xs)
        return Sample(mean, sum((x - mean) ** 2 for x in xs) / (len(xs) - 1), len(xs))

    diff, low, high = welch(sample(a), sample(b))
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(sum(a) / len(a) - sum(b) / len(b))
    assert (low, high) == (pytest.approx(expected.low), pytest.approx(expected.high))


def _enroll(s: Scenario, customer: Customer, *, holdout: bool, at: dt.datetime = ANCHOR) -> None:
    Enrollment.objects.create(
        scenario=s, customer=customer, occurrence=f"t:{customer.pk}", holdout=holdout,
        enrolled_at=at, anchor_at=at, anchor_date=at.date(),
    )  # fmt: skip


@pytest.mark.django_db
def test_lift_on_a_known_history() -> None:
    # given: 4 treated and 4 holdout customers, enrolled on 10 January (attribution 30 days)
    s = scenario(trigger={"kind": "signup"}, activated_at=jst(2026, 1, 1), attribution_days=30)
    product = make_product(price=1000)
    treated = [make_customer() for _ in range(4)]
    holdout = [make_customer() for _ in range(4)]
    for customer in treated:
        _enroll(s, customer, holdout=False)
    for customer in holdout:
        _enroll(s, customer, holdout=True)

    def day(days: int) -> dt.datetime:
        return ANCHOR + dt.timedelta(days=days)

    def buy(customer: Customer, at: dt.datetime, quantity: int = 1) -> None:
        make_order(customer, product=product, quantity=quantity, ordered_at=at)

    buy(treated[0], day(days=5), 3)  # 3,000 in the window
    buy(treated[0], day(days=60))  # a second order within 90 days: a repeater
    buy(treated[1], day(days=20), 2)  # 2,000
    buy(treated[2], day(days=45))  # converts only after the window; 90-day LTV 1,000
    buy(treated[3], ANCHOR - dt.timedelta(days=1))  # before the scenario: not counted
    buy(holdout[0], day(days=10))  # 1,000
    cancelled = make_order(holdout[1], product=product, ordered_at=day(days=3))
    cancelled.status = OrderStatus.CANCELLED
    cancelled.save()
    buy(holdout[2], day(days=100), 5)  # after 90 days: not counted
    # a later enrollment of a treated customer is not a second unit
    Enrollment.objects.create(
        scenario=s, customer=treated[3], occurrence="t:again", holdout=False,
        enrolled_at=jst(2026, 3, 1), anchor_at=jst(2026, 3, 1), anchor_date=dt.date(2026, 3, 1),
    )  # fmt: skip
    # and a customer enrolled last week has no complete window yet
    _enroll(s, make_customer(), holdout=False, at=NOW - dt.timedelta(days=7))
    # when
    lift = scenario_lift(s, now=NOW)
    # then
    c = lift.conversion
    assert (c.treated_n, c.treated_x, c.holdout_n, c.holdout_x) == (4, 2, 4, 1)
    assert c.diff == pytest.approx(0.25)
    assert (c.low, c.high) == pytest.approx(newcombe(2, 4, 1, 4)[1:])
    r = lift.repeat
    assert (r.treated_x, r.holdout_x) == (1, 0)
    assert lift.revenue.treated_mean == pytest.approx(5000 / 4)
    assert lift.revenue.holdout_mean == pytest.approx(1000 / 4)
    assert lift.ltv90.treated_mean == pytest.approx((3000 + 1000 + 2000 + 1000) / 4)
    assert lift.ltv90.holdout_mean == pytest.approx(1000 / 4)
    expected = welch(
        Sample(1250, ((3000 - 1250) ** 2 + (2000 - 1250) ** 2 + 2 * 1250**2) / 3, 4),
        Sample(250, (750**2 + 3 * 250**2) / 3, 4),
    )
    assert (lift.revenue.low, lift.revenue.high) == pytest.approx(expected[1:])
    assert (lift.enrolled_treated, lift.enrolled_holdout) == (6, 4)
    assert not c.enough_data  # four customers a side say nothing yet


@pytest.mark.django_db
def test_no_enrollments_gives_empty_groups_not_an_error() -> None:
    s = scenario(trigger={"kind": "signup"}, activated_at=jst(2026, 1, 1))
    lift = scenario_lift(s, now=NOW)
    assert (lift.conversion.treated_n, lift.conversion.holdout_n) == (0, 0)
    assert lift.revenue.diff == 0


@pytest.mark.django_db
def test_the_attribution_window_ends_exactly_n_days_after_the_trigger() -> None:
    # given: two treated customers enrolled at ANCHOR, attribution 30 days
    s = scenario(trigger={"kind": "signup"}, activated_at=jst(2026, 1, 1), attribution_days=30)
    on_the_last_moment, just_after = make_customer(), make_customer()
    for customer in (on_the_last_moment, just_after):
        _enroll(s, customer, holdout=False)
    end = ANCHOR + dt.timedelta(days=30)
    make_order(on_the_last_moment, ordered_at=end)
    make_order(just_after, ordered_at=end + dt.timedelta(seconds=1))
    # when
    lift = scenario_lift(s, now=NOW)
    # then: the order at the window's last moment counts, the one a second later does not
    assert (lift.conversion.treated_n, lift.conversion.treated_x) == (2, 1)
    assert lift.ltv90.treated_n == 2


def _nobody_in_the_holdout_bought(s: Scenario, *, at: dt.datetime = ANCHOR) -> None:
    """60 treated customers, 4 of whom spent 3,000 yen within the window; 30 holdout customers
    who bought nothing."""
    product = make_product(price=3000)
    for n in range(60):
        customer = make_customer()
        _enroll(s, customer, holdout=False, at=at)
        if n < 4:
            make_order(customer, product=product, ordered_at=at + dt.timedelta(days=3))
    for _ in range(30):
        _enroll(s, make_customer(), holdout=True, at=at)


@pytest.mark.django_db
def test_revenue_follows_the_buyer_rates_when_the_holdout_bought_nothing() -> None:
    # given a holdout in which nobody bought: every holdout value is 0 yen, variance 0
    s = scenario(trigger={"kind": "signup"}, activated_at=jst(2026, 1, 1), attribution_days=30)
    _nobody_in_the_holdout_bought(s)
    # when
    lift = scenario_lift(s, now=NOW)
    # then the buyer rates (4/60 against 0/30) are within chance
    c = lift.conversion
    assert (c.treated_x, c.treated_n, c.holdout_x, c.holdout_n) == (4, 60, 0, 30)
    assert c.enough_data
    assert not c.significant
    # Welch alone takes the holdout's 0 yen as known exactly and would say 差あり
    treated_variance = (4 * 3000**2 - 60 * 200**2) / 59
    _, welch_low, welch_high = welch(Sample(200, treated_variance, 60), Sample(0, 0, 30))
    assert welch_low > 0
    # revenue per customer: the holdout's uncertainty is how many of it would have bought —
    # the buyer rates' interval times the 3,000 yen a buyer spent — and Welch's spread is kept
    r = lift.revenue
    assert (r.treated_mean, r.holdout_mean, r.diff) == (200, 0, 200)
    _, rate_low, rate_high = newcombe(4, 60, 0, 30)
    assert r.low == pytest.approx(min(welch_low, rate_low * 3000))
    assert r.high == pytest.approx(max(welch_high, rate_high * 3000))
    assert r.low < 0 < r.high
    assert r.enough_data
    assert not r.significant


@pytest.mark.django_db
def test_the_lift_table_says_no_difference_and_shows_a_dash_for_an_empty_group(
    client_for: Any,
) -> None:
    # given the holdout that bought nothing, enrolled 40 days ago: the 30-day window has
    # passed, the 90-day one (repeat, LTV) has not, so those groups are empty
    s = scenario(trigger={"kind": "signup"}, activated_at=jst(2026, 1, 1), attribution_days=30)
    _nobody_in_the_holdout_bought(s, at=timezone.now() - dt.timedelta(days=40))
    # when
    html = client_for(Role.ANALYST).get(reverse("scenarios:lift", args=[s.pk])).content.decode()
    # then no row claims a difference: purchase rate and revenue are both within chance
    rows = dict(re.findall(r'<th scope="row">([^<]+)</th>(.*?)</tr>', html, re.S))
    assert "差は誤差の範囲" in rows["購入率(30日以内)"]
    assert "差は誤差の範囲" in rows["1人あたり売上(30日以内)"]
    assert "差あり" not in html
    # and the groups no 90-day window has closed for show a dash, not 0.0% of 0 people
    for label in ("リピート率(90日以内に2回以上)", "90日LTV"):
        assert rows[label].count("—") >= 3
        assert "0人" not in rows[label]
        assert "0.0%" not in rows[label]
