"""Schemathesis against the OpenAPI document, in process (RELIABILITY D6).

For every operation it sends generated requests — valid ones and deliberately broken ones —
with a key that holds every scope, and fails on any 5xx, any status code the document does not
list, and any response body that does not match the documented schema.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from kizuna.core.audit import Actor
from kizuna.subscriptions.services import subscription_create
from tests.factories import make_customer, make_product
from tests.test_api_common import make_key

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())
schema.config.phases.coverage.enabled = False
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def _one_connection() -> Iterator[None]:
    # Django's WSGI handler closes the connection after each request; inside the test's
    # transaction that would close it under the test. Django's own test client does the same.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@dataclass(frozen=True)
class Existing:
    headers: dict[str, str]
    ids: dict[str, int]


@pytest.fixture
def existing(db: None, settings: Any, _one_connection: None) -> Existing:
    """A key with every scope, and a customer and a subscription for generated ids to hit."""
    settings.ALLOWED_HOSTS = ["*"]
    customer = make_customer()
    subscription = subscription_create(
        customer=customer,
        product=make_product(),
        terms={"unit_price": 3980, "cycle_kind": "days", "cycle_days": 30},
        started_on=dt.date(2026, 5, 1),
        acting_user=Actor.system("test"),
    )
    _, secret = make_key()
    return Existing(
        headers={"Authorization": f"Bearer {secret}"},
        ids={"customer_id": customer.pk, "subscription_id": subscription.pk},
    )


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case: Any, existing: Existing) -> None:
    # Random ids would almost never name a row and only exercise the 404 path; valid ones are
    # pointed at real rows so the operations' own logic runs (404s have their own tests).
    for name, value in existing.ids.items():
        if isinstance((case.path_parameters or {}).get(name), int):
            case.path_parameters[name] = value
    case.headers = {**(case.headers or {}), **existing.headers}
    case.call_and_validate(checks=CHECKS)


def test_the_schema_lists_the_ingest_operations() -> None:
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results)
    operations = {
        (result.ok().method.upper(), result.ok().path)
        for result in results
        if isinstance(result, Ok)
    }
    assert operations >= {
        ("POST", "/api/v1/customers"),
        ("GET", "/api/v1/customers"),
        ("GET", "/api/v1/customers/{customer_id}"),
        ("PATCH", "/api/v1/customers/{customer_id}"),
        ("PUT", "/api/v1/orders/{number}"),
        ("POST", "/api/v1/subscriptions"),
        ("GET", "/api/v1/subscriptions/{subscription_id}"),
        ("PATCH", "/api/v1/subscriptions/{subscription_id}"),
        ("GET", "/api/v1/customers/{customer_id}/points"),
        ("POST", "/api/v1/customers/{customer_id}/points"),
        ("POST", "/api/v1/events"),
        ("POST", "/api/v1/webhooks/{source}/orders"),
        ("POST", "/api/v1/webhooks/{source}/customers"),
    }
