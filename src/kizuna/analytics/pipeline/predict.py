"""Predictions per customer from the statistical models in `kizuna.analytics.clv`.

Time is counted in days from each customer's first purchase (x = repeat purchase days, t_x = day
of the last, T = days to the as-of day). The purchase model (BG/NBD by default) gives expected
purchases over the horizon, P(alive) and the expected next purchase; Gamma-Gamma, fitted on
customers with repeat purchases, gives the expected spend per purchase; the two make the
12-month CLV. A model that cannot be fitted leaves its columns empty and says why.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from kizuna.analytics.pipeline.config import AnalyticsConfig

DAYS_PER_MONTH = 30.4375
CLV_MONTHS = 12

PREDICTION_COLUMNS = (
    "expected_purchases",
    "p_alive",
    "expected_avg_spend",
    "clv_12m",
    "expected_next_purchase_on",
)


@dataclass
class Predictions:
    columns: dict[str, pa.Array]
    info: dict[str, Any] = field(default_factory=dict)


def empty(n: int, reason: str) -> Predictions:
    columns = {name: pa.nulls(n, pa.float64()) for name in PREDICTION_COLUMNS[:-1]}
    columns["expected_next_purchase_on"] = pa.nulls(n, pa.date32())
    return Predictions(columns, {"error": reason})


def predict(inputs: pa.Table, *, as_of: dt.date, cfg: AnalyticsConfig) -> Predictions:
    """Predictions for the customers of `inputs` (rows in the same order as given)."""
    n = inputs.num_rows
    try:
        from kizuna.analytics.clv import PURCHASE_MODELS, gammagamma
        from kizuna.analytics.clv.common import customer_arrays, distinct_rows
    except ImportError:
        return empty(n, "予測モデル(kizuna.analytics.clv)がありません")
    if n == 0:
        return empty(0, "購入のある顧客がいません")
    x = inputs.column("frequency").to_numpy().astype(np.float64)
    t_x = inputs.column("recency").to_numpy().astype(np.float64)
    age = inputs.column("age").to_numpy().astype(np.float64)
    repeat_spend = inputs.column("repeat_spend").to_numpy().astype(np.float64)
    model = PURCHASE_MODELS[cfg.prediction_model]
    horizon = float(cfg.prediction_horizon_days)
    try:
        # Customers with the same (x, t_x, T) get the same fit term and the same predictions:
        # everything below runs once per distinct row (600,000 for the benchmark's million) and
        # is spread back through `at`.
        ux, ut_x, u_age, at = distinct_rows(*customer_arrays(x, t_x, age))
        params = model.fit(ux, ut_x, u_age, weights=np.bincount(at, minlength=ux.size))
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        return empty(n, f"購入モデルを推定できませんでした: {exc}")
    expected = model.expected_purchases(params, horizon, ux, ut_x, u_age)[at]
    alive = model.p_alive(params, ux, ut_x, u_age)[at]
    # The first whole day after the as-of day by which one more purchase is expected.
    next_day = model.expected_next_purchase(
        params, ux, ut_x, u_age, horizon=horizon, whole_units=True
    )[at]
    as_of_day = np.datetime64(as_of, "D")
    next_dates = pa.array(
        as_of_day + np.nan_to_num(next_day, nan=0).astype("timedelta64[D]"),
        pa.date32(),
        mask=np.isnan(next_day),
    )
    info: dict[str, Any] = {
        "model": cfg.prediction_model,
        "params": _params_dict(params),
        "horizon_days": horizon,
        "customers": n,
    }
    columns: dict[str, pa.Array] = {
        "expected_purchases": pa.array(expected, pa.float64()),
        "p_alive": pa.array(alive, pa.float64()),
        "expected_next_purchase_on": next_dates,
    }
    has_repeat = (x > 0) & (repeat_spend > 0)
    monetary = np.divide(repeat_spend, x, out=np.zeros_like(x), where=has_repeat)
    try:
        spend_params = gammagamma.fit(x[has_repeat], monetary[has_repeat])
        spend = gammagamma.expected_average_spend(spend_params, x, monetary)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        info["spend_error"] = f"購入金額モデルを推定できませんでした: {exc}"
        columns["expected_avg_spend"] = pa.nulls(n, pa.float64())
        columns["clv_12m"] = pa.nulls(n, pa.float64())
        return Predictions(columns, info)
    # CLV = spend × the discounted expected purchases, and the latter depends on (x, t_x, T)
    # only: the twelve monthly expectations run on the distinct rows, with a spend of 1.
    discounted_purchases = gammagamma.clv(
        lambda t: model.expected_purchases(params, t, ux, ut_x, u_age),
        np.ones(ux.size),
        months=CLV_MONTHS,
        units_per_month=DAYS_PER_MONTH,
    )
    columns["expected_avg_spend"] = pa.array(spend, pa.float64())
    columns["clv_12m"] = pa.array(spend * discounted_purchases[at], pa.float64())
    info["spend_params"] = _params_dict(spend_params)
    return Predictions(columns, info)


def _params_dict(params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {k: float(v) for k, v in params.values().items()}
    out["log_likelihood"] = float(params.log_likelihood)
    out["n_customers"] = int(params.n_customers)
    out["converged"] = bool(params.converged)
    return out
