"""Customer-base models (CLV): purchase models (BG/NBD, MBG/NBD, Pareto/NBD), the Gamma-Gamma
spend model, 12-month CLV, and the sBG model of subscription continuation.

Pure numpy/scipy functions over arrays, one row per customer; no database, no Django. The
formulas, assumptions and the published results they are checked against are in
docs/analytics.md (予測モデル).

`PURCHASE_MODELS` lets callers (the back-test, the pipeline) pick a purchase model by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from numpy.typing import ArrayLike

from kizuna.analytics.clv import bgnbd, mbgnbd, pareto
from kizuna.analytics.clv.common import FloatArray, next_purchase_time


class FittedModel(Protocol):
    @property
    def log_likelihood(self) -> float: ...

    @property
    def n_customers(self) -> int: ...

    @property
    def converged(self) -> bool: ...

    def values(self) -> dict[str, float]: ...


P = TypeVar("P", bound=FittedModel)


P_co = TypeVar("P_co", bound=FittedModel, covariant=True)


class Fit(Protocol[P_co]):
    def __call__(
        self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None
    ) -> P_co: ...


@dataclass(frozen=True, slots=True)
class PurchaseModel(Generic[P]):
    name: str
    label: str
    fit: Fit[P]
    expected_purchases: Callable[[P, ArrayLike, ArrayLike, ArrayLike, ArrayLike], FloatArray]
    p_alive: Callable[[P, ArrayLike, ArrayLike, ArrayLike], FloatArray]
    expected_purchases_new: Callable[[P, ArrayLike], FloatArray]

    def expected_next_purchase(
        self,
        params: P,
        x: ArrayLike,
        t_x: ArrayLike,
        T: ArrayLike,
        *,
        horizon: float,
        tolerance: float = 1e-3,
        whole_units: bool = False,
    ) -> FloatArray:
        """Time after T by which one more purchase is expected (NaN: not within the horizon);
        with `whole_units`, the first whole time unit (day) by which it is."""
        return next_purchase_time(
            lambda t, x_, tx_, T_: self.expected_purchases(params, t, x_, tx_, T_),
            x,
            t_x,
            T,
            horizon=horizon,
            tolerance=tolerance,
            whole_units=whole_units,
        )


PURCHASE_MODELS: dict[str, PurchaseModel[Any]] = {
    "bgnbd": PurchaseModel(
        "bgnbd",
        "BG/NBD",
        bgnbd.fit,
        bgnbd.expected_purchases,
        bgnbd.p_alive,
        bgnbd.expected_purchases_new,
    ),
    "mbgnbd": PurchaseModel(
        "mbgnbd",
        "MBG/NBD",
        mbgnbd.fit,
        mbgnbd.expected_purchases,
        mbgnbd.p_alive,
        mbgnbd.expected_purchases_new,
    ),
    "pareto": PurchaseModel(
        "pareto",
        "Pareto/NBD",
        pareto.fit,
        pareto.expected_purchases,
        pareto.p_alive,
        pareto.expected_purchases_new,
    ),
}
