"""BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way").

Story: while a customer is "alive" she buys at her own steady rate; after every repeat purchase
she may quietly leave for good. Rates differ between customers (gamma(r, α)), and so does the
chance of leaving (beta(a, b)). Inputs per customer: x repeat purchases, the time t_x of the
last one and the time T since the first purchase, all measured from the first purchase in one
unit (days or weeks). The likelihood and formulas are in docs/analytics.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from numpy.typing import ArrayLike

from kizuna.analytics.clv import _betageo
from kizuna.analytics.clv.common import FloatArray

_K = 0


@dataclass(frozen=True, slots=True)
class BGNBDParams(_betageo.Fitted):
    """Fitted r, α (purchase rates), a, b (dropout) with the log-likelihood at the optimum."""


def fit(
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None
) -> BGNBDParams:
    """Maximum-likelihood fit; identical (x, t_x, T) rows are merged into weights first."""
    return _betageo.fit(BGNBDParams, x, t_x, T, k=_K, weights=weights)


def loglik(params: BGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
    """Each customer's log-likelihood."""
    return _betageo.loglik(params, x, t_x, T, k=_K)


def expected_purchases(
    params: BGNBDParams, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> FloatArray:
    """E[purchases in (T, T+t] | x, t_x, T] for each customer."""
    return _betageo.expected_purchases(params, t, x, t_x, T, k=_K)


def p_alive(params: BGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
    """P(still a customer at T | x, t_x, T); 1 for customers with no repeat purchase."""
    return _betageo.p_alive(params, x, t_x, T, k=_K)


def expected_purchases_new(params: BGNBDParams, t: ArrayLike) -> FloatArray:
    """E[repeat purchases in the first t after a new customer's first purchase]."""
    return _betageo.expected_purchases_new(params, t, k=_K)
