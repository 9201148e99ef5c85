"""Turn the engines' counts into the KPI tables pages and the API read (JSON-ready rows).

The expressions return small tables (per cohort month, window, period…); ratios are taken
here with numpy on those counts, so every engine yields the same numbers to the last digit.
Definitions are written out in docs/analytics.md.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa

from kizuna.analytics.clv import sbg
from kizuna.analytics.pipeline.config import SBG_MIN_CANCELLED, SBG_MIN_COHORT, SBG_MIN_RENEWALS

Row = dict[str, Any]

EPOCH = dt.date(1970, 1, 1)


def month_label(month: int) -> str:
    """Months since 1970-01 → "YYYY-MM"."""
    return f"{1970 + month // 12:04d}-{month % 12 + 1:02d}"


def month_index(day: dt.date) -> int:
    return (day.year - 1970) * 12 + day.month - 1


def day_number(day: dt.date) -> int:
    return (day - EPOCH).days


def month_end_day(month: int) -> int:
    """The day number of the last day of a month index."""
    return day_number(dt.date(1970 + (month + 1) // 12, (month + 1) % 12 + 1, 1)) - 1


def _ratio(numerator: np.ndarray[Any, Any], denominator: np.ndarray[Any, Any]) -> list[Any]:
    """numerator / denominator rounded to 6 places, None where the denominator is 0."""
    num = numerator.astype(np.float64)
    den = denominator.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.round(num / den, 6)
    return [None if d == 0 else float(v) for v, d in zip(values, den, strict=True)]


def _sorted(table: pa.Table, keys: list[str]) -> dict[str, np.ndarray[Any, Any]]:
    ordered = table.sort_by([(k, "ascending") for k in keys])
    return {
        name: ordered.column(name).to_numpy(zero_copy_only=False) for name in ordered.column_names
    }


def _rows(columns: dict[str, list[Any]]) -> list[Row]:
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _ints(values: np.ndarray[Any, Any]) -> list[int]:
    return [int(v) for v in values.tolist()]


def f_conversion_rows(table: pa.Table) -> list[Row]:
    """Per cohort month and window: F2/F3/F4 rates among the customers observed N full days.

    A cohort is `complete` for N when all its customers have been observed for N days; an
    incomplete cohort's rate covers only those who have (the others are not failures)."""
    c = _sorted(table, ["window_days", "first_month"])
    out: dict[str, list[Any]] = {
        "cohort": [month_label(int(m)) for m in c["first_month"]],
        "window_days": _ints(c["window_days"]),
        "customers": _ints(c["customers"]),
        "eligible": _ints(c["eligible"]),
        "complete": [bool(v) for v in (c["eligible"] == c["customers"])],
    }
    for k in ("f2", "f3", "f4"):
        out[k] = _ints(c[k])
        out[f"{k}_rate"] = _ratio(c[k], c["eligible"])
    return _rows(out)


def f_conversion_overall(table: pa.Table) -> list[Row]:
    """All cohorts together, per window: Σ converted / Σ eligible."""
    c = _sorted(table, ["window_days"])
    windows, starts = np.unique(c["window_days"], return_index=True)
    sums = {k: np.add.reduceat(c[k], starts) for k in ("customers", "eligible", "f2", "f3", "f4")}
    out: dict[str, list[Any]] = {
        "window_days": _ints(windows),
        "customers": _ints(sums["customers"]),
        "eligible": _ints(sums["eligible"]),
    }
    for k in ("f2", "f3", "f4"):
        out[k] = _ints(sums[k])
        out[f"{k}_rate"] = _ratio(sums[k], sums["eligible"])
    return _rows(out) if windows.size else []


def repeat_rate_rows(table: pa.Table, *, period: str) -> list[Row]:
    c = _sorted(table, ["period"])
    label = (
        [month_label(int(p)) for p in c["period"]]
        if period == "month"
        else [str(1970 + int(p)) for p in c["period"]]
    )
    return _rows(
        {
            "period": label,
            "buyers": _ints(c["buyers"]),
            "repeat_in_period": _ints(c["repeat_in_period"]),
            "bought_before": _ints(c["bought_before"]),
            "rate_a": _ratio(c["repeat_in_period"], c["buyers"]),
            "rate_b": _ratio(c["bought_before"], c["buyers"]),
        }
    )


def upgrade_rows(table: pa.Table) -> list[Row]:
    c = _sorted(table, ["window_days", "first_month"])
    return _rows(
        {
            "cohort": [month_label(int(m)) for m in c["first_month"]],
            "window_days": _ints(c["window_days"]),
            "trial_first": _ints(c["trial_first"]),
            "eligible": _ints(c["eligible"]),
            "complete": [bool(v) for v in (c["eligible"] == c["trial_first"])],
            "upgraded": _ints(c["upgraded"]),
            "rate": _ratio(c["upgraded"], c["eligible"]),
        }
    )


def upgrade_overall(table: pa.Table) -> list[Row]:
    c = _sorted(table, ["window_days"])
    windows, starts = np.unique(c["window_days"], return_index=True)
    if not windows.size:
        return []
    sums = {k: np.add.reduceat(c[k], starts) for k in ("trial_first", "eligible", "upgraded")}
    return _rows(
        {
            "window_days": _ints(windows),
            "trial_first": _ints(sums["trial_first"]),
            "eligible": _ints(sums["eligible"]),
            "upgraded": _ints(sums["upgraded"]),
            "rate": _ratio(sums["upgraded"], sums["eligible"]),
        }
    )


def cohort_rows(sizes: pa.Table, activity: pa.Table, *, as_of_month: int) -> list[Row]:
    """Every (group, cohort month, months since first purchase) up to the as-of month, with
    retention (active ÷ cohort size) and cumulative revenue per cohort customer (LTV).

    Offsets with no purchase appear with 0 active customers, so each cohort's curve is whole;
    the as-of month itself is marked `complete: false` (it is not over yet)."""
    s = _sorted(sizes, ["dim", "first_month"])
    if s["first_month"].size == 0:
        return []
    n_offsets = as_of_month - s["first_month"] + 1
    group = np.repeat(np.arange(s["first_month"].size), n_offsets)
    starts = np.repeat(np.cumsum(n_offsets) - n_offsets, n_offsets)
    offset = np.arange(group.size) - starts
    dims = s["dim"][group]
    cohorts = s["first_month"][group]
    size = s["customers"][group]
    # Place each activity row into the grid (one lookup per cohort cell, not per customer).
    a = _sorted(activity, ["dim", "first_month", "offset"])
    index = {
        (d, int(m)): i
        for i, (d, m) in enumerate(zip(s["dim"].tolist(), s["first_month"].tolist(), strict=True))
    }
    a_group = np.array(
        [
            index[(d, int(m))]
            for d, m in zip(a["dim"].tolist(), a["first_month"].tolist(), strict=True)
        ],
        dtype=np.int64,
    )
    position = (np.cumsum(n_offsets) - n_offsets)[a_group] + a["offset"]
    active = np.zeros(group.size, np.int64)
    revenue = np.zeros(group.size, np.int64)
    active[position] = a["active"]
    revenue[position] = a["revenue"]
    # Cumulative revenue within each cohort: a global cumsum minus the one before the cohort.
    total = np.cumsum(revenue)
    before = np.concatenate(([0], total))[starts]
    cumulative = total - before
    return _rows(
        {
            "group": [None if d is None else str(d) for d in dims.tolist()],
            "cohort": [month_label(int(m)) for m in cohorts],
            "months_since_first": _ints(offset),
            "customers": _ints(size),
            "active": _ints(active),
            "retention": _ratio(active, size),
            "revenue": _ints(revenue),
            "cumulative_revenue": _ints(cumulative),
            "ltv": _ratio(cumulative, size),
            "complete": [bool(v) for v in (cohorts + offset < as_of_month)],
        }
    )


def continuation_rows(table: pa.Table, *, product_names: dict[int, str]) -> list[Row]:
    """定期 回数別継続率 per product and for all products ("group": null).

    reached(n): subscriptions whose n-th box went out. Of those at exactly n boxes, cancelled
    ones stopped at n; still-running ones are not counted either way (they may yet continue).
    rate(n) = reached(n+1) / (reached(n+1) + stopped(n)); survival(n) is the product of the
    rates before n (survival(1) = 1): the share of subscriptions expected to reach box n."""
    c = _sorted(table, ["product_id", "reached", "cancelled"])
    out: list[Row] = []
    groups: list[tuple[str | None, np.ndarray[Any, Any]]] = [
        (None, np.ones(c["product_id"].size, bool))
    ]
    for pid in np.unique(c["product_id"]).tolist():
        groups.append((product_names.get(int(pid), str(pid)), c["product_id"] == pid))
    for name, mask in groups:
        reached = c["reached"][mask].astype(np.int64)
        cancelled = c["cancelled"][mask].astype(bool)
        n = c["n"][mask].astype(np.int64)
        top = int(reached.max()) if reached.size else 0
        if top < 1:
            continue
        at_exactly = np.bincount(reached, weights=n, minlength=top + 2).astype(np.int64)
        stopped = np.bincount(reached[cancelled], weights=n[cancelled], minlength=top + 2)
        at_least = np.cumsum(at_exactly[::-1])[::-1]
        deliveries = np.arange(1, top + 1)
        continued = at_least[deliveries + 1]
        stopped_here = stopped[deliveries].astype(np.int64)
        decided = continued + stopped_here
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(decided > 0, continued / np.maximum(decided, 1), np.nan)
        survival = np.concatenate(([1.0], np.cumprod(np.nan_to_num(rate, nan=1.0))[:-1]))
        out.extend(
            _rows(
                {
                    "group": [name] * top,
                    "delivery": _ints(deliveries),
                    "reached": _ints(at_least[deliveries]),
                    "continued": _ints(continued),
                    "stopped": _ints(stopped_here),
                    "rate": _ratio(continued, decided),
                    "churn": _ratio(stopped_here, decided),
                    "survival": [round(float(v), 6) for v in survival],
                }
            )
        )
    return out


def churn_rows(starts: pa.Table, cancels: pa.Table, *, as_of_month: int) -> list[Row]:
    """解約率 per month: cancellations in the month of subscriptions running at its start, ÷
    the subscriptions running at its start (started in an earlier month, not yet cancelled).
    A subscription started and cancelled within one month is counted in `cancelled` but not in
    the rate, whose denominator never saw it."""
    s = _sorted(starts, ["month"])
    c = _sorted(cancels, ["month"])
    if s["month"].size == 0:
        return []
    first = int(s["month"].min())
    span = as_of_month - first + 1
    started = np.zeros(span, np.int64)
    ended = np.zeros(span, np.int64)
    ended_running = np.zeros(span, np.int64)
    np.add.at(started, s["month"] - first, s["n"])
    np.add.at(ended, c["month"] - first, c["n"])
    np.add.at(ended_running, c["month"] - first, c["running"])
    running_at_start = np.concatenate(([0], np.cumsum(started - ended)[:-1]))
    months = np.arange(first, as_of_month + 1)
    return _rows(
        {
            "month": [month_label(int(m)) for m in months],
            "running_at_start": _ints(running_at_start),
            "started": _ints(started),
            "cancelled": _ints(ended),
            "cancelled_running": _ints(ended_running),
            "churn_rate": _ratio(ended_running, running_at_start),
        }
    )


SBG_HORIZON = 12
# Above this α + β the cohort's subscribers cancel with practically one shared probability
# (a constant retention rate); the page says so instead of printing α and β in the millions.
SBG_HOMOGENEOUS = 10_000.0


def sbg_rows(reach: pa.Table) -> list[Row]:
    """sBG (shifted-beta-geometric) fits of 定期 continuation by delivery count: one over every
    subscription (cohort None), then one per start-month cohort.

    A subscription cancelled after k boxes stopped at renewal k; one still running with k boxes
    has survived k-1 renewals so far (right-censored, as every live subscription is). Those
    without a box yet tell nothing and are left out, as are groups with no cancellation (the
    fit would send β to infinity) and cohorts too young to fit (SBG_MIN_*). `retention[i]` is r(i+1): the share of those who received
    i+1 boxes expected to receive box i+2; `survival[n]` the share still running after n
    renewals."""
    c = _sorted(reach, ["start_month", "reached", "cancelled"])
    has_box = c["reached"] >= 1
    groups: list[tuple[str | None, np.ndarray[Any, Any]]] = [(None, has_box)]
    for month in np.unique(c["start_month"][has_box]).tolist():
        groups.append((month_label(int(month)), has_box & (c["start_month"] == month)))
    out: list[Row] = []
    for label, mask in groups:
        reached = c["reached"][mask].astype(np.int64)
        stopped = c["cancelled"][mask].astype(bool)
        n = c["n"][mask].astype(np.float64)
        top = int(reached.max()) if reached.size else 0
        if not stopped.any() or (
            label is not None
            and (
                n.sum() < SBG_MIN_COHORT
                or n[stopped].sum() < SBG_MIN_CANCELLED
                or top - 1 < SBG_MIN_RENEWALS
            )
        ):
            continue
        cancelled = np.bincount(reached[stopped] - 1, weights=n[stopped], minlength=top)
        censored = np.bincount(reached[~stopped] - 1, weights=n[~stopped], minlength=top)
        params = sbg.fit_counts(cancelled, censored)
        if label is not None and not params.converged:
            continue
        out.append(
            {
                "cohort": label,
                "subscriptions": int(n.sum()),
                "cancelled": int(n[stopped].sum()),
                "alpha": round(params.alpha, 6),
                "beta": round(params.beta, 6),
                "log_likelihood": round(params.log_likelihood, 6),
                "converged": params.converged,
                "homogeneous": params.alpha + params.beta > SBG_HOMOGENEOUS,
                "retention": [
                    round(float(v), 6) for v in sbg.retention(params, np.arange(1, SBG_HORIZON + 1))
                ],
                "survival": [
                    round(float(v), 6) for v in sbg.survival(params, np.arange(0, SBG_HORIZON + 1))
                ],
            }
        )
    return out
