"""Idempotency-Key on API writes (RELIABILITY I4): replay, 422 on reuse, 409 while in flight."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from kizuna.accounts.models import ApiKey
from kizuna.core.idempotency import body_hash
from kizuna.core.models import IdempotencyKey
from kizuna.customers.models import Customer
from tests.test_api_common import ApiClient, assert_error, full_access_client, make_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(db: None) -> ApiClient:
    return full_access_client()


URL = "/api/v1/customers"


def body(family_name: str = "山田") -> dict[str, Any]:
    return {"identities": {"email": "hanako@example.jp"}, "profile": {"family_name": family_name}}


def post(client: ApiClient, key: str, payload: dict[str, Any]) -> Any:
    return client.post(URL, payload, headers={"Idempotency-Key": key})


def test_same_key_and_body_replays_the_first_answer(api: ApiClient) -> None:
    first = post(api, "order-form-42", body())
    second = post(api, "order-form-42", body())
    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert Customer.objects.count() == 1


def test_same_key_with_another_body_is_422_and_changes_nothing(api: ApiClient) -> None:
    post(api, "k-1", body())
    response = post(api, "k-1", body("佐藤"))
    assert_error(response, 422, "idempotency_key_reused")
    assert list(Customer.objects.values_list("family_name", flat=True)) == ["山田"]


def test_same_key_on_another_route_is_422(api: ApiClient) -> None:
    customer_id = post(api, "k-2", body()).json()["id"]
    response = api.patch(
        f"/api/v1/customers/{customer_id}", body(), headers={"Idempotency-Key": "k-2"}
    )
    assert_error(response, 422, "idempotency_key_reused")


def test_a_key_still_in_flight_is_409_and_nothing_runs(api: ApiClient) -> None:
    # given: another request claimed the key and has not finished
    payload = body()
    api_key = ApiKey.objects.get()
    IdempotencyKey.objects.create(
        api_key=api_key,
        key="busy",
        method="POST",
        path=URL,
        body_hash=body_hash(_encoded(payload)),
        created_at=timezone.now(),
    )
    # when
    response = post(api, "busy", payload)
    # then
    assert_error(response, 409, "idempotency_key_in_use")
    assert not Customer.objects.exists()


def _encoded(payload: dict[str, Any]) -> bytes:
    import json

    return json.dumps(payload).encode()


def test_a_claim_abandoned_by_a_dead_worker_is_taken_over(api: ApiClient) -> None:
    payload = body()
    IdempotencyKey.objects.create(
        api_key=ApiKey.objects.get(),
        key="orphan",
        method="POST",
        path=URL,
        body_hash=body_hash(_encoded(payload)),
        created_at=timezone.now() - dt.timedelta(minutes=10),
    )
    response = post(api, "orphan", payload)
    assert response.status_code == 201
    assert Customer.objects.count() == 1


def test_keys_expire_after_24_hours(api: ApiClient) -> None:
    post(api, "daily", body())
    IdempotencyKey.objects.update(created_at=timezone.now() - dt.timedelta(hours=25))
    response = post(api, "daily", body("佐藤") | {"identities": {}})
    assert response.status_code == 201
    assert Customer.objects.count() == 2


def test_keys_belong_to_one_api_key(api: ApiClient) -> None:
    _, other_secret = make_key(name="別の連携")
    post(api, "shared-name", body())
    response = post(ApiClient(other_secret), "shared-name", body("佐藤") | {"identities": {}})
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response


def test_a_validation_error_is_remembered_too(api: ApiClient) -> None:
    bad = {
        "identities": {"email": "hanako@example.jp"},
        "profile": {"family_name": "山田", "postal_code": "12"},
    }
    first = post(api, "bad-1", bad)
    second = post(api, "bad-1", bad)
    assert_error(first, 422, "invalid_data")
    assert second.content == first.content
    assert second["Idempotent-Replayed"] == "true"


def test_a_server_error_releases_the_key_and_writes_nothing(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: creating the identity fails unexpectedly after the customer row was written
    from kizuna.api.v1 import customers

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(customers, "identity_add", broken)
    # when
    response = post(api, "retry-me", body())
    # then: a clean error, no half-written customer, and the key is free for the retry
    assert_error(response, 500, "internal_error")
    assert "disk full" not in response.content.decode()
    assert not Customer.objects.exists()
    assert not IdempotencyKey.objects.exists()
    monkeypatch.undo()
    assert post(api, "retry-me", body()).status_code == 201


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "ひらがな"])
def test_malformed_keys_are_400(api: ApiClient, key: str) -> None:
    response = api.client.post(
        URL,
        _encoded(body()),
        content_type="application/json",
        headers={"Authorization": f"Bearer {api.key}", "Idempotency-Key": key},
    )
    assert_error(response, 400, "invalid_idempotency_key")
    assert not Customer.objects.exists()


def test_without_a_key_each_request_runs(api: ApiClient) -> None:
    api.post(URL, body())
    response = api.post(URL, body())
    assert_error(response, 422)  # the e-mail now belongs to the first customer
    assert Customer.objects.count() == 1


def test_unauthenticated_requests_do_not_claim_keys(db: None) -> None:
    response = post(ApiClient("kzn_wrong"), "k", body())
    assert_error(response, 401)
    assert not IdempotencyKey.objects.exists()


def test_expired_keys_are_deleted_in_passing(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from kizuna.core import idempotency

    clock = [time.monotonic()]
    monkeypatch.setattr(idempotency.time, "monotonic", lambda: clock[0])
    # given: yesterday's keys of this client
    post(api, "old-1", body())
    IdempotencyKey.objects.update(created_at=timezone.now() - dt.timedelta(hours=25))
    # when: the client writes with a new key after a while
    clock[0] += idempotency.SWEEP_EVERY_SECONDS + 1  # past it, whatever the float rounding
    post(api, "new-1", body())
    # then: only today's key is kept
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new-1"]
