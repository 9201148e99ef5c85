"""Concurrent deliveries and retries, with real threads and one database connection each.

RELIABILITY I2: one webhook event delivered N times at once creates exactly one order.
RELIABILITY I4: N requests with one Idempotency-Key at once run the write exactly once.
On PostgreSQL the requests really overlap; SQLite runs writers one at a time, and the same
assertions must hold there too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from kizuna.commerce.models import Order
from kizuna.core import webhooks
from kizuna.core.audit import Actor
from kizuna.core.models import IdempotencyKey, WebhookEvent
from kizuna.customers.models import Customer
from tests.test_api_common import make_key
from tests.test_webhooks import order_event

pytestmark = pytest.mark.django_db(transaction=True)
THREADS = 8


def run_together(call: Callable[[Client], Any]) -> list[Any]:
    """Run `call` in THREADS threads released at the same moment; each has its own client
    and database connection."""
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            client = Client()
            barrier.wait(timeout=30)
            results[index] = call(client)
        except BaseException as exc:  # reported to the test thread below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    return results


def _signed(secret: str, event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(event).encode()
    now = int(time.time())
    return raw, {
        webhooks.TIMESTAMP_HEADER: str(now),
        webhooks.SIGNATURE_HEADER: webhooks.sign(secret=secret, timestamp=now, body=raw),
    }


def test_one_event_delivered_concurrently_creates_one_order() -> None:
    # given
    _, secret = webhooks.webhook_source_create(
        name="EC-CUBE", slug="eccube", acting_user=Actor.system("test")
    )
    raw, headers = _signed(secret, order_event("evt_race"))

    # when: the cart retries the same event on 8 connections at once
    def deliver(client: Client) -> Any:
        return client.post(
            "/api/v1/webhooks/eccube/orders", raw, content_type="application/json", headers=headers
        )

    responses = run_together(deliver)
    # then
    assert [r.status_code for r in responses] == [200] * THREADS
    duplicates = sorted(r.json()["duplicate"] for r in responses)
    assert duplicates == [False] + [True] * (THREADS - 1)
    assert Order.objects.count() == 1
    assert Customer.objects.count() == 1
    assert WebhookEvent.objects.count() == 1


def test_different_events_for_one_new_order_race_to_one_order() -> None:
    # given: several updates of a brand-new order (and a brand-new customer) arrive at once
    _, secret = webhooks.webhook_source_create(
        name="EC-CUBE", slug="eccube", acting_user=Actor.system("test")
    )
    signed = [_signed(secret, order_event(f"evt_{i}")) for i in range(THREADS)]
    turn = iter(range(THREADS))
    lock = threading.Lock()

    def deliver(client: Client) -> Any:
        with lock:
            raw, headers = signed[next(turn)]
        return client.post(
            "/api/v1/webhooks/eccube/orders", raw, content_type="application/json", headers=headers
        )

    responses = run_together(deliver)
    # then: every event is applied once, to the one order and the one customer
    assert [r.status_code for r in responses] == [200] * THREADS, [r.content for r in responses]
    assert sorted(r.json()["outcome"] for r in responses).count("created") == 1
    assert Order.objects.count() == 1
    assert Customer.objects.count() == 1
    assert WebhookEvent.objects.count() == THREADS


def test_one_idempotency_key_sent_concurrently_runs_once() -> None:
    # given
    _, secret = make_key()
    body = json.dumps(
        {"identities": {"email": "hanako@example.jp"}, "profile": {"family_name": "山田"}}
    ).encode()
    headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "signup-7"}

    # when
    def create(client: Client) -> Any:
        return client.post(
            "/api/v1/customers", body, content_type="application/json", headers=headers
        )

    responses = run_together(create)
    # then: one ran; the others saw it in flight (409) or replayed its answer
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 409}, [r.content for r in responses]
    created = [r for r in responses if r.status_code == 201]
    assert len({r.content for r in created}) == 1
    assert len([r for r in created if not r.has_header("Idempotent-Replayed")]) == 1
    for response in responses:
        if response.status_code == 409:
            assert response.json()["error"]["code"] == "idempotency_key_in_use"
    assert Customer.objects.count() == 1
    assert IdempotencyKey.objects.get().status_code == 201
