"""The error answers each kind of operation documents in the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from kizuna.api.errors import CustomerConflictOut, ErrorOut


def errors_for(*statuses: int) -> dict[int, Any]:
    return dict.fromkeys(statuses, ErrorOut)


def read_errors() -> dict[int, Any]:
    return errors_for(400, 401, 403, 404, 422)


def write_errors() -> dict[int, Any]:
    """Writes may also meet an Idempotency-Key still in flight (409), send a body over
    Django's upload limit (413) or a body not declared as JSON (415)."""
    return errors_for(400, 401, 403, 404, 409, 413, 415, 422)


def customer_write_errors() -> dict[int, Any]:
    """Writes that name a customer by id: their 409 may also be customer_merged, with the id
    of the customer to use instead (`merged_into`)."""
    return {**write_errors(), 409: CustomerConflictOut}
