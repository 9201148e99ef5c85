"""Who is calling: API keys with scopes (`Authorization: Bearer kzn_…`), and webhook senders
proven by their HMAC signature.

No key, an unknown or revoked key → 401; a valid key without the operation's scope → 403.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer
from ninja.security.base import AuthBase

from kizuna.accounts.apikeys import api_key_authenticate
from kizuna.accounts.models import ApiKey, ApiScope
from kizuna.api.errors import ApiError
from kizuna.core import webhooks
from kizuna.core.audit import Actor
from kizuna.core.models import WebhookSource

_KEY_ATTR = "_kizuna_api_key"


def request_api_key(request: HttpRequest) -> ApiKey | None:
    """The active key the request carries, looked up once per request."""
    if not hasattr(request, _KEY_ATTR):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        key = api_key_authenticate(token.strip()) if scheme.lower() == "bearer" else None
        setattr(request, _KEY_ATTR, key)
    found: ApiKey | None = getattr(request, _KEY_ATTR)
    return found


class ApiKeyAuth(HttpBearer):
    """Bearer API key that must hold `scope`."""

    def __init__(self, scope: ApiScope) -> None:
        super().__init__()
        self.scope = scope

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        api_key = request_api_key(request)
        if api_key is None:
            return None
        if not api_key.has_scope(self.scope):
            raise ApiError(
                403,
                "missing_scope",
                f"このAPIキーには「{self.scope.label}」({self.scope.value})の権限がありません",
            )
        return api_key


def key_actor(api_key: ApiKey) -> Actor:
    """Who audit rows name for writes made with this key."""
    return Actor(user_id=None, label=f"api:{api_key.name}({api_key.prefix}…)"[:150])


class WebhookSignatureAuth(AuthBase):
    """The sender signed the raw body with its source's secret (see kizuna.core.webhooks).

    Checked before the body is parsed, so a forged or stale request never reaches any code
    that could change data.
    """

    openapi_type = "apiKey"
    openapi_in = "header"
    openapi_name = webhooks.SIGNATURE_HEADER
    openapi_description = (
        f"sha256=<HMAC-SHA256(送信元の秘密鍵, {webhooks.TIMESTAMP_HEADER} + '.' + 本文)の16進>"
    )

    def __call__(self, request: HttpRequest) -> WebhookSource | None:
        match = request.resolver_match
        slug = str(match.kwargs.get("source", "")) if match else ""
        source = webhooks.webhook_source_for(slug) if slug else None
        if source is None:
            raise ApiError(401, "unknown_source", "この送信元は登録されていないか、失効しています")
        error: webhooks.SignatureError | None = None
        for secret in webhooks.accepted_secrets(source):
            try:
                webhooks.verify_signature(
                    secret=secret,
                    timestamp=request.headers.get(webhooks.TIMESTAMP_HEADER),
                    signature=request.headers.get(webhooks.SIGNATURE_HEADER),
                    body=request.body,
                    now=None,
                )
            except webhooks.SignatureError as exc:
                error = exc
            else:
                error = None
                break
        if error is not None:
            raise ApiError(401, "invalid_signature", str(error))
        webhooks.webhook_source_touch(source)
        return source


def webhook_actor(source: WebhookSource) -> Actor:
    return Actor.system(f"webhook:{source.slug}")
