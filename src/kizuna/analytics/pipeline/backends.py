"""Ibis connections for the three engines the pipeline runs on.

* duckdb (default): embedded, in memory; the operational data arrives as an Arrow snapshot.
* postgres: the operational PostgreSQL itself; the expressions become SQL run next to the data.
* pyspark: Spark in local mode (or whatever master SPARK_MASTER names) from the Arrow snapshot.
"""

from __future__ import annotations

import os
from typing import Any

import ibis
from django.db import connections

from kizuna.analytics.models import engine_unavailable_reason
from kizuna.analytics.pipeline.config import Backend


class BackendUnavailableError(RuntimeError):
    """The chosen engine cannot run here; the message says why and what to do, in Japanese."""


def connect_duckdb() -> ibis.BaseBackend:
    con = ibis.duckdb.connect()
    # Every result the pipeline reads in a given order says so (ORDER BY, or sorted after
    # collection); without this promise DuckDB materialises and aggregates ten million rows
    # in parallel without keeping them in input order, two to three times faster here.
    con.raw_sql("SET preserve_insertion_order = false")
    return con


def connect_postgres(using: str = "default") -> ibis.BaseBackend:
    settings = connections[using].settings_dict
    con = ibis.postgres.connect(
        host=settings.get("HOST") or "localhost",
        port=int(settings.get("PORT") or 5432),
        user=settings.get("USER") or None,
        password=settings.get("PASSWORD") or None,
        database=settings["NAME"],
    )
    # Timestamps are cut into Asia/Tokyo days by shifting UTC by nine hours (tables.py).
    con.raw_sql("SET TIME ZONE 'UTC'")
    return con


def spark_session() -> Any:
    """A local Spark session (reused within the process): UTC, no UI, few shuffle partitions."""
    from pyspark.sql import SparkSession

    master = os.environ.get("SPARK_MASTER", "local[2]")
    return (
        SparkSession.builder.master(master)
        .appName("kizuna-analytics")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", os.environ.get("KIZUNA_SPARK_PARTITIONS", "8"))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", os.environ.get("KIZUNA_SPARK_DRIVER_MEMORY", "4g"))
        .getOrCreate()
    )


def connect_pyspark() -> ibis.BaseBackend:
    return ibis.pyspark.connect(spark_session())


def connect(backend: Backend, *, using: str = "default") -> ibis.BaseBackend:
    """A connection to `backend`; BackendUnavailableError when this install cannot run it,
    found by the same check the settings form makes (one list of what each engine needs)."""
    reason = engine_unavailable_reason(backend.value, using=using)
    if reason is not None:
        raise BackendUnavailableError(reason)
    if backend == Backend.DUCKDB:
        return connect_duckdb()
    if backend == Backend.POSTGRES:
        return connect_postgres(using)
    return connect_pyspark()
