"""Concurrent deliveries and retries, with real threads and one database connection each.

RELIABILITY I2: one webhook event delivered N times at once creates exactly one order.
RELIABILITY I4: N requests with one Idempotency-Key at once run the write exactly once.
A new customer's first contact on N connections at once creates one customer: identity
resolution settles the race on the unique identity index itself (savepoint, read again).
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
from django.db import connection, transaction
from django.test import Client

from kizuna.commerce.models import Order
from kizuna.core import webhooks
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog, IdempotencyKey, WebhookEvent
from kizuna.customers.models import Customer, DuplicateCandidate, IdentityKind
from kizuna.customers.resolution import ResolveRequest, customers_resolve_many
from tests.test_api_common import make_key
from tests.test_webhooks import member_event, order_event, sent_to

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


def test_customer_events_out_of_order_at_once_leave_the_newest_address() -> None:
    # given: a new member's events of eight days (each with that day's e-mail address and
    # street) arrive at once, in no particular order
    _, secret = webhooks.webhook_source_create(
        name="EC-CUBE", slug="eccube", acting_user=Actor.system("test")
    )
    signed = []
    for day in range(1, THREADS + 1):
        event = member_event(f"c{day}", f"2026-05-{day:02d}T10:00:00+09:00", f"day{day}@example.jp")
        event["data"]["profile"]["address1"] = f"{day}日の住所"
        signed.append(_signed(secret, event))
    turn = iter(range(THREADS))
    lock = threading.Lock()

    def deliver(client: Client) -> Any:
        with lock:
            raw, headers = signed[next(turn)]
        return client.post(
            "/api/v1/webhooks/eccube/customers",
            raw,
            content_type="application/json",
            headers=headers,
        )

    responses = run_together(deliver)
    # then: one customer, as of the newest event; an event that was older than one applied
    # before it attached nothing, so the addresses came in date order and the newest is used
    assert [r.status_code for r in responses] == [200] * THREADS, [r.content for r in responses]
    outcomes = {r.json()["event_id"]: r.json()["outcome"] for r in responses}
    assert list(outcomes.values()).count("created") == 1
    customer = Customer.objects.get()
    assert customer.address1 == f"{THREADS}日の住所"
    emails = list(
        customer.identities.filter(kind=IdentityKind.EMAIL)
        .order_by("pk")
        .values_list("value", flat=True)
    )
    fresh = [
        f"day{day}@example.jp" for day in range(1, THREADS + 1) if outcomes[f"c{day}"] != "stale"
    ]
    assert emails == fresh
    assert sent_to(customer) == f"day{THREADS}@example.jp"


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


def _first_order(number: str) -> bytes:
    return json.dumps(
        {
            "customer": {
                "identities": {"email": "First.Contact@example.jp", "phone": "090-1111-2222"},
                "profile": {"family_name": "山田", "given_name": "花子"},
            },
            "ordered_at": "2026-05-01T10:00:00+09:00",
            "lines": [
                {
                    "product_code": "SK-01",
                    "product_name": "美容液",
                    "unit_price": 980,
                    "quantity": 1,
                }
            ],
        }
    ).encode()


def test_first_contact_of_one_new_customer_on_many_connections_creates_one_customer() -> None:
    # given: a new customer's first orders arrive at once, each on its own connection
    _, secret = make_key()
    headers = {"Authorization": f"Bearer {secret}"}
    turn = iter(range(THREADS))
    lock = threading.Lock()

    def send(client: Client) -> Any:
        with lock:
            n = next(turn)
        return client.put(
            f"/api/v1/orders/F-{n}",
            _first_order(f"F-{n}"),
            content_type="application/json",
            headers=headers,
        )

    responses = run_together(send)
    # then: every order is stored, all with the one customer the winner created
    assert [r.status_code for r in responses] == [201] * THREADS, [r.content for r in responses]
    customer = Customer.objects.get()
    assert {r.json()["customer_id"] for r in responses} == {customer.pk}
    assert [r.json()["customer_created"] for r in responses].count(True) == 1
    assert Order.objects.filter(customer=customer).count() == THREADS
    assert customer.identities.count() == 2
    assert not DuplicateCandidate.objects.exists()
    creations = AuditLog.objects.filter(action="customer.create")
    assert list(creations.values_list("entity_id", flat=True)) == [str(customer.pk)]


def test_concurrent_resolution_of_the_same_new_identities_settles_on_one_customer() -> None:
    # given: the service itself, called at once from several connections (an import and the
    # API, say), each resolving a chunk in which the same new customer appears
    def resolve(_client: Client) -> Any:
        with transaction.atomic():
            results = customers_resolve_many(
                [
                    ResolveRequest(
                        {IdentityKind.EMAIL: f"other{threading.get_ident()}@example.jp"},
                        {"family_name": "別人"},
                    ),
                    ResolveRequest(
                        {IdentityKind.CART_MEMBER: "EC-777", IdentityKind.EMAIL: "same@example.jp"},
                        {"family_name": "佐藤"},
                    ),
                ],
                acting_user=Actor.system("test"),
                source="test",
            )
        return [r.customer.pk for r in results if not isinstance(r, Exception)]

    resolved = run_together(resolve)
    # then: one customer holds both identities; every caller got it
    same = Customer.objects.get(family_name="佐藤")
    assert {pks[1] for pks in resolved} == {same.pk}
    assert sorted(same.identities.values_list("kind", flat=True)) == [
        IdentityKind.CART_MEMBER,
        IdentityKind.EMAIL,
    ]
    assert Customer.objects.filter(family_name="別人").count() == THREADS
