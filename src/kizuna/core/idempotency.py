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
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from kizuna.core.models import IdempotencyKey

KEY_TTL = dt.timedelta(hours=24)
# A claim whose request never finished (the worker was killed mid-request): after this long
# it is taken over by the next request with the key instead of answering 409 for a day.
ABANDONED_AFTER = dt.timedelta(minutes=5)
MAX_KEY_LENGTH = 255


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


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def is_valid_key(key: str) -> bool:
    """Printable ASCII without spaces, 1–255 characters (what Stripe and the IETF draft use)."""
    return 0 < len(key) <= MAX_KEY_LENGTH and all("!" <= ch <= "~" for ch in key)


def idempotency_claim(
    *, api_key_id: int, key: str, method: str, path: str, body: bytes
) -> IdempotencyKey | StoredResponse:
    """Claim `key` for this request, or return the stored answer of the request that did.

    Returns the claimed row (the caller runs the request, then calls `idempotency_complete`
    or `idempotency_release`), or the StoredResponse to replay. Raises KeyReusedError or
    KeyInFlightError. Must be called outside the request's transaction.
    """
    now = timezone.now()
    digest = body_hash(body)
    # Forget this client's expired keys; the index on (api_key, created_at) keeps this cheap.
    IdempotencyKey.objects.filter(api_key_id=api_key_id, created_at__lt=now - KEY_TTL).delete()
    for _ in range(2):
        try:
            with transaction.atomic():
                return IdempotencyKey.objects.create(
                    api_key_id=api_key_id,
                    key=key,
                    method=method,
                    path=path,
                    body_hash=digest,
                    created_at=now,
                )
        except IntegrityError:
            existing = IdempotencyKey.objects.filter(api_key_id=api_key_id, key=key).first()
        if existing is None:  # released by its request in the meantime: claim it again
            continue
        if (existing.method, existing.path, existing.body_hash) != (method, path, digest):
            raise KeyReusedError
        if existing.completed_at is not None and existing.status_code is not None:
            return StoredResponse(status_code=existing.status_code, body=existing.response_body)
        if existing.created_at < now - ABANDONED_AFTER:
            # Conditional, so of two requests taking over the same abandoned claim one wins.
            IdempotencyKey.objects.filter(
                pk=existing.pk, completed_at__isnull=True, created_at=existing.created_at
            ).delete()
            continue
        raise KeyInFlightError
    raise KeyInFlightError


def idempotency_complete(*, claim: IdempotencyKey, status_code: int, body: str) -> None:
    """Store the answer. Call inside the request's transaction, so both commit together."""
    IdempotencyKey.objects.filter(pk=claim.pk).update(
        status_code=status_code, response_body=body, completed_at=timezone.now()
    )


def idempotency_release(*, claim: IdempotencyKey) -> None:
    """Give the key back after a request that failed and changed nothing, so a retry runs."""
    IdempotencyKey.objects.filter(pk=claim.pk, completed_at__isnull=True).delete()
