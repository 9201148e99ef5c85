"""API keys: creating, revoking and checking them.

A key looks like `kzn_<43 characters>`; it carries 256 random bits. Kizuna stores only its
SHA-256 and the first characters (to tell keys apart in the list), so a copy of the database
does not hand out working keys; the key itself is shown once, to the admin who creates it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from kizuna.accounts.models import ApiKey, ApiScope
from kizuna.core.audit import Actor, audit_record

KEY_PREFIX = "kzn_"
_VISIBLE_CHARS = 12
# A key's "last used" time is for the settings page; writing it on every request would add a
# write (and a row lock every request of that key queues on) to every API call.
_TOUCH_EVERY = dt.timedelta(minutes=1)
# Active keys this process has loaded, by hash. Building the ApiKey through the ORM was almost
# half of an API request's handling outside the write itself; a key's name and scopes never
# change, so each request only asks the database, in one plain statement, whether the key is
# still active — a key revoked by any process or machine is refused from its next request.
# Only active keys are kept, so unknown keys cannot make it grow.
_loaded: dict[str, ApiKey] = {}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@transaction.atomic
def api_key_create(*, name: str, scopes: Iterable[str], acting_user: Any) -> tuple[ApiKey, str]:
    """A new key with `scopes`. Returns the stored key and the secret to show once."""
    name = name.strip()
    chosen = sorted(set(scopes))
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "名前を入力してください"
    unknown = [scope for scope in chosen if scope not in ApiScope.values]
    if unknown:
        errors["scopes"] = "存在しない権限が指定されています"
    elif not chosen:
        errors["scopes"] = "権限を1つ以上選んでください"
    if errors:
        raise ValidationError(errors)
    actor = Actor.of(acting_user)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        name=name,
        prefix=secret[:_VISIBLE_CHARS],
        key_hash=hash_key(secret),
        scopes=chosen,
        created_by_id=actor.user_id,
    )
    audit_record(
        actor=actor,
        action="api_key.create",
        instance=api_key,
        customer_id=None,
        changes={"name": [None, name], "scopes": [None, ",".join(chosen)]},
    )
    return api_key, secret


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, acting_user: Any) -> ApiKey:
    """Refuse the key from now on. Revoking cannot be undone: create a new key instead."""
    api_key = ApiKey.objects.select_for_update().get(pk=api_key.pk)
    if api_key.revoked_at is not None:
        return api_key
    actor = Actor.of(acting_user)
    api_key.revoked_at = timezone.now()
    api_key.revoked_by_id = actor.user_id
    api_key.save(update_fields=["revoked_at", "revoked_by", "updated_at"])
    audit_record(
        actor=actor,
        action="api_key.revoke",
        instance=api_key,
        customer_id=None,
        changes={"revoked_at": [None, api_key.revoked_at.isoformat()]},
    )
    return api_key


def api_key_authenticate(key: str) -> ApiKey | None:
    """The active key whose secret is `key`, or None (unknown, malformed or revoked)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 100:
        return None
    digest = hash_key(key)
    api_key = _loaded.get(digest)
    if api_key is None:
        api_key = ApiKey.objects.filter(key_hash=digest, revoked_at__isnull=True).first()
        if api_key is None:
            return None
        _loaded[digest] = api_key
    else:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 FROM {connection.ops.quote_name(ApiKey._meta.db_table)}"  # noqa: S608
                " WHERE id = %s AND revoked_at IS NULL",
                [api_key.pk],
            )
            if cursor.fetchone() is None:
                _loaded.pop(digest, None)
                return None
    now = timezone.now()
    if api_key.last_used_at is None or api_key.last_used_at < now - _TOUCH_EVERY:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key
