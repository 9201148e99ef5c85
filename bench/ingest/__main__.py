"""The whole ingest benchmark in one command:

    python -m bench.ingest            # 100k and 1M order lines on SQLite and PostgreSQL, then API
    python -m bench.ingest --quick    # 100k order lines only, then the API

Each part prints its result next to its floor or target as a ratio; see bench/ingest/*.py.
PostgreSQL is the local server (trust auth); scratch databases are created and dropped.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from bench.foundation import load_average

POSTGRES = os.environ.get("KIZUNA_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")


def main() -> None:
    parser = argparse.ArgumentParser(description="Kizuna ingest benchmark")
    parser.add_argument("--quick", action="store_true", help="100k order lines only")
    args = parser.parse_args()
    sizes = ["--rows", "100000"] if args.quick else ["--rows", "100000", "--rows", "1000000"]
    steps = [
        ["-m", "bench.ingest.csv_import", *sizes],
        ["-m", "bench.ingest.csv_import", *sizes, "--database-url", f"{POSTGRES}/kizuna_bench_csv"],
        ["-m", "bench.ingest.api", "--database-url", f"{POSTGRES}/kizuna_bench_api"],
    ]
    for step in steps:
        print(f"$ python {' '.join(step)}   (load average {load_average()})", flush=True)
        subprocess.run([sys.executable, *step], check=True)  # noqa: S603
    print(f"load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
