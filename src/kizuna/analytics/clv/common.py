"""What the purchase models share: input checks, collapsing identical customers, the optimiser
and the vectorised root finder behind the next-purchase estimate.

Every likelihood here is a sum over customers, and customers with the same (x, t_x, T) contribute
the same term, so the models evaluate each distinct row once and weight it by its count. With
whole-day times most one-time buyers share a row (a million simulated customers over two years
give about 380,000 rows), and the expensive special functions depend on even less: on x alone,
or on (x, T) and (x, t_x) pairs, which are evaluated once per distinct value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

# Log-parameters are kept inside ±LOG_BOUND so that a degenerate data set (say, nobody ever
# churns) stops at a very large but finite value instead of overflowing; hitting the bound
# is reported as not converged.
LOG_BOUND = 18.0


def dot(a: FloatArray, b: FloatArray) -> float:
    """Inner product of two 1-D arrays without BLAS.

    np.dot hands long vectors to a multi-threaded BLAS whose threads spin against each other
    on a busy 2-core machine (measured 10× slower than this single-threaded loop).
    """
    return float(np.einsum("i,i->", a, b))


def weighted_count(index: NDArray[np.integer[Any]], weights: ArrayLike, size: int) -> FloatArray:
    """Sum of weights per index value 0..size-1 (np.bincount with weights, typed as floats)."""
    return np.asarray(np.bincount(index, weights=weights, minlength=size), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Rows:
    """Distinct (x, t_x, T) rows and how many customers (or how much weight) each stands for."""

    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    weight: FloatArray
    n_customers: int


@dataclass(frozen=True, slots=True)
class Grouped:
    """Distinct values of one column and, for each row, the index of its value."""

    values: FloatArray
    index: IntArray


def group(values: FloatArray) -> Grouped:
    unique, index = np.unique(values, return_inverse=True)
    return Grouped(unique.astype(np.float64), index.astype(np.intp))


def customer_arrays(
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The three per-customer arrays as float64, checked for the shape the models assume."""
    xs = np.asarray(x, dtype=np.float64)
    txs = np.asarray(t_x, dtype=np.float64)
    Ts = np.asarray(T, dtype=np.float64)
    xs, txs, Ts = np.broadcast_arrays(xs, txs, Ts)
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(txs)) and np.all(np.isfinite(Ts))):
        raise ValueError("購入回数 x・最終購入時点 t_x・観察期間 T に数値でない値があります")
    if np.any(xs < 0) or np.any(xs != np.floor(xs)):
        raise ValueError("リピート購入回数 x は0以上の整数である必要があります")
    if np.any(txs < 0) or np.any(txs > Ts):
        raise ValueError("最終購入時点 t_x は 0 以上、観察期間 T 以下である必要があります")
    if np.any((xs == 0) & (txs != 0)):
        raise ValueError("リピート購入が0回の顧客は最終購入時点 t_x も0である必要があります")
    return xs, txs, Ts


def _ranks(values: FloatArray) -> tuple[FloatArray, NDArray[np.int64]]:
    """Candidate values and each row's index into them.

    Whole numbers (times in days, counts) index by offset from the minimum, which needs no
    sort; other values fall back to np.unique.
    """
    low, high = float(values.min()), float(values.max())
    if high - low < 1e7 and np.array_equal(values, np.floor(values)):
        return np.arange(low, high + 1), (values - low).astype(np.int64)
    unique, index = np.unique(values, return_inverse=True)
    return unique, index.astype(np.int64)


def _distinct(
    xs: FloatArray, txs: FloatArray, Ts: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, IntArray]:
    """Distinct (x, t_x, T) rows and, for each input row, the index of its distinct row.

    Each column is replaced by the index of its value, and the three indexes are packed into one
    integer: sorting one int64 column is several times faster than sorting rows.
    """
    ux, cx = _ranks(xs)
    ut, ct = _ranks(txs)
    uT, cT = _ranks(Ts)
    nt, nT = ut.size, uT.size
    if ux.size * nt * nT >= np.iinfo(np.int64).max:
        raise ValueError("異なる (x, t_x, T) の組が多すぎます(時間を日単位に丸めてください)")
    packed = (cx.astype(np.int64) * nt + ct) * nT + cT
    keys, inverse = np.unique(packed, return_inverse=True)
    return ux[keys // (nt * nT)], ut[(keys // nT) % nt], uT[keys % nT], inverse.ravel()


def distinct_rows(
    x: FloatArray, t_x: FloatArray, T: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, IntArray]:
    """Distinct (x, t_x, T) rows of checked customer arrays (see `customer_arrays`) and, for
    each customer, the index of her row: for callers that fit and predict on the same
    customers and want to collapse them once."""
    ux, utx, uT, inverse = _distinct(x.ravel(), t_x.ravel(), T.ravel())
    return ux, utx, uT, inverse.astype(np.intp)


def distinct_pairs(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray, IntArray]:
    """Distinct (a, b) pairs and, for each row, the index of its pair (packed like _distinct)."""
    ua, ca = _ranks(a)
    ub, cb = _ranks(b)
    keys, inverse = np.unique(ca * ub.size + cb, return_inverse=True)
    return ua[keys // ub.size], ub[keys % ub.size], inverse.ravel()


def collapse(x: ArrayLike, t_x: ArrayLike, T: ArrayLike, weights: ArrayLike | None) -> Rows:
    """Check the inputs and merge identical (x, t_x, T) rows into weighted distinct rows."""
    xs, txs, Ts = (a.ravel() for a in customer_arrays(x, t_x, T))
    if xs.size == 0:
        raise ValueError("顧客が1人もいないため推定できません")
    if weights is None:
        w = np.ones_like(xs)
    else:
        w = np.broadcast_to(np.asarray(weights, dtype=np.float64), xs.shape).ravel()
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("重み weights は0以上の数値である必要があります")
    if w.sum() <= 0:
        raise ValueError("重みの合計が0のため推定できません")
    ux, utx, uT, inverse = _distinct(xs, txs, Ts)
    return Rows(
        x=ux,
        t_x=utx,
        T=uT,
        weight=weighted_count(inverse, w, ux.size),
        n_customers=round(float(w.sum())),
    )


def on_distinct_rows(
    func: Callable[[FloatArray, FloatArray, FloatArray], FloatArray],
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
) -> FloatArray:
    """Evaluate a per-customer prediction once per distinct (x, t_x, T) and spread it back.

    The hypergeometric functions in the predictions cost microseconds each; evaluated on the
    distinct rows, scoring a million customers costs what scoring a few thousand does.
    """
    xs, txs, Ts = customer_arrays(x, t_x, T)
    if xs.size == 0:
        return np.zeros(xs.shape, dtype=np.float64)
    ux, utx, uT, inverse = _distinct(xs.ravel(), txs.ravel(), Ts.ravel())
    values = np.asarray(func(ux, utx, uT), dtype=np.float64)
    return values[inverse].reshape(xs.shape)


@dataclass(frozen=True, slots=True)
class Optimum:
    params: FloatArray
    log_likelihood: float
    converged: bool


def maximise(
    neg_mean_loglik: Callable[[FloatArray], tuple[float, FloatArray]],
    start: FloatArray,
    total_weight: float,
    coordinates: FloatArray | None = None,
) -> Optimum:
    """Maximise a log-likelihood over log-parameters with L-BFGS-B.

    The objective is the negative *mean* log-likelihood so that the stopping tolerances mean
    the same thing for 2,000 customers and for 2,000,000. `coordinates` (a matrix M) makes the
    optimiser search over M·θ instead of θ: a shape and a scale parameter (r and α) are
    strongly correlated, while r and r/α (the mean rate) are nearly independent, and L-BFGS-B
    needs fewer steps in directions that are not.
    """
    M = np.eye(start.size) if coordinates is None else coordinates
    M_inv = np.linalg.inv(M)

    def objective(phi: FloatArray) -> tuple[float, FloatArray]:
        value, grad = neg_mean_loglik(M_inv @ phi)
        return value, M_inv.T @ grad

    # L-BFGS-B's small matrix steps go through OpenBLAS, whose worker threads cost more to
    # wake than the 4×4 work itself: on the shared 2-core machine 16 ms per iteration instead
    # of 0.3 ms. One thread for the optimiser; the likelihood's own numpy work is unaffected.
    with threadpool_limits(limits=1, user_api="blas"):
        result = minimize(
            objective,
            M @ np.clip(start, -LOG_BOUND + 1, LOG_BOUND - 1),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-LOG_BOUND, LOG_BOUND)] * start.size,
            options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8},
        )
    phi = np.asarray(result.x, dtype=np.float64)
    at_bound = bool(np.any(np.abs(phi) >= LOG_BOUND - 1e-6))
    value = float(result.fun)
    return Optimum(
        params=np.exp(M_inv @ phi),
        log_likelihood=-value * total_weight,
        converged=bool(result.success) and not at_bound and math.isfinite(value),
    )


# Search coordinates (log r, log r/α, log s-or-a, log s/β-or-b) for the four-parameter models.
RATE_COORDINATES = np.array(
    [[1.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, -1.0]]
)
BETAGEO_COORDINATES = np.array(
    [[1.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def softplus_and_share(D: FloatArray, *, with_share: bool = True) -> tuple[FloatArray, FloatArray]:
    """log(1 + e^D) and e^D / (1 + e^D), stable for any D (including -inf).

    Written out with one exp and one log1p: numpy's logaddexp and scipy's expit take several
    times longer per element, and these run once per row on every likelihood evaluation.
    Without `with_share` the second array is empty (a finite-difference step needs no share).
    """
    e = np.exp(-np.abs(D))
    softplus = np.maximum(D, 0.0) + np.log1p(e)
    if not with_share:
        return softplus, np.empty(0)
    share = np.where(D >= 0, 1.0, e) / (1.0 + e)
    return softplus, share


def time_to_reach(
    expected: Callable[[FloatArray], FloatArray],
    n: int,
    *,
    target: float,
    horizon: float,
    tolerance: float,
    whole_units: bool = False,
) -> FloatArray:
    """For each of n customers, the smallest t in (0, horizon] with expected(t) >= target.

    expected(t) takes one t per customer and must be non-decreasing in t (an expected
    cumulative count is). Vectorised bisection: every customer takes the same number of steps,
    about log2(horizon / tolerance). With `whole_units` the answer is the smallest whole
    t in [1, horizon] instead (exactly, in about log2(horizon) steps; `tolerance` is unused):
    what a next-purchase *day* needs. NaN where the target is not reached within the horizon.
    """
    if horizon <= 0 or tolerance <= 0:
        raise ValueError("horizon と tolerance は正の数である必要があります")
    if whole_units and horizon < 1:
        raise ValueError("horizon は1以上である必要があります")
    # Invariant: expected(lo) < target (expected(0) is 0) and, once reached, expected(hi) >= target.
    lo = np.zeros(n)
    hi = np.full(n, float(math.floor(horizon) if whole_units else horizon))
    reached = expected(hi) >= target
    steps = math.log2(horizon) if whole_units else math.log2(horizon / tolerance)
    for _ in range(max(1, math.ceil(steps))):
        mid = np.maximum(np.floor((lo + hi) / 2), lo) if whole_units else (lo + hi) / 2
        above = expected(mid) >= target
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return np.where(reached, hi, np.nan)


def next_purchase_time(
    expected: Callable[[FloatArray, FloatArray, FloatArray, FloatArray], FloatArray],
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    *,
    horizon: float,
    tolerance: float,
    whole_units: bool = False,
) -> FloatArray:
    """Time after T at which the conditional expected number of purchases reaches one.

    expected(t, x, t_x, T) is a model's conditional expectation with one t per row. This is
    the documented next-purchase approximation: "by this time we expect one more purchase".
    NaN where the model expects less than one purchase within the horizon (mostly customers
    who have probably lapsed).
    """

    def per_row(ux: FloatArray, utx: FloatArray, uT: FloatArray) -> FloatArray:
        # Most customers (the lapsed, the once-a-year buyers) never reach one purchase within
        # the horizon: one evaluation there settles them, and only the rest are bisected.
        out = np.full(ux.size, np.nan)
        reach = expected(np.full(ux.size, float(horizon)), ux, utx, uT) >= 1.0
        rx, rtx, rT = ux[reach], utx[reach], uT[reach]
        out[reach] = time_to_reach(
            lambda t: expected(t, rx, rtx, rT),
            rx.size,
            target=1.0,
            horizon=horizon,
            tolerance=tolerance,
            whole_units=whole_units,
        )
        return out

    return on_distinct_rows(per_row, x, t_x, T)
