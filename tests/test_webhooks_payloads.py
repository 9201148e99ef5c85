"""What a cart really sends in a webhook: bodies that are not objects, fields of its own."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.test import Client

from kizuna.core import webhooks
from kizuna.core.audit import Actor
from kizuna.core.models import WebhookEvent
from tests.test_api_common import assert_error

pytestmark = pytest.mark.django_db
TOPICS = ("orders", "customers", "email-events")


@pytest.fixture
def secret(db: None) -> str:
    _, secret = webhooks.webhook_source_create(
        name="EC-CUBE本店", slug="eccube", acting_user=Actor.system("test-admin")
    )
    return secret


def signed_post(secret: str, topic: str, raw: bytes) -> Any:
    now = int(time.time())
    headers = {
        webhooks.TIMESTAMP_HEADER: str(now),
        webhooks.SIGNATURE_HEADER: webhooks.sign(secret=secret, timestamp=now, body=raw),
    }
    return Client().post(
        f"/api/v1/webhooks/eccube/{topic}", raw, content_type="application/json", headers=headers
    )


# --- a body or a `data` that is not a JSON object ------------------------------------------


@pytest.mark.parametrize("topic", TOPICS)
@pytest.mark.parametrize("body", [[1, 2], [], "evt", 3, None])
def test_a_body_that_is_not_an_object_says_so(secret: str, topic: str, body: Any) -> None:
    # not "id, type and data are required": the cart sent an array, not an event
    error = assert_error(signed_post(secret, topic, json.dumps(body).encode()), 422)
    assert error["fields"] == {"body": "オブジェクトで指定してください"}
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize("topic", TOPICS)
def test_data_that_is_not_an_object_says_so(secret: str, topic: str) -> None:
    event = {"id": "evt_1", "type": "customer.updated", "data": [1, 2]}
    if topic == "orders":
        event["type"] = "order.updated"
    error = assert_error(signed_post(secret, topic, json.dumps(event).encode()), 422)
    assert error["fields"] == {"data": "オブジェクトで指定してください"}
