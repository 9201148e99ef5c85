"""The scenario scheduler on a demo database: one tick of all scenarios, and filling the outbox
with 100,000 messages, each next to its floor.

    python -m bench.automation.tick                         # 100,000-customer demo, SQLite
    python -m bench.automation.tick --customers 1000000     # the issue's size (builds for long)
    python -m bench.automation.tick --data-dir /tmp/demo    # reuse a built SQLite demo
    python -m bench.automation.tick --data-dir /tmp/demo1m --as-of 2026-11-24  # its last day
    python -m bench.automation.tick --database-url postgres://postgres@127.0.0.1:5432/kizuna_bench_tick

The demo is built with `kizuna demo --no-serve` (and its scenarios seeded when the build did
not) into a temporary KIZUNA_DATA_DIR, or into the PostgreSQL database of the URL (created if
missing, dropped afterwards unless --keep). Then, at 10:00 JST on the demo's last day:

1. tick, first: the catch-up tick after the demo's history (enrolls the day's events and
   sends the steps that came due since midnight);
2. tick, steady: the next minute's tick — what every minute costs (target: under 10 s).
   Floor: the same SELECT statements the tick issued (and the SELECT of each INSERT … SELECT),
   replayed directly on a database cursor (recorded with Django's execute_wrapper), i.e. the
   database's reading without the engine;
3. outbox fill: a "segment entered" scenario over ~100,000 customers with a step due at once;
   one tick enrolls them, renders each message and writes the outbox (target: ≥ 20,000
   messages/s). Floor: a plain executemany INSERT of as many outbox rows (rolled back).

Each measure also reports the tick's CPU time (`cpu_seconds`): on a shared machine the wall
time includes waiting for a core, the CPU time does not. On SQLite the write-ahead log is
copied back into the database on a thread while the tick runs (core.sqlite_wal);
`write_back_after_seconds` is how long that copy went on after the tick had returned.

`run(database_url)` returns one dict per measurement; the command prints them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kizuna.core.bulk import STAGE_TABLE

# The demo's last day: the ticks run on it. A reused demo built with another --as-of needs
# that date given (--as-of), or its scenarios have nothing due.
AS_OF = dt.date(2026, 11, 1)
TICK_TARGET_S = 10.0
FILL_TARGET_PER_S = 20_000.0
FILL_MESSAGES = 100_000


def _build(customers: int, env: dict[str, str], as_of: dt.date) -> float:
    started = time.perf_counter()
    subprocess.run(  # noqa: S603
        [sys.executable, "-m", "kizuna", "demo", "--no-serve", "--customers", str(customers),
         "--as-of", as_of.isoformat()],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def _ensure_database(url: str) -> bool:
    """Create the PostgreSQL database of `url` when missing; True when created."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as con:
        exists = con.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            con.execute(f'CREATE DATABASE "{name}"')
            return True
    return False


def _drop_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


class _Recorder:
    """Records the read statements Django sends, to replay them without the engine."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, Any]] = []
        self.seconds = 0.0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started
            head = sql.lstrip()[:6].upper()
            if not many and head in ("SELECT", "WITH S"):
                self.reads.append((sql, params))
            elif not many and head == "INSERT" and " SELECT " in sql and STAGE_TABLE not in sql:
                # INSERT … SELECT (enrolling): its SELECT is the read the database does. Not
                # the outbox's move from core.bulk's temporary table (PostgreSQL): a write,
                # whose table is gone by the replay.
                select = sql[sql.index(" SELECT ") + 1 :].removesuffix(" ON CONFLICT DO NOTHING")
                self.reads.append((select, params))


def _replay(reads: list[tuple[str, Any]]) -> float:
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        for sql, params in reads:
            cursor.execute(sql, params)
            cursor.fetchall()
    return time.perf_counter() - started


def _measure_ticks(as_of: dt.date) -> list[dict[str, Any]]:
    from django.db import connection

    from kizuna.campaigns.automation.clock import jst_at
    from kizuna.campaigns.automation.models import Scenario, ScenarioStatus
    from kizuna.campaigns.automation.scheduler import tick

    now = jst_at(as_of, dt.time(10))
    active = Scenario.objects.filter(status=ScenarioStatus.ACTIVE).count()
    results = []
    for label, moment in (("first", now), ("steady", now + dt.timedelta(minutes=1))):
        recorder = _Recorder()
        cpu = time.process_time()
        with connection.execute_wrapper(recorder):
            report = tick(moment)
        cpu = time.process_time() - cpu
        write_back = _write_back_after()
        floor = _replay(recorder.reads)
        results.append(
            {
                "measure": f"tick ({label})",
                "scenarios": active,
                "seconds": round(report.seconds, 3),
                "cpu_seconds": round(cpu, 3),
                "floor_seconds": round(floor, 3),
                "ratio_to_floor": round(report.seconds / floor, 2) if floor else None,
                "target_seconds": TICK_TARGET_S,
                "meets_target": report.seconds < TICK_TARGET_S,
                "enrolled": report.total("enrolled") + report.total("holdout"),
                "queued": report.total("queued"),
                "statements_replayed": len(recorder.reads),
                "write_back_after_seconds": write_back,
            }
        )
    return results


def _fill_segment(count: int) -> dict[str, Any]:
    """Rules selecting about `count` customers: registered up to the count-th registration."""
    from kizuna.customers.models import Customer

    registered = (
        Customer.objects.order_by("registered_at", "pk")
        .values_list("registered_at", flat=True)[count - 1 : count]
        .first()
    )
    last = (registered or dt.datetime.now(dt.UTC)).date()
    return {
        "op": "and",
        "rules": [
            {
                "field": "registered",
                "operator": "between_dates",
                "value": ["2000-01-01", last.isoformat()],
            }
        ],
    }


def _measure_fill(as_of: dt.date) -> dict[str, Any]:
    from kizuna.campaigns.automation.clock import jst_at
    from kizuna.campaigns.automation.models import Scenario, ScenarioStatus
    from kizuna.campaigns.automation.scheduler import tick
    from kizuna.campaigns.automation.segments import segment_save
    from kizuna.campaigns.automation.services import (
        scenario_activate,
        scenario_save,
        template_save,
    )
    from kizuna.campaigns.models import OutboxMessage
    from kizuna.core.audit import Actor

    actor = Actor.system("bench")
    now = jst_at(as_of, dt.time(10, 5))
    # Only the fill scenario runs in this tick: the others were measured above.
    Scenario.objects.filter(status=ScenarioStatus.ACTIVE).update(status=ScenarioStatus.PAUSED)
    segment = segment_save(
        segment=None, key="bench-fill", name="bench", description="",
        rules=_fill_segment(FILL_MESSAGES), acting_user=actor,
    )  # fmt: skip
    template = template_save(
        template=None, key="bench-fill", name="bench", subject="{{ name }} 様へ新商品のご案内",
        text="{{ name }} 様\nいつもありがとうございます。{{ last_product }}をお使いの方へのご案内です。",
        acting_user=actor,
    )  # fmt: skip
    scenario = scenario_save(
        scenario=None,
        spec={
            "key": "bench-fill", "name": "bench", "holdout_percent": 0,
            "trigger": {"kind": "segment_entered", "segment": segment.key, "include_existing": True},
            "steps": [{"key": "now", "anchor": "trigger", "channel": "email", "template": template.key}],
        },
        acting_user=actor,
    )  # fmt: skip
    scenario_activate(scenario=scenario, acting_user=actor, at=now - dt.timedelta(minutes=1))
    before = OutboxMessage.objects.count()
    cpu = time.process_time()
    report = tick(now)
    cpu = time.process_time() - cpu
    write_back = _write_back_after()
    filled = OutboxMessage.objects.count() - before
    floor = _bare_insert(filled)
    seconds = report.seconds
    return {
        "measure": "outbox fill",
        "messages": filled,
        "seconds": round(seconds, 3),
        "messages_per_s": round(filled / seconds) if seconds else None,
        # This process's CPU time (SQLite's work included): on a shared machine the wall
        # time also counts the time spent waiting for a core.
        "cpu_seconds": round(cpu, 3),
        "messages_per_cpu_s": round(filled / cpu) if cpu else None,
        "floor_seconds": round(floor, 3),
        "floor_messages_per_s": round(filled / floor) if floor else None,
        "ratio_to_floor": round(seconds / floor, 2) if floor else None,
        "target_messages_per_s": FILL_TARGET_PER_S,
        "meets_target": bool(seconds) and filled / seconds >= FILL_TARGET_PER_S,
        "write_back_after_seconds": write_back,
    }


def _write_back_after() -> float:
    """How long the SQLite log's write-back went on after the tick returned (core.sqlite_wal:
    it runs on a thread, mostly while the tick works); waited for, so the next measure starts
    with it done. 0 on PostgreSQL."""
    from kizuna.core.sqlite_wal import wait_for_write_back

    started = time.perf_counter()
    wait_for_write_back()
    return round(time.perf_counter() - started, 3)


def _bare_insert(count: int) -> float:
    """A plain executemany INSERT of `count` outbox rows (every column given), timed and
    rolled back: the database's own cost of storing that many messages."""
    from django.db import connection, transaction

    from kizuna.campaigns.models import OutboxMessage
    from kizuna.customers.models import Customer

    moment: Any = dt.datetime(2026, 11, 1, 1, tzinfo=dt.UTC)
    if connection.vendor == "sqlite":
        moment = "2026-11-01 01:00:00"
    given = {
        "customer_id": Customer.objects.values_list("pk", flat=True).first(),
        "channel": "email",
        "purpose": "marketing",
        "content": json.dumps({"subject": "件名", "text": "本文" * 40}, ensure_ascii=False),
        "send_after": moment,
        "next_attempt_at": moment,
        "status": "pending",
        "created_at": moment,
    }
    fields = [f for f in OutboxMessage._meta.concrete_fields if not f.primary_key]
    template = [given.get(f.attname, f.get_default()) for f in fields]
    key_at = [f.attname for f in fields].index("dedupe_key")
    rows = []
    for i in range(count):
        row = list(template)
        row[key_at] = f"bench-floor-{i}"
        rows.append(row)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {OutboxMessage._meta.db_table} ({columns}) VALUES ({marks})"  # noqa: S608
    with transaction.atomic():
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.executemany(sql, rows)
        seconds = time.perf_counter() - started
        transaction.set_rollback(True)
    return seconds


def run(database_url: str | None, *, customers: int = 100_000, data_dir: str | None = None,
        keep: bool = False, as_of: dt.date = AS_OF) -> list[dict[str, Any]]:  # fmt: skip
    """Build (or reuse) a demo database and measure; one dict per measurement."""
    env = dict(os.environ)
    created = False
    temp: tempfile.TemporaryDirectory[str] | None = None
    if database_url:
        env["DATABASE_URL"] = database_url
        created = _ensure_database(database_url)
        env.setdefault("KIZUNA_DATA_DIR", tempfile.mkdtemp(prefix="kizuna-bench-"))
    else:
        env.pop("DATABASE_URL", None)
        if data_dir is None:
            temp = tempfile.TemporaryDirectory(prefix="kizuna-bench-tick-")
            data_dir = temp.name
        env["KIZUNA_DATA_DIR"] = data_dir
    results: list[dict[str, Any]] = []
    try:
        reuse = data_dir is not None and Path(data_dir, "kizuna.sqlite3").exists() and temp is None
        if database_url and not created:
            reuse = True
        build_seconds = None if reuse else _build(customers, env, as_of)
        os.environ.update({k: env[k] for k in ("KIZUNA_DATA_DIR", "DATABASE_URL") if k in env})
        if not database_url:
            os.environ.pop("DATABASE_URL", None)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kizuna.settings")
        import django

        django.setup()
        from kizuna.campaigns.automation.models import Scenario
        from kizuna.customers.models import Customer
        from kizuna.demo.scenarios import RESPONSE, seed_demo_scenarios

        seeded_here = None
        if not Scenario.objects.filter(key__in=RESPONSE).exists():
            started = time.perf_counter()
            seed_demo_scenarios(as_of=as_of, seed=42)
            seeded_here = round(time.perf_counter() - started, 2)
        size = Customer.objects.count()
        results.append(
            {"measure": "database", "customers": size, "build_seconds": build_seconds,
             "seed_scenarios_seconds": seeded_here,
             "engine": "postgresql" if database_url else "sqlite"}
        )  # fmt: skip
        results.extend(_measure_ticks(as_of))
        results.append(_measure_fill(as_of))
    finally:
        if temp is not None:
            temp.cleanup()
        if database_url and created and not keep:
            from django.db import connections

            connections.close_all()
            _drop_database(database_url)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="Kizuna scenario scheduler benchmark")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--data-dir", default=None, help="reuse (or build into) this SQLite data dir"
    )
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    parser.add_argument(
        "--as-of",
        type=dt.date.fromisoformat,
        default=AS_OF,
        help="the demo's last day (kizuna demo --as-of); the ticks run on it",
    )
    args = parser.parse_args()
    for row in run(
        args.database_url,
        customers=args.customers,
        data_dir=args.data_dir,
        keep=args.keep,
        as_of=args.as_of,
    ):
        print(json.dumps(row, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
