"""Fan indicators (ファン化指標): early behaviours ranked by how well they separate customers who
became 優良客 from those who lapsed without it — effect sizes checked against hand arithmetic,
and a small shop where one behaviour (points use) separates perfectly.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.analytics.models import KpiTable
from kizuna.analytics.pipeline.fans import ODDS_RATIO_MIN_CUSTOMERS, _Cell, behaviour_rows
from kizuna.customers.models import AcquisitionChannel, Customer
from kizuna.loyalty.models import PointEntry, PointKind
from kizuna.support.models import Contact
from kizuna.web.templatetags.kizuna import p_value
from tests.analytics_shop import JST, Shop, kpi, run
from tests.factories import make_user

AS_OF = dt.date(2025, 6, 30)
d = dt.date


def _value(rows: dict[str, Any], value: str) -> dict[str, Any]:
    return next(v for v in rows["values"] if v["value"] == value)


def test_effect_sizes_of_a_two_by_two_table_match_hand_arithmetic() -> None:
    # given 40 customers with the behaviour (30 優良, 10 lapsed) and 60 without (20 / 40)
    rows = behaviour_rows("points_used", [_Cell("no", 20, 40), _Cell("yes", 30, 10)])
    # then χ² = N(ad − bc)² / (row and column totals) = 100 · 1000² / (40·60·50·50)
    assert rows["chi2"] == pytest.approx(100 * 1000**2 / (40 * 60 * 50 * 50), abs=1e-4)
    assert rows["cramers_v"] == pytest.approx(math.sqrt(rows["chi2"] / 100), abs=1e-4)
    yes = _value(rows, "yes")
    assert (yes["loyal_rate"], yes["loyal_rate_others"]) == (0.75, pytest.approx(0.3333, abs=1e-4))
    assert yes["difference"] == pytest.approx(0.75 - 1 / 3, abs=1e-4)
    assert yes["difference_low"] < yes["difference"] < yes["difference_high"] <= 1
    assert yes["odds_ratio"] == pytest.approx(30 * 40 / (10 * 20))
    assert yes["odds_ratio_low"] < 6 < yes["odds_ratio_high"]
    assert yes["rate_ratio"] == pytest.approx(0.75 / (1 / 3), abs=1e-4)
    assert (yes["share_of_loyal"], yes["share_of_lapsed"]) == (0.6, 0.2)
    assert yes["label"] == "使った"
    # the value with the higher 優良 rate comes first
    assert [v["value"] for v in rows["values"]] == ["yes", "no"]


def test_no_separation_gives_zero_and_a_single_value_too() -> None:
    even = behaviour_rows("channel", [_Cell("web", 5, 5), _Cell("phone", 10, 10)])
    assert even["cramers_v"] == 0.0
    assert _value(even, "web")["difference"] == 0.0
    single = behaviour_rows("channel", [_Cell("web", 5, 5)])
    assert single["cramers_v"] == 0.0
    assert single["p_value"] is None
    assert _value(single, "web")["difference"] is None


def test_perfect_separation_gives_a_difference_but_no_odds_ratio() -> None:
    rows = behaviour_rows("points_used", [_Cell("no", 0, 40), _Cell("yes", 30, 0)])
    assert rows["cramers_v"] == 1.0
    yes = _value(rows, "yes")
    assert yes["difference"] == 1.0
    assert -1 <= yes["difference_low"] <= yes["difference_high"] <= 1
    # an empty cell: the odds ratio would be infinite (or need a made-up correction)
    assert (yes["odds_ratio"], yes["odds_ratio_low"], yes["odds_ratio_high"]) == (None,) * 3
    assert _value(rows, "no")["odds_ratio"] is None


# QA's case on the 2,000-customer demo: 2 customers bought again within 14 days, neither became
# 優良 (0.0% against 2.4% overall), and the page said odds ratio 8.04.
QA_DAYS_TO_SECOND = [
    _Cell("14日以内", 0, 2),
    _Cell("15〜30日", 8, 40),
    _Cell("31〜60日", 8, 136),
    _Cell("61〜90日", 8, 53),
    _Cell("なし", 1, 795),
]


def test_a_value_of_two_customers_and_no_loyal_ones_gets_no_odds_ratio() -> None:
    rows = behaviour_rows("days_to_second", QA_DAYS_TO_SECOND)
    few = _value(rows, "14日以内")
    assert (few["customers"], few["loyal_rate"]) == (2, 0.0)
    assert few["loyal_rate_others"] == pytest.approx(25 / 1049, abs=1e-4)
    assert (few["odds_ratio"], few["odds_ratio_low"], few["odds_ratio_high"]) == (None,) * 3
    # nor a rate ratio (0 ×): two customers say nothing about how many times likelier
    assert few["rate_ratio"] is None
    # the rates and the difference are still there: they are what was observed
    assert few["difference"] is not None
    assert few["difference_low"] < 0 < few["difference_high"]


def test_an_odds_ratio_shown_points_the_same_way_as_the_rates() -> None:
    rows = behaviour_rows("days_to_second", QA_DAYS_TO_SECOND)
    shown = [v for v in rows["values"] if v["odds_ratio"] is not None]
    assert {v["value"] for v in shown} == {"15〜30日", "31〜60日", "61〜90日", "なし"}
    for v in shown:
        assert (v["odds_ratio"] > 1) == (v["loyal_rate"] > v["loyal_rate_others"]), v
        assert v["odds_ratio_low"] < v["odds_ratio"] < v["odds_ratio_high"]
    # 15〜30日: odds 8/40 against (25 − 8)/(1026 − 40) for everyone else
    assert _value(rows, "15〜30日")["odds_ratio"] == pytest.approx((8 / 40) / (17 / 986), abs=1e-3)
    assert _value(rows, "なし")["odds_ratio"] < 1


def test_the_odds_ratio_needs_the_minimum_on_both_sides() -> None:
    assert ODDS_RATIO_MIN_CUSTOMERS == 30
    # 29 customers with the value: none; 30: shown, (3 · 200) / (27 · 20)
    short = behaviour_rows("channel", [_Cell("web", 3, 26), _Cell("phone", 20, 200)])
    assert _value(short, "web")["odds_ratio"] is None
    enough = behaviour_rows("channel", [_Cell("web", 3, 27), _Cell("phone", 20, 200)])
    assert _value(enough, "web")["odds_ratio"] == pytest.approx(3 * 200 / (27 * 20), abs=1e-4)
    assert _value(enough, "phone")["odds_ratio"] == pytest.approx(27 * 20 / (3 * 200), abs=1e-4)
    # 30 with the value but only 29 everyone else: none for either
    other_short = behaviour_rows("channel", [_Cell("web", 3, 27), _Cell("phone", 3, 26)])
    assert [v["odds_ratio"] for v in other_short["values"]] == [None, None]
    # enough customers but an empty cell on one side
    empty = behaviour_rows("channel", [_Cell("web", 0, 100), _Cell("phone", 20, 200)])
    assert [v["odds_ratio"] for v in empty["values"]] == [None, None]


def _redeem(customer: Customer, on: dt.date) -> None:
    at = dt.datetime.combine(on, dt.time(12), JST)
    PointEntry.objects.create(
        customer=customer,
        seq=1,
        kind=PointKind.EARN,
        amount=500,
        balance_after=500,
        occurred_at=at - dt.timedelta(days=1),
        expires_on=on + dt.timedelta(days=365),
        recorded_by="test",
    )
    PointEntry.objects.create(
        customer=customer,
        seq=2,
        kind=PointKind.REDEEM,
        amount=-300,
        balance_after=200,
        occurred_at=at,
        recorded_by="test",
    )


def _contact(customer: Customer, on: dt.date, direction: str) -> None:
    Contact.objects.create(
        customer=customer,
        occurred_at=dt.datetime.combine(on, dt.time(10), JST),
        channel="phone",
        direction=direction,
        summary="確認",
    )


def build_fan_shop() -> None:
    """4 customers who became 優良 and 6 who lapsed without it, all first buying in mid-2023;
    only the 優良 ones used points in their first 90 days."""
    shop = Shop()
    web, phone = AcquisitionChannel.WEB_AD, AcquisitionChannel.PHONE
    for n in range(4):
        c = shop.customer(web if n % 2 else phone)
        first = d(2023, 6, 1 + n)
        shop.buy(c, first, 30_000)
        shop.buy(c, first + dt.timedelta(days=61), 30_000)  # 2nd purchase after 61 days
        shop.buy(c, first + dt.timedelta(days=223), 20_000)  # ¥80,000 over 223 days → 優良
        _redeem(c, first + dt.timedelta(days=20))
        if n == 0:
            _contact(c, first + dt.timedelta(days=5), "outbound")
    for n in range(6):
        c = shop.customer(web if n % 2 else phone)
        first = d(2023, 7, 1 + n)
        shop.buy(c, first, 3000)
        if n < 3:
            shop.buy(c, first + dt.timedelta(days=66), 3000)  # よちよち, then lapsed
        if n == 0:
            _redeem(c, first + dt.timedelta(days=120))  # points, but after the first 90 days
        if n == 1:
            _contact(c, first + dt.timedelta(days=30), "inbound")
    # not judged: still active without reaching 優良, and a first purchase under a year ago
    active = shop.customer()
    shop.buy(active, d(2024, 1, 1), 1000)
    shop.buy(active, d(2025, 6, 1), 1000)
    _redeem(active, d(2024, 1, 10))
    recent = shop.customer()
    shop.buy(recent, d(2025, 1, 1), 1000)


@pytest.mark.django_db
def test_a_perfectly_separating_behaviour_ranks_first() -> None:
    build_fan_shop()
    fans: Any = kpi(run(AS_OF), "fan_indicators")
    assert (fans["loyal"], fans["lapsed"]) == (4, 6)
    ranked = [b["behaviour"] for b in fans["behaviours"]]
    assert ranked[0] == "points_used"
    points = fans["behaviours"][0]
    assert points["cramers_v"] == 1.0
    assert (_value(points, "yes")["loyal"], _value(points, "yes")["lapsed"]) == (4, 0)
    assert (_value(points, "no")["loyal"], _value(points, "no")["lapsed"]) == (0, 6)
    # days to the 2nd purchase: 61–90 days for 4 優良 and 3 lapsed, none for 3 lapsed:
    # χ² = 10 · (4·3 − 3·0)² / (7 · 3 · 4 · 6), V = √(χ² / 10)
    second = next(b for b in fans["behaviours"] if b["behaviour"] == "days_to_second")
    assert second["cramers_v"] == pytest.approx(
        math.sqrt(10 * 144 / (7 * 3 * 4 * 6) / 10), abs=1e-4
    )
    assert {v["value"] for v in second["values"]} == {"61〜90日", "なし"}
    assert ranked[1] == "days_to_second"
    # channel is split evenly between the groups: no separation
    channel = next(b for b in fans["behaviours"] if b["behaviour"] == "channel")
    assert channel["cramers_v"] == 0.0
    contacts = next(b for b in fans["behaviours"] if b["behaviour"] == "contacts")
    assert {v["value"]: (v["loyal"], v["lapsed"]) for v in contacts["values"]} == {
        "inbound": (0, 1),
        "outbound": (1, 0),
        "none": (3, 5),
    }
    assert set(ranked) == {"points_used", "days_to_second", "channel", "contacts", "first_product"}


@pytest.mark.django_db(transaction=True)
def test_duckdb_and_postgres_give_the_same_fan_indicators() -> None:
    build_fan_shop()
    on_duckdb = kpi(run(AS_OF, "duckdb"), "fan_indicators")
    if connection.vendor == "postgresql":
        assert kpi(run(AS_OF, "postgres"), "fan_indicators") == on_duckdb


@pytest.mark.django_db
def test_the_fans_page_ranks_behaviours_in_plain_japanese() -> None:
    build_fan_shop()
    run(AS_OF)
    user = make_user(Role.MARKETER)
    client = Client()
    client.force_login(user)
    response = client.get(reverse("analytics:fans"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "ファン化指標" in html
    # the strongest behaviour first, with its one-line reading
    assert "1. ポイント利用" in html
    assert "2. 2回目購入までの日数" in html
    # (with under 30 customers per value the reading leads with the most common value)
    assert "ポイント利用が「使っていない」の顧客は 0.0% が優良客になり" in html
    assert "とても強い" in html


def _row(html: str, label: str) -> str:
    """The fans table row whose first cell is `label`, tags stripped."""
    for tr in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        if re.search(rf"<td>{re.escape(label)}</td>", tr):
            return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", tr)).strip()
    raise AssertionError(f"no row {label}")


@pytest.mark.django_db
def test_the_fans_page_explains_a_missing_odds_ratio_instead_of_showing_one() -> None:
    build_fan_shop()
    analytics_run = run(AS_OF)
    # the page as QA saw it: the counts of the 2,000-customer demo, through the same rows
    days = behaviour_rows("days_to_second", QA_DAYS_TO_SECOND)
    channel = behaviour_rows(
        "channel",
        [
            _Cell("web", 3, 26),
            _Cell("phone", 3, 27),
            _Cell("line", 0, 103),
            _Cell("sns", 19, 870),
        ],
    )
    KpiTable.objects.filter(run=analytics_run, name="fan_indicators").update(
        rows={
            "judge_days": 365,
            "window_days": 90,
            "loyal": 25,
            "lapsed": 1026,
            "behaviours": [days, channel],
        }
    )
    client = Client()
    client.force_login(make_user(Role.ANALYST))
    html = client.get(reverse("analytics:fans")).content.decode()
    assert f"それ以外の顧客がそれぞれ{ODDS_RATIO_MIN_CUSTOMERS}人以上" in html
    assert "8.04" not in html
    qa = _row(html, "14日以内")
    assert qa.startswith("14日以内 2 0 2 0.0%")
    assert "— 人数が少ないため計算しません" in qa
    assert "11.60" in _row(html, "15〜30日")
    assert "0.01" in _row(html, "なし")
    # the boundary: 29 customers get the explanation, 30 get the ratio
    assert "人数が少ないため計算しません" in _row(html, "Web広告")
    phone = _row(html, "電話・テレビ通販")
    assert "計算しません" not in phone
    assert f"{(3 / 27) / (22 / 999):.2f}" in phone
    assert "優良客が0人のため計算しません" in _row(html, "LINE")


@pytest.mark.parametrize(
    ("p", "shown"),
    [(0.0, "p < 0.0001"), (0.00004, "p < 0.0001"), (0.0001, "p = 0.0001"), (0.0342, "p = 0.0342")],
)
def test_a_tiny_p_value_is_written_as_below_the_last_decimal(p: float, shown: str) -> None:
    # QA saw 「p = 0.0000」, which reads as impossible rather than as very strong evidence
    assert p_value(p) == shown
