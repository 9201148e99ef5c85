"""Fit speed: our BG/NBD and Pareto/NBD against lifetimes' on the same simulated customers.

    python -m bench.analytics.fit [--customers 1000000] [--pareto-subset 100000] [--json]

Customers are drawn (seeded) from each model's own generative process with parameters like
CDNOW's, in whole days as a shop's orders give them: first purchases spread over one year,
observation to the end of the second year. lifetimes' Pareto/NBD (Nelder-Mead on every
customer) takes minutes per 100,000 customers, so it runs on a subset; ours runs on both the
subset (for the ratio) and the full set.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from kizuna.analytics.clv import bgnbd, pareto, simulate
from kizuna.analytics.clv.common import collapse

SEED = 20240501
BG_TRUTH = {"r": 0.243, "alpha": 30.9, "a": 0.793, "b": 2.426}
PARETO_TRUTH = {"r": 0.553, "alpha": 74.0, "s": 0.606, "beta": 81.7}


def _observation(rng: np.random.Generator, customers: int) -> np.ndarray:
    # First purchase on one of 365 days; observed until day 730.
    return 730.0 - rng.integers(0, 365, customers)


def _timed(func: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = func()
    return result, time.perf_counter() - start


def _lifetimes() -> tuple[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes import BetaGeoFitter, ParetoNBDFitter
    return BetaGeoFitter, ParetoNBDFitter


def _row(
    *,
    model: str,
    data: simulate.SimulatedCustomers,
    ours: Any,
    ours_seconds: float,
    theirs: dict[str, float] | None,
    theirs_seconds: float | None,
    loglik: Callable[[Any], float],
    truth: dict[str, float],
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model": model,
        "customers": int(data.x.size),
        "distinct_rows": int(collapse(data.x, data.t_x, data.T, None).x.size),
        "ours_seconds": round(ours_seconds, 3),
        "ours_params": ours.values(),
        "ours_log_likelihood": ours.log_likelihood,
        "converged": ours.converged,
        "true_params": truth,
    }
    if theirs is not None and theirs_seconds is not None:
        row |= {
            "lifetimes_seconds": round(theirs_seconds, 3),
            "speedup": round(theirs_seconds / ours_seconds, 1),
            "lifetimes_params": theirs,
            # lifetimes' optimum scored with our likelihood: ours should not be lower.
            "lifetimes_log_likelihood": loglik(theirs),
            "max_relative_param_difference": max(
                abs(ours.values()[k] - v) / abs(v) for k, v in theirs.items()
            ),
        }
    return row


def run(
    customers: int, *, pareto_subset: int = 100_000, with_lifetimes: bool = True
) -> list[dict[str, Any]]:
    """Time the fits; one result row per (model, data set)."""
    rng = np.random.default_rng(SEED)
    BetaGeoFitter, ParetoNBDFitter = _lifetimes()
    results = []

    bg = simulate.betageo(
        rng,
        r=BG_TRUTH["r"],
        alpha=BG_TRUTH["alpha"],
        a=BG_TRUTH["a"],
        b=BG_TRUTH["b"],
        T=_observation(rng, customers),
        whole_units=True,
    )
    ours, ours_s = _timed(lambda: bgnbd.fit(bg.x, bg.t_x, bg.T))
    theirs = theirs_s = None
    if with_lifetimes:
        fitter, theirs_s = _timed(lambda: BetaGeoFitter().fit(bg.x, bg.t_x, bg.T))
        theirs = {k: float(v) for k, v in fitter.params_.items()}

    def bg_loglik(values: dict[str, float]) -> float:
        params = bgnbd.BGNBDParams(**values, log_likelihood=0.0, n_customers=0, converged=True)
        return float(bgnbd.loglik(params, bg.x, bg.t_x, bg.T).sum())

    results.append(
        _row(
            model="BG/NBD",
            data=bg,
            ours=ours,
            ours_seconds=ours_s,
            theirs=theirs,
            theirs_seconds=theirs_s,
            loglik=bg_loglik,
            truth=BG_TRUTH,
        )
    )

    full = simulate.pareto(
        rng,
        r=PARETO_TRUTH["r"],
        alpha=PARETO_TRUTH["alpha"],
        s=PARETO_TRUTH["s"],
        beta=PARETO_TRUTH["beta"],
        T=_observation(rng, customers),
        whole_units=True,
    )
    subset = min(pareto_subset, customers)
    sub = simulate.SimulatedCustomers(
        full.x[:subset], full.t_x[:subset], full.T[:subset], full.holdout[:subset]
    )
    for data, compare in ((sub, with_lifetimes), (full, False)):
        if data is full and subset == customers:
            continue
        ours, ours_s = _timed(partial(pareto.fit, data.x, data.t_x, data.T))
        theirs = theirs_s = None
        if compare:
            fitter, theirs_s = _timed(partial(ParetoNBDFitter().fit, data.x, data.t_x, data.T))
            theirs = {k: float(v) for k, v in fitter.params_.items()}

        def pareto_loglik(values: dict[str, float], data: Any = data) -> float:
            params = pareto.ParetoParams(
                **values, log_likelihood=0.0, n_customers=0, converged=True
            )
            return float(pareto.loglik(params, data.x, data.t_x, data.T).sum())

        results.append(
            _row(
                model="Pareto/NBD",
                data=data,
                ours=ours,
                ours_seconds=ours_s,
                theirs=theirs,
                theirs_seconds=theirs_s,
                loglik=pareto_loglik,
                truth=PARETO_TRUTH,
            )
        )
    return results


def print_rows(results: list[dict[str, Any]]) -> None:
    for row in results:
        print(
            f"\n{row['model']}: {row['customers']:,} customers "
            f"({row['distinct_rows']:,} distinct (x, t_x, T) rows)"
        )
        print(f"  ours       {row['ours_seconds']:8.2f} s  {_params(row['ours_params'])}")
        if "lifetimes_seconds" in row:
            print(
                f"  lifetimes  {row['lifetimes_seconds']:8.2f} s  {_params(row['lifetimes_params'])}"
            )
            print(
                f"  speed-up {row['speedup']:.1f}x; largest parameter difference "
                f"{row['max_relative_param_difference']:.3%}; log-likelihood ours "
                f"{row['ours_log_likelihood']:,.2f} vs lifetimes' "
                f"{row['lifetimes_log_likelihood']:,.2f}"
            )
        print(f"  true       {'':10} {_params(row['true_params'])}")


def _params(values: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in values.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--pareto-subset", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.customers, pareto_subset=args.pareto_subset)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_rows(results)


if __name__ == "__main__":
    main()
