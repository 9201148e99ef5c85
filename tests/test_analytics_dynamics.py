"""Customer-count dynamics (顧客数の見える化): monthly CPM counts, the causes of change, the
Markov forecast, what-if and the back-test, on hand-built data with known answers.

The expression tests run on DuckDB from an in-memory Arrow table (as `kizuna analytics run`
does); the model tests feed hand-made flow tables straight to the numpy part; the page and the
engine comparison go through the whole pipeline.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import ibis
import numpy as np
import pyarrow as pa
import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.analytics.models import KpiTable
from kizuna.analytics.pipeline import dynamics as dy
from kizuna.analytics.pipeline import expressions as ex
from kizuna.analytics.pipeline.config import AnalyticsConfig
from kizuna.analytics.pipeline.extract import month_of_day
from kizuna.analytics.pipeline.kpis import day_number, month_index
from tests.analytics_shop import build_varied_shop, kpi, run
from tests.factories import make_user

AS_OF = dt.date(2025, 6, 30)
D = day_number(AS_OF)
S = {code: i for i, code in enumerate(dy.SEGMENTS)}


def _orders(purchases: list[tuple[int, dt.date, int]]) -> pa.Table:
    """Orders from [(customer, JST date, yen), …]."""
    days = pa.array([day_number(on) for _, on, _ in purchases], pa.int64())
    n = len(purchases)
    return pa.table(
        {
            "order_id": pa.array(range(1, n + 1), pa.int64()),
            "customer_id": pa.array([c for c, _, _ in purchases], pa.int64()),
            "status": ["delivered"] * n,
            "channel": ["web"] * n,
            "amount": pa.array([yen for _, _, yen in purchases], pa.int64()),
            "subtotal": pa.array([yen for _, _, yen in purchases], pa.int64()),
            "day": days,
            "month": month_of_day(days),
        }
    )


def _dynamics(purchases: list[tuple[int, dt.date, int]], **kwargs: Any) -> dict[str, Any]:
    con = ibis.duckdb.connect()
    p = ex.purchases(con.create_table("orders", _orders(purchases)), as_of_day=D)
    return dy.dynamics(
        ex.customer_months(p),
        as_of_day=D,
        as_of_month=month_index(AS_OF),
        cfg=AnalyticsConfig(),
        **kwargs,
    )


d = dt.date
# One customer per cause, in the three months to the as-of day (defaults: 離脱 after 240 days,
# よちよち below 90 days of tenure, 流行 above ¥70,000 with 90–209 days).
STORY = [
    (1, d(2025, 4, 10), 1000),  # new in April (初回), second purchase in May → F2転換
    (1, d(2025, 5, 5), 1000),
    (2, d(2024, 9, 15), 1000),  # one purchase; 240 days later (2025-05-13) → 離脱 in May
    (3, d(2024, 1, 10), 1000),  # よちよち, long lapsed; buys again in June → 復活 as コツコツ
    (3, d(2024, 2, 10), 1000),
    (3, d(2025, 6, 1), 1000),
    (4, d(2025, 1, 5), 1000),  # よちよち; ¥80,000 in May at 135 days of tenure → 流行 (up)
    (4, d(2025, 3, 1), 1000),
    (4, d(2025, 5, 20), 80_000),
    (5, d(2025, 6, 3), 2000),  # new in June with two purchases → straight into よちよち
    (5, d(2025, 6, 20), 3000),
]


def _by(rows: list[dict[str, Any]], month: str, segment: str) -> dict[str, Any]:
    return next(r for r in rows if r["month"] == month and r["segment"] == segment)


def test_each_months_change_is_broken_down_by_cause() -> None:
    out = _dynamics(STORY, months=3)
    changes = out["cpm_changes"]
    # then each month names the customers who moved for each cause
    causes = ("new", "became_f2", "moved_up", "lapsed", "reactivated")
    assert [
        [_by(changes, m, "all")[c] for c in causes] for m in ("2025-04", "2025-05", "2025-06")
    ] == [[1, 0, 0, 0, 0], [0, 1, 1, 1, 0], [1, 0, 0, 0, 1]]
    # … and per segment the net change by cause: June's よちよち gained the new customer 5,
    # the lapsed よちよち customer 3 came back as コツコツ
    toddler = _by(changes, "2025-06", "toddler_active")
    assert (toddler["start"], toddler["new"], toddler["end"]) == (1, 1, 2)
    assert _by(changes, "2025-06", "steady_active")["reactivated"] == 1
    assert _by(changes, "2025-06", "toddler_lapsed")["reactivated"] == -1
    may_first = _by(changes, "2025-05", "first_active")
    assert (may_first["became_f2"], may_first["lapsed"], may_first["end"]) == (-1, -1, 0)
    assert _by(changes, "2025-05", "trendy_active")["moved_up"] == 1


def test_monthly_counts_and_revenue_per_segment() -> None:
    monthly = _dynamics(STORY, months=3)["cpm_monthly"]
    june = {r["segment"]: r for r in monthly if r["month"] == "2025-06"}
    assert {code: r["customers"] for code, r in june.items() if r["customers"]} == {
        "first_lapsed": 1,
        "toddler_active": 2,
        "steady_active": 1,
        "trendy_active": 1,
    }
    # revenue of the month by the segment at its end: customer 5 spent ¥5,000 in June
    assert june["toddler_active"]["revenue"] == 5000
    assert june["toddler_active"]["revenue_per_customer"] == 2500
    assert june["steady_active"]["revenue"] == 1000
    may = {r["segment"]: r["revenue"] for r in monthly if r["month"] == "2025-05"}
    assert may["trendy_active"] == 80_000
    assert not any(r["partial"] for r in monthly)


def test_a_partial_as_of_month_is_shown_but_not_used_for_transitions() -> None:
    con = ibis.duckdb.connect()
    as_of = dt.date(2025, 6, 20)
    p = ex.purchases(con.create_table("orders", _orders(STORY)), as_of_day=day_number(as_of))
    out = dy.dynamics(
        ex.customer_months(p),
        as_of_day=day_number(as_of),
        as_of_month=month_index(as_of),
        cfg=AnalyticsConfig(),
        months=3,
    )
    assert [r["partial"] for r in out["cpm_changes"] if r["segment"] == "all"] == [
        False,
        False,
        False,
        True,
    ]
    assert out["cpm_transitions"]["months"][-1] == "2025-05"
    assert out["cpm_forecast"]["model"]["origin"] == "2025-05"


@pytest.mark.parametrize("months", [3, 12, 36])
def test_causes_add_up_for_every_segment_and_month(months: int) -> None:
    out = _dynamics(STORY, months=months)
    previous_end: dict[str, int] = {}
    for row in out["cpm_changes"]:
        moved = sum(row[c] for c in ("became_f2", "moved_up", "lapsed", "reactivated"))
        if row["segment"] == "all":
            assert row["start"] + row["new"] == row["end"]
            continue
        assert row["start"] + row["new"] + moved == row["end"]
        if row["segment"] in previous_end:
            assert row["start"] == previous_end[row["segment"]]
        previous_end[row["segment"]] = row["end"]


def _flows(moves: dict[tuple[str, str], int], new: dict[str, int], months: int = 2) -> dy.Flows:
    """A flow table with the same moves in each of `months` months after a starting month."""
    shape = (months + 1, dy.N_SEGMENTS + 1, dy.N_SEGMENTS)
    customers = np.zeros(shape, np.int64)
    revenue = np.zeros(shape, np.int64)
    for i in range(1, months + 1):
        for (a, b), n in moves.items():
            customers[i, S[a], S[b]] = n
            # ¥3,000 for buying: moving up, or staying よちよち; nothing when lapsing or lapsed
            bought = not b.endswith("_lapsed") and (a != b or b == "toddler_active")
            revenue[i, S[a], S[b]] = n * 3000 if bought else 0
        for b, n in new.items():
            customers[i, dy.NEW, S[b]] = n
            revenue[i, dy.NEW, S[b]] = n * 1000
    # the starting month: everyone who starts month 1 (rows of month 1 summed over targets)
    customers[0, dy.NEW, :] = customers[1, : dy.N_SEGMENTS, :].sum(axis=1)
    start = 600
    first_months = {start + i: sum(new.values()) for i in range(1, months + 1)}
    return dy.Flows(list(range(start, start + months + 1)), customers, revenue, first_months, False)


MOVES = {
    ("first_active", "first_active"): 6,
    ("first_active", "toddler_active"): 2,
    ("first_active", "first_lapsed"): 2,
    ("toddler_active", "toddler_active"): 3,
    ("toddler_active", "toddler_lapsed"): 1,
    ("first_lapsed", "first_lapsed"): 5,
}


def test_the_transition_matrix_is_the_pooled_share_of_each_row() -> None:
    model = dy.estimate(_flows(MOVES, {"first_active": 5}), origin=2)
    p = model.probabilities
    # 12 of 20 first_active customer-months stayed, 4 became よちよち, 4 lapsed
    assert p[S["first_active"], S["first_active"]] == pytest.approx(0.6)
    assert p[S["first_active"], S["toddler_active"]] == pytest.approx(0.2)
    assert p[S["first_active"], S["first_lapsed"]] == pytest.approx(0.2)
    assert p[S["toddler_active"], S["toddler_lapsed"]] == pytest.approx(0.25)
    assert p[S["first_lapsed"], S["first_lapsed"]] == pytest.approx(1.0)
    # a segment nobody started a month in stays where it is
    assert p[S["loyal_active"], S["loyal_active"]] == 1.0
    np.testing.assert_allclose(p.sum(axis=1), np.ones(dy.N_SEGMENTS))
    assert model.expected_new == 5.0


def test_the_forecast_is_the_hand_matrix_product_plus_new_customers() -> None:
    model = dy.estimate(_flows(MOVES, {"first_active": 5}), origin=2)
    forecast = model.forecast()
    # start (end of the last month): 6+5 first_active… from the month's moves and new customers
    n0 = model.start.astype(float)
    assert n0[S["first_active"]] == 6 + 5
    first = forecast.counts[0]
    assert n0[S["toddler_active"]] == 2 + 3
    # month 1 by hand: first_active 11×0.6 + 5 new; よちよち 11×0.2 + 5×0.75; …
    assert first[S["first_active"]] == pytest.approx(11 * 0.6 + 5)
    assert first[S["toddler_active"]] == pytest.approx(11 * 0.2 + 5 * 0.75)
    assert first[S["toddler_lapsed"]] == pytest.approx(1 + 5 * 0.25)
    # revenue in month 1: ¥3,000 per customer who became よちよち or stayed よちよち, ¥1,000
    # per new customer, nothing from lapsing or lapsed customers (toddler_lapsed was never
    # a starting segment: its spend comes from the moves into it, ¥0)
    assert forecast.revenue[0].sum() == pytest.approx(3000 * (11 * 0.2 + 5 * 0.75) + 5 * 1000)
    # month 12 in closed form: n0·P¹² + new·Σ_{k<12} Pᵏ
    p = model.probabilities
    arrivals = np.zeros(dy.N_SEGMENTS)
    arrivals[S["first_active"]] = 5
    expected = n0 @ np.linalg.matrix_power(p, 12) + sum(
        arrivals @ np.linalg.matrix_power(p, k) for k in range(12)
    )
    np.testing.assert_allclose(forecast.counts[11], expected)
    assert forecast.months[0] == "2020-04"  # month 603 + 1


def test_the_model_round_trips_through_json() -> None:
    model = dy.estimate(_flows(MOVES, {"first_active": 5}), origin=2)
    again = dy.MarkovModel.from_json(model.json())
    np.testing.assert_array_equal(again.forecast().counts, model.forecast().counts)


def test_what_if_moves_mass_proportionally_and_keeps_rows_stochastic() -> None:
    model = dy.estimate(_flows(MOVES, {"first_active": 5}), origin=2)
    result = dy.what_if(model, {("first_active", "toddler_active"): 0.10})
    p = result.probabilities
    row = p[S["first_active"]]
    # 0.2 → 0.3; the rest (0.6 stay, 0.2 lapse) scaled by 0.7 / 0.8
    assert row[S["toddler_active"]] == pytest.approx(0.3)
    assert row[S["first_active"]] == pytest.approx(0.6 * 0.7 / 0.8)
    assert row[S["first_lapsed"]] == pytest.approx(0.2 * 0.7 / 0.8)
    np.testing.assert_allclose(p.sum(axis=1), np.ones(dy.N_SEGMENTS))
    # other rows untouched
    np.testing.assert_array_equal(p[S["toddler_active"]], model.probabilities[S["toddler_active"]])
    # the changed forecast: month 1 has 11 × 0.1 more よちよち and more revenue
    diff = result.count_difference
    assert diff[0, S["toddler_active"]] == pytest.approx(11 * 0.1)
    assert diff[0].sum() == pytest.approx(0.0)
    assert result.revenue_difference.sum() > 0
    np.testing.assert_array_equal(result.base.counts, model.forecast().counts)


def test_what_if_on_a_row_with_one_destination_uses_the_stay_cell() -> None:
    model = dy.estimate(_flows(MOVES, {"first_active": 5}), origin=2)
    # first_lapsed only ever stayed: +10 pt reactivation takes it from staying
    p = dy.what_if(model, {("first_lapsed", "steady_active"): 0.1}).probabilities
    assert p[S["first_lapsed"], S["steady_active"]] == pytest.approx(0.1)
    assert p[S["first_lapsed"], S["first_lapsed"]] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({("toddler_active", "first_active"): 0.05}, "ありえない移動"),
        ({("first_active", "toddler_lapsed"): 0.05}, "ありえない移動"),
        # a lapsed customer who buys again has 2 purchases and more than 240 days of tenure
        ({("first_lapsed", "first_active"): 0.10}, "もう一度買うと購入は2回になるので"),
        ({("first_lapsed", "toddler_active"): 0.10}, "在籍日数は241日以上になるので"),
        ({("toddler_lapsed", "toddler_active"): 0.10}, "よちよち客.在籍90日未満"),
        ({("steady_lapsed", "trendy_active"): 0.10}, "流行客.在籍90〜209日"),
        ({("trendy_lapsed", "trendy_active"): 0.10}, "ありえない移動"),
        ({("first_active", "toddler_active"): 0.9}, "現在 20.0%"),
        ({("first_active", "toddler_active"): -0.25}, "0〜100%"),
        ({("first_active", "toddler_active"): 0.0}, "0 以外"),
        ({("first_active", "toddler_active"): float("nan")}, "0 以外"),
        ({("first_active", "vip"): 0.05}, "不明なセグメント"),
        ({("first_lapsed", "first_lapsed"): -0.1}, "下げられません"),
        ({}, "1 つ以上"),
    ],
)
def test_invalid_what_if_changes_are_refused_in_japanese(
    change: dict[tuple[str, str], float], message: str
) -> None:
    model = dy.estimate(_flows(MOVES, {"first_active": 5}), origin=2)
    with pytest.raises(dy.WhatIfError, match=message):
        dy.what_if(model, change)


# Which lapsed → active moves CPM allows with the default thresholds: buying again after 240
# days makes 2+ purchases and 241+ days of tenure, so コツコツ (≤ ¥70,000) or 優良 (more).
REACTIVATION = {
    "first_lapsed": {"steady_active", "loyal_active"},
    "toddler_lapsed": {"steady_active", "loyal_active"},
    "steady_lapsed": {"steady_active", "loyal_active"},
    "trendy_lapsed": {"loyal_active"},
    "loyal_lapsed": {"loyal_active"},
}


def test_lapsed_customers_come_back_only_where_the_cpm_rules_allow() -> None:
    active = [code for code in dy.SEGMENTS if code.endswith("_active")]
    for before, allowed in REACTIVATION.items():
        assert {after for after in active if dy.possible(before, after)} == allowed, before
    # with a lapse shorter than the よちよち tenure, a lapsed よちよち客 can come back as one
    short = dy.CpmDays(lapse=40, toddler=90, loyal=210)
    assert dy.possible("toddler_lapsed", "toddler_active", short)
    assert dy.possible("first_lapsed", "trendy_active", short)
    assert not dy.possible("first_lapsed", "first_active", short)


@pytest.mark.parametrize(
    ("cfg", "every_allowed_move_happens"),
    [
        (AnalyticsConfig(), True),
        (AnalyticsConfig(cpm_lapse_days=40, cpm_amount_yen=5000), False),
        # a lapse shorter than a month: a customer can buy early in a month and be 離脱 at its
        # end, and a 現役初回客 cannot stay one for a month
        (
            AnalyticsConfig(
                cpm_lapse_days=20,
                cpm_toddler_tenure_days=60,
                cpm_loyal_tenure_days=120,
                cpm_amount_yen=8000,
            ),
            False,
        ),
    ],
)
def test_the_moves_customers_make_are_the_ones_the_what_if_accepts(
    cfg: AnalyticsConfig, every_allowed_move_happens: bool
) -> None:
    # given 3,000 customers with 20,000 purchases on random days over three years
    rng = np.random.default_rng(3)
    n = 20_000
    purchases = [
        (int(c), AS_OF - dt.timedelta(days=int(ago)), int(yen))
        for c, ago, yen in zip(
            rng.integers(1, 3000, n),
            rng.integers(0, 1100, n),
            rng.lognormal(9, 1.2, n).astype(int) + 500,
            strict=True,
        )
    ]
    con = ibis.duckdb.connect()
    p = ex.purchases(con.create_table("orders", _orders(purchases)), as_of_day=D)
    months, ends, partial = dy.month_grid(D, month_index(AS_OF), months=36)
    cm = ex.customer_months(p)
    flows = dy.flows_from_arrow(
        dy.month_flows(cm, months=months, end_days=ends, cfg=cfg).to_pyarrow(),
        dy.first_purchases_by_month(cm).to_pyarrow(),
        months=months,
        partial=partial,
    )
    # when the moves that happened are listed
    moved = flows.customers[1:, : dy.N_SEGMENTS, :].sum(axis=0)
    seen = {(dy.SEGMENTS[a], dy.SEGMENTS[b]) for a, b in zip(*np.nonzero(moved), strict=True)}
    days = dy.CpmDays.of(cfg)
    allowed = {(a, b) for a in dy.SEGMENTS for b in dy.SEGMENTS if dy.possible(a, b, days)}
    # then the rules allow each of them, so a what-if never refuses a move that happens
    assert seen - allowed == set()
    assert any(a.endswith("_lapsed") and b.endswith("_active") for a, b in seen)
    # and with the default thresholds every move they allow happens in such a history
    if every_allowed_move_happens:
        assert allowed - seen == set()


def test_the_model_keeps_the_thresholds_it_was_estimated_with() -> None:
    short = dy.CpmDays(lapse=40, toddler=90, loyal=210)
    model = dy.estimate(_flows(MOVES, {"first_active": 5}), origin=2, cpm_days=short)
    assert dy.MarkovModel.from_json(model.json()).cpm_days == short
    # with short thresholds a lapsed よちよち客 may come back as one; with the defaults not
    assert dy.what_if(model, {("toddler_lapsed", "toddler_active"): 0.1})
    # a model stored before it kept them takes them from its run's settings
    stored = {k: v for k, v in model.json().items() if k != "cpm_days"}
    settings = {"cpm_lapse_days": 40, "cpm_toddler_tenure_days": 90, "cpm_loyal_tenure_days": 210}
    assert dy.MarkovModel.from_json(stored, settings=settings).cpm_days == short
    assert dy.MarkovModel.from_json(stored).cpm_days == dy.CpmDays()
    with pytest.raises(dy.WhatIfError, match="ありえない移動"):
        dy.what_if(dy.MarkovModel.from_json(stored), {("toddler_lapsed", "toddler_active"): 0.1})


def test_the_backtest_error_of_a_doubling_of_new_customers() -> None:
    # given a shop that opened in 2023-07 with one single-purchase customer a month, and two a
    # month from 2024-07 on (the 12 months after the back-test origin 2024-06)
    purchases = []
    cid = 0
    for month in range(month_index(d(2023, 7, 1)), month_index(AS_OF) + 1):
        year, m = divmod(month, 12)
        for _ in range(1 if month <= month_index(d(2024, 6, 1)) else 2):
            cid += 1
            purchases.append((cid, d(1970 + year, m + 1, 10), 1000))
    backtest = _dynamics(purchases)["cpm_forecast_backtest"]
    # then the forecast from 2024-06 expects 1 new a month: total 12 + h against 12 + 2h
    assert backtest["origin"] == "2024-06"
    assert [sum(row) for row in backtest["actual"]] == [12 + 2 * h for h in range(1, 13)]
    assert [round(sum(row), 6) for row in backtest["forecast"]] == [12 + h for h in range(1, 13)]
    expected = np.mean([h / (12 + 2 * h) for h in range(1, 13)])
    assert backtest["mape_total"] == pytest.approx(expected, abs=1e-6)
    # the new customers' revenue: ¥1,000 each, so revenue is off by the same missing customers
    assert backtest["revenue_actual"] == [2000] * 12
    assert backtest["mape_revenue"] == pytest.approx(0.5)


def test_a_backtest_needs_history() -> None:
    backtest = _dynamics([(1, d(2025, 6, 1), 1000)], months=6)["cpm_forecast_backtest"]
    assert backtest["available"] is False
    assert "足りません" in backtest["reason"]


# --- through the pipeline ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_duckdb_and_postgres_give_the_same_dynamics() -> None:
    build_varied_shop()
    on_duckdb = run(AS_OF, "duckdb")
    names = ("cpm_monthly", "cpm_changes", "cpm_transitions", "cpm_forecast")
    stored = {name: kpi(on_duckdb, name) for name in (*names, "cpm_forecast_backtest")}
    assert all(stored[name] for name in names)
    if connection.vendor == "postgresql":
        on_postgres = run(AS_OF, "postgres")
        assert {name: kpi(on_postgres, name) for name in stored} == stored


@pytest.fixture
def analysed(db: None) -> None:
    build_varied_shop()
    run(AS_OF)


def _client(role: Role) -> Client:
    user = make_user(role)
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.usefixtures("analysed")
def test_the_dynamics_page_shows_counts_causes_and_the_forecast() -> None:
    response = _client(Role.ANALYST).get(reverse("analytics:dynamics"))
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("顧客数の推移・予測", "現役初回客", "変化の理由", "12 か月の予測", "<svg"):
        assert text in html
    assert KpiTable.objects.filter(name="cpm_forecast").exists()


@pytest.mark.usefixtures("analysed")
def test_the_what_if_form_returns_a_changed_forecast() -> None:
    client = _client(Role.MARKETER)
    response = client.post(
        reverse("analytics:dynamics"),
        {"before": "first_active", "after": "toddler_active", "points": "+5"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="what-if-result"' in html
    assert "変更後" in html
    assert "<h1>" not in html  # the htmx answer is the panel only


@pytest.mark.usefixtures("analysed")
@pytest.mark.parametrize(
    ("points", "before", "message"),
    [
        ("abc", "first_active", "数値で入力してください"),
        ("0", "first_active", "0 以外の値"),
        ("+500", "first_active", "-100〜+100"),
        ("+5", "toddler_active", "ありえない移動"),
    ],
)
def test_the_what_if_form_answers_bad_input_in_japanese(
    points: str, before: str, message: str
) -> None:
    after = "first_active" if before == "toddler_active" else "toddler_active"
    response = _client(Role.ANALYST).post(
        reverse("analytics:dynamics"),
        {"before": before, "after": after, "points": points},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert message in html
    assert 'id="what-if-result"' not in html


@pytest.mark.usefixtures("analysed")
@pytest.mark.parametrize(
    ("before", "after"),
    [("first_lapsed", "first_active"), ("toddler_lapsed", "toddler_active")],
)
def test_the_what_if_form_refuses_a_comeback_the_cpm_rules_do_not_allow(
    before: str, after: str
) -> None:
    response = _client(Role.MARKETER).post(
        reverse("analytics:dynamics"),
        {"before": before, "after": after, "points": "+10"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert "CPM の定義上ありえない移動です" in html
    assert 'id="what-if-result"' not in html  # no forecast from it


@pytest.mark.django_db
def test_the_pages_say_so_before_the_first_run() -> None:
    client = _client(Role.ADMIN)
    for name in ("analytics:dynamics", "analytics:fans"):
        response = client.get(reverse(name))
        assert response.status_code == 200
        assert "まだ分析結果がありません" in response.content.decode()
    response = client.post(
        reverse("analytics:dynamics"),
        {"before": "first_active", "after": "toddler_active", "points": "5"},
        HTTP_HX_REQUEST="true",
    )
    assert "予測がまだありません" in response.content.decode()


def _reference_flows(p: Any, months: list[int], ends: list[int], cfg: AnalyticsConfig) -> Any:
    """The definition, written the slow way: every customer's segment at every month end
    (`cpm_at_month_ends`), the previous month's by LAG, then counted."""
    seg = ex.cpm_at_month_ends(p, months=months, end_days=ends, cfg=cfg)
    spent = p.group_by(["customer_id", "month"]).aggregate(revenue=p.amount.sum())
    joined = seg.left_join(
        spent, [seg.customer_id == spent.customer_id, seg.month == spent.month]
    ).select(seg.customer_id, seg.month, seg.cpm_segment, revenue=spent.revenue.fill_null(0))
    before = ibis.window(group_by=joined.customer_id, order_by=joined.month)
    paired = joined.mutate(prev_segment=joined.cpm_segment.lag().over(before))
    return paired.group_by(["month", "prev_segment", "cpm_segment"]).aggregate(
        customers=paired.count(), revenue=paired.revenue.sum().cast("int64")
    )


@pytest.mark.parametrize(
    ("as_of", "cfg"),
    [
        (AS_OF, AnalyticsConfig()),
        (d(2025, 6, 17), AnalyticsConfig(cpm_lapse_days=40, cpm_amount_yen=5000)),
    ],
)
def test_month_flows_match_the_segments_at_every_month_end(
    as_of: dt.date, cfg: AnalyticsConfig
) -> None:
    # given 300 customers with random purchase days and amounts over three years
    rng = np.random.default_rng(7)
    purchases = [
        (int(c), as_of - dt.timedelta(days=int(ago)), int(yen))
        for c, ago, yen in zip(
            rng.integers(1, 300, 2000),
            rng.integers(0, 1100, 2000),
            rng.integers(500, 9000, 2000),
            strict=True,
        )
    ]
    con = ibis.duckdb.connect()
    day = day_number(as_of)
    p = ex.purchases(con.create_table("orders", _orders(purchases)), as_of_day=day)
    months, ends, partial = dy.month_grid(day, month_index(as_of), months=36)
    cm = ex.customer_months(p)
    first = dy.first_purchases_by_month(cm).to_pyarrow()
    # when the flows are computed the fast way and from the definition
    fast = dy.flows_from_arrow(
        dy.month_flows(cm, months=months, end_days=ends, cfg=cfg).to_pyarrow(),
        first,
        months=months,
        partial=partial,
    )
    slow = dy.flows_from_arrow(
        _reference_flows(p, months, ends, cfg).to_pyarrow(), first, months=months, partial=partial
    )
    # then every month's moves, revenue and counts agree (month 0 is only a starting point)
    np.testing.assert_array_equal(fast.customers[1:], slow.customers[1:])
    np.testing.assert_array_equal(fast.revenue[1:], slow.revenue[1:])
    np.testing.assert_array_equal(fast.counts(0), slow.counts(0))
    assert fast.customers[1:, : dy.N_SEGMENTS].sum() > 0


def test_the_chart_draws_each_month_once_and_marks_the_unfinished_month(db: None) -> None:
    import re

    # given an analysis as of the 20th, so June is an unfinished month and the forecast starts
    # from the end of May (its first month is June)
    build_varied_shop()
    run(dt.date(2025, 6, 20))
    html = _client(Role.ANALYST).get(reverse("analytics:dynamics")).content.decode()
    chart = html.split("<svg", 1)[1].split("</svg>", 1)[0]
    titles = re.findall(r"<title>(\d{4}-\d{2})\((.*?)\)", chart)
    # then June is one bar, its count so far, marked 途中; the forecast bars start in July
    kinds_of = {month: {kind for m, kind in titles if m == month} for month, _ in titles}
    assert kinds_of["2025-06"] == {"途中・6/20まで"}
    assert all(len(kinds) == 1 for kinds in kinds_of.values())
    forecast = sorted(month for month, kind in titles if kind == "予測")
    assert forecast[0] == "2025-07"
    assert "2025-06(予測)" not in html
    assert 'stroke-dasharray="3 2"' in chart
    # and the legend says what the unfinished bar is and where the forecast comes from
    assert "点線で囲んだ 2025-06 は基準日 6/20 までの途中の人数です(実績)" in html
    assert "薄い色は予測(2025-05 末までの実績から計算、2025-07〜2026-05)" in html


@pytest.mark.usefixtures("analysed")
def test_what_if_people_are_whole_customers_with_the_unit() -> None:
    import re

    response = _client(Role.MARKETER).post(
        reverse("analytics:dynamics"),
        {"before": "first_active", "after": "toddler_active", "points": "+5"},
        HTTP_HX_REQUEST="true",
    )
    result = response.content.decode().split('id="what-if-result"', 1)[1]
    cells = re.findall(r'<td class="num">([^<]*)</td>', result)
    people = [c for c in cells if not c.startswith("¥") and "円" not in c]
    assert people, result
    for cell in people:
        assert re.fullmatch(r"([+-]?[\d,]+|±0)人", cell), cell
