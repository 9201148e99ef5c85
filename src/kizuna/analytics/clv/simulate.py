"""Customers drawn from the models' own generative stories, for tests and benchmarks.

Exact and vectorised: instead of stepping through purchases, each customer's Poisson purchase
count over a period and the time of her last purchase (an order statistic of uniform arrival
times, i.e. a beta draw) are drawn directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from kizuna.analytics.clv.common import FloatArray


@dataclass(frozen=True, slots=True)
class SimulatedCustomers:
    """Calibration (x, t_x, T) per customer and her purchases in the following holdout."""

    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    holdout: FloatArray


def _last_of(
    rng: np.random.Generator, kept: FloatArray, arrivals: FloatArray, span: FloatArray
) -> FloatArray:
    """Time of the kept-th of `arrivals` uniform arrival times on (0, span); 0 if none kept."""
    some = kept > 0
    position = np.zeros(kept.shape)
    position[some] = rng.beta(kept[some], arrivals[some] - kept[some] + 1)
    return np.asarray(span * position, dtype=np.float64)


def _finish(
    x: FloatArray, t_x: FloatArray, T: FloatArray, holdout: FloatArray, whole: bool
) -> SimulatedCustomers:
    # Whole time units as a shop's day-stamped orders give them: the last purchase's day.
    return SimulatedCustomers(x, np.floor(t_x) if whole else t_x, T, holdout)


def betageo(
    rng: np.random.Generator,
    *,
    r: float,
    alpha: float,
    a: float,
    b: float,
    T: ArrayLike,
    holdout: float = 0.0,
    dropout_at_first: bool = False,
    whole_units: bool = False,
) -> SimulatedCustomers:
    """BG/NBD customers (MBG/NBD with `dropout_at_first`), one per value of T."""
    Ts = np.asarray(T, dtype=np.float64)
    n = Ts.size
    rate = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    # Repeat purchases made before leaving: the BG/NBD customer leaves after the d-th repeat
    # purchase (d ≥ 1); the MBG/NBD customer may also leave right after the first (d = 0).
    lifetime_purchases = rng.geometric(p) - (1 if dropout_at_first else 0)
    arrivals = rng.poisson(rate * Ts).astype(np.float64)
    x = np.minimum(arrivals, lifetime_purchases).astype(np.float64)
    later = rng.poisson(rate * holdout).astype(np.float64)
    future = np.minimum(later, np.maximum(lifetime_purchases - arrivals, 0)).astype(np.float64)
    return _finish(x, _last_of(rng, x, arrivals, Ts), Ts, future, whole_units)


def pareto(
    rng: np.random.Generator,
    *,
    r: float,
    alpha: float,
    s: float,
    beta: float,
    T: ArrayLike,
    holdout: float = 0.0,
    whole_units: bool = False,
) -> SimulatedCustomers:
    """Pareto/NBD customers, one per value of T."""
    Ts = np.asarray(T, dtype=np.float64)
    n = Ts.size
    rate = rng.gamma(r, 1 / alpha, n)
    lifetime = rng.exponential(1 / rng.gamma(s, 1 / beta, n))
    observed = np.minimum(lifetime, Ts)
    x = rng.poisson(rate * observed).astype(np.float64)
    future = rng.poisson(rate * np.clip(lifetime - Ts, 0, holdout)).astype(np.float64)
    return _finish(x, _last_of(rng, x, x, observed), Ts, future, whole_units)
