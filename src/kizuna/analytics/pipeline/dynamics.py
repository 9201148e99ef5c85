"""Customer-count dynamics (顧客数の見える化): CPM segment counts per month, the causes of each
month's change, a Markov-chain forecast with what-if, and its back-test.

One Ibis expression (`month_flows`) gives, per month and per (segment at the previous month end
→ segment at this month end), how many customers moved that way and what they spent in the
month; customers whose first purchase falls in the month come from no segment. That table has
at most months × 11 × 10 cells, so everything else — counts, causes, the transition matrix, the
forecast — is numpy arithmetic on it, identical on every engine. The definitions are written
out in docs/analytics.md (「顧客数の推移・予測」).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa

from kizuna.analytics.pipeline.config import AnalyticsConfig
from kizuna.analytics.pipeline.expressions import cpm_segment
from kizuna.analytics.pipeline.kpis import month_end_day, month_label
from kizuna.analytics.pipeline.segments import (
    CPM_SEGMENTS,
    CPM_STAGE_LABELS,
    LAPSED_SUFFIX,
    CpmStage,
    WhatIfError,
)

SEGMENTS: tuple[str, ...] = tuple(CPM_SEGMENTS)
N_SEGMENTS = len(SEGMENTS)
# Row index, in a flow matrix, of customers who had no segment yet (first purchase this month).
NEW = N_SEGMENTS
_INDEX = {code: i for i, code in enumerate(SEGMENTS)}
_STAGE_RANK = {stage.value: rank for rank, stage in enumerate(CpmStage)}

CAUSES: tuple[str, ...] = ("new", "became_f2", "moved_up", "lapsed", "reactivated")
CAUSE_LABELS: dict[str, str] = {
    "new": "新規",
    "became_f2": "F2転換",
    "moved_up": "ランクアップ",
    "lapsed": "離脱",
    "reactivated": "復活",
}

Matrix = np.ndarray[Any, np.dtype[np.float64]]


def _stage(code: str) -> str:
    return code.rsplit("_", 1)[0]


def _is_lapsed(code: str) -> bool:
    return code.endswith("_" + LAPSED_SUFFIX)


def cause(before: str, after: str) -> str:
    """Why a customer went from segment `before` to a different segment `after` in a month.

    現役 ↔ 離脱 decides first (a lapsed 初回客 who buys again is 復活, not F2転換); otherwise
    the stage rose: from 初回 it is F2転換, from any later stage ランクアップ.
    """
    if not _is_lapsed(before) and _is_lapsed(after):
        return "lapsed"
    if _is_lapsed(before) and not _is_lapsed(after):
        return "reactivated"
    return "became_f2" if _stage(before) == CpmStage.FIRST else "moved_up"


# The longest month: a purchase on its first day is this many days before its last day; and
# the shortest, the least time between two month ends.
_LONGEST_MONTH_DAYS = 31
_SHORTEST_MONTH_DAYS = 28


@dataclass(frozen=True)
class CpmDays:
    """The CPM day thresholds that decide which moves can happen in a month (`possible`): 離脱
    from `lapse` days since the last purchase, よちよち below `toddler` days of tenure, 優良 (and
    流行 below) from `loyal` days. A model keeps the ones of the run it was estimated in."""

    lapse: int = AnalyticsConfig.cpm_lapse_days
    toddler: int = AnalyticsConfig.cpm_toddler_tenure_days
    loyal: int = AnalyticsConfig.cpm_loyal_tenure_days

    @classmethod
    def of(cls, cfg: AnalyticsConfig) -> CpmDays:
        return cls(cfg.cpm_lapse_days, cfg.cpm_toddler_tenure_days, cfg.cpm_loyal_tenure_days)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> CpmDays:
        """From a run's settings (AnalyticsRun.settings); defaults for what they lack."""
        default = cls()
        return cls(
            int(settings.get("cpm_lapse_days", default.lapse)),
            int(settings.get("cpm_toddler_tenure_days", default.toddler)),
            int(settings.get("cpm_loyal_tenure_days", default.loyal)),
        )

    def json(self) -> dict[str, int]:
        return {"lapse": self.lapse, "toddler": self.toddler, "loyal": self.loyal}

    def tenure(self, stage: str) -> tuple[float, float]:
        """The tenures (days from the first to the last purchase) a stage allows, both ends in."""
        return {
            CpmStage.FIRST: (0, 0),
            CpmStage.TODDLER: (0, self.toddler - 1),
            CpmStage.STEADY: (self.toddler, math.inf),
            CpmStage.TRENDY: (self.toddler, self.loyal - 1),
            CpmStage.LOYAL: (self.loyal, math.inf),
        }[CpmStage(stage)]


def impossible_because(before: str, after: str, days: CpmDays | None = None) -> str | None:
    """Why CPM's rules keep a customer from going from `before` to `after` in one month (a
    Japanese reason), or None when the move can happen. The stages are those of
    `expressions.cpm_segment`, judged at the two month ends.

    Purchase count, tenure and total spend never go down, so neither does the stage. Without a
    purchase in the month only 現役 → 離脱 can happen. With one (on day D after the month end
    E0 before it, D ≤ E0 + 31), the count is 2 or more, so never 初回, and the tenure grows by
    the gap g = D − (last purchase before it): a customer 現役 at E0 bought within the last
    `lapse` days, so 1 ≤ g ≤ lapse + 30; one 離脱 at E0 had not bought for `lapse` days, so
    g ≥ lapse + 1 — a lapsed 初回客 or よちよち客 who buys again has a tenure of more than
    `lapse` days (241 with the defaults) and becomes コツコツ客 or 優良客, not よちよち客 or 流行客
    unless those reach that far. A customer who bought in the month is 離脱 at its end only if
    `lapse` is shorter than the month, and one stays 現役初回客 only if it is longer.
    Checked against the moves month_flows finds in random histories (test_analytics_dynamics).
    """
    days = days or CpmDays()
    stage_before, stage_after = _stage(before), _stage(after)
    lapsed_before, lapsed_after = _is_lapsed(before), _is_lapsed(after)
    if before == after:
        # Staying 現役初回客 means not buying for a whole month (a purchase makes it 2), which is
        # 離脱 by the month's end when `lapse` is no longer than the shortest month.
        stays = stage_before != CpmStage.FIRST or lapsed_before
        if stays or days.lapse > _SHORTEST_MONTH_DAYS:
            return None
        return f"初回客のまま1か月たつと、離脱の日数({days.lapse}日)を過ぎます"
    if stage_before == stage_after and not lapsed_before and lapsed_after:
        return None  # 離脱: no purchase for `lapse` days
    # Every other change needs a purchase in the month.
    reason = None
    if _STAGE_RANK[stage_after] < _STAGE_RANK[stage_before]:
        reason = "段階は下がりません"
    elif lapsed_after and days.lapse >= _LONGEST_MONTH_DAYS:
        reason = "段階が変わるのは購入した月なので、その月末は現役です"
    elif stage_after == CpmStage.FIRST:
        reason = "もう一度買うと購入は2回になるので、初回客には戻りません"
    elif not _tenure_can_reach(stage_before, lapsed_before, stage_after, lapsed_after, days):
        label = CPM_STAGE_LABELS[CpmStage(stage_after)]
        allowed = _days_text(*days.tenure(stage_after))
        reason = (
            f"離脱していた人が買うと在籍日数は{days.lapse + 1}日以上になるので、"
            f"{label}(在籍{allowed})にはなりません"
            if lapsed_before
            else f"1か月の間に在籍日数が{label}の範囲(在籍{allowed})になりません"
        )
    return reason


def _tenure_can_reach(
    stage_before: str, lapsed_before: bool, stage_after: str, lapsed_after: bool, days: CpmDays
) -> bool:
    """Whether a purchase in the month can take the tenure from `stage_before`'s range into
    `stage_after`'s: it grows by the gap g between the last purchase before the month and the
    last one in it."""
    gap: tuple[float, float]
    if lapsed_before:
        gap = (days.lapse + 1, math.inf)
    elif lapsed_after:  # bought in the month, and `lapse` days before its end
        gap = (1, _LONGEST_MONTH_DAYS - 1)
    else:
        gap = (1, days.lapse + _LONGEST_MONTH_DAYS - 1)
    low, high = days.tenure(stage_before)
    want_low, want_high = days.tenure(stage_after)
    return max(low + gap[0], want_low) <= min(high + gap[1], want_high)


def _days_text(low: float, high: float) -> str:
    if high == math.inf:
        return f"{int(low)}日以上"
    if low == 0:
        return f"{int(high) + 1}日未満"
    return f"{int(low)}〜{int(high)}日"


def possible(before: str, after: str, days: CpmDays | None = None) -> bool:
    """Whether CPM's rules let a customer go from `before` to `after` in one month."""
    return impossible_because(before, after, days) is None


# --- the one expression ------------------------------------------------------------------------


def month_flows(
    cm: ir.Table, *, months: Sequence[int], end_days: Sequence[int], cfg: AnalyticsConfig
) -> ir.Table:
    """Per month: customers and their revenue in the month, by (previous, current) segment.

    `cm` is `expressions.customer_months` of the purchases. `months` must be consecutive; `end_days[i]` is the day months[i] is judged on (its last
    day, or the as-of day for a partial month). prev_segment is the segment at the end of the
    month before (NULL: first purchase this month).

    The segments are those of `expressions.cpm_at_month_ends`, computed without its join of
    every purchase month with every later month end: a customer's running totals change only
    in the months they buy, so each buying month's totals are joined with the month ends up
    to their next buying month only (nothing to re-aggregate), and the segment at the previous
    month end comes from the same totals — or, in a buying month, from the previous buying
    month's. Buying months that agree on everything the month ends look at are counted
    together before that join, so it sees a few hundred thousand weighted rows instead of one
    per customer and month.
    """
    running = ibis.cumulative_window(group_by=cm.customer_id, order_by=cm.month)
    ordered = ibis.window(group_by=cm.customer_id, order_by=cm.month)
    # All window functions in one SELECT: the engine sorts each customer's months once.
    totals = cm.mutate(
        purchase_count=cm.n.sum().over(running),
        total_spend=cm.amount.sum().over(running).cast("int64"),
        first_day=cm.first.min().over(running),
        # the last buying month's totals hold to the end (a plain range keeps the join fast)
        next_month=cm.month.lead().over(ordered).fill_null(months[-1] + 1),
        prev_last=cm.last.lag().over(ordered),
    )
    state = totals.mutate(
        # the totals before this month's purchases (0 purchases: none, a first purchase)
        prev_count=totals.purchase_count - totals.n,
        prev_total=totals.total_spend - totals.amount,
    )
    # The stage (初回…優良) changes only with a purchase, so it is worked out once per buying
    # month; each month end then only adds 現役/離脱 (days since the last purchase), and the
    # segment names are put together after the GROUP BY, on a few hundred rows.
    stage = cpm_segment(
        purchase_count=state.purchase_count,
        tenure_days=state.last - state.first_day,
        total_spend=state.total_spend,
        days_since_last=ibis.literal(0, "int64"),
        cfg=cfg,
    )
    stage_before = cpm_segment(
        purchase_count=state.prev_count,
        tenure_days=state.prev_last - state.first_day,
        total_spend=state.prev_total,
        days_since_last=ibis.literal(0, "int64"),
        cfg=cfg,
    )
    # Stages travel as small integers through the big join and GROUP BY (cheaper than text).
    codes = [(f"{s.value}_active", i) for i, s in enumerate(CpmStage)]
    staged = state.mutate(
        stage=stage.cases(*codes).cast("int8"),
        stage_before=ibis.ifelse(
            state.prev_count == 0, ibis.null("int8"), stage_before.cases(*codes).cast("int8")
        ),
    )
    # The segment before a buying month needs the end of the month before it; outside the
    # grid it is never used (those buying months are no month's "bought" row).
    before_end = staged.month.cases(*[(m, month_end_day(m - 1)) for m in months])
    lapse = cfg.cpm_lapse_days  # 離脱: days since the last purchase ≥ lapse (as cpm_segment)
    # Customers whose buying months agree on everything the month ends look at are counted
    # once: a few hundred thousand weighted rows go into the join with the month ends instead
    # of one row per customer and buying month (the join then yields one row per distinct
    # span and month, not one per customer and month: ≈ 18M rows at 1M customers).
    spans_in_grid = staged.filter(staged.next_month > months[0])
    compact = spans_in_grid.group_by(
        [
            spans_in_grid.month,
            spans_in_grid.next_month,
            spans_in_grid.last,
            spans_in_grid.stage,
            spans_in_grid.stage_before,
            ((before_end - spans_in_grid.prev_last) >= lapse).name("lapsed_before"),
        ]
    ).aggregate(customers=spans_in_grid.count(), amount=spans_in_grid.amount.sum())
    ends = ibis.memtable(
        {
            "at_month": list(months),
            "end_day": list(end_days),
            "prev_end_day": [month_end_day(m - 1) for m in months],
        },
        schema={"at_month": "int64", "end_day": "int64", "prev_end_day": "int64"},
    )
    spans = compact.join(
        ends,
        [ends.at_month >= compact.month, ends.at_month < compact.next_month],
    )
    bought = spans.at_month == spans.month
    paired = spans.select(
        month=spans.at_month,
        stage=spans.stage,
        lapsed=(spans.end_day - spans.last) >= lapse,
        prev_stage=ibis.ifelse(bought, spans.stage_before, spans.stage),
        prev_lapsed=ibis.ifelse(
            bought, spans.lapsed_before, (spans.prev_end_day - spans.last) >= lapse
        ),
        customers=spans.customers,
        revenue=ibis.ifelse(bought, spans.amount, 0),
    )
    grouped = paired.group_by(["month", "stage", "lapsed", "prev_stage", "prev_lapsed"]).aggregate(
        customers=paired.customers.sum().cast("int64"), revenue=paired.revenue.sum().cast("int64")
    )
    # Back to segment codes: stage i, 現役 or 離脱 → SEGMENTS[2i] or SEGMENTS[2i + 1].
    names = list(enumerate(SEGMENTS))

    def segment(stage: ir.IntegerValue, lapsed: ir.BooleanValue) -> ir.StringValue:
        # (PostgreSQL cannot cast a boolean to a number, hence the CASE)
        return (stage.cast("int64") * 2 + ibis.ifelse(lapsed, 1, 0)).cases(*names)

    return grouped.select(
        "month",
        prev_segment=segment(grouped.prev_stage, grouped.prev_lapsed),
        cpm_segment=segment(grouped.stage, grouped.lapsed),
        customers=grouped.customers,
        revenue=grouped.revenue,
    )


def first_purchases_by_month(cm: ir.Table) -> ir.Table:
    """New customers (first purchase) per month, over the whole history (`cm`: customer_months)."""
    first = cm.group_by("customer_id").aggregate(first_month=cm.month.min())
    return first.group_by("first_month").aggregate(customers=first.count())


# --- the flow table in numpy -------------------------------------------------------------------


@dataclass(frozen=True)
class Flows:
    """`customers[i, a, b]`: customers in segment a at the end of months[i-1] and b at the end of
    months[i] (a = NEW: no segment before). months[0] only gives the starting counts.
    `revenue` is what they spent in months[i]. `new` holds first purchases per month (all
    history); `partial` says the last month ends on the as-of day, not a month end."""

    months: list[int]
    customers: np.ndarray[Any, np.dtype[np.int64]]
    revenue: np.ndarray[Any, np.dtype[np.int64]]
    new: dict[int, int]
    partial: bool

    def counts(self, i: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Customers per segment at the end of months[i]."""
        counts: np.ndarray[Any, np.dtype[np.int64]] = self.customers[i].sum(axis=0)
        return counts

    @property
    def last_complete(self) -> int:
        return len(self.months) - 2 if self.partial else len(self.months) - 1


def flows_from_arrow(
    flows: pa.Table, new: pa.Table, *, months: Sequence[int], partial: bool
) -> Flows:
    position = {m: i for i, m in enumerate(months)}
    shape = (len(months), N_SEGMENTS + 1, N_SEGMENTS)
    customers = np.zeros(shape, np.int64)
    revenue = np.zeros(shape, np.int64)
    if flows.num_rows:
        i = np.array([position[m] for m in flows.column("month").to_pylist()], np.intp)
        a = np.array(
            [NEW if s is None else _INDEX[s] for s in flows.column("prev_segment").to_pylist()],
            np.intp,
        )
        b = np.array([_INDEX[s] for s in flows.column("cpm_segment").to_pylist()], np.intp)
        np.add.at(customers, (i, a, b), flows.column("customers").to_numpy().astype(np.int64))
        np.add.at(revenue, (i, a, b), flows.column("revenue").to_numpy().astype(np.int64))
    first = dict(
        zip(
            (int(m) for m in new.column("first_month").to_pylist()),
            (int(n) for n in new.column("customers").to_pylist()),
            strict=True,
        )
    )
    return Flows(list(months), customers, revenue, first, partial)


# --- the Markov model --------------------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    months: list[str]
    counts: Matrix  # (horizon, segments): expected customers at each month end
    revenue: Matrix  # (horizon, segments): expected revenue in the month, by month-end segment

    def json(self) -> dict[str, Any]:
        return {
            "months": self.months,
            "counts": np.round(self.counts, 2).tolist(),
            "revenue": np.round(self.revenue).astype(np.int64).tolist(),
        }


@dataclass(frozen=True)
class MarkovModel:
    """Everything a forecast needs, as integer tallies so it round-trips through JSON exactly.

    moves[a, b] / move_revenue[a, b]: customers who went a → b in the estimation months and
    what they spent in that month; new_mix / new_revenue: first-month segment and spend of the
    new customers of those months; new_per_month: first purchases in each of the months the
    expected number of new customers is averaged over.
    """

    origin: int
    start: np.ndarray[Any, np.dtype[np.int64]]
    moves: np.ndarray[Any, np.dtype[np.int64]]
    move_revenue: np.ndarray[Any, np.dtype[np.int64]]
    new_mix: np.ndarray[Any, np.dtype[np.int64]]
    new_revenue: np.ndarray[Any, np.dtype[np.int64]]
    new_per_month: list[int]
    transition_months: list[int]
    horizon: int = 12
    cpm_days: CpmDays = CpmDays()

    @property
    def probabilities(self) -> Matrix:
        """Row-stochastic transition matrix; a segment nobody started a month in stays put."""
        totals = self.moves.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(totals > 0, self.moves / np.maximum(totals, 1), 0.0)
        empty = totals[:, 0] == 0
        p[empty, :] = 0.0
        p[empty, empty] = 1.0
        return p

    @property
    def revenue_per_move(self) -> Matrix:
        """Yen per customer on each move; an unobserved move gets the average spend of all moves
        into its destination (so a what-if that opens a new path still earns revenue)."""
        into_n = self.moves.sum(axis=0)
        into_yen = self.move_revenue.sum(axis=0)
        fallback = np.where(into_n > 0, into_yen / np.maximum(into_n, 1), 0.0)
        observed = self.move_revenue / np.maximum(self.moves, 1)
        return np.where(self.moves > 0, observed, fallback[np.newaxis, :])

    @property
    def expected_new(self) -> float:
        return float(np.mean(self.new_per_month)) if self.new_per_month else 0.0

    @property
    def new_distribution(self) -> Matrix:
        total = int(self.new_mix.sum())
        if total == 0:
            first = np.zeros(N_SEGMENTS)
            first[_INDEX["first_active"]] = 1.0
            return first
        return self.new_mix / total

    @property
    def revenue_per_new(self) -> Matrix:
        return np.where(self.new_mix > 0, self.new_revenue / np.maximum(self.new_mix, 1), 0.0)

    def forecast(self, probabilities: Matrix | None = None) -> Forecast:
        """n(t+1) = n(t)·P + E[new]·mix, month by month; revenue follows the same moves."""
        p = self.probabilities if probabilities is None else probabilities
        per_move = self.revenue_per_move
        arrivals = self.expected_new * self.new_distribution
        arrival_revenue = arrivals * self.revenue_per_new
        state = self.start.astype(np.float64)
        counts = np.zeros((self.horizon, N_SEGMENTS))
        revenue = np.zeros((self.horizon, N_SEGMENTS))
        for h in range(self.horizon):
            moved = state[:, np.newaxis] * p
            revenue[h] = (moved * per_move).sum(axis=0) + arrival_revenue
            state = moved.sum(axis=0) + arrivals
            counts[h] = state
        labels = [month_label(self.origin + h + 1) for h in range(self.horizon)]
        return Forecast(labels, counts, revenue)

    def json(self) -> dict[str, Any]:
        return {
            "origin": month_label(self.origin),
            "origin_month": self.origin,
            "segments": list(SEGMENTS),
            "start": self.start.tolist(),
            "moves": self.moves.tolist(),
            "move_revenue": self.move_revenue.tolist(),
            "new_mix": self.new_mix.tolist(),
            "new_revenue": self.new_revenue.tolist(),
            "new_per_month": self.new_per_month,
            "transition_months": [month_label(m) for m in self.transition_months],
            "transition_month_numbers": self.transition_months,
            "horizon": self.horizon,
            "cpm_days": self.cpm_days.json(),
        }

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], *, settings: Mapping[str, Any] | None = None
    ) -> MarkovModel:
        """The stored model; a model stored before it kept its CPM day thresholds takes them
        from `settings`, the settings of the run it belongs to (AnalyticsRun.settings)."""
        if list(data["segments"]) != list(SEGMENTS):
            raise ValueError("保存された予測モデルのセグメントが現在の定義と一致しません")
        stored = data.get("cpm_days")
        cpm_days = (
            CpmDays(int(stored["lapse"]), int(stored["toddler"]), int(stored["loyal"]))
            if stored
            else CpmDays.from_settings(settings or {})
        )
        return cls(
            origin=int(data["origin_month"]),
            start=np.array(data["start"], np.int64),
            moves=np.array(data["moves"], np.int64),
            move_revenue=np.array(data["move_revenue"], np.int64),
            new_mix=np.array(data["new_mix"], np.int64),
            new_revenue=np.array(data["new_revenue"], np.int64),
            new_per_month=[int(n) for n in data["new_per_month"]],
            transition_months=[int(m) for m in data["transition_month_numbers"]],
            horizon=int(data["horizon"]),
            cpm_days=cpm_days,
        )


def estimate(
    flows: Flows,
    *,
    origin: int,
    transition_months: int = 12,
    new_months: int = 12,
    horizon: int = 12,
    cpm_days: CpmDays | None = None,
) -> MarkovModel:
    """The model as of the end of flows.months[origin], from that month and the ones before only.

    Transitions: the last `transition_months` months up to the origin (pooled counts).
    New customers: the average over the last `new_months` months, from the shop's first month.
    """
    used = list(range(max(1, origin - transition_months + 1), origin + 1))
    moves = flows.customers[used, :N_SEGMENTS, :].sum(axis=0)
    move_revenue = flows.revenue[used, :N_SEGMENTS, :].sum(axis=0)
    new_mix = flows.customers[used, NEW, :].sum(axis=0)
    new_revenue = flows.revenue[used, NEW, :].sum(axis=0)
    month = flows.months[origin]
    opened = min(flows.new) if flows.new else month + 1
    averaged = [m for m in range(month - new_months + 1, month + 1) if m >= opened]
    return MarkovModel(
        origin=month,
        start=flows.counts(origin),
        moves=moves,
        move_revenue=move_revenue,
        new_mix=new_mix,
        new_revenue=new_revenue,
        new_per_month=[flows.new.get(m, 0) for m in averaged],
        transition_months=[flows.months[i] for i in used],
        horizon=horizon,
        cpm_days=cpm_days or CpmDays(),
    )


# --- what-if -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WhatIf:
    base: Forecast
    changed: Forecast
    probabilities: Matrix

    @property
    def count_difference(self) -> Matrix:
        return self.changed.counts - self.base.counts

    @property
    def revenue_difference(self) -> Matrix:
        return self.changed.revenue - self.base.revenue


def segment_label(code: str) -> str:
    return CPM_SEGMENTS.get(code, code)


def changed_matrix(
    p: Matrix, changes: Mapping[tuple[str, str], float], days: CpmDays | None = None
) -> Matrix:
    """`p` with each (from, to) probability moved by the given amount (0.05 = +5 ポイント).

    The rest of the row is scaled proportionally so it still sums to 1; a row whose other
    cells are all zero gives or takes the difference from its stay cell. Raises WhatIfError,
    also for a move CPM's rules (with the thresholds `days`) do not allow (`possible`).
    """
    out = p.copy()
    for (before, after), delta in changes.items():
        for code in (before, after):
            if code not in _INDEX:
                raise WhatIfError(f"不明なセグメントです: {code}")
        if not math.isfinite(delta) or delta == 0:
            raise WhatIfError("変化量(ポイント)には 0 以外の数を指定してください")
        name = f"「{segment_label(before)}→{segment_label(after)}」"
        reason = impossible_because(before, after, days)
        if reason is not None:
            raise WhatIfError(f"{name}は CPM の定義上ありえない移動です({reason})")
        a, b = _INDEX[before], _INDEX[after]
        current = out[a, b]
        target = current + delta
        if not -1e-12 <= target <= 1 + 1e-12:
            raise WhatIfError(
                f"{name}の確率は現在 {current * 100:.1f}% です。変更後が 0〜100% に収まるよう"
                f"にしてください(指定: {delta * 100:+.1f} ポイント)"
            )
        target = min(max(target, 0.0), 1.0)
        others = [j for j in range(N_SEGMENTS) if j != b]
        rest = out[a, others].sum()
        if rest > 0:
            out[a, others] *= (1.0 - target) / rest
        elif a != b:
            out[a, a] = 1.0 - target
        else:
            raise WhatIfError(
                f"「{segment_label(before)}」からは他のセグメントへの移動の実績がないため、"
                "とどまる確率を下げられません"
            )
        out[a, b] = target
    return out


def what_if(base: MarkovModel, changes: Mapping[tuple[str, str], float]) -> WhatIf:
    """The forecast with changed transition probabilities, next to the unchanged one."""
    if not changes:
        raise WhatIfError("変更する遷移を 1 つ以上指定してください")
    p = changed_matrix(base.probabilities, changes, base.cpm_days)
    return WhatIf(base=base.forecast(), changed=base.forecast(p), probabilities=p)


# --- the stored tables -------------------------------------------------------------------------


def _mape(forecast: Matrix, actual: Matrix) -> float | None:
    """Mean absolute percentage error over the months whose actual value is above zero."""
    mask = actual > 0
    if not mask.any():
        return None
    return round(float(np.mean(np.abs(forecast[mask] - actual[mask]) / actual[mask])), 6)


def _monthly_rows(flows: Flows) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(1, len(flows.months)):
        counts = flows.counts(i)
        revenue = flows.revenue[i].sum(axis=0)
        for s, code in enumerate(SEGMENTS):
            n, yen = int(counts[s]), int(revenue[s])
            rows.append(
                {
                    "month": month_label(flows.months[i]),
                    "partial": flows.partial and i == len(flows.months) - 1,
                    "segment": code,
                    "customers": n,
                    "revenue": yen,
                    "revenue_per_customer": round(yen / n, 2) if n else None,
                }
            )
    return rows


def _change_rows(flows: Flows) -> list[dict[str, Any]]:
    """Per month and segment: start + new + Σ(net change by cause) = end; per month "all":
    how many customers moved for each cause (start + new = end)."""
    kinds = np.array(
        [[cause(a, b) if a != b else "" for b in SEGMENTS] for a in SEGMENTS], dtype=object
    )
    rows: list[dict[str, Any]] = []
    for i in range(1, len(flows.months)):
        moves = flows.customers[i, :N_SEGMENTS, :]
        new = flows.customers[i, NEW, :]
        start, end = flows.counts(i - 1), flows.counts(i)
        label = month_label(flows.months[i])
        partial = flows.partial and i == len(flows.months) - 1
        totals: dict[str, Any] = {
            "month": label,
            "partial": partial,
            "segment": "all",
            "start": int(start.sum()),
            "new": int(new.sum()),
        }
        nets = {name: np.zeros(N_SEGMENTS, np.int64) for name in CAUSES[1:]}
        for name in CAUSES[1:]:
            cells = np.where(kinds == name, moves, 0)
            nets[name] = cells.sum(axis=0) - cells.sum(axis=1)
            totals[name] = int(cells.sum())
        totals["end"] = int(end.sum())
        for s, code in enumerate(SEGMENTS):
            row: dict[str, Any] = {
                "month": label,
                "partial": partial,
                "segment": code,
                "start": int(start[s]),
                "new": int(new[s]),
            }
            row.update({name: int(nets[name][s]) for name in CAUSES[1:]})
            row["end"] = int(end[s])
            rows.append(row)
        rows.append(totals)
    return rows


def _backtest(
    flows: Flows, *, months_back: int, transition_months: int, new_months: int
) -> dict[str, Any]:
    last = flows.last_complete
    origin = last - months_back
    if origin < 1 or months_back < 1:
        return {"available": False, "reason": "バックテストに使える過去の月数が足りません"}
    model = estimate(
        flows,
        origin=origin,
        transition_months=transition_months,
        new_months=new_months,
        horizon=months_back,
    )
    predicted = model.forecast()
    actual = np.array([flows.counts(i) for i in range(origin + 1, last + 1)], np.float64)
    actual_revenue = np.array(
        [flows.revenue[i].sum() for i in range(origin + 1, last + 1)], np.float64
    )
    active = np.array([not _is_lapsed(code) for code in SEGMENTS])
    return {
        "available": True,
        "origin": month_label(model.origin),
        "months": predicted.months,
        "segments": list(SEGMENTS),
        "forecast": np.round(predicted.counts, 2).tolist(),
        "actual": actual.astype(np.int64).tolist(),
        "revenue_forecast": np.round(predicted.revenue.sum(axis=1)).astype(np.int64).tolist(),
        "revenue_actual": actual_revenue.astype(np.int64).tolist(),
        "mape": {
            code: _mape(predicted.counts[:, s], actual[:, s]) for s, code in enumerate(SEGMENTS)
        },
        "mape_total": _mape(predicted.counts.sum(axis=1), actual.sum(axis=1)),
        "mape_active": _mape(
            predicted.counts[:, active].sum(axis=1), actual[:, active].sum(axis=1)
        ),
        "mape_revenue": _mape(predicted.revenue.sum(axis=1), actual_revenue),
    }


def month_grid(
    as_of_day: int, as_of_month: int, *, months: int
) -> tuple[list[int], list[int], bool]:
    """The month ends to judge segments on: `months` complete months and the one before them,
    plus the as-of day itself when it is not a month end (a partial month)."""
    partial = month_end_day(as_of_month) != as_of_day
    last = as_of_month - 1 if partial else as_of_month
    grid = list(range(last - months, last + 1))
    ends = [month_end_day(m) for m in grid]
    if partial:
        grid.append(as_of_month)
        ends.append(as_of_day)
    return grid, ends, partial


def dynamics(
    cm: ir.Table,
    *,
    as_of_day: int,
    as_of_month: int,
    cfg: AnalyticsConfig,
    months: int = 36,
    transition_months: int = 12,
    new_months: int = 12,
    horizon: int = 12,
    backtest_months: int = 12,
) -> dict[str, Any]:
    """The KPI tables cpm_monthly, cpm_changes, cpm_transitions, cpm_forecast and
    cpm_forecast_backtest from `cm`, the `expressions.customer_months` of the purchases
    (already cut at the as-of day)."""
    grid, ends, partial = month_grid(as_of_day, as_of_month, months=months)
    flows = flows_from_arrow(
        month_flows(cm, months=grid, end_days=ends, cfg=cfg).to_pyarrow(),
        first_purchases_by_month(cm).to_pyarrow(),
        months=grid,
        partial=partial,
    )
    model = estimate(
        flows,
        origin=flows.last_complete,
        transition_months=transition_months,
        new_months=new_months,
        horizon=horizon,
        cpm_days=CpmDays.of(cfg),
    )
    return {
        "cpm_monthly": _monthly_rows(flows),
        "cpm_changes": _change_rows(flows),
        "cpm_transitions": {
            "months": [month_label(m) for m in model.transition_months],
            "segments": list(SEGMENTS),
            "customers": model.moves.tolist(),
            "probabilities": np.round(model.probabilities, 6).tolist(),
        },
        "cpm_forecast": {"model": model.json(), **model.forecast().json()},
        "cpm_forecast_backtest": _backtest(
            flows,
            months_back=backtest_months,
            transition_months=transition_months,
            new_months=new_months,
        ),
    }
