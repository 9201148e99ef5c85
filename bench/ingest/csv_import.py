"""Benchmark for CSV import: rows/s and peak memory of `kizuna import orders`, against a floor.

    python -m bench.ingest.csv_import                          # 100,000 order lines, SQLite
    python -m bench.ingest.csv_import --rows 100000 --rows 1000000
    python -m bench.ingest.csv_import --database-url postgres://postgres@127.0.0.1:5432/kizuna_bench

A synthetic EC-CUBE 受注CSV (CP932, one row per order line, 1–3 lines per order, repeat
customers) is imported into a fresh database by a child process, whose peak RSS is read from
`os.wait4` (and its anonymous memory, sampled from /proc, apart from SQLite's mmap of the
database file). The floor is the same file decoded, parsed and loaded into one bare table with a
plain `executemany` (SQLite) or `COPY` (PostgreSQL). Targets from the ingest issue, printed as
ratios: the import within 5x of the floor, and peak memory flat as the file grows. The
import's CPU time (user + system, from the same `wait4`) is printed too: unlike the wall time,
it hardly depends on what else the machine is running.

A second reference, "stored rows", says how much of the gap is the database's own work: every
row the import stored (customers, identities, orders, lines, shipments, timeline, audit,
duplicate proposals), bulk-loaded table by table into an empty migrated database with the same
indexes and constraints, in one transaction, with `executemany` / `COPY`. No parsing, no
matching, no reads: the least any importer writing Kizuna's tables could cost.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

TARGET_RATIO = 5.0
PASSES = ("初回取込", "再取込(変更なし)")

HEADER = [
    "注文ID", "注文番号", "会員ID", "お名前(姓)", "お名前(名)", "お名前(セイ)", "お名前(メイ)",
    "会社名", "郵便番号", "都道府県(ID)", "都道府県(名称)", "住所1", "住所2", "メールアドレス",
    "TEL", "性別(ID)", "性別(名称)", "誕生日", "小計", "値引き", "送料", "税金", "合計",
    "支払合計", "対応状況(ID)", "対応状況(名称)", "支払方法(名称)", "受注日", "注文詳細ID",
    "商品ID", "商品規格ID", "商品名", "商品コード", "価格", "個数", "税率", "明細区分(ID)",
    "明細区分(名称)", "配送業者(名称)", "発送日", "出荷伝票番号",
]  # fmt: skip
FAMILY = ["髙橋", "佐藤", "鈴木", "田中", "﨑山", "渡辺", "伊藤", "山本", "中村", "小林"]
FAMILY_KANA = ["ﾀｶﾊｼ", "サトウ", "スズキ", "タナカ", "サキヤマ", "ワタナベ", "イトウ", "ヤマモト", "ナカムラ", "コバヤシ"]  # fmt: skip
GIVEN = ["花子", "一郎", "由美", "健太", "さくら", "翔", "美咲", "大輔", "陽子", "蓮"]
GIVEN_KANA = ["ハナコ", "イチロウ", "ユミ", "ケンタ", "サクラ", "ショウ", "ミサキ", "ダイスケ", "ヨウコ", "レン"]  # fmt: skip
PRODUCTS = [(f"SK-{n:03d}", f"美容液①～{n}番～", 1000 + 180 * n) for n in range(40)]
PREFS = ["東京都", "大阪府", "神奈川県", "愛知県", "福岡県", "北海道"]


def generate(path: Path, rows: int, seed: int = 1) -> int:
    """Write `rows` order lines as EC-CUBE exports them; returns the number of orders."""
    rng = random.Random(seed)
    customers = max(rows // 4, 1)
    written = orders = 0
    with path.open("w", encoding="cp932", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(HEADER)
        while written < rows:
            orders += 1
            who = rng.randrange(customers)
            items = [rng.choice(PRODUCTS) for _ in range(min(rng.randint(1, 3), rows - written))]
            subtotal = sum(price + price // 10 for _c, _n, price in items)
            shipped = rng.random() < 0.6
            day = 1 + orders % 28
            for index, (code, name, price) in enumerate(items):
                f, g = who % 10, (who // 10) % 10
                writer.writerow(
                    [
                        orders, 100000 + orders, who + 1, FAMILY[f], GIVEN[g], FAMILY_KANA[f],
                        GIVEN_KANA[g], "", f"{100 + who % 800:03d}-{who % 10000:04d}",
                        "", PREFS[who % 6], f"千代田区{who % 9 + 1}-{who % 7 + 1}", "",
                        f"user{who}@example.jp", f"090-{who // 10000 % 10000:04d}-{who % 10000:04d}",
                        "", "", "", subtotal, 0, 550, 0, subtotal + 550, subtotal + 550,
                        5 if shipped else 1, "発送済み" if shipped else "新規受付",
                        "クレジットカード", f"2026-04-{day:02d} 10:{orders % 60:02d}:00",
                        f"{orders}{index}", 1, 1, name, code, price, 1, 10, 1, "商品",
                        "ヤマト運輸", f"2026-04-{day:02d} 18:00:00" if shipped else "",
                        f"{orders:012d}" if shipped else "",
                    ]
                )  # fmt: skip
                written += 1
    return orders


def _rows(path: Path) -> Iterator[list[str]]:
    with path.open(encoding="cp932", newline="") as source:
        reader = csv.reader(source)
        next(reader)
        yield from reader


def floor_sqlite(path: Path, directory: Path) -> float:
    """The same rows, decoded and parsed, into a bare SQLite table with executemany."""
    db = sqlite3.connect(directory / "floor.sqlite3")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"CREATE TABLE bare ({', '.join(f'c{i} TEXT' for i in range(len(HEADER)))})")
    placeholders = ", ".join("?" * len(HEADER))
    started = time.perf_counter()
    with db:
        db.executemany(f"INSERT INTO bare VALUES ({placeholders})", _rows(path))  # noqa: S608
    seconds = time.perf_counter() - started
    db.close()
    return seconds


def floor_postgres(path: Path, database_url: str) -> float:
    """The same rows, decoded and parsed, into a bare PostgreSQL table with COPY."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_bare")
        columns = ", ".join(f"c{i} text" for i in range(len(HEADER)))
        conn.execute(f"CREATE UNLOGGED TABLE bench_bare ({columns})")
        started = time.perf_counter()
        with (
            conn.transaction(),
            conn.cursor() as cursor,
            cursor.copy("COPY bench_bare FROM STDIN") as copy,
        ):
            for row in _rows(path):
                copy.write_row(row)
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE bench_bare")
    return seconds


def _new_tables(database: Any, empty: Any, tables: list[str]) -> dict[str, int]:
    """The tables the import filled and their row counts: rows in `database`, none in the
    freshly migrated `empty`."""
    count = 'SELECT count(*) FROM "{}"'
    filled = {table: database.execute(count.format(table)).fetchone()[0] for table in tables}
    return {
        table: rows
        for table, rows in filled.items()
        if rows and not empty.execute(count.format(table)).fetchone()[0]
    }


def stored_rows_sqlite(imported: Path, migrated: Path) -> tuple[float, int]:
    """(seconds, rows): every row the import stored, re-inserted into a copy of the freshly
    migrated database `migrated` (same indexes) with executemany, in one transaction."""
    source = sqlite3.connect(imported)
    target = sqlite3.connect(migrated)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
        target.execute(f"PRAGMA {pragma}")
    names = [
        name
        for (name,) in source.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    tables = {
        table: source.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()  # noqa: S608
        for table in _new_tables(source, target, names)
    }
    started = time.perf_counter()
    with target:
        for table, rows in tables.items():
            marks = ", ".join("?" * len(rows[0]))
            target.executemany(f'INSERT INTO "{table}" VALUES ({marks})', rows)  # noqa: S608
    seconds = time.perf_counter() - started
    source.close()
    target.close()
    return seconds, sum(len(rows) for rows in tables.values())


def stored_rows_postgres(imported_url: str, migrated_url: str) -> tuple[float, int]:
    """(seconds, rows): as stored_rows_sqlite, with COPY into the migrated database."""
    import psycopg

    with (
        psycopg.connect(imported_url, autocommit=True) as source,
        psycopg.connect(migrated_url) as target,
    ):
        names = [
            name
            for (name,) in source.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        ]
        tables: dict[str, list[bytes]] = {}
        filled = _new_tables(source, target, names)
        for table in filled:
            with source.cursor().copy(f'COPY "{table}" TO STDOUT') as out:
                tables[table] = [bytes(chunk) for chunk in out]
        target.rollback()  # the counts above opened a transaction: start the timed one clean
        started = time.perf_counter()
        with target.transaction(), target.cursor() as cursor:
            for table, chunks in tables.items():
                with cursor.copy(f'COPY "{table}" FROM STDIN') as copy:
                    for chunk in chunks:
                        copy.write(chunk)
        seconds = time.perf_counter() - started
    return seconds, sum(filled.values())


@dataclass
class ChildRun:
    seconds: float
    peak_rss_mib: float  # VmHWM: everything resident, including SQLite's mmap of its file
    peak_heap_mib: float  # the most RssAnon seen: the process's own memory
    stdout: str
    cpu_seconds: float  # user + system: what the import costs, whatever else the machine runs


def _sample_heap(pid: int, peak: list[int]) -> None:
    """Poll /proc for anonymous RSS: SQLite maps its database file (mmap_size in settings),
    and those file pages count in the total RSS although they are cache, not our memory."""
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            text = status.read_text()
        except (FileNotFoundError, ProcessLookupError):
            return
        for line in text.splitlines():
            if line.startswith("RssAnon:"):
                peak[0] = max(peak[0], int(line.split()[1]))
        if "State:\tZ" in text:
            return
        time.sleep(0.2)


def _child(args: list[str], env: dict[str, str]) -> ChildRun:
    """Run `kizuna …` in a child and measure that child alone (os.wait4)."""
    started = time.perf_counter()
    heap = [0]
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(  # noqa: S603 - our own console script, fixed arguments
            [sys.executable, "-m", "kizuna", *args], env=env, stdout=out
        )
        sampler = threading.Thread(target=_sample_heap, args=(process.pid, heap), daemon=True)
        sampler.start()
        _pid, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        sampler.join(timeout=1)
        out.seek(0)
        text = out.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"kizuna {args[0]} exited {code}: {text[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return ChildRun(seconds, usage.ru_maxrss / 1024, heap[0] / 1024, text, cpu)


def _fresh_postgres(database_url: str, suffix: str = "ingest") -> tuple[str, str]:
    """A new empty database next to the one named in the URL; (its URL, its name)."""
    import psycopg

    parts = urlsplit(database_url)
    name = f"{parts.path.lstrip('/') or 'kizuna'}_{suffix}_{os.getpid()}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}")), name


def _drop_postgres(database_url: str, name: str) -> None:
    import psycopg

    admin = urlunsplit(urlsplit(database_url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(rows: int, database_url: str | None) -> list[dict[str, Any]]:
    """Import `rows` synthetic order lines into a fresh database; one result per pass."""
    with tempfile.TemporaryDirectory(prefix="kizuna-bench-ingest-") as tmp:
        directory = Path(tmp)
        csv_path = directory / "orders.csv"
        orders = generate(csv_path, rows)
        env = {**os.environ, "KIZUNA_DATA_DIR": str(directory), "KIZUNA_LOG_LEVEL": "WARNING"}
        env.pop("DATABASE_URL", None)
        dropped: list[str] = []
        migrated_url = ""
        if database_url:
            url, name = _fresh_postgres(database_url)
            env["DATABASE_URL"] = url
            dropped.append(name)
            # A second empty database, migrated, for the "stored rows" reference.
            migrated_url, name = _fresh_postgres(database_url, suffix="migrated")
            dropped.append(name)
        try:
            _child(["migrate", "-v0"], env)
            if database_url:
                _child(["migrate", "-v0"], {**env, "DATABASE_URL": migrated_url})
            else:
                shutil.copyfile(directory / "kizuna.sqlite3", directory / "migrated.sqlite3")
            results: list[dict[str, Any]] = []
            for label in PASSES:
                child = _child(["import", "orders", str(csv_path), "--json"], env)
                summary = json.loads(child.stdout)
                results.append(
                    {
                        "pass": label,
                        "rows": rows,
                        "orders": orders,
                        "database": "postgresql" if database_url else "sqlite",
                        "seconds": child.seconds,
                        "rows_per_s": rows / child.seconds,
                        "cpu_seconds": child.cpu_seconds,
                        "peak_rss_mib": child.peak_rss_mib,
                        "peak_heap_mib": child.peak_heap_mib,
                        "file_mib": csv_path.stat().st_size / (1024 * 1024),
                        "summary": {
                            k: summary[k] for k in ("orders", "customers", "rows_rejected")
                        },
                    }
                )
            floor = (
                floor_postgres(csv_path, env["DATABASE_URL"])
                if database_url
                else floor_sqlite(csv_path, directory)
            )
            stored_seconds, stored_rows = (
                stored_rows_postgres(env["DATABASE_URL"], migrated_url)
                if database_url
                else stored_rows_sqlite(
                    directory / "kizuna.sqlite3", directory / "migrated.sqlite3"
                )
            )
        finally:
            for name in dropped:
                _drop_postgres(database_url or "", name)
    for result in results:
        result["floor_seconds"] = floor
        result["floor_rows_per_s"] = rows / floor
        result["ratio_to_floor"] = result["seconds"] / floor
        result["stored_rows"] = stored_rows
        result["stored_rows_seconds"] = stored_seconds
        result["stored_rows_ratio_to_floor"] = stored_seconds / floor
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="order lines (repeatable)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default SQLite)")
    args = parser.parse_args()
    for rows in args.rows or [100_000]:
        for result in run(rows, args.database_url):
            ratio = result["ratio_to_floor"] / TARGET_RATIO
            print(
                f"{result['database']:10} {result['pass']:<12} {result['rows']:>9,} rows "
                f"({result['orders']:,} orders, {result['file_mib']:.0f} MiB): "
                f"{result['seconds']:8.1f} s = {result['rows_per_s']:8,.0f} rows/s | "
                f"floor {result['floor_seconds']:.2f} s = {result['floor_rows_per_s']:,.0f} rows/s | "
                f"x{result['ratio_to_floor']:.0f} of floor (target x{TARGET_RATIO:.0f}: "
                f"ratio {ratio:.1f}) | peak RSS {result['peak_rss_mib']:.0f} MiB "
                f"(heap {result['peak_heap_mib']:.0f} MiB) | import CPU {result['cpu_seconds']:.0f} s"
            )
            if result["pass"] == PASSES[0]:  # the same reference for both passes
                print(
                    f"  stored rows: the {result['stored_rows']:,} rows this import stored, "
                    f"bulk-loaded into an empty migrated database: "
                    f"{result['stored_rows_seconds']:.2f} s = "
                    f"x{result['stored_rows_ratio_to_floor']:.1f} of the floor"
                )
            print(f"  {json.dumps(result['summary'], ensure_ascii=False)}")


if __name__ == "__main__":
    main()
