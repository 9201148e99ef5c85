"""Measured lift: what a scenario achieved, treated group against its holdout.

The unit is a customer's first enrollment in the scenario. The holdout was drawn at random
(a hash of scenario and customer, triggers.holdout_draw) before anything was sent, so the
difference between the groups is the scenario's effect, give or take chance — and the
confidence intervals say how much chance.

Outcomes are counted from the trigger moment (`anchor_at`), over valid orders (not cancelled
or returned), and only for enrollments old enough for the whole window to have passed:

- conversion: bought at least once within the scenario's attribution window (default 30 days);
- repeat: bought at least twice within 90 days;
- revenue per customer: order totals within the attribution window (yen);
- 90-day LTV: order totals within 90 days (yen).

Proportions get a 95% Newcombe (hybrid Wilson score) interval for the difference, which is
well-behaved for small groups and rates near 0; revenue gets a Welch t interval for the
difference of means (unequal variances; with the hundreds of customers a holdout holds the
mean is close to normal even though single orders are skewed) — except when a group's values
are all equal, typically a holdout in which nobody bought (see `_mean`). Each aggregate is one
SQL query grouped by holdout; nothing loops over customers.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, NamedTuple

from django.db import connection
from django.db.models import (
    Count,
    Exists,
    F,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce

from kizuna.campaigns.automation.models import Enrollment, Scenario
from kizuna.campaigns.automation.selectors import enrollment_counts
from kizuna.campaigns.automation.sqlfuncs import Later
from kizuna.commerce.models import Order, OrderStatus

CONFIDENCE = 0.95
LTV_DAYS = 90
# Below this many customers in a group an interval is too wide to say anything.
MIN_GROUP = 30
VOID_ORDER = (OrderStatus.CANCELLED, OrderStatus.RETURNED)


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(
    x1: int, n1: int, x2: int, n2: int, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """p1 − p2 with Newcombe's hybrid score interval (his method 10)."""
    p1 = x1 / n1 if n1 else 0.0
    p2 = x2 / n2 if n2 else 0.0
    l1, u1 = wilson(x1, n1, confidence)
    l2, u2 = wilson(x2, n2, confidence)
    diff = p1 - p2
    low = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return diff, low, high


class Sample(NamedTuple):
    mean: float
    variance: float
    n: int


def welch(a: Sample, b: Sample, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """a.mean − b.mean with Welch's t interval (sample variances, unequal)."""
    diff = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return diff, -math.inf, math.inf
    va, vb = a.variance / a.n, b.variance / b.n
    se2 = va + vb
    if se2 == 0:
        return diff, diff, diff
    df = se2**2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    # Imported here, not with the module: the scenario pages import this module, and scipy
    # would add about half a second and tens of MiB to every web and delivery worker.
    from scipy import stats

    t = float(stats.t.ppf(0.5 + confidence / 2, df))
    half = t * math.sqrt(se2)
    return diff, diff - half, diff + half


@dataclass(frozen=True)
class ProportionLift:
    treated_n: int
    treated_x: int
    holdout_n: int
    holdout_x: int
    diff: float
    low: float
    high: float

    @property
    def treated_rate(self) -> float:
        return self.treated_x / self.treated_n if self.treated_n else 0.0

    @property
    def holdout_rate(self) -> float:
        return self.holdout_x / self.holdout_n if self.holdout_n else 0.0

    @property
    def relative(self) -> float | None:
        return self.diff / self.holdout_rate if self.holdout_rate else None

    @property
    def enough_data(self) -> bool:
        return min(self.treated_n, self.holdout_n) >= MIN_GROUP

    @property
    def significant(self) -> bool:
        return self.enough_data and (self.low > 0 or self.high < 0)


@dataclass(frozen=True)
class MeanLift:
    treated_n: int
    treated_mean: float
    holdout_n: int
    holdout_mean: float
    diff: float
    low: float
    high: float

    @property
    def relative(self) -> float | None:
        return self.diff / self.holdout_mean if self.holdout_mean else None

    @property
    def enough_data(self) -> bool:
        return min(self.treated_n, self.holdout_n) >= MIN_GROUP

    @property
    def significant(self) -> bool:
        return self.enough_data and (self.low > 0 or self.high < 0)


@dataclass(frozen=True)
class ScenarioLift:
    scenario_id: int
    attribution_days: int
    as_of: dt.datetime
    enrolled_treated: int
    enrolled_holdout: int
    conversion: ProportionLift
    repeat: ProportionLift
    revenue: MeanLift
    ltv90: MeanLift


def _units(scenario: Scenario) -> QuerySet[Enrollment]:
    """Each customer's first enrollment in the scenario."""
    earlier = Enrollment.objects.filter(
        scenario=scenario, customer_id=OuterRef("customer_id"), anchor_at__lt=OuterRef("anchor_at")
    )
    return Enrollment.objects.filter(scenario=scenario).filter(~Exists(earlier))


def _orders_within(days: int) -> QuerySet[Order]:
    return Order.objects.filter(
        customer=OuterRef("customer_id"),
        ordered_at__gt=OuterRef("anchor_at"),
        ordered_at__lte=Later(OuterRef("anchor_at"), days=days),
    ).exclude(status__in=VOID_ORDER)


_GROUP_KEYS = ("n", "buyers", "repeaters", "revenue_sum", "revenue_sq")


def _groups(scenario: Scenario, days: int, now: dt.datetime) -> dict[bool, dict[str, Any]]:
    """Per group (holdout False/True): n, buyers (≥1 order), repeaters (≥2), revenue sum and
    sum of squares, for units whose `days`-day window has ended by `now`.

    Each unit's order count and revenue are worked out once, in a derived table, and then
    summed per group: aggregated by the ORM directly, each of the five sums repeated the
    subqueries it uses, and the database ran them again for every sum."""
    orders = _orders_within(days)
    count = orders.order_by().values("customer").annotate(n=Count("pk")).values("n")
    revenue = orders.order_by().values("customer").annotate(s=Sum("total")).values("s")
    units = (
        _units(scenario)
        .filter(anchor_at__lte=now - dt.timedelta(days=days))
        .annotate(
            u_holdout=F("holdout"),
            u_orders=Coalesce(Subquery(count), Value(0)),
            u_revenue=Coalesce(Subquery(revenue), Value(0)),
        )
        .order_by()
        .values_list("u_holdout", "u_orders", "u_revenue")
    )
    inner, params = units.query.sql_with_params()
    sql = (
        "SELECT u_holdout, COUNT(*),"  # noqa: S608 - the ORM's own SQL, no input in it
        " SUM(CASE WHEN u_orders >= 1 THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN u_orders >= 2 THEN 1 ELSE 0 END),"
        f" SUM(u_revenue), SUM(u_revenue * u_revenue) FROM ({inner}) AS units GROUP BY u_holdout"
    )
    groups = {False: dict.fromkeys(_GROUP_KEYS, 0), True: dict.fromkeys(_GROUP_KEYS, 0)}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for holdout, *values in cursor.fetchall():
            groups[bool(holdout)] = {
                k: int(v or 0) for k, v in zip(_GROUP_KEYS, values, strict=True)
            }
    return groups


def _proportion(groups: dict[bool, dict[str, Any]], key: str) -> ProportionLift:
    t, h = groups[False], groups[True]
    diff, low, high = newcombe(t[key], t["n"], h[key], h["n"])
    return ProportionLift(t["n"], t[key], h["n"], h[key], diff, low, high)


def _moments(group: dict[str, Any]) -> tuple[float, float]:
    n = group["n"]
    if n == 0:
        return 0.0, 0.0
    mean = group["revenue_sum"] / n
    if n < 2:
        return mean, 0.0
    variance = (group["revenue_sq"] - n * mean * mean) / (n - 1)
    return mean, max(variance, 0.0)


def _all_equal(group: dict[str, Any]) -> bool:
    """Whether every value in the group is the same (sample variance 0), in exact integers:
    n · Σx² = (Σx)² holds only then."""
    return bool(group["n"]) and group["n"] * group["revenue_sq"] == group["revenue_sum"] ** 2


def buyer_rate_interval(t: dict[str, Any], h: dict[str, Any]) -> tuple[float, float]:
    """The difference in revenue per customer implied by the difference in buyer rates: the
    Newcombe interval of the rates times the mean revenue per buyer of both groups together."""
    buyers = t["buyers"] + h["buyers"]
    per_buyer = (t["revenue_sum"] + h["revenue_sum"]) / buyers if buyers else 0.0
    _, low, high = newcombe(t["buyers"], t["n"], h["buyers"], h["n"])
    return low * per_buyer, high * per_buyer


def _mean(groups: dict[bool, dict[str, Any]]) -> MeanLift:
    """Revenue per customer, treated against holdout.

    Welch's interval takes each group's sample variance as its uncertainty. A group whose values
    are all equal has variance 0 — in practice a holdout in which nobody bought in the window,
    everyone at 0 yen — and Welch then treats its mean as known exactly: 0 buyers of 80 gave
    181 yen vs 0 yen, 109〜254 yen, 差あり, while the buyer rates (25/657 vs 0/80) were within
    chance. The holdout's real uncertainty is how many of it would have bought, which is what
    the buyer rates' Newcombe interval holds; times what a buyer spends (the mean of both groups'
    buyers, the only evidence of it) it is an interval in yen. In that case the interval is the
    hull of Welch's (which keeps the other group's spread of spend) and that one, so it is never
    narrower than either, and a revenue verdict can never claim a difference that the buyer
    rates, with the same spend per buyer, do not show. Groups with spread keep Welch's interval.
    """
    t, h = groups[False], groups[True]
    tm, tv = _moments(t)
    hm, hv = _moments(h)
    diff, low, high = welch(Sample(tm, tv, t["n"]), Sample(hm, hv, h["n"]))
    if t["n"] and h["n"] and (_all_equal(t) or _all_equal(h)):
        rate_low, rate_high = buyer_rate_interval(t, h)
        low, high = min(low, rate_low), max(high, rate_high)
    return MeanLift(t["n"], tm, h["n"], hm, diff, low, high)


def scenario_lift(scenario: Scenario, *, now: dt.datetime) -> ScenarioLift:
    """The scenario's lift as of `now`: two queries grouped by holdout, and one count."""
    window = _groups(scenario, scenario.attribution_days, now)
    long = _groups(scenario, LTV_DAYS, now)
    enrolled = enrollment_counts(scenario.pk)
    return ScenarioLift(
        scenario_id=scenario.pk,
        attribution_days=scenario.attribution_days,
        as_of=now,
        enrolled_treated=int(enrolled.get(False, 0)),
        enrolled_holdout=int(enrolled.get(True, 0)),
        conversion=_proportion(window, "buyers"),
        repeat=_proportion(long, "repeaters"),
        revenue=_mean(window),
        ltv90=_mean(long),
    )
