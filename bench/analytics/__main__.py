"""The issue-4 analytics benchmark in one command: summary step, model fits and the full run.

    python -m bench.analytics                 # 1,000,000 customers / 10,000,000 orders
    python -m bench.analytics --quick         # 100,000 customers / 1,000,000 orders
    python -m bench.analytics --database-dir /tmp/kz-bench   # keep (and reuse) the scratch SQLite

Side by side, in this order (each part is also its own module):
  1. `bench.analytics.summary` part 1: the summary step and the model inputs against one plain
     DuckDB GROUP BY (the floor) and against lifetimes' summary_data_from_transaction_data;
  2. `bench.analytics.fit`: BG/NBD against lifetimes.BetaGeoFitter on every customer, and
     Pareto/NBD against lifetimes.ParetoNBDFitter on a subset (lifetimes takes minutes);
  3. `bench.analytics.summary` part 2: `kizuna analytics run` on a scratch SQLite database in a
     child process — wall time, per-step times and peak memory.
The load average is printed before and after: the machine is shared, and the ratios move
with it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from bench.analytics import fit, summary

FULL = {"customers": 1_000_000, "orders": 10_000_000, "pareto_subset": 100_000}
QUICK = {"customers": 100_000, "orders": 1_000_000, "pareto_subset": 20_000}
TARGETS = {
    "summary_vs_floor": 1.5,
    "bgnbd_speedup": 20.0,
    "bgnbd_param_difference": 0.01,
    "pareto_speedup": 50.0,
    "full_run_seconds": 60.0,
}


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def verdicts(
    summary_rows: list[dict[str, Any]],
    fit_rows: list[dict[str, Any]],
    run_rows: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One line per issue-4 target: the measured value, the target and whether it is met."""
    out: list[dict[str, Any]] = []
    for row in summary_rows:
        if "vs_floor" in row and row["what"].startswith("customer_summary"):
            value = row["vs_floor"]
            out.append(
                {
                    "target": "summary step ≤ 1.5× of the floor",
                    "value": value,
                    "met": value <= TARGETS["summary_vs_floor"],
                }
            )
    for row in fit_rows:
        if "speedup" not in row:
            continue
        if row["model"] == "BG/NBD":
            met = (
                row["speedup"] >= TARGETS["bgnbd_speedup"]
                and row["max_relative_param_difference"] <= TARGETS["bgnbd_param_difference"]
            )
            name = "BG/NBD fit ≥ 20× lifetimes, parameters within 1%"
        else:
            met = row["speedup"] >= TARGETS["pareto_speedup"]
            name = "Pareto/NBD fit ≥ 50× lifetimes"
        out.append(
            {
                "target": name,
                "value": row["speedup"],
                "parameter_difference": row["max_relative_param_difference"],
                "met": met,
            }
        )
    for row in run_rows:
        if "steps" in row:
            out.append(
                {
                    "target": "full run < 60 s",
                    "value": row["seconds"],
                    "peak_memory_mib": row["peak_memory_mib"],
                    "met": row["seconds"] < TARGETS["full_run_seconds"],
                }
            )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 customers / 1,000,000 orders")
    parser.add_argument("--skip-full-run", action="store_true")
    parser.add_argument(
        "--compare-extract",
        action="store_true",
        help="also time the Django-cursor extraction against connectorx (slow at full size)",
    )
    parser.add_argument(
        "--database-dir",
        type=Path,
        help="keep the scratch SQLite database here and reuse it on the next run",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kizuna.settings")
    size = QUICK if args.quick else FULL
    load_before = _load()
    summary_rows = summary.part_summary(size["customers"], size["orders"])
    fit_rows = fit.run(size["customers"], pareto_subset=size["pareto_subset"])
    run_rows = (
        []
        if args.skip_full_run
        else summary.part_full_run(
            size["customers"],
            size["orders"],
            compare_extract=args.compare_extract,
            scratch=args.database_dir,
        )
    )
    result: dict[str, Any] = {
        "size": size,
        "load_average_before": load_before,
        "load_average_after": _load(),
        "summary": summary_rows,
        "fit": fit_rows,
        "full_run": run_rows,
        "targets": verdicts(summary_rows, fit_rows, run_rows),
    }
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    print(f"size: {size}  load average before: {load_before}")
    for row in summary_rows + run_rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    fit.print_rows(fit_rows)
    print(f"\nload average after: {result['load_average_after']}")
    for verdict in result["targets"]:
        print("  ".join(f"{k}={v}" for k, v in verdict.items()))


if __name__ == "__main__":
    main()
