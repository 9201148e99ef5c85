"""Idempotency keys for API writes (RELIABILITY I4), as Stripe defines them.

A client that sends a write with an `Idempotency-Key` may send it again after a timeout or a
dropped connection without doing the work twice:

- the same key with the same request replays the first answer (status and body);
- the same key with a different request (method, path or body) is refused (`KeyReusedError`);
- the same key while the first request is still running is refused (`KeyInFlightError`).

The key is claimed by inserting its row *before* the request runs, in a transaction of its
own, so the claim is visible to every other connection at once: the unique (api_key, key)
constraint lets exactly one of N concurrent requests insert it. The request's own writes and
the stored answer are then committed together (`idempotency_complete` inside the request's
transaction), so a stored answer always describes work that was committed. Keys are scoped
per API key and forgotten after 24 hours.

A client that sends a key sends one with every write, so the claim and the stored answer are
one plain SQL statement each rather than the ORM's insert and update (which cost a keyed
request about twice the CPU of the rest of its handling outside the write).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from kizuna.core.models import IdempotencyKey

KEY_TTL = dt.timedelta(hours=24)
# A claim whose request never finished (the worker was killed mid-request): after this long
# it is taken over by the next request with the key instead of answering 409 for a day.
ABANDONED_AFTER = dt.timedelta(minutes=5)
MAX_KEY_LENGTH = 255
# Forgetting a client's expired keys is a DELETE; once in a while per process is enough, since
# a claim that meets an expired row of its key takes the row over (see idempotency_claim).
SWEEP_EVERY_SECONDS = 600.0
_swept: dict[int, float] = {}


class IdempotencyError(Exception):
    """The request cannot run under this key."""


class KeyInFlightError(IdempotencyError):
    """Another request with the same key has not finished yet."""


class KeyReusedError(IdempotencyError):
    """The key was first used for a different request."""


@dataclass(frozen=True)
class StoredResponse:
    """The answer the first request with the key got."""

    status_code: int
    body: str


@dataclass(frozen=True)
class Claim:
    """A key this request holds. The claim time tells it from a later claim of the same key
    (one that took over this claim after ABANDONED_AFTER)."""

    api_key_id: int
    key: str
    created_at: dt.datetime

    def rows(self) -> QuerySet[IdempotencyKey]:
        return IdempotencyKey.objects.filter(
            api_key_id=self.api_key_id, key=self.key, created_at=self.created_at
        )


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def is_valid_key(key: str) -> bool:
    """Printable ASCII without spaces, 1–255 characters (what Stripe and the IETF draft use)."""
    return 0 < len(key) <= MAX_KEY_LENGTH and all("!" <= ch <= "~" for ch in key)


@functools.cache
def _statements() -> tuple[str, str]:
    """(claim, complete), built once per process."""
    quote = connection.ops.quote_name
    table = quote(IdempotencyKey._meta.db_table)
    api_key, key, created_at = quote("api_key_id"), quote("key"), quote("created_at")
    claimed = ", ".join(quote(column) for column in ("method", "path", "body_hash"))
    # ON CONFLICT DO NOTHING: a key someone else holds is no error (and needs no savepoint);
    # the row count says whether this request got it.
    claim = (
        f"INSERT INTO {table} ({api_key}, {key}, {claimed}, {quote('response_body')}, "  # noqa: S608 - our own SQL
        f"{created_at}) VALUES (%s, %s, %s, %s, %s, '', %s) "
        f"ON CONFLICT ({api_key}, {key}) DO NOTHING"
    )
    complete = (
        f"UPDATE {table} SET {quote('status_code')} = %s, {quote('response_body')} = %s, "  # noqa: S608 - our own SQL
        f"{quote('completed_at')} = %s WHERE {api_key} = %s AND {key} = %s AND {created_at} = %s"
    )
    return claim, complete


def _execute(sql: str, params: list[Any]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        count: int = cursor.rowcount
    return count


def _sweep(api_key_id: int, now: dt.datetime) -> None:
    """Forget this client's expired keys, at most every SWEEP_EVERY_SECONDS per process; the
    index on (api_key, created_at) keeps it cheap."""
    moment = time.monotonic()
    if moment - _swept.get(api_key_id, -SWEEP_EVERY_SECONDS) < SWEEP_EVERY_SECONDS:
        return
    _swept[api_key_id] = moment
    IdempotencyKey.objects.filter(api_key_id=api_key_id, created_at__lt=now - KEY_TTL).delete()


def idempotency_claim(
    *, api_key_id: int, key: str, method: str, path: str, body: bytes
) -> Claim | StoredResponse:
    """Claim `key` for this request, or return the stored answer of the request that did.

    Returns the claim (the caller runs the request, then calls `idempotency_complete` or
    `idempotency_release`), or the StoredResponse to replay. Raises KeyReusedError or
    KeyInFlightError. Must be called outside the request's transaction.
    """
    now = timezone.now()
    digest = body_hash(body)
    _sweep(api_key_id, now)
    claim_sql, _ = _statements()
    stamp = connection.ops.adapt_datetimefield_value(now)
    for _ in range(2):
        if _execute(claim_sql, [api_key_id, key, method, path, digest, stamp]):
            return Claim(api_key_id=api_key_id, key=key, created_at=now)
        existing = IdempotencyKey.objects.filter(api_key_id=api_key_id, key=key).first()
        if existing is None:  # released by its request in the meantime: claim it again
            continue
        if existing.created_at < now - KEY_TTL:
            # Expired but not swept yet: forgotten, as if it had been.
            Claim(existing.api_key_id, existing.key, existing.created_at).rows().delete()
            continue
        if (existing.method, existing.path, existing.body_hash) != (method, path, digest):
            raise KeyReusedError
        if existing.completed_at is not None and existing.status_code is not None:
            return StoredResponse(status_code=existing.status_code, body=existing.response_body)
        if existing.created_at < now - ABANDONED_AFTER:
            # Conditional, so of two requests taking over the same abandoned claim one wins.
            Claim(existing.api_key_id, existing.key, existing.created_at).rows().filter(
                completed_at__isnull=True
            ).delete()
            continue
        raise KeyInFlightError
    raise KeyInFlightError


def idempotency_complete(*, claim: Claim, status_code: int, body: str) -> None:
    """Store the answer. Call inside the request's transaction, so both commit together."""
    _, complete_sql = _statements()
    adapt = connection.ops.adapt_datetimefield_value
    _execute(
        complete_sql,
        [
            status_code,
            body,
            adapt(timezone.now()),
            claim.api_key_id,
            claim.key,
            adapt(claim.created_at),
        ],
    )


def idempotency_release(*, claim: Claim) -> None:
    """Give the key back after a request that failed and changed nothing, so a retry runs."""
    claim.rows().filter(completed_at__isnull=True).delete()
