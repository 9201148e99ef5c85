"""Shifted-beta-geometric continuation of subscriptions (Fader & Hardie 2007)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from kizuna.analytics.clv import sbg
from kizuna.analytics.pipeline import kpis

# Fader & Hardie (2007), "How to project customer retention", Table 1: customers still active
# at the start of years 0..12 out of 1,000 acquired.
REGULAR = [1000, 631, 468, 382, 326, 289, 262, 241, 223, 207, 194, 183, 173]
HIGH_END = [1000, 869, 743, 653, 593, 551, 517, 491, 468, 445, 427, 409, 394]


@pytest.mark.parametrize(
    ("curve", "alpha", "beta"), [(REGULAR, 0.704, 1.182), (HIGH_END, 0.668, 3.806)]
)
def test_fit_on_seven_years_reproduces_the_papers_estimates(
    curve: list[int], alpha: float, beta: float
) -> None:
    params = sbg.fit(curve[:8])
    assert params.converged
    assert params.n_customers == 1000
    assert params.alpha == pytest.approx(alpha, rel=0.01)
    assert params.beta == pytest.approx(beta, rel=0.01)


@pytest.mark.parametrize(("curve", "tolerance"), [(REGULAR, 0.03), (HIGH_END, 0.05)])
def test_projection_of_years_8_to_12_is_close_to_what_happened(
    curve: list[int], tolerance: float
) -> None:
    # given only the first seven years
    params = sbg.fit(curve[:8])
    # when those still active after year 7 are projected five years ahead
    projected = sbg.project(params, active=curve[7], at=7, horizon=5)
    # then each year is close to the actual count (for the regular segment, a constant
    # year-7 retention rate would be 8% short by year 12; the sBG is within 3%)
    assert np.allclose(projected, curve[8:], rtol=tolerance)


def test_retention_rises_with_tenure_and_multiplies_into_survival() -> None:
    params = sbg.fit(REGULAR[:8])
    n = np.arange(1, 13)
    rates = sbg.retention(params, n)
    assert np.all(np.diff(rates) > 0)
    assert sbg.survival(params, 0) == pytest.approx(1.0)
    assert np.allclose(sbg.survival(params, n), np.cumprod(rates))


def test_cohorts_of_different_ages_pool_into_one_fit() -> None:
    # given one cohort seen for 7 years and a later one seen for 3, from the same population
    pooled = sbg.fit_cohorts([REGULAR[:8], [500, 316, 234, 191]])
    alone = sbg.fit(REGULAR[:8])
    # then the pooled estimate counts both cohorts and stays close to the long cohort's
    assert pooled.n_customers == 1500
    assert pooled.alpha == pytest.approx(alone.alpha, rel=0.1)
    assert pooled.beta == pytest.approx(alone.beta, rel=0.1)
    # and one cohort given as a list of one is the same as the cohort alone
    assert sbg.fit_cohorts([REGULAR[:8]]).values() == pytest.approx(alone.values())


@pytest.mark.parametrize(
    ("curve", "message"),
    [
        ([1000], "2時点以上"),
        ([0, 0, 0], "開始時点の人数が0"),
        ([100, 80, 90], "途中で増えて"),
        ([100, -1], "0以上"),
    ],
)
def test_unusable_survival_counts_are_refused_with_a_reason(curve: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sbg.fit(curve)


def _reach(curve: list[int], start_month: int, product_id: int = 1) -> list[dict[str, object]]:
    """A 定期 book as the pipeline's subscription_reach counts it: of `curve[0]` subscribers
    who received box 1, curve[k-1] - curve[k] cancelled after k boxes, and curve[-1] are still
    running with len(curve) boxes."""
    rows: list[dict[str, object]] = [
        {"product_id": product_id, "start_month": start_month, "reached": k,
         "cancelled": True, "n": curve[k - 1] - curve[k]}
        for k in range(1, len(curve))
    ]  # fmt: skip
    rows.append(
        {"product_id": product_id, "start_month": start_month, "reached": len(curve),
         "cancelled": False, "n": curve[-1]}
    )  # fmt: skip
    return rows


def test_the_pipelines_sbg_table_fits_each_start_cohort_from_the_live_book() -> None:
    # given: two start-month cohorts — the paper's regular customers seen for seven renewals,
    # and a small cohort of 20 — plus subscriptions that have no box yet
    rows = _reach(REGULAR[:8], start_month=660) + _reach([20, 15, 12], start_month=661)
    rows += [
        {"product_id": 1, "start_month": 662, "reached": 0, "cancelled": False, "n": 40},
        {"product_id": 1, "start_month": 662, "reached": 0, "cancelled": True, "n": 5},
    ]
    reach = pa.Table.from_pylist(rows)
    # when
    fits = {row["cohort"]: row for row in kpis.sbg_rows(reach)}
    # then: the paper's cohort reproduces the paper's estimates; the small cohort counts in
    # the fit over everyone but gets no fit of its own; boxless subscriptions tell nothing
    assert set(fits) == {None, "2025-01"}
    regular = fits["2025-01"]
    assert (regular["subscriptions"], regular["cancelled"]) == (1000, 1000 - 241)
    assert regular["alpha"] == pytest.approx(0.704, rel=0.01)
    assert regular["beta"] == pytest.approx(1.182, rel=0.01)
    assert regular["retention"][0] == pytest.approx(float(sbg.retention(sbg.fit(REGULAR[:8]), 1)))
    assert fits[None]["subscriptions"] == 1020
    assert len(regular["survival"]) == kpis.SBG_HORIZON + 1
    assert regular["survival"][0] == pytest.approx(1.0)


def test_a_cohort_with_no_cancellation_yet_gets_no_fit() -> None:
    reach = pa.Table.from_pylist(
        [{"product_id": 1, "start_month": 660, "reached": 3, "cancelled": False, "n": 50}]
    )
    assert kpis.sbg_rows(reach) == []
