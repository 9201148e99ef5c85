"""Test helpers for delivery: a real SMTP server on 127.0.0.1, stub HTTP servers for LINE and
SMS, customers with consent, and running `kizuna worker` as a separate process against the
test database."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from django.conf import settings
from django.db import connection
from django.utils import timezone

from kizuna.campaigns.models import DeliverySettings
from kizuna.campaigns.outbox import Purpose, outbox_enqueue
from kizuna.core.audit import Actor
from kizuna.customers.models import ConsentChannel, Customer, IdentityKind
from tests.factories import add_identity, grant_consent, make_customer

STAFF = Actor.system("test")
REPO = Path(__file__).resolve().parent.parent
SENDER_ENV = {
    "KIZUNA_SENDER_NAME": "株式会社きずな化粧品",
    "KIZUNA_SENDER_ADDRESS": "東京都渋谷区渋谷2-1-1 きずなビル5F",
    "KIZUNA_SENDER_CONTACT": "0120-000-000(平日10時〜17時) support@kizuna.example",
    "KIZUNA_MAIL_FROM": "きずな化粧品 <info@kizuna.example>",
    "KIZUNA_PUBLIC_URL": "https://crm.kizuna.example",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Received:
    rcpt: list[str]
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


@dataclass
class Handler:
    """Stores what arrives. Can refuse recipients with 550, and can hold the n-th message
    (without storing it) until the test says so, to stop a worker mid-batch."""

    received: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    hold_at: int | None = None
    # What a held message gets once released: "451" (not stored, as if the connection died
    # first) or "250" (stored, a slow but successful send).
    hold_answer: str = "451"
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    data_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 user unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        with self.lock:
            self.data_count += 1
            count = self.data_count
        if self.hold_at is not None and count == self.hold_at:
            self.holding.set()
            # Blocks this server's loop: the client waits for "250" like a slow server.
            self.release.wait(30)
            if self.hold_answer == "451":
                return "451 4.3.0 try again later"
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.received.append(Received(rcpt=list(envelope.rcpt_tos), message=parsed))
        return "250 Message accepted for delivery"

    def ids(self) -> list[str]:
        with self.lock:
            return [item.message_id for item in self.received]


class SmtpServer:
    def __init__(self) -> None:
        self.handler = Handler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.handler.release.set()
        self.controller.stop()


@dataclass
class StubHttp:
    """A local HTTP server that records JSON requests and answers with queued statuses."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> StubHttp:
        stub = self

        class Handle(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                stub.requests.append(
                    {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                )
                status = stub.statuses.pop(0) if stub.statuses else 200
                payload = b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


def consenting_customer(
    *,
    email_address: str | None = "hanako@example.jp",
    channels: tuple[ConsentChannel, ...] = (ConsentChannel.EMAIL,),
    **profile: Any,
) -> Customer:
    customer = make_customer(**profile)
    if email_address:
        add_identity(customer, IdentityKind.EMAIL, email_address)
    for channel in channels:
        grant_consent(customer, channel=channel)
    return customer


def mail(
    customer: Customer,
    key: str,
    *,
    purpose: Purpose = Purpose.MARKETING,
    channel: str = "email",
    content: dict[str, str] | None = None,
    **extra: Any,
) -> Any:
    return outbox_enqueue(
        customer=customer,
        channel=channel,
        purpose=purpose,
        dedupe_key=key,
        content=content
        or {
            "subject": f"{customer.family_name}様へのお知らせ {key}",
            "text": f"{customer.family_name}様\nいつもありがとうございます。",
            "html": f"<html><body><p>{customer.family_name}様</p></body></html>",
        },
        send_after=extra.pop("send_after", timezone.now()),
        **extra,
    )


def open_all_day() -> None:
    """No quiet hours, for tests about something else that run at whatever hour it is."""
    DeliverySettings.objects.update_or_create(
        pk=1, defaults={"quiet_start": dt.time(0), "quiet_end": dt.time(0)}
    )


def channel_shop(settings: Any) -> None:
    """A shop whose marketing may go out on any channel at any hour: no quiet hours and a
    sender block (the channel tests' setting, for tests about something else)."""
    open_all_day()
    settings.KIZUNA_SENDER_NAME = "きずな化粧品"
    settings.KIZUNA_SENDER_ADDRESS = "東京都渋谷区渋谷2-1-1"
    settings.KIZUNA_SENDER_CONTACT = "0120-000-000"


def database_url() -> str:
    """The test database as a URL a child process can open (it must be a file or a server)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{db['NAME']}"


def worker_env(smtp_port: int, **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SENDER_ENV)
    env.update(
        {
            "DATABASE_URL": database_url(),
            "SECRET_KEY": settings.SECRET_KEY,
            "KIZUNA_SMTP_HOST": "127.0.0.1",
            "KIZUNA_SMTP_PORT": str(smtp_port),
            "KIZUNA_LOG_LEVEL": "WARNING",
        }
    )
    env.update(overrides)
    return env


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own console script
        [sys.executable, "-m", "kizuna", "worker", "--no-scheduler", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_worker(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    process = start_worker(env, "--once", *args)
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err.decode()
    return out.decode() + err.decode()


def wait_all(processes: list[subprocess.Popen[bytes]], timeout: float = 120) -> Iterator[str]:
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        assert process.returncode == 0, err.decode()
        yield out.decode() + err.decode()
