"""Gamma-Gamma spend model and the 12-month CLV built on it."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from kizuna.analytics.clv import bgnbd, gammagamma
from kizuna.analytics.clv.summary import CustomerSummary
from tests.clv_cdnow import cdnow_weeks

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lifetimes import BetaGeoFitter, GammaGammaFitter


@pytest.fixture(scope="module")
def cdnow() -> CustomerSummary:
    return cdnow_weeks()


def _repeat(cdnow: CustomerSummary) -> tuple[np.ndarray, np.ndarray]:
    assert cdnow.monetary is not None
    repeat = cdnow.x > 0
    return cdnow.x[repeat], cdnow.monetary[repeat]


def test_gamma_gamma_reproduces_the_published_cdnow_estimates(cdnow: CustomerSummary) -> None:
    # given the 946 CDNOW customers with a repeat purchase in weeks 1-39 and their mean spend
    x, m = _repeat(cdnow)
    params = gammagamma.fit(x, m)
    # then p, q, γ are those of Fader, Hardie & Lee ("RFM and CLV", 2005)
    assert params.converged
    assert params.n_customers == 946
    assert params.p == pytest.approx(6.25, rel=0.01)
    assert params.q == pytest.approx(3.74, rel=0.01)
    assert params.gamma == pytest.approx(15.44, rel=0.01)


def test_expected_spend_lies_between_the_shop_average_and_the_customers_own(
    cdnow: CustomerSummary,
) -> None:
    x, m = _repeat(cdnow)
    params = gammagamma.fit(x, m)
    population = params.p * params.gamma / (params.q - 1)
    expected = gammagamma.expected_average_spend(params, x, m)
    low, high = np.minimum(m, population), np.maximum(m, population)
    assert np.all((expected >= low - 1e-9) & (expected <= high + 1e-9))
    # the more purchases, the more her own average counts
    one, many = gammagamma.expected_average_spend(params, [1, 20], [100.0, 100.0])
    assert abs(many - 100) < abs(one - 100)
    # a customer with no repeat purchase is expected to spend the shop average
    assert gammagamma.expected_average_spend(params, [0], [999.0])[0] == pytest.approx(population)


def test_expected_spend_equals_lifetimes_given_the_same_parameters(cdnow: CustomerSummary) -> None:
    x, m = _repeat(cdnow)
    params = gammagamma.fit(x, m)
    theirs = GammaGammaFitter()
    theirs.params_ = pd.Series({"p": params.p, "q": params.q, "v": params.gamma})
    expected = theirs.conditional_expected_average_profit(pd.Series(x), pd.Series(m))
    assert np.allclose(gammagamma.expected_average_spend(params, x, m), expected, rtol=1e-9)


def test_clv_discounts_each_months_purchases_to_the_end_of_that_month() -> None:
    # given a customer expected to buy twice a month, ¥1,000 each time, at 1% a month
    months = 30.4375

    def purchases(t: float) -> np.ndarray:
        return np.array([2 * t / months])

    value = gammagamma.clv(purchases, [1000.0], months=12, monthly_discount_rate=0.01)
    # then CLV is the annuity of ¥2,000 a month for 12 months
    annuity = 2000 * (1 - 1.01**-12) / 0.01
    assert value[0] == pytest.approx(annuity, rel=1e-12)
    # and without discounting it is simply 12 months of spend
    flat = gammagamma.clv(purchases, [1000.0], monthly_discount_rate=0.0)
    assert flat[0] == pytest.approx(24_000)


def test_clv_equals_lifetimes_with_its_30_day_months(cdnow: CustomerSummary) -> None:
    # given BG/NBD and Gamma-Gamma fitted on CDNOW in days
    days = cdnow_weeks()
    x, t_x, T = days.x, days.t_x * 7, days.T * 7
    purchase = bgnbd.fit(x, t_x, T)
    rx, m = _repeat(cdnow)
    spend = gammagamma.fit(rx, m)
    assert days.monetary is not None
    monetary = np.where(x > 0, days.monetary, 0.0)
    ours = gammagamma.clv(
        lambda t: bgnbd.expected_purchases(purchase, t, x, t_x, T),
        gammagamma.expected_average_spend(spend, x, monetary),
        units_per_month=30,
    )
    # then lifetimes computes the same values with the same parameters
    bg = BetaGeoFitter()
    bg.params_ = pd.Series(purchase.values())
    bg.predict = bg.conditional_expected_number_of_purchases_up_to_time  # set by lifetimes' fit
    gg = GammaGammaFitter()
    gg.params_ = pd.Series({"p": spend.p, "q": spend.q, "v": spend.gamma})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = gg.customer_lifetime_value(
            bg,
            pd.Series(x),
            pd.Series(t_x),
            pd.Series(T),
            pd.Series(monetary),
            time=12,
            discount_rate=0.01,
            freq="D",
        )
    assert np.allclose(ours, theirs.to_numpy(), rtol=1e-6)


def test_spend_model_needs_repeat_customers_with_positive_spend() -> None:
    with pytest.raises(ValueError, match="リピート購入が1回以上"):
        gammagamma.fit([0, 2], [10.0, 20.0])
    with pytest.raises(ValueError, match="リピート購入が1回以上"):
        gammagamma.fit([1, 2], [0.0, 20.0])
    with pytest.raises(ValueError, match="いないため"):
        gammagamma.fit([], [])
