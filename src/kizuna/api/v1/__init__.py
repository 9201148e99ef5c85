"""Kizuna REST API v1, mounted at /api/v1/ (OpenAPI document at /api/v1/openapi.json).

Authentication, scopes, idempotency and the error shape are described in docs/ingest.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import URLPattern, URLResolver, path
from django.utils import translation
from ninja import NinjaAPI
from ninja.renderers import JSONRenderer

from kizuna.accounts.access import public
from kizuna.api import docs, onsite
from kizuna.api.errors import install_error_handlers
from kizuna.api.idempotency import HEADER, OPENAPI_MARK
from kizuna.api.parser import JsonParser
from kizuna.api.v1 import (
    analytics,
    customers,
    events,
    orders,
    points,
    privacy,
    subscriptions,
    webhooks,
)

_IDEMPOTENCY_PARAMETER = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "description": (
        "同じ書き込みを安全に再送するためのキー(APIキーごと・24時間有効)。同じキーと同じ本文"
        "なら最初の応答をそのまま返し、別の本文なら 422、処理中なら 409 を返します"
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}


class KizunaAPI(NinjaAPI):
    def _get_urls(self) -> list[URLResolver | URLPattern]:
        urls = [
            *super()._get_urls(),
            path("docs/assets/<str:name>", docs.docs_asset, name=docs.ASSET_URL_NAME),
        ]
        for pattern in urls:
            # The API guards itself: API keys, scopes and webhook signatures are checked per
            # operation, so the staff-login middleware lets these URLs through (never a
            # redirect to the login page for a machine client).
            if isinstance(pattern, URLPattern):
                public(pattern.callback)
        return urls

    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> Any:
        schema = super().get_openapi_schema(*args, **kwargs)
        for operations in schema["paths"].values():
            for operation in operations.values():
                if operation.pop(OPENAPI_MARK, False):
                    operation.setdefault("parameters", []).append(dict(_IDEMPOTENCY_PARAMETER))
        return schema


def _in_japanese(run: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Validation messages from Django come in Japanese whatever the client's Accept-Language."""

    @functools.wraps(run)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        with translation.override("ja"):
            return run(request, *args, **kwargs)

    return wrapper


class JapaneseJSONRenderer(JSONRenderer):
    """Japanese as UTF-8, as the error bodies already are: a developer reading `curl` output
    sees 山田, not \\u5c71\\u7530."""

    json_dumps_params = {"ensure_ascii": False}


api = KizunaAPI(
    title="Kizuna API",
    version="1",
    description=(
        "Kizuna(絆)のREST API。認証は `Authorization: Bearer <APIキー>`(Webhookは署名)。"
        "金額は円の整数、日時は時差付きの ISO 8601 です。誤りは "
        '`{"error": {"code", "message", "fields"}}` の形で返します。'
    ),
    urls_namespace="api-v1",
    docs=docs.LocalSwagger(),
    renderer=JapaneseJSONRenderer(),
    parser=JsonParser(),
)
api.add_decorator(_in_japanese, mode="view")
install_error_handlers(api)
for module in (customers, orders, subscriptions, points, events, webhooks, analytics, privacy):
    api.add_router("", module.router)
api.add_router("", onsite.router)

__all__ = ["api"]
