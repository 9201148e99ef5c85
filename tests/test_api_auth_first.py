"""Authentication comes before everything else a request could be refused for.

A caller without a valid API key (or webhook signature) gets 401 whatever else is wrong with
its request — an unknown or malformed query parameter, a body that is not JSON — and so learns
nothing of the operation's parameters before proving who it is.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client

from kizuna.api.v1 import api
from tests.test_api_common import assert_error, make_key

pytestmark = pytest.mark.django_db


def _operations() -> list[tuple[str, str]]:
    schema = api.get_openapi_schema()
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if operation.get("security"):
                found.append((method, re.sub(r"\{[^}]+\}", "1", path)))
    return found


OPERATIONS = _operations()


def test_every_guarded_operation_is_checked() -> None:
    assert len(OPERATIONS) > 20
    assert ("get", "/api/v1/customers") in OPERATIONS


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_a_bad_key_with_bad_parameters_is_401(method: str, path: str) -> None:
    make_key()  # keys exist; the one sent is not among them
    url = f"{path}?q=x&limit=abc&as_of=yesterday"
    headers = {"Authorization": "Bearer kzn_not_a_key"}
    # when: a wrong key, an unknown parameter, a malformed one, and a body that is not JSON
    if method == "get":
        response = Client().get(url, headers=headers)
    else:
        call = getattr(Client(), method)
        response = call(url, b"not json", content_type="text/plain", headers=headers)
    # then
    assert_error(response, 401)


def test_a_valid_key_still_meets_the_unknown_parameter() -> None:
    _, secret = make_key()
    response = Client().get("/api/v1/customers?q=x", headers={"Authorization": f"Bearer {secret}"})
    error = assert_error(response, 422, "invalid_request")
    assert error["fields"] == {"q": "この項目は指定できません"}
