"""Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie 2013,
"The Gamma-Gamma model of monetary value") and the 12-month CLV built on it.

Story: each purchase's amount varies around the customer's own typical amount; typical amounts
differ between customers. A customer with few purchases is pulled towards the shop-wide average,
one with many is trusted on her own average. Spend is assumed independent of how often she buys.

For x repeat purchases with mean amount m, the likelihood of m is

    f(m | p, q, γ, x) = Γ(px+q) / (Γ(px) Γ(q)) · γ^q m^(px-1) x^(px) / (γ + x·m)^(px+q)

and the expected amount of her future purchases is

    E[Z | x, m] = p (γ + x·m) / (p·x + q - 1)

i.e. a weighted average of the population mean pγ/(q-1) and her own mean m.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import digamma, gammaln

from kizuna.analytics.clv.common import FloatArray, dot, group, maximise, weighted_count

# 365.25 / 12 days: the month used to turn a model's time unit into calendar months.
DAYS_PER_MONTH = 30.4375


@dataclass(frozen=True, slots=True)
class GammaGammaParams:
    p: float
    q: float
    gamma: float
    log_likelihood: float
    n_customers: int
    converged: bool

    def values(self) -> dict[str, float]:
        return {"p": self.p, "q": self.q, "gamma": self.gamma}


def _spend_arrays(frequency: ArrayLike, monetary: ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(frequency, dtype=np.float64)
    m = np.asarray(monetary, dtype=np.float64)
    x, m = np.broadcast_arrays(x, m)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(m))):
        raise ValueError("購入回数・平均購入金額に数値でない値があります")
    return x, m


def fit(
    frequency: ArrayLike, monetary: ArrayLike, weights: ArrayLike | None = None
) -> GammaGammaParams:
    """Fit on repeat customers: frequency = repeat purchases (≥ 1), monetary = their mean amount.

    Customers with no repeat purchase or a non-positive mean carry no information about the
    spread of their own amounts and must be left out by the caller.
    """
    x, m = _spend_arrays(frequency, monetary)
    x, m = x.ravel(), m.ravel()
    if x.size == 0:
        raise ValueError("リピート購入のある顧客がいないため、購入金額モデルを推定できません")
    if np.any(x < 1) or np.any(m <= 0):
        raise ValueError(
            "購入金額モデルはリピート購入が1回以上・平均購入金額が正の顧客だけで推定します"
        )
    w = (
        np.ones_like(x)
        if weights is None
        else np.broadcast_to(np.asarray(weights, dtype=np.float64), x.shape).ravel()
    )
    # The gamma functions depend on x alone: they run once per distinct x, weighted by how
    # many customers have it; per customer only log(γ + x·m) and 1/(γ + x·m) are left.
    xg = group(x)
    ux = xg.values
    W_x = weighted_count(xg.index, w, ux.size)
    total = float(W_x.sum())
    log_ux = np.log(ux)
    xm = x * m
    wx = w * x
    sum_wx_log_m = dot(wx, np.log(m))
    sum_w_log_m = dot(w, np.log(m))

    def neg_mean_loglik(theta: FloatArray) -> tuple[float, FloatArray]:
        p, q, g = np.exp(theta)
        px = p * ux
        log_gxm = np.log(g + xm)
        inv_gxm = 1.0 / (g + xm)
        ll = (
            dot(W_x, gammaln(px + q) - gammaln(px) + px * log_ux)
            - total * (gammaln(q) - q * np.log(g))
            + p * sum_wx_log_m
            - sum_w_log_m
            - p * dot(wx, log_gxm)
            - q * dot(w, log_gxm)
        )
        psi = digamma(px + q)
        d_p = dot(W_x, ux * (psi - digamma(px) + log_ux)) + sum_wx_log_m - dot(wx, log_gxm)
        d_q = dot(W_x, psi) - total * (digamma(q) - np.log(g)) - dot(w, log_gxm)
        d_g = total * q / g - p * dot(wx, inv_gxm) - q * dot(w, inv_gxm)
        grad = np.array([p * d_p, q * d_q, g * d_g])
        return -float(ll) / total, -grad / total

    mean = float(dot(w, m) / total)
    best = maximise(neg_mean_loglik, np.log([1.0, 2.0, max(mean, 1e-6)]), total)
    p, q, g = (float(v) for v in best.params)
    return GammaGammaParams(p, q, g, best.log_likelihood, round(total), best.converged)


def expected_average_spend(
    params: GammaGammaParams, frequency: ArrayLike, monetary: ArrayLike
) -> FloatArray:
    """Expected amount of each customer's future purchases.

    For customers with no repeat purchase (frequency 0) this is the population mean pγ/(q-1),
    whatever their monetary value. Needs q > 1 (otherwise the mean amount is unbounded).
    """
    if params.q <= 1:
        raise ValueError("q ≤ 1 のため平均購入金額の期待値が定まりません")
    x, m = _spend_arrays(frequency, monetary)
    m = np.where(x > 0, m, 0.0)
    p, q, g = params.p, params.q, params.gamma
    return np.asarray(p * (g + x * m) / (p * x + q - 1), dtype=np.float64)


def clv(
    expected_purchases: Callable[[float], FloatArray],
    expected_spend: ArrayLike,
    *,
    months: int = 12,
    monthly_discount_rate: float = 0.01,
    units_per_month: float = DAYS_PER_MONTH,
) -> FloatArray:
    """Discounted expected revenue over the next `months` months, per customer:

        CLV = Σ_{i=1..months} spend · (E[Y(i·u)] - E[Y((i-1)·u)]) / (1 + d)^i

    expected_purchases(t) is a purchase model's conditional expectation E[Y(t)] for every
    customer (e.g. `lambda t: bgnbd.expected_purchases(params, t, x, t_x, T)`), u the model's
    time units per month (30.4375 for days, 30.4375/7 for weeks) and d the monthly discount rate.
    Each month's expected purchases are discounted to the end of that month.
    """
    if months < 1:
        raise ValueError("CLV の月数は1以上にしてください")
    if monthly_discount_rate <= -1:
        raise ValueError("割引率は -1 より大きい必要があります")
    spend = np.asarray(expected_spend, dtype=np.float64)
    previous = np.asarray(expected_purchases(0.0), dtype=np.float64)
    value = np.zeros(np.broadcast(previous, spend).shape)
    for month in range(1, months + 1):
        current = np.asarray(expected_purchases(month * units_per_month), dtype=np.float64)
        value += spend * (current - previous) / (1 + monthly_discount_rate) ** month
        previous = current
    return value
