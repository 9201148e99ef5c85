"""MBG/NBD (Batislam, Denizel & Filiztekin 2007; corrected by Wagner & Hoppe 2008).

Story: as in the BG/NBD, but a customer may also leave right after her first purchase, so a
one-time buyer is not assumed to be alive (the BG/NBD's P(alive) is 1 for every one-time buyer,
which overstates a D2C trial list). Rates differ between customers (gamma(r, α)), and so does the
chance of leaving (beta(a, b)). Inputs per customer: x repeat purchases, the time t_x of the
last one and the time T since the first purchase, all measured from the first purchase in one
unit (days or weeks). The likelihood and formulas are in docs/analytics.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from numpy.typing import ArrayLike

from kizuna.analytics.clv import _betageo
from kizuna.analytics.clv.common import FloatArray

_K = 1


@dataclass(frozen=True, slots=True)
class MBGNBDParams(_betageo.Fitted):
    """Fitted r, α (purchase rates), a, b (dropout) with the log-likelihood at the optimum."""


def fit(
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None
) -> MBGNBDParams:
    """Maximum-likelihood fit; identical (x, t_x, T) rows are merged into weights first."""
    return _betageo.fit(MBGNBDParams, x, t_x, T, k=_K, weights=weights)


def loglik(params: MBGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
    """Each customer's log-likelihood."""
    return _betageo.loglik(params, x, t_x, T, k=_K)


def expected_purchases(
    params: MBGNBDParams, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> FloatArray:
    """E[purchases in (T, T+t] | x, t_x, T] for each customer."""
    return _betageo.expected_purchases(params, t, x, t_x, T, k=_K)


def p_alive(params: MBGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
    """P(still a customer at T | x, t_x, T); below 1 even without a repeat purchase."""
    return _betageo.p_alive(params, x, t_x, T, k=_K)


def expected_purchases_new(params: MBGNBDParams, t: ArrayLike) -> FloatArray:
    """E[repeat purchases in the first t after a new customer's first purchase]."""
    return _betageo.expected_purchases_new(params, t, k=_K)
