"""The CDNOW sample (Fader, Hardie & Lee 2005) as shipped inside the lifetimes wheel.

Read as a plain file: `import lifetimes.datasets` needs pkg_resources, and the models under
test must not depend on lifetimes at all. Columns: customer id, customer index, date YYYYMMDD,
number of CDs, dollar value. Calibration is weeks 1-39 (1997-01-01 .. 1997-09-30), the holdout
weeks 40-78 (to 1998-06-30).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kizuna.analytics.clv.summary import CustomerSummary, summarise

CALIBRATION_END = dt.date(1997, 9, 30)
HOLDOUT_END = dt.date(1998, 6, 30)


def lifetimes_datasets() -> Path:
    spec = importlib.util.find_spec("lifetimes")
    assert spec is not None, "lifetimes (the test extra) is needed"
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "datasets"


@dataclass(frozen=True)
class CdnowTransactions:
    customer: np.ndarray
    day: np.ndarray
    amount: np.ndarray


def cdnow_transactions() -> CdnowTransactions:
    raw = pd.read_csv(
        lifetimes_datasets() / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["customer_id", "customer_index", "date", "cds", "amount"],
        dtype={"customer_id": str, "date": str},
    )
    day = pd.to_datetime(raw["date"], format="%Y%m%d").to_numpy().astype("datetime64[D]")
    return CdnowTransactions(
        # The authors' per-customer files are keyed by the index, 1..2357.
        customer=raw["customer_index"].to_numpy(),
        day=day,
        amount=raw["amount"].to_numpy(dtype=float),
    )


def cdnow_weeks() -> CustomerSummary:
    """Calibration summary in weeks, with the holdout counted."""
    tx = cdnow_transactions()
    return summarise(
        tx.customer,
        tx.day,
        tx.amount,
        calibration_end=CALIBRATION_END,
        holdout_end=HOLDOUT_END,
        unit_days=7.0,
    )
