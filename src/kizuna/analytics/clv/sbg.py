"""Shifted-beta-geometric (sBG) model of subscription continuation (Fader & Hardie 2007,
"How to project customer retention").

Story: at every renewal (for a 定期 subscription: every next delivery) each subscriber continues
or cancels with her own fixed cancellation probability θ; θ differs between subscribers
(beta(α, β)). Because the subscribers most likely to cancel leave first, the retention rate
rises with the number of deliveries even though no individual's θ changes.

    P(still active after n renewals)  S(n) = B(α, β+n) / B(α, β)
    P(cancel exactly at renewal n)    P(n) = B(α+1, β+n-1) / B(α, β)
    retention at renewal n            r(n) = S(n) / S(n-1) = (β+n-1) / (α+β+n-1)

Input is a survival curve of counts: survivors[0] subscribers started (received delivery 1),
survivors[n] of them were still active at renewal n (received delivery n+1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import betaln, digamma

from kizuna.analytics.clv.common import FloatArray, maximise


@dataclass(frozen=True, slots=True)
class SBGParams:
    alpha: float
    beta: float
    log_likelihood: float
    n_customers: int
    converged: bool

    def values(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta}


def _curve(survivors: ArrayLike) -> FloatArray:
    counts = np.asarray(survivors, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2:
        raise ValueError("継続人数は、開始時点を含めて2時点以上の列で指定してください")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("継続人数は0以上の数で指定してください")
    if counts[0] <= 0:
        raise ValueError("開始時点の人数が0のため推定できません")
    if np.any(np.diff(counts) > 0):
        raise ValueError("継続人数が途中で増えています(同じ開始コホートの人数を指定してください)")
    return counts


def fit(survivors: ArrayLike) -> SBGParams:
    """Fit α, β to one cohort's survival curve."""
    return fit_cohorts([survivors])


def fit_cohorts(curves_in: Sequence[ArrayLike]) -> SBGParams:
    """Fit one α, β to several cohorts' survival curves (of different lengths) pooled.

    Each curve contributes (n_{t-1} - n_t) cancellations at renewal t and n_last subscribers
    still active (right-censored) at its last renewal (Fader & Hardie 2007, "Fitting the sBG
    model to multi-cohort data").
    """
    curves = [_curve(c) for c in curves_in]
    if not curves:
        raise ValueError("継続人数の列が1つもありません")
    longest = max(c.size for c in curves)
    cancelled = np.zeros(longest - 1)
    censored = np.zeros(longest)
    for c in curves:
        cancelled[: c.size - 1] += -np.diff(c)
        censored[c.size - 1] += c[-1]
    return fit_counts(cancelled, censored)


def fit_counts(cancelled_in: ArrayLike, censored_in: ArrayLike) -> SBGParams:
    """Fit α, β to counts: cancelled[t] subscribers cancelled at renewal t+1, censored[m] are
    still active after m renewals (so far). Subscriptions observed for different lengths — as
    in a live 定期 book, where each is censored where it stands today — fit directly."""
    cancelled = np.asarray(cancelled_in, dtype=np.float64)
    censored = np.asarray(censored_in, dtype=np.float64)
    if np.any(cancelled < 0) or np.any(censored < 0):
        raise ValueError("人数は0以上で指定してください")
    total = float(cancelled.sum() + censored.sum())
    if total <= 0:
        raise ValueError("開始時点の人数が0のため推定できません")
    n = np.arange(1, cancelled.size + 1, dtype=np.float64)
    m = np.arange(0, censored.size, dtype=np.float64)

    def neg_mean_loglik(theta: FloatArray) -> tuple[float, FloatArray]:
        a, b = np.exp(theta)
        base = betaln(a, b)
        log_p = betaln(a + 1, b + n - 1) - base
        log_s = betaln(a, b + m) - base
        ll = np.dot(cancelled, log_p) + np.dot(censored, log_s)
        d_base_a = digamma(a) - digamma(a + b)
        d_base_b = digamma(b) - digamma(a + b)
        dp_a = digamma(a + 1) - digamma(a + b + n) - d_base_a
        dp_b = digamma(b + n - 1) - digamma(a + b + n) - d_base_b
        ds_a = digamma(a) - digamma(a + b + m) - d_base_a
        ds_b = digamma(b + m) - digamma(a + b + m) - d_base_b
        grad = np.array(
            [
                a * (np.dot(cancelled, dp_a) + np.dot(censored, ds_a)),
                b * (np.dot(cancelled, dp_b) + np.dot(censored, ds_b)),
            ]
        )
        return -float(ll) / total, -grad / total

    best = maximise(neg_mean_loglik, np.zeros(2), total)
    a, b = (float(v) for v in best.params)
    return SBGParams(a, b, best.log_likelihood, round(total), best.converged)


def survival(params: SBGParams, n: ArrayLike) -> FloatArray:
    """S(n): share of starting subscribers still active after n renewals (S(0) = 1)."""
    ns = np.asarray(n, dtype=np.float64)
    if np.any(ns < 0):
        raise ValueError("回数 n は0以上である必要があります")
    a, b = params.alpha, params.beta
    return np.asarray(np.exp(betaln(a, b + ns) - betaln(a, b)), dtype=np.float64)


def retention(params: SBGParams, n: ArrayLike) -> FloatArray:
    """r(n): share of those active after n-1 renewals who renew at renewal n (n ≥ 1)."""
    ns = np.asarray(n, dtype=np.float64)
    if np.any(ns < 1):
        raise ValueError("継続率の回数 n は1以上である必要があります")
    a, b = params.alpha, params.beta
    return np.asarray((b + ns - 1) / (a + b + ns - 1), dtype=np.float64)


def project(params: SBGParams, *, active: ArrayLike, at: int, horizon: int) -> FloatArray:
    """Expected subscribers still active after renewals at+1 … at+horizon, given `active`
    subscribers now (after `at` renewals): active · S(at+j) / S(at).

    Conditioning on having survived `at` renewals is what makes the projection for an old
    cohort higher than for a new one: its remaining members are the loyal ones.
    """
    if at < 0 or horizon < 1:
        raise ValueError("at は0以上、horizon は1以上にしてください")
    now = np.asarray(active, dtype=np.float64)
    steps = np.arange(at + 1, at + horizon + 1)
    ratio = survival(params, steps) / survival(params, at)
    return np.asarray(np.multiply.outer(now, ratio), dtype=np.float64)
