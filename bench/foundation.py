"""Benchmark for the foundation: demo build time and memory, and customer search latency.

    python -m bench.foundation --customers 20000            # SQLite in a fresh temp directory
    python -m bench.foundation --customers 1000000
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kizuna_bench python -m bench.foundation

Targets from the foundation issue, printed as ratios (below 1.0 meets the target):
  - the whole `kizuna demo --no-serve` (build, duplicates, scenarios, analytics) for 20,000
    customers in under 120 s; larger builds keep memory bounded;
  - every kind of customer search answers in well under 1 s at 1,000,000 customers.
Wall time depends on what else the machine runs, so CPU time (user + sys of the command) and
the load average are printed next to it. The database must be empty (a fresh temp directory
is used for SQLite).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BUILD_TARGET_S_PER_20K = 120.0
SEARCH_TARGET_S = 1.0
REPEATS = 20


@dataclass(frozen=True)
class BuildTiming:
    wall_s: float
    cpu_s: float  # user + sys of the command and the processes it waited for
    peak_rss_mib: float


def build(customers: int, env: dict[str, str]) -> BuildTiming:
    """Run `kizuna demo --no-serve` in a child process and time it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "kizuna",
            "demo",
            "--no-serve",
            "--customers",
            str(customers),
            "--as-of",
            "2026-11-01",
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return BuildTiming(seconds, cpu, after.ru_maxrss / 1024)


def load_average() -> str:
    return " ".join(f"{load:.1f}" for load in os.getloadavg())


def search_latencies() -> dict[str, list[float]]:
    """Time customer_search for each kind of query an operator types, on sampled customers."""
    import django

    django.setup()
    from django.conf import settings

    from kizuna.commerce.models import Order
    from kizuna.customers.models import Customer, Identity, IdentityKind
    from kizuna.customers.selectors import customer_search

    rng = random.Random(1)
    max_id = Customer.objects.order_by("-id").values_list("id", flat=True).first() or 0
    ids = [rng.randint(1, max_id) for _ in range(REPEATS)]
    samples = list(Customer.objects.filter(id__in=ids))

    def full_width(text: str) -> str:
        return text.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789"}).replace("-", "－")

    queries: dict[str, list[str]] = {
        "電話(全角)": [],
        "メール": [],
        "カナ前方一致": [],
        "ひらがな姓名": [],
        "漢字姓名": [],
        "注文番号": [],
        "カート会員ID": [],
    }
    for customer in samples:
        identities = dict(
            Identity.objects.filter(customer=customer).values_list("kind", "display_value")
        )
        if IdentityKind.PHONE in identities:
            queries["電話(全角)"].append(full_width(identities[IdentityKind.PHONE]))
        if IdentityKind.EMAIL in identities:
            queries["メール"].append(identities[IdentityKind.EMAIL])
        if IdentityKind.CART_MEMBER in identities:
            queries["カート会員ID"].append(identities[IdentityKind.CART_MEMBER])
        queries["カナ前方一致"].append(customer.family_kana)
        hira = "".join(chr(ord(c) - 0x60) if "ァ" <= c <= "ヶ" else c for c in customer.full_kana)
        queries["ひらがな姓名"].append(hira)
        queries["漢字姓名"].append(customer.full_name)
        number = Order.objects.filter(customer=customer).values_list("number", flat=True).first()
        if number:
            queries["注文番号"].append(number)

    results: dict[str, list[float]] = {}
    for label, texts in queries.items():
        timings = []
        for text in texts:
            started = time.perf_counter()
            customer_search(text, limit=settings.KIZUNA_SEARCH_LIMIT)
            timings.append(time.perf_counter() - started)
        results[label] = timings
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args()

    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "kizuna.settings")
    if "DATABASE_URL" not in env:
        env["KIZUNA_DATA_DIR"] = tempfile.mkdtemp(prefix="kizuna-bench-")
    os.environ.update(env)
    database = env.get("DATABASE_URL", f"SQLite in {env['KIZUNA_DATA_DIR']}")
    print(f"machine: {os.cpu_count()} cores; database: {database.split('@')[-1]}")

    print(f"load average before: {load_average()}")
    timing = build(args.customers, env)
    target = BUILD_TARGET_S_PER_20K * args.customers / 20_000
    print(
        f"kizuna demo --no-serve  {args.customers:>9,} customers  "
        f"wall {timing.wall_s:8.1f} s  cpu {timing.cpu_s:8.1f} s  "
        f"peak RSS {timing.peak_rss_mib:6.0f} MiB  ratio to target ({target:.0f} s): "
        f"wall {timing.wall_s / target:.2f}, cpu {timing.cpu_s / target:.2f}"
    )
    print(f"load average after: {load_average()}")
    for label, timings in search_latencies().items():
        if not timings:
            continue
        median = statistics.median(timings)
        worst = max(timings)
        print(
            f"search {label:<10} n={len(timings):>2}  median {median * 1000:7.1f} ms  "
            f"max {worst * 1000:7.1f} ms  ratio to 1 s target: {worst / SEARCH_TARGET_S:.3f}"
        )
    if "DATABASE_URL" not in env:
        print(f"(database left in {Path(env['KIZUNA_DATA_DIR'])})")


if __name__ == "__main__":
    main()
