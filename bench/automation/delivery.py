"""Delivery throughput: `kizuna worker` sending marketing e-mail to a local SMTP server, with 1
and 2 worker processes, next to its floor — a bare `smtplib` loop sending the same rendered
messages over one connection to the same server.

    python -m bench.automation.delivery                      # 5,000 messages, SQLite
    python -m bench.automation.delivery --messages 20000
    python -m bench.automation.delivery --database-url postgres://postgres@127.0.0.1:5432/kizuna_bench_delivery

The SMTP server is aiosmtpd in its own process (it only counts what it accepts). Each worker
run starts from the same queue (every message pending) and is timed from process start to
exit, Django start-up included; `steady` is the rate between the first and last `sent_at`.
Every run is checked: the server received exactly `messages`, and every row is `sent`. The
floor is measured again right before each worker run, so a ratio compares runs that saw the
same machine load. Each line also gives the CPU time per mail (the floor's client; the
workers' processes, start-up included, with SQLite's work but not PostgreSQL's server) and the
1-minute load average when the run ended: on a shared machine the wall times follow the load,
the CPU times much less.
Target (issue 5, part 10): delivery ≥ 50% of the bare smtplib rate.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

TARGET_RATIO = 0.5
SENDER = {
    "KIZUNA_SENDER_NAME": "株式会社きずな化粧品",
    "KIZUNA_SENDER_ADDRESS": "東京都渋谷区渋谷2-1-1 きずなビル5F",
    "KIZUNA_SENDER_CONTACT": "0120-000-000 support@kizuna.example",
    "KIZUNA_MAIL_FROM": "きずな化粧品 <info@kizuna.example>",
    "KIZUNA_PUBLIC_URL": "https://crm.kizuna.example",
}

_SEED = """
import sys, datetime as dt
import django
django.setup()
from django.utils import timezone
from kizuna.campaigns.models import DeliverySettings
from kizuna.campaigns.outbox import OutboxRow, Purpose, outbox_enqueue_many
from kizuna.customers.models import Consent, Customer, Identity
n = int(sys.argv[1])
now = timezone.now()
customers = Customer.objects.bulk_create(
    [Customer(family_name="山田", given_name=f"花子{i}", family_kana="ヤマダ", given_kana="ハナコ",
              registered_at=now, name_key=f"山田花子{i}", kana_key="ヤマダハナコ")
     for i in range(n)], batch_size=2000)
Identity.objects.bulk_create(
    [Identity(customer=c, kind="email", value=f"user{i}@example.jp", display_value=f"user{i}@example.jp")
     for i, c in enumerate(customers)], batch_size=2000)
Consent.objects.bulk_create(
    [Consent(customer=c, channel="email", granted=True, granted_at=now, method="web_form",
             source_form="会員登録フォーム", wording_version="2026-04") for c in customers],
    batch_size=2000)
DeliverySettings.objects.update_or_create(
    pk=1, defaults={"quiet_start": dt.time(0), "quiet_end": dt.time(0), "cap_messages": 50})
html = "<html><body>\\n" + "<p>いつもご愛顧いただきありがとうございます。新しい美容液のご案内です。</p>\\n" * 20 + "</body></html>\\n"
text = "いつもご愛顧いただきありがとうございます。新しい美容液のご案内です。\\n" * 20
outbox_enqueue_many(
    OutboxRow(customer_id=c.pk, channel="email", purpose=Purpose.MARKETING,
              dedupe_key=f"bench-{c.pk}", content={"subject": "新商品のご案内", "text": text, "html": html},
              send_after=now)
    for c in customers)
"""

_RENDER = """
import sys
import django
django.setup()
from kizuna.campaigns.channels import Envelope
from django.conf import settings
from kizuna.campaigns.channels.email.transport import compose, mime_bytes
from kizuna.campaigns.models import DeliverySettings, OutboxMessage
from kizuna.campaigns.sender import current_sender
from kizuna.campaigns.unsubscribe import make_token
sender = current_sender(DeliverySettings.load())
with open(sys.argv[1], "wb") as out:
    for m in OutboxMessage.objects.select_related("customer").order_by("id"):
        address = m.customer.identities.get(kind="email").value
        composed = compose(Envelope(message=m, customer=m.customer, channel="email",
            address=address, content=m.content, marketing=True,
            unsubscribe_token=make_token(customer_id=m.customer_id, channel="email"), sender=sender))
        _, data = mime_bytes(composed, settings.DEFAULT_FROM_EMAIL)
        head = f"{address}\\t{len(data)}\\n".encode()
        out.write(head + data)
"""

_RESET = """
import django
django.setup()
from kizuna.campaigns.models import OutboxMessage
OutboxMessage.objects.update(status="pending", sent_at=None, claimed_by="", lease_until=None,
                             cap_counted_at=None, attempts=0, message_id="")
"""

_CHECK = """
import django
django.setup()
from django.db.models import Max, Min
from kizuna.campaigns.models import OutboxMessage
sent = OutboxMessage.objects.filter(status="sent")
span = sent.aggregate(first=Min("sent_at"), last=Max("sent_at"))
seconds = (span["last"] - span["first"]).total_seconds() if span["first"] else 0
print(sent.count(), OutboxMessage.objects.count(), seconds)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _sink(port: int, received: Synchronized[int], ready: Any, stop: Any) -> None:
    """The SMTP server process: accept and count, nothing else."""
    from aiosmtpd.controller import Controller

    class Count:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            with received.get_lock():
                received.value += 1
            return "250 OK"

    controller = Controller(Count(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


def _python(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(  # noqa: S603 - our own interpreter and package, fixed arguments
        [sys.executable, *args], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def _fresh_postgres(database_url: str) -> str:
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/") or "kizuna_bench_delivery"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def _drop_postgres(database_url: str) -> None:
    import psycopg

    parts = urlsplit(database_url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


def _rendered(path: Path) -> list[tuple[str, bytes]]:
    messages = []
    raw = path.read_bytes()
    position = 0
    while position < len(raw):
        end = raw.index(b"\n", position)
        address, size = raw[position:end].decode().split("\t")
        start = end + 1
        messages.append((address, raw[start : start + int(size)]))
        position = start + int(size)
    return messages


def _cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def floor_smtplib(port: int, messages: list[tuple[str, bytes]]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one smtplib connection to send every
    message."""
    started, cpu = time.perf_counter(), _cpu_seconds()
    with smtplib.SMTP("127.0.0.1", port) as client:
        for address, data in messages:
            client.sendmail("info@kizuna.example", [address], data)
    return time.perf_counter() - started, _cpu_seconds() - cpu


def _workers(env: dict[str, str], count: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the worker processes, start-up included)."""
    # The children's CPU counts every child waited for; only the workers end in between.
    started, cpu = time.perf_counter(), _cpu_seconds(resource.RUSAGE_CHILDREN)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "kizuna", "worker", "--once", "--no-tasks", "--no-scheduler"],
            env=env,
        )
        for _ in range(count)
    ]
    for process in processes:
        if process.wait(timeout=3600) != 0:
            raise RuntimeError("a worker failed")
    return time.perf_counter() - started, _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu


def _wait_for(received: Synchronized[int], expected: int) -> None:
    deadline = time.monotonic() + 30
    while received.value < expected and time.monotonic() < deadline:
        time.sleep(0.05)


def run(messages: int, database_url: str | None = None) -> list[dict[str, Any]]:
    """Deliver `messages` marketing mails with 1 and 2 workers; results with the floor."""
    context = multiprocessing.get_context("spawn")
    received: Synchronized[int] = context.Value("i", 0)
    ready, stop = context.Event(), context.Event()
    port = _free_port()
    sink = context.Process(target=_sink, args=(port, received, ready, stop), daemon=True)
    url = _fresh_postgres(database_url) if database_url else None
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kizuna-bench-delivery-") as tmp:
        env = {
            **os.environ,
            **SENDER,
            "DJANGO_SETTINGS_MODULE": "kizuna.settings",
            "DATABASE_URL": url or f"sqlite:///{tmp}/bench.sqlite3",
            "KIZUNA_DATA_DIR": tmp,
            "KIZUNA_LOG_LEVEL": "WARNING",
            "KIZUNA_SMTP_HOST": "127.0.0.1",
            "KIZUNA_SMTP_PORT": str(port),
        }
        database = "PostgreSQL" if url else "SQLite"
        try:
            sink.start()
            if not ready.wait(30):
                raise RuntimeError("the SMTP server did not start")
            _python(["-m", "kizuna", "migrate", "-v0"], env)
            _python(["-c", _SEED, str(messages)], env)
            rendered_path = Path(tmp) / "rendered.bin"
            _python(["-c", _RENDER, str(rendered_path)], env)
            rendered = _rendered(rendered_path)
            for workers in (1, 2):
                # The floor is measured right before each run, so both see the same machine
                # load (the machine may be shared).
                with received.get_lock():
                    received.value = 0
                floor, floor_cpu = floor_smtplib(port, rendered)
                _wait_for(received, messages)
                if received.value != messages:
                    raise RuntimeError(f"floor: server got {received.value} of {messages}")
                floor_rate = messages / floor
                results.append(
                    {
                        "case": "bare smtplib loop (floor)",
                        "database": "-",
                        "messages": messages,
                        "seconds": floor,
                        "per_s": floor_rate,
                        "steady_per_s": floor_rate,
                        "ratio_to_floor": 1.0,
                        "cpu_ms_per_message": floor_cpu / messages * 1000,
                        "load": os.getloadavg()[0],
                    }
                )
                _python(["-c", _RESET], env)
                with received.get_lock():
                    received.value = 0
                seconds, cpu = _workers(env, workers)
                _wait_for(received, messages)
                sent, total, span = _python(["-c", _CHECK], env).split()
                if received.value != messages or int(sent) != messages or int(total) != messages:
                    raise RuntimeError(
                        f"{workers} workers: server got {received.value}, {sent} rows sent "
                        f"of {messages}"
                    )
                rate = messages / seconds
                results.append(
                    {
                        "case": f"kizuna worker ×{workers}",
                        "database": database,
                        "messages": messages,
                        "seconds": seconds,
                        "per_s": rate,
                        "steady_per_s": messages / float(span) if float(span) else rate,
                        "ratio_to_floor": rate / floor_rate,
                        "cpu_ms_per_message": cpu / messages * 1000,
                        "load": os.getloadavg()[0],
                    }
                )
        finally:
            stop.set()
            sink.join(timeout=30)
            if url:
                _drop_postgres(url)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: SQLite)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; aiosmtpd in its own process on 127.0.0.1")
    for result in run(args.messages, args.database_url):
        print(
            f"{result['case']:<28} {result['database']:<10} {result['messages']:>7,} mails: "
            f"{result['seconds']:7.2f} s = {result['per_s']:7,.0f}/s "
            f"(steady {result['steady_per_s']:7,.0f}/s) | ratio to smtplib floor "
            f"{result['ratio_to_floor']:.2f} (target ≥ {TARGET_RATIO:.2f}) | CPU "
            f"{result['cpu_ms_per_message']:.3f} ms/mail | load {result['load']:.1f}"
        )


if __name__ == "__main__":
    # Guard for the spawn start method: the SMTP process re-imports this module.
    threading.current_thread().name = "bench"
    main()
