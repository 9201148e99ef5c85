"""Pareto/NBD (Schmittlein, Morrison & Colombo 1987; formulas as in Fader, Hardie & Lee 2005,
"A note on deriving the Pareto/NBD model and related expressions").

Story: while alive a customer buys at her own steady rate (gamma(r, α) across customers), and she
may leave at any moment, not only after a purchase: her lifetime is exponential with a rate that
differs between customers (gamma(s, β)). One customer's likelihood is

    L = Γ(r+x) α^r β^s / Γ(r) · [ (α+T)^-(r+x) (β+T)^-s + s/(r+s+x) · A0 ]

    A0 = F(t_x) - F(T), where for α ≥ β
         F(u) = 2F1(r+s+x, s+1; r+s+x+1; (α-β)/(α+u)) / (α+u)^(r+s+x)
    and for α < β
         F(u) = 2F1(r+s+x, r+x; r+s+x+1; (β-α)/(β+u)) / (β+u)^(r+s+x)

(the branch keeps the 2F1 argument in [0, 1)). The gradient in α and β is analytic; in r and
s, which sit inside the 2F1's parameters where derivatives have no closed form, it is a central
difference in log-parameter space. 2F1 depends on (x, u) only, so it is evaluated once per
distinct (x, t_x) and (x, T) pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln, hyp2f1

from kizuna.analytics.clv.common import (
    RATE_COORDINATES,
    FloatArray,
    Grouped,
    Rows,
    collapse,
    customer_arrays,
    distinct_pairs,
    dot,
    group,
    maximise,
    on_distinct_rows,
    softplus_and_share,
    weighted_count,
)


@dataclass(frozen=True, slots=True)
class ParetoParams:
    """Fitted r, α (purchase rates), s, β (lifetimes) with the log-likelihood at the optimum."""

    r: float
    alpha: float
    s: float
    beta: float
    log_likelihood: float
    n_customers: int
    converged: bool

    def values(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "s": self.s, "beta": self.beta}


Quad = tuple[float, float, float, float]


def _log_tail(p: Quad, x: FloatArray, u: FloatArray) -> FloatArray:
    """log F(u) for customers with x repeat purchases (F as in the module docstring)."""
    r, alpha, s, beta = p
    rsx = r + s + x
    if alpha >= beta:
        z = (alpha - beta) / (alpha + u)
        value = np.log(hyp2f1(rsx, s + 1, rsx + 1, z)) - rsx * np.log(alpha + u)
    else:
        z = (beta - alpha) / (beta + u)
        # Euler's transformation 2F1(a, b; c; z) = (1-z)^(c-a-b) 2F1(c-a, c-b; c; z): the same
        # value, but scipy computes 2F1(1, s+1; …) about 1.5× faster than 2F1(r+s+x, r+x; …).
        value = (
            (1 - r - x) * np.log1p(-z)
            + np.log(hyp2f1(1.0, s + 1, rsx + 1, z))
            - rsx * np.log(beta + u)
        )
    return np.asarray(value, dtype=np.float64)


def _log_terms(
    p: Quad, x: FloatArray, T: FloatArray, tail_tx: FloatArray, tail_T: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """log of the "still alive at T" and "left between t_x and T" terms of the bracket."""
    r, alpha, s, beta = p
    alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    with np.errstate(divide="ignore"):
        # F(t_x) = F(T) exactly when the last purchase was at T: no room to have left.
        log_A0 = tail_tx + np.log1p(-np.exp(np.minimum(tail_T - tail_tx, 0.0)))
    left = np.log(s) - np.log(r + s + x) + log_A0
    return np.asarray(alive, dtype=np.float64), np.asarray(left, dtype=np.float64)


# Log-parameter step of the central differences in r and s.
_STEP = 1e-6


class _Design:
    """The data arranged so that each likelihood evaluation does little per-row work.

    A customer's log-likelihood is C(x) - (r+x)·log(α+T) - s·log(β+T) + log(1 + e^D) with
    D = log(s/(r+s+x)) + (r+x)·log(α+T) + s·log(β+T) + log(F(t_x) - F(T)). All but the last
    term sum per distinct x or T; D needs F at distinct (x, t_x) and (x, T) pairs only; and
    rows with t_x = T (bought on the last day) have no second term at all.
    """

    def __init__(self, rows: Rows) -> None:
        self.total = float(rows.weight.sum())
        xg: Grouped = group(rows.x)
        Tg: Grouped = group(rows.T)
        self.ux, self.uT = xg.values, Tg.values
        self.W_x = weighted_count(xg.index, rows.weight, self.ux.size)
        self.W_T = weighted_count(Tg.index, rows.weight, self.uT.size)
        self.WX_T = weighted_count(Tg.index, rows.weight * rows.x, self.uT.size)
        double = rows.t_x < rows.T
        x, t_x, T = rows.x[double], rows.t_x[double], rows.T[double]
        self.w = rows.weight[double]
        self.xT_x, self.xT_T, self.at_xT = distinct_pairs(x, T)
        xt_x, xt_t, self.at_xt = distinct_pairs(x, t_x)
        # F is evaluated on both pair sets in one call; (x, t) pairs follow the (x, T) pairs.
        self.F_x = np.concatenate((self.xT_x, xt_x))
        self.F_u = np.concatenate((self.xT_T, xt_t))
        self.offset_xt = self.xT_x.size

    def _evaluate(self, theta: FloatArray, *, scale_gradient: bool) -> tuple[float, float, float]:
        """Mean log-likelihood and, if asked, its derivatives in α and β (else NaN)."""
        r, alpha, s, beta = (float(v) for v in np.exp(theta))
        p = (r, alpha, s, beta)
        tail = _log_tail(p, self.F_x, self.F_u)
        x, T = self.xT_x, self.xT_T
        K = np.log(s) - np.log(r + s + x) + (r + x) * np.log(alpha + T) + s * np.log(beta + T)
        tail_t = tail[self.offset_xt + self.at_xt]
        tail_T = tail[self.at_xT]
        ratio = np.exp(np.minimum(tail_T - tail_t, 0.0))  # F(T) / F(t_x), below 1
        with np.errstate(divide="ignore"):
            D = K[self.at_xT] + tail_t + np.log1p(-ratio)
        softplus, share = softplus_and_share(D, with_share=scale_gradient)
        ux, uT, total = self.ux, self.uT, self.total
        rate_T = r * self.W_T + self.WX_T
        ll = (
            dot(self.W_x, gammaln(r + ux) - gammaln(r))
            + total * (r * np.log(alpha) + s * np.log(beta))
            - dot(rate_T, np.log(alpha + uT))
            - s * dot(self.W_T, np.log(beta + uT))
            + dot(self.w, softplus)
        )
        if not scale_gradient:
            return ll / total, np.nan, np.nan

        # F(u)/(r+s+x) = ∫_u^∞ (α+y)^-(r+x) (β+y)^-(s+1) dy, so differentiating under the
        # integral gives d log F/dα and d log F/dβ through F with x+1 and with s+1.
        rsx = r + s + self.F_x
        shrink = rsx / (rsx + 1)
        dtail_a = -(r + self.F_x) * shrink * np.exp(_log_tail(p, self.F_x + 1, self.F_u) - tail)
        dtail_b = (
            -(s + 1)
            * shrink
            * np.exp(_log_tail((r, alpha, s + 1, beta), self.F_x, self.F_u) - tail)
        )
        # D = K + log(F(t_x) - F(T)): dD = dK + (dF(t_x) - F(T)/F(t_x)·dF(T)) / (1 - F(T)/F(t_x)),
        # in log-derivatives. Rows with nothing in the second term (share 0) contribute 0.
        q = self.w * share
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = np.where(q > 0, 1.0 / (1.0 - ratio), 0.0)
        at_t = self.offset_xt + self.at_xt
        d_alpha_D = ((r + x) / (alpha + T))[self.at_xT] + spread * (
            dtail_a[at_t] - ratio * dtail_a[self.at_xT]
        )
        d_beta_D = (s / (beta + T))[self.at_xT] + spread * (
            dtail_b[at_t] - ratio * dtail_b[self.at_xT]
        )
        d_alpha = total * r / alpha - dot(rate_T, 1.0 / (alpha + uT)) + dot(q, d_alpha_D)
        d_beta = total * s / beta - s * dot(self.W_T, 1.0 / (beta + uT)) + dot(q, d_beta_D)
        return ll / total, d_alpha / total, d_beta / total

    def mean_loglik(self, theta: FloatArray) -> float:
        value = self._evaluate(theta, scale_gradient=False)[0]
        # A 2F1 overflow far from the optimum reads as "very unlikely", which sends the line
        # search back instead of stopping the fit.
        return value if np.isfinite(value) else -1e12

    def neg_mean_loglik(self, theta: FloatArray) -> tuple[float, FloatArray]:
        """Gradient: analytic in α and β; central differences in r and s, which sit inside
        the 2F1's parameters where no closed-form derivative exists."""
        value, d_alpha, d_beta = self._evaluate(theta, scale_gradient=True)
        if not np.isfinite(value):
            return 1e12, np.zeros_like(theta)
        grad = np.empty_like(theta)
        for i in (0, 2):
            shift = np.zeros_like(theta)
            shift[i] = _STEP
            grad[i] = (self.mean_loglik(theta + shift) - self.mean_loglik(theta - shift)) / (
                2 * _STEP
            )
        alpha, beta = np.exp(theta[1]), np.exp(theta[3])
        grad[1], grad[3] = alpha * d_alpha, beta * d_beta
        return -value, -grad


def fit(
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None
) -> ParetoParams:
    """Maximum-likelihood fit; identical (x, t_x, T) rows are merged into weights first."""
    rows = collapse(x, t_x, T, weights)
    design = _Design(rows)
    mean_T = float(dot(rows.weight, rows.T) / design.total)
    scale = max(mean_T, 1e-3)
    best = maximise(
        design.neg_mean_loglik,
        np.log([1.0, scale, 1.0, scale]),
        design.total,
        RATE_COORDINATES,
    )
    r, alpha, s, beta = (float(v) for v in best.params)
    return ParetoParams(r, alpha, s, beta, best.log_likelihood, rows.n_customers, best.converged)


def _alive_and_left(
    params: ParetoParams, xs: FloatArray, txs: FloatArray, Ts: FloatArray
) -> tuple[FloatArray, FloatArray]:
    p = (params.r, params.alpha, params.s, params.beta)
    return _log_terms(p, xs, Ts, _log_tail(p, xs, txs), _log_tail(p, xs, Ts))


def loglik(params: ParetoParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
    """Each customer's log-likelihood."""
    xs, txs, Ts = customer_arrays(x, t_x, T)
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    alive, left = _alive_and_left(params, xs, txs, Ts)
    return np.asarray(
        gammaln(r + xs)
        - gammaln(r)
        + r * np.log(alpha)
        + s * np.log(beta)
        + np.logaddexp(alive, left),
        dtype=np.float64,
    )


def _p_alive(params: ParetoParams, xs: FloatArray, txs: FloatArray, Ts: FloatArray) -> FloatArray:
    alive, left = _alive_and_left(params, xs, txs, Ts)
    return np.asarray(np.exp(alive - np.logaddexp(alive, left)), dtype=np.float64)


def p_alive(params: ParetoParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
    """P(still a customer at T | x, t_x, T)."""
    return on_distinct_rows(lambda ux, utx, uT: _p_alive(params, ux, utx, uT), x, t_x, T)


def _one_minus_ratio_power(exponent: float, log_ratio: FloatArray) -> FloatArray:
    """(1 - exp(-e·L)) / e, and its limit L at e = 0, without cancellation near s = 1."""
    if abs(exponent) < 1e-12:
        return log_ratio
    return np.asarray(-np.expm1(-exponent * log_ratio) / exponent, dtype=np.float64)


def _expected(
    params: ParetoParams, t: FloatArray, xs: FloatArray, txs: FloatArray, Ts: FloatArray
) -> FloatArray:
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    growth = _one_minus_ratio_power(s - 1, np.log1p(t / (beta + Ts)))
    rate = (r + xs) * (beta + Ts) / (alpha + Ts)
    return np.asarray(rate * growth * _p_alive(params, xs, txs, Ts), dtype=np.float64)


def expected_purchases(
    params: ParetoParams, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> FloatArray:
    """E[purchases in (T, T+t] | x, t_x, T] for each customer."""
    ts = np.asarray(t, dtype=np.float64)
    if np.any(ts < 0):
        raise ValueError("予測期間 t は0以上である必要があります")
    if ts.ndim == 0:
        return on_distinct_rows(
            lambda ux, utx, uT: _expected(params, np.full(ux.shape, float(ts)), ux, utx, uT),
            x,
            t_x,
            T,
        )
    xs, txs, Ts = customer_arrays(x, t_x, T)
    ts, xs, txs, Ts = np.broadcast_arrays(ts, xs, txs, Ts)
    return _expected(params, ts, xs, txs, Ts)


def expected_purchases_new(params: ParetoParams, t: ArrayLike) -> FloatArray:
    """E[repeat purchases in the first t after a new customer's first purchase]."""
    ts = np.asarray(t, dtype=np.float64)
    if np.any(ts < 0):
        raise ValueError("予測期間 t は0以上である必要があります")
    growth = _one_minus_ratio_power(params.s - 1, np.log1p(ts / params.beta))
    return np.asarray(params.r * params.beta / params.alpha * growth, dtype=np.float64)
