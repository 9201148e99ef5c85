"""The pipeline on PySpark (local mode, the machine's Java 17) gives DuckDB's snapshot.

Slow (a JVM starts and every query is a Spark job): marked `pyspark`, run in CI as its own step
on every submission: `pytest -m pyspark tests/test_analytics_pyspark.py`.
"""

from __future__ import annotations

import datetime as dt

import pytest

from kizuna.analytics.models import RunStatus
from tests.analytics_shop import build_varied_shop, run
from tests.test_analytics_backends import assert_same_snapshot

pytestmark = [pytest.mark.pyspark, pytest.mark.slow, pytest.mark.django_db]


def test_pyspark_engine_gives_the_duckdb_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    # A handful of rows: one shuffle partition keeps Spark's per-query overhead down.
    monkeypatch.setenv("KIZUNA_SPARK_PARTITIONS", "1")
    build_varied_shop()
    on_duckdb = run(dt.date(2025, 6, 30), "duckdb")
    on_spark = run(dt.date(2025, 6, 30), "pyspark")
    assert on_spark.status == RunStatus.DONE
    assert on_spark.backend == "pyspark"
    assert_same_snapshot(on_duckdb, on_spark)
