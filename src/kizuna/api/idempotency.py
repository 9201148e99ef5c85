"""The `Idempotency-Key` header on API writes (RELIABILITY I4); the rules are in
kizuna.core.idempotency.

Applied around a whole operation (`@decorate_view(idempotent)`), so the stored answer is the
exact response the client got, and the operation's writes and that answer commit together.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from kizuna.api.auth import request_api_key
from kizuna.api.errors import error_response, too_large_response
from kizuna.core.idempotency import (
    KeyInFlightError,
    KeyReusedError,
    StoredResponse,
    idempotency_claim,
    idempotency_complete,
    idempotency_release,
    is_valid_key,
)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
OPENAPI_MARK = "x-kizuna-idempotent"

Run = Callable[..., HttpResponseBase]


def _worth_keeping(response: HttpResponseBase) -> bool:
    # A server error changed nothing (the transaction rolled back), 401/403 depend on the key
    # and 415 on the Content-Type header rather than on the body: a retry of those (with the
    # header fixed) must run again, not replay.
    return response.status_code < 500 and response.status_code not in (401, 403, 415)


def _refusal(request: HttpRequest, key: str) -> HttpResponse | None:
    """The answer to a key or a body that cannot be claimed at all, else None."""
    if not is_valid_key(key):
        return error_response(
            400,
            "invalid_idempotency_key",
            "Idempotency-Keyは空白を含まない半角英数記号で、1〜255文字にしてください",
        )
    try:
        # Read now: this wrapper runs outside the API error handlers that would answer 413.
        request.body  # noqa: B018 - reading the body is the check
    except RequestDataTooBig:
        return too_large_response()
    return None


def idempotent(run: Run) -> Run:
    @functools.wraps(run)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        key = request.headers.get(HEADER)
        api_key = request_api_key(request) if key is not None else None
        if key is None or api_key is None:
            return run(request, *args, **kwargs)  # without a valid API key this answers 401
        if (refusal := _refusal(request, key)) is not None:
            return refusal
        try:
            claim = idempotency_claim(
                api_key_id=api_key.pk,
                key=key,
                method=request.method or "",
                path=request.path,
                body=request.body,
            )
        except KeyReusedError:
            return error_response(
                422,
                "idempotency_key_reused",
                "このIdempotency-Keyは別の内容のリクエストに使われています。新しいキーで送ってください",
            )
        except KeyInFlightError:
            return error_response(
                409,
                "idempotency_key_in_use",
                "同じIdempotency-Keyのリクエストがまだ処理中です。少し待ってから再送してください",
            )
        if isinstance(claim, StoredResponse):
            replay = HttpResponse(
                claim.body, status=claim.status_code, content_type="application/json; charset=utf-8"
            )
            replay[REPLAYED_HEADER] = "true"
            return replay
        try:
            with transaction.atomic():
                response = run(request, *args, **kwargs)
                if _worth_keeping(response) and isinstance(response, HttpResponse):
                    idempotency_complete(
                        claim=claim,
                        status_code=response.status_code,
                        body=response.content.decode("utf-8"),
                    )
                else:
                    transaction.set_rollback(True)
        except BaseException:
            idempotency_release(claim=claim)
            raise
        if not (_worth_keeping(response) and isinstance(response, HttpResponse)):
            idempotency_release(claim=claim)
        return response

    return wrapper
