"""Benchmark for the REST API: order upserts per second through gunicorn on PostgreSQL.

    python -m bench.ingest.api                                   # 5,000 orders
    python -m bench.ingest.api --count 20000 --threads 8 --batch-size 500
    python -m bench.ingest.api --database-url postgres://postgres@127.0.0.1:5432/kizuna_bench_api

A fresh database named after the URL's (default `kizuna_bench_api`) is created, migrated and
dropped afterwards. The app is served by gunicorn (2 sync workers) on 127.0.0.1; a client
with a few threads, each holding one keep-alive connection, sends `count` orders (one customer
per four orders, resolved by e-mail and cart member ID) two ways: one order per request
(`PUT /api/v1/orders/{n}`), and `--batch-size` orders per request (`POST
/api/v1/orders/batch`, other order numbers). Each way runs twice: first as new orders, then
the same bodies again (the idempotent "unchanged" path). The
target from the ingest issue is 300 order upserts/s, printed as a ratio (≥ 1.0 meets it);
the floor is the same order rows loaded with COPY into a bare table. The gunicorn workers'
CPU time per order is printed too: unlike orders/s it does not depend on what else the
machine is running.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

TARGET_PER_S = 300.0
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/kizuna_bench_api"
WORKERS = 2
BATCH_SIZE = 500


def order_body(n: int) -> dict[str, Any]:
    who = n // 4
    return {
        "customer": {
            "identities": {"email": f"user{who}@example.jp", "cart_member_id": f"M{who:07d}"},
            "profile": {"family_name": "山田", "given_name": "花子", "family_kana": "ヤマダ"},
        },
        "ordered_at": f"2026-04-{1 + n % 28:02d}T10:{n % 60:02d}:00+09:00",
        "lines": [
            {
                "product_code": f"SK-{n % 40:03d}",
                "product_name": f"美容液 {n % 40}番",
                "unit_price": 1000 + 180 * (n % 40),
                "quantity": 1 + n % 3,
            }
        ],
        "shipping_fee": 550,
        "updated_at": "2026-04-30T10:00:00+09:00",
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _fresh_database(database_url: str) -> str:
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/") or "kizuna_bench_api"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def _drop_database(database_url: str) -> None:
    import psycopg

    parts = urlsplit(database_url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


_CREATE_KEY = """
import django
django.setup()
from kizuna.accounts.apikeys import api_key_create
from kizuna.core.audit import Actor
_, secret = api_key_create(name="bench", scopes=["orders:write"], acting_user=Actor.system("bench"))
print(secret)
"""


def _python(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(  # noqa: S603 - our own interpreter and package, fixed arguments
        [sys.executable, *args], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def _wait_until_serving(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("gunicorn exited while starting")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/v1/openapi.json")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer within 60 s")


def _worker_cpu_seconds(master_pid: int) -> float:
    """CPU time (user + system) the gunicorn workers have used so far (Linux /proc)."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    ticks = 0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _fire(
    port: int, secret: str, requests: list[tuple[str, str, bytes]], threads: int
) -> tuple[float, Counter[int]]:
    """Send (method, path, body) requests from `threads` keep-alive connections;
    (seconds, statuses)."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    next_index = iter(range(len(requests)))
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        local: Counter[int] = Counter()
        while True:
            with lock:
                n = next(next_index, None)
            if n is None:
                break
            method, path, body = requests[n]
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            response.read()
            local[response.status] += 1
        conn.close()
        with lock:
            statuses.update(local)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - started, statuses


def single_requests(count: int) -> list[tuple[str, str, bytes]]:
    """One `PUT /orders/{number}` per order."""
    return [
        ("PUT", f"/api/v1/orders/B{n:08d}", json.dumps(order_body(n)).encode())
        for n in range(count)
    ]


def batch_requests(count: int, size: int) -> list[tuple[str, str, bytes]]:
    """`POST /orders/batch` with `size` orders each (numbers C…, so they are new orders)."""
    requests = []
    for start in range(0, count, size):
        orders = [
            {"number": f"C{n:08d}", **order_body(n)} for n in range(start, min(start + size, count))
        ]
        requests.append(("POST", "/api/v1/orders/batch", json.dumps({"orders": orders}).encode()))
    return requests


def floor_copy(database_url: str, count: int) -> float:
    """The same orders (one row each, with their JSON) into a bare table with COPY."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_orders_bare")
        conn.execute("CREATE UNLOGGED TABLE bench_orders_bare (number text, body jsonb)")
        started = time.perf_counter()
        with (
            conn.transaction(),
            conn.cursor() as cursor,
            cursor.copy("COPY bench_orders_bare FROM STDIN") as copy,
        ):
            for n in range(count):
                copy.write_row((f"B{n:08d}", json.dumps(order_body(n))))
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE bench_orders_bare")
    return seconds


def run(
    database_url: str, count: int, threads: int = 4, batch_size: int = BATCH_SIZE
) -> list[dict[str, Any]]:
    """Upsert `count` orders one per request, then in batches, each twice (new, then
    unchanged); one result per pass."""
    url = _fresh_database(database_url)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="kizuna-bench-api-") as tmp:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "DJANGO_SETTINGS_MODULE": "kizuna.settings",
            "KIZUNA_DATA_DIR": tmp,
            "KIZUNA_LOG_LEVEL": "WARNING",
            "ALLOWED_HOSTS": "127.0.0.1",
        }
        server: subprocess.Popen[bytes] | None = None
        try:
            _python(["-m", "kizuna", "migrate", "-v0"], env)
            secret = _python(["-c", _CREATE_KEY], env)
            server = subprocess.Popen(  # noqa: S603 - gunicorn from this venv, fixed arguments
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "kizuna.wsgi:application",
                    "--workers",
                    str(WORKERS),
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--timeout",
                    "300",
                    "--log-level",
                    "warning",
                ],
                env=env,
            )
            _wait_until_serving(port, server)
            results = []
            ways = [
                ("PUT 1件ずつ", 1, single_requests(count)),
                (f"POST batch {batch_size}件", batch_size, batch_requests(count, batch_size)),
            ]
            for way, size, requests in ways:
                for label in ("新規", "再送(変更なし)"):
                    cpu_before = _worker_cpu_seconds(server.pid)
                    seconds, statuses = _fire(port, secret, requests, threads)
                    cpu = _worker_cpu_seconds(server.pid) - cpu_before
                    results.append(
                        {
                            "way": way,
                            "pass": label,
                            "orders": count,
                            "orders_per_request": size,
                            "threads": threads,
                            "workers": WORKERS,
                            "seconds": seconds,
                            "orders_per_s": count / seconds,
                            "ratio_to_target": count / seconds / TARGET_PER_S,
                            # Independent of other load on the machine: what one order costs
                            # the app server, and so how many orders one free core could take.
                            "worker_cpu_ms_per_order": cpu / count * 1000,
                            "statuses": dict(sorted(statuses.items())),
                        }
                    )
            floor = floor_copy(url, count)
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            _drop_database(url)
    for result in results:
        result["floor_seconds"] = floor
        result["floor_orders_per_s"] = count / floor
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help="PostgreSQL URL")
    parser.add_argument("--count", type=int, default=5_000, help="orders to upsert")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help="orders per batch request"
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; gunicorn {WORKERS} workers; PostgreSQL")
    for result in run(args.database_url, args.count, args.threads, args.batch_size):
        print(
            f"API {result['way']:<16} {result['pass']:<10} {result['orders']:>7,} orders, "
            f"{result['threads']} client threads: {result['seconds']:6.1f} s = "
            f"{result['orders_per_s']:6,.0f} orders/s | target {TARGET_PER_S:.0f}/s: ratio "
            f"{result['ratio_to_target']:.2f} | COPY floor {result['floor_orders_per_s']:,.0f}/s "
            f"| statuses {result['statuses']}"
        )
        print(
            f"  app CPU {result['worker_cpu_ms_per_order']:.1f} ms/order "
            f"(≈ {1000 / result['worker_cpu_ms_per_order']:,.0f} orders/s per free core, "
            "PostgreSQL's own CPU not included)"
        )


if __name__ == "__main__":
    main()
