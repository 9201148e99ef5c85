"""BG/NBD, MBG/NBD and Pareto/NBD: the published CDNOW results, agreement with lifetimes, and
the behaviour the pipeline relies on (weights, predictions, next purchase)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy.special import gammaln

from kizuna.analytics.clv import PURCHASE_MODELS, _betageo, bgnbd, mbgnbd, pareto, simulate
from kizuna.analytics.clv.common import collapse
from kizuna.analytics.clv.summary import CustomerSummary
from tests.clv_cdnow import cdnow_weeks, lifetimes_datasets

with warnings.catch_warnings():
    # lifetimes is archived; its import warns about pandas/numpy APIs it still uses.
    warnings.simplefilter("ignore")
    from lifetimes import BetaGeoFitter, ModifiedBetaGeoFitter, ParetoNBDFitter


@pytest.fixture(scope="module")
def cdnow() -> CustomerSummary:
    return cdnow_weeks()


def _close(actual: float, published: float, rel: float = 0.01) -> bool:
    return abs(actual - published) <= rel * abs(published)


def test_the_cdnow_summary_is_the_one_fader_hardie_and_lee_published(
    cdnow: CustomerSummary,
) -> None:
    # given the per-customer data file the authors distributed with the paper
    published = pd.read_csv(lifetimes_datasets() / "cdnow_customers_summary_with_transactions.csv")
    # then our summary of the raw transactions (distinct purchase days, weeks) is the same
    assert cdnow.customers == len(published) == 2357
    order = np.argsort(cdnow.customer)
    assert np.array_equal(cdnow.customer[order], published["ID"].to_numpy())
    assert np.array_equal(cdnow.x[order], published["x"].to_numpy())
    assert np.allclose(cdnow.t_x[order], published["t_x"], atol=0.005)
    assert np.allclose(cdnow.T[order], published["T"], atol=0.005)
    repeat = published["x"].to_numpy() > 0
    assert cdnow.monetary is not None
    assert np.allclose(cdnow.monetary[order][repeat], published["zbar"][repeat], atol=0.0051)


def test_bgnbd_reproduces_fader_hardie_lee_2005_on_cdnow(cdnow: CustomerSummary) -> None:
    params = bgnbd.fit(cdnow.x, cdnow.t_x, cdnow.T)
    assert params.converged
    assert params.n_customers == 2357
    assert _close(params.r, 0.243)
    assert _close(params.alpha, 4.414)
    assert _close(params.a, 0.793)
    assert _close(params.b, 2.426)
    assert params.log_likelihood == pytest.approx(-9582.4, abs=0.1)


def test_pareto_nbd_reproduces_the_published_cdnow_estimates(cdnow: CustomerSummary) -> None:
    params = pareto.fit(cdnow.x, cdnow.t_x, cdnow.T)
    assert params.converged
    assert _close(params.r, 0.553)
    assert _close(params.alpha, 10.578)
    assert _close(params.s, 0.606)
    assert _close(params.beta, 11.669)
    assert params.log_likelihood == pytest.approx(-9595.0, abs=0.1)


def test_mbgnbd_agrees_with_lifetimes_on_cdnow(cdnow: CustomerSummary) -> None:
    ours = mbgnbd.fit(cdnow.x, cdnow.t_x, cdnow.T)
    theirs = ModifiedBetaGeoFitter().fit(cdnow.x, cdnow.t_x, cdnow.T).params_
    assert ours.converged
    for name in ("r", "alpha", "a", "b"):
        assert _close(getattr(ours, name), float(theirs[name])), name
    # and ours is at least as likely as lifetimes' optimum
    at = mbgnbd.MBGNBDParams(
        r=float(theirs["r"]),
        alpha=float(theirs["alpha"]),
        a=float(theirs["a"]),
        b=float(theirs["b"]),
        log_likelihood=0.0,
        n_customers=0,
        converged=True,
    )
    at_theirs = mbgnbd.loglik(at, cdnow.x, cdnow.t_x, cdnow.T).sum()
    assert ours.log_likelihood >= at_theirs - 1e-6


def test_the_reported_log_likelihood_is_the_sum_over_customers(cdnow: CustomerSummary) -> None:
    for model in (bgnbd, mbgnbd, pareto):
        params: Any = model.fit(cdnow.x, cdnow.t_x, cdnow.T)
        total = model.loglik(params, cdnow.x, cdnow.t_x, cdnow.T).sum()
        assert params.log_likelihood == pytest.approx(total, rel=1e-10)


def _lifetimes_with(model: str, values: dict[str, float]) -> Any:
    fitter = {"bgnbd": BetaGeoFitter, "mbgnbd": ModifiedBetaGeoFitter, "pareto": ParetoNBDFitter}[
        model
    ]()
    fitter.params_ = pd.Series(values)
    return fitter


@pytest.mark.parametrize("name", ["bgnbd", "mbgnbd", "pareto"])
def test_predictions_equal_lifetimes_given_the_same_parameters(
    cdnow: CustomerSummary, name: str
) -> None:
    # given our fitted parameters, loaded into lifetimes as well
    model: Any = {"bgnbd": bgnbd, "mbgnbd": mbgnbd, "pareto": pareto}[name]
    params = model.fit(cdnow.x, cdnow.t_x, cdnow.T)
    theirs = _lifetimes_with(name, params.values())
    # every CDNOW customer plus heavy buyers the sample lacks
    x = np.r_[cdnow.x, 40.0, 120.0, 15.0]
    t_x = np.r_[cdnow.t_x, 38.0, 30.0, 2.0]
    T = np.r_[cdnow.T, 39.0, 39.0, 39.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in (1.0, 10.0, 39.0):
            expected = theirs.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T)
            assert np.allclose(
                model.expected_purchases(params, t, x, t_x, T), expected, rtol=1e-6, atol=0
            )
        alive = theirs.conditional_probability_alive(x, t_x, T)
        assert np.allclose(model.p_alive(params, x, t_x, T), alive, rtol=1e-6, atol=0)
        horizon = np.array([1.0, 10.0, 39.0, 78.0])
        new = theirs.expected_number_of_purchases_up_to_time(horizon)
        assert np.allclose(model.expected_purchases_new(params, horizon), new, rtol=1e-6)


@pytest.mark.parametrize("name", ["bgnbd", "mbgnbd", "pareto"])
def test_identical_customers_can_be_given_as_weights(cdnow: CustomerSummary, name: str) -> None:
    model: Any = {"bgnbd": bgnbd, "mbgnbd": mbgnbd, "pareto": pareto}[name]
    # given the same customers once one by one, once shuffled, once as distinct rows with counts
    rows = collapse(cdnow.x, cdnow.t_x, cdnow.T, None)
    shuffled = np.random.default_rng(7).permutation(cdnow.customers)
    one_by_one = model.fit(cdnow.x, cdnow.t_x, cdnow.T)
    reordered = model.fit(cdnow.x[shuffled], cdnow.t_x[shuffled], cdnow.T[shuffled])
    weighted = model.fit(rows.x, rows.t_x, rows.T, weights=rows.weight)
    # then the fits are the same
    assert rows.x.size < cdnow.customers
    for other in (reordered, weighted):
        assert other.n_customers == one_by_one.n_customers
        assert other.log_likelihood == pytest.approx(one_by_one.log_likelihood, abs=1e-6)
        for key, value in one_by_one.values().items():
            assert other.values()[key] == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize("k", [0, 1])
def test_the_betageo_gradient_is_the_derivative_of_the_likelihood(k: int) -> None:
    # given customers from the model and a point away from the optimum
    data = simulate.betageo(
        np.random.default_rng(3),
        r=0.4,
        alpha=20.0,
        a=0.9,
        b=3.0,
        T=np.random.default_rng(4).integers(30, 400, 5000),
        whole_units=True,
        dropout_at_first=bool(k),
    )
    design = _betageo._Design(collapse(data.x, data.t_x, data.T, None), k)
    theta = np.log([0.3, 15.0, 1.3, 2.0])
    # then the analytic gradient matches central differences
    _, grad = design.neg_mean_loglik(theta)
    step = 1e-6
    numeric = [
        (design.neg_mean_loglik(theta + e)[0] - design.neg_mean_loglik(theta - e)[0]) / (2 * step)
        for e in np.eye(4) * step
    ]
    assert np.allclose(grad, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("theta", [[0.5, 60, 0.7, 90], [0.5, 90, 0.7, 60], [2, 300, 0.3, 20]])
def test_the_pareto_gradient_is_the_derivative_of_the_likelihood(theta: list[float]) -> None:
    # given customers from the model, and points with α < β and α > β
    data = simulate.pareto(
        np.random.default_rng(5),
        r=0.55,
        alpha=74.0,
        s=0.6,
        beta=82.0,
        T=np.random.default_rng(6).integers(30, 730, 5000),
        whole_units=True,
    )
    design = pareto._Design(collapse(data.x, data.t_x, data.T, None))
    point = np.log(theta)
    # then the gradient (analytic in α, β) matches central differences of the likelihood
    _, grad = design.neg_mean_loglik(point)
    step = 1e-5
    numeric = [
        -(design.mean_loglik(point + e) - design.mean_loglik(point - e)) / (2 * step)
        for e in np.eye(4) * step
    ]
    assert np.allclose(grad, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    ("alpha", "beta"), [(10.6, 11.7), (30.0, 2.0), (0.5, 40.0)], ids=["near", "a>b", "a<b"]
)
def test_the_pareto_likelihood_equals_its_defining_integral(alpha: float, beta: float) -> None:
    # L = Γ(r+x)α^r β^s/Γ(r) [ (α+T)^-(r+x) (β+T)^-s + s ∫_{t_x}^{T} (α+y)^-(r+x) (β+y)^-(s+1) dy ]
    r, s = 0.55, 0.6
    params = pareto.ParetoParams(r, alpha, s, beta, 0.0, 0, True)
    cases = [(0, 0.0, 39.0), (1, 2.0, 38.0), (3, 30.5, 38.86), (12, 5.0, 39.0), (25, 38.0, 39.0)]
    for x, t_x, T in cases:

        def integrand(y: float, x: int = x) -> float:
            return float((alpha + y) ** -(r + x) * (beta + y) ** -(s + 1))

        tail, _ = integrate.quad(integrand, t_x, T, epsabs=0, epsrel=1e-12)
        bracket = (alpha + T) ** -(r + x) * (beta + T) ** -s + s * tail
        expected = (
            gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta) + np.log(bracket)
        )
        assert pareto.loglik(params, [x], [t_x], [T])[0] == pytest.approx(expected, rel=1e-9)


def _simulated(name: str, n: int, holdout: float) -> tuple[Any, Any, simulate.SimulatedCustomers]:
    # Times in whole days, as a shop's orders give them: 20 to 60 weeks since the first purchase.
    rng = np.random.default_rng(11)
    T = rng.integers(140, 421, n).astype(float)
    if name == "pareto":
        truth: Any = pareto.ParetoParams(0.55, 74.0, 0.6, 82.0, 0.0, n, True)
        data = simulate.pareto(rng, **truth.values(), T=T, holdout=holdout, whole_units=True)
        return pareto, truth, data
    model: Any = bgnbd if name == "bgnbd" else mbgnbd
    cls = bgnbd.BGNBDParams if name == "bgnbd" else mbgnbd.MBGNBDParams
    truth = cls(0.243, 30.9, 0.793, 2.426, 0.0, n, True)
    data = simulate.betageo(
        rng,
        **truth.values(),
        T=T,
        holdout=holdout,
        dropout_at_first=name == "mbgnbd",
        whole_units=True,
    )
    return model, truth, data


@pytest.mark.parametrize("name", ["bgnbd", "mbgnbd", "pareto"])
def test_expectations_match_customers_drawn_from_the_model(name: str) -> None:
    # given 200,000 customers drawn from the model's own story with known parameters
    model, truth, data = _simulated(name, 200_000, holdout=182.0)
    # then the expected repeat purchases of a new customer match the simulated average
    # (MBG/NBD's differs from the BG/NBD's: a wrong formula is off by far more than 2%)
    new = model.expected_purchases_new(truth, data.T).sum()
    assert new == pytest.approx(data.x.sum(), rel=0.02)
    # and the per-customer holdout predictions add up to what the customers then did
    predicted = model.expected_purchases(truth, 182.0, data.x, data.t_x, data.T).sum()
    assert predicted == pytest.approx(data.holdout.sum(), rel=0.02)
    # and refitting recovers the parameters: the mean purchase rate r/α closely, the others
    # within their sampling spread (s and β, a and b trade off against each other)
    fitted = model.fit(data.x, data.t_x, data.T)
    assert fitted.converged
    assert fitted.r / fitted.alpha == pytest.approx(truth.r / truth.alpha, rel=0.03)
    for key, value in truth.values().items():
        assert fitted.values()[key] == pytest.approx(value, rel=0.15), key


@pytest.mark.parametrize("name", ["bgnbd", "mbgnbd", "pareto"])
def test_next_purchase_is_when_one_more_purchase_is_expected(
    cdnow: CustomerSummary, name: str
) -> None:
    model: Any = PURCHASE_MODELS[name]
    params = model.fit(cdnow.x, cdnow.t_x, cdnow.T)
    # given a frequent recent buyer, a slower one, and one who has probably lapsed
    x, t_x, T = np.array([20.0, 4.0, 6.0]), np.array([38.0, 36.0, 5.0]), np.array([39.0] * 3)
    when = model.expected_next_purchase(params, x, t_x, T, horizon=520.0, tolerance=1e-4)
    # then the frequent buyer is expected back first, and at that time one purchase is expected
    assert when[0] < when[1]
    reached = model.expected_purchases(params, when[:2], x[:2], t_x[:2], T[:2])
    assert np.allclose(reached, 1.0, atol=1e-3)
    # and the lapsed buyer is not expected to buy again within ten years
    assert np.isnan(when[2])
    assert model.expected_purchases(params, 520.0, x[2:], t_x[2:], T[2:])[0] < 1


@pytest.mark.parametrize("name", ["bgnbd", "pareto"])
def test_next_purchase_in_whole_units_is_the_first_unit_reaching_one_purchase(
    cdnow: CustomerSummary, name: str
) -> None:
    model: Any = PURCHASE_MODELS[name]
    params = model.fit(cdnow.x, cdnow.t_x, cdnow.T)
    # given customers from the frequent to the lapsed, several of them alike
    x = np.array([20.0, 20.0, 4.0, 9.0, 2.0, 6.0, 0.0])
    t_x = np.array([38.0, 38.0, 36.0, 30.0, 20.0, 5.0, 0.0])
    T = np.full(x.size, 39.0)
    # when the next purchase is asked for in whole weeks
    when = model.expected_next_purchase(params, x, t_x, T, horizon=104.0, whole_units=True)
    # then it is, per customer, the first whole week by which one purchase is expected
    weeks = np.arange(1.0, 105.0)
    for i in range(x.size):
        expected = model.expected_purchases(
            params, weeks, np.full(weeks.size, x[i]), np.full(weeks.size, t_x[i]), T[:1]
        )
        first = weeks[np.argmax(expected >= 1.0)] if np.any(expected >= 1.0) else np.nan
        assert when[i] == first or (np.isnan(when[i]) and np.isnan(first)), i
    # (the frequent buyer is expected back within the two years, the one-time buyer is not)
    assert not np.isnan(when[0])
    assert np.isnan(when[-1])


@pytest.mark.parametrize(
    ("x", "t_x", "T", "message"),
    [
        ([-1], [0], [10], "0以上の整数"),
        ([1.5], [2], [10], "0以上の整数"),
        ([2], [11], [10], "観察期間 T 以下"),
        ([0], [3], [10], "t_x も0"),
        ([np.nan], [0], [10], "数値でない"),
    ],
)
def test_impossible_customer_data_is_refused_with_a_reason(
    x: list[float], t_x: list[float], T: list[float], message: str
) -> None:
    for model in (bgnbd, mbgnbd, pareto):
        with pytest.raises(ValueError, match=message):
            model.fit(x, t_x, T)
