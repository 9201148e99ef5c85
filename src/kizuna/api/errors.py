"""One error shape for every API answer that is not a success, in Japanese.

    {"error": {"code": "invalid_request", "message": "入力内容に誤りがあります",
               "fields": {"lines.0.quantity": "1以上で指定してください"}}}

Messages say which field is wrong and why; they never repeat the submitted value, because it
is often personal data (an e-mail address, a phone number), and neither do the logs.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI, Schema
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError
from pydantic import Field

from kizuna.api.parser import NotUtf8Error, UnsupportedMediaTypeError

logger = logging.getLogger(__name__)


class ErrorDetail(Schema):
    code: str = Field(description="機械向けの誤りの種類", examples=["invalid_request"])
    message: str = Field(description="人向けの説明(日本語)", examples=["入力内容に誤りがあります"])
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="項目ごとの誤り。キーは項目の位置(例: lines.0.quantity)",
        examples=[{"lines.0.quantity": "1以上で指定してください"}],
    )


class ErrorOut(Schema):
    error: ErrorDetail


class CustomerConflictDetail(ErrorDetail):
    merged_into: int | None = Field(
        default=None,
        description=(
            "code が customer_merged のときだけ: 指定した顧客が統合された先の顧客ID"
            "(統合が重なっているときは最終的な統合先)。この ID で送り直してください"
        ),
        examples=[50055],
    )


class CustomerConflictOut(Schema):
    """The 409 of an operation that names a customer: an Idempotency-Key still in flight, or
    a customer merged into another (customer_merged, with the survivor's id)."""

    error: CustomerConflictDetail


class ApiError(HttpError):
    """An error answer with our code, Japanese message and field messages; `extra` adds
    machine-readable keys beside them (customer_merged's `merged_into`)."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        fields: Mapping[str, str] | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(status_code, message)
        self.code = code
        self.fields = dict(fields or {})
        self.extra = dict(extra or {})


_STATUS_DEFAULTS: dict[int, tuple[str, str]] = {
    400: (
        "malformed_request",
        "リクエスト本文をJSONとして読めません。本文は文字コード UTF-8 の JSON で送ってください",
    ),
    401: ("unauthorized", "APIキーがないか、正しくないか、失効しています"),
    403: ("forbidden", "このAPIキーにはこの操作の権限がありません"),
    404: ("not_found", "指定されたものが見つかりません"),
    405: ("method_not_allowed", "このURLではこのメソッドは使えません"),
    409: ("conflict", "同じ操作が処理中です"),
    415: (
        "unsupported_media_type",
        "本文は JSON で、Content-Type: application/json を付けて送ってください",
    ),
    422: ("invalid_request", "入力内容に誤りがあります"),
    429: ("too_many_requests", "リクエストが多すぎます。しばらく待ってから再度お試しください"),
}


def status_error(status: int) -> tuple[str, str]:
    """The code and Japanese message of an error answer that has nothing more to say."""
    return _STATUS_DEFAULTS[status]


def error_body(
    code: str,
    message: str,
    fields: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "error": {"code": code, "message": message, "fields": dict(fields or {}), **(extra or {})}
    }


def error_response(
    status: int,
    code: str,
    message: str,
    fields: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> HttpResponse:
    response = JsonResponse(
        error_body(code, message, fields, extra),
        status=status,
        json_dumps_params={"ensure_ascii": False},
    )
    if status == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response


def too_large_response() -> HttpResponse:
    """The answer to a body over Django's DATA_UPLOAD_MAX_MEMORY_SIZE, which Django refuses to
    read: a client error to split the request, not a server failure (nothing was changed)."""
    megabytes = f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 1024 / 1024:.1f}".removesuffix(".0")
    message = f"リクエスト本文が大きすぎます({megabytes}MBまで)。分けて送ってください"
    return error_response(413, "payload_too_large", message)


# --- pydantic's errors in Japanese ------------------------------------------------------------

_DATETIME = "日時はISO 8601形式で、時差を付けて指定してください(例: 2026-05-01T10:00:00+09:00)"
_DATE = "日付は YYYY-MM-DD 形式で指定してください"
# A date in the right format that the calendar does not have (2026-02-30, 2026-13-01): "use
# YYYY-MM-DD" would send the client looking for the wrong mistake. The date is not repeated
# (a birthday is personal data).
NO_SUCH_DATE = "存在しない日付です(月と日を確認してください)"
_DATE_KINDS = frozenset(
    {
        "date_parsing",
        "date_from_datetime_parsing",
        "datetime_parsing",
        "datetime_from_date_parsing",
    }
)
# What pydantic (speedate) says of a month or day outside the calendar, in ctx["error"].
_OUT_OF_CALENDAR = ("month value is outside expected range", "day value is outside expected range")
_MESSAGES: dict[str, str] = {
    "missing": "必須項目です",
    "string_type": "文字列で指定してください",
    "string_unicode": "文字列で指定してください",
    "int_type": "整数で指定してください",
    "int_parsing": "整数で指定してください",
    "int_from_float": "整数で指定してください",
    "float_type": "数値で指定してください",
    "float_parsing": "数値で指定してください",
    "bool_type": "true か false で指定してください",
    "bool_parsing": "true か false で指定してください",
    "dict_type": "オブジェクトで指定してください",
    "model_type": "オブジェクトで指定してください",
    "model_attributes_type": "オブジェクトで指定してください",
    "list_type": "配列で指定してください",
    "datetime_type": _DATETIME,
    "datetime_parsing": _DATETIME,
    "datetime_from_date_parsing": _DATETIME,
    "datetime_object_invalid": _DATETIME,
    "timezone_aware": "日時には時差を付けてください(例: +09:00)",
    "date_type": _DATE,
    "date_parsing": _DATE,
    "date_from_datetime_parsing": _DATE,
    "date_from_datetime_inexact": _DATE,
    "string_pattern_mismatch": "使えない文字(制御文字など)が含まれているか、形式が正しくありません",
    "extra_forbidden": "この項目は指定できません",
    "json_invalid": "JSONとして読めません",
    "json_type": "JSONとして読めません",
    "none_required": "null を指定してください",
    "union_tag_invalid": "種類が正しくありません",
}


_TEMPLATES: dict[str, str] = {
    "string_too_short": "{min_length}文字以上で指定してください",
    "string_too_long": "{max_length}文字以内で指定してください",
    "too_short": "{min_length}件以上指定してください",
    "too_long": "{max_length}件以内で指定してください",
    "greater_than_equal": "{ge}以上で指定してください",
    "greater_than": "{gt}より大きい値で指定してください",
    "less_than_equal": "{le}以下で指定してください",
    "less_than": "{lt}より小さい値で指定してください",
    "literal_error": "次のいずれかを指定してください: {expected}",
    "enum": "次のいずれかを指定してください: {expected}",
}


def _message(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "空にはできません"
    if kind in ("literal_error", "enum"):
        # pydantic lists the values in English ("'a', 'b' or 'c'").
        expected = str(ctx.get("expected", "")).replace(" or ", ", ").replace(", ", "、")
        return _TEMPLATES[kind].format(expected=expected)
    if kind in _TEMPLATES:
        # ctx holds the constraint (a length, a bound, the allowed values), never the input.
        return _TEMPLATES[kind].format_map(defaultdict(str, ctx))
    if kind in _DATE_KINDS and str(ctx.get("error", "")).startswith(_OUT_OF_CALENDAR):
        return NO_SUCH_DATE
    if kind in ("value_error", "assertion_error"):
        # Our validators raise ValueError with a Japanese message that names no input value.
        return str(ctx.get("error") or error.get("msg", "")).removeprefix("Value error, ")
    return _MESSAGES.get(kind, "値が正しくありません")


def field_path(loc: Iterable[Any], *, strip_source: bool = True) -> str:
    """ "body.payload.lines.0.quantity" → "lines.0.quantity": the place in what was sent."""
    parts = [str(part) for part in loc]
    if strip_source and parts and parts[0] in {"body", "query", "path", "header"}:
        source = parts[0]
        # A body is validated as one named parameter; its name is ours, not the client's.
        parts = parts[2:] if source == "body" else parts[1:]
        if not parts:
            return source
    return ".".join(parts)


def pydantic_fields(
    errors: Iterable[Mapping[str, Any]], *, strip_source: bool, root: str = "body"
) -> dict[str, str]:
    """{field path: Japanese message}; `root` names an error about the value as a whole."""
    fields: dict[str, str] = {}
    for error in errors:
        path = field_path(error.get("loc", ()), strip_source=strip_source) or root
        fields.setdefault(path, _message(error))
    return fields


def django_fields(exc: DjangoValidationError, *, prefix: str = "") -> tuple[str, dict[str, str]]:
    """A service's ValidationError as (message, {field: message})."""
    if hasattr(exc, "error_dict"):
        fields = {
            (prefix + name if name != "__all__" else prefix.rstrip(".") or "__all__"): " ".join(
                str(message) for message in messages
            )
            for name, messages in exc.message_dict.items()
        }
        return _STATUS_DEFAULTS[422][1], fields
    return " ".join(str(message) for message in exc.messages), {}


# --- handlers ---------------------------------------------------------------------------------


def install_error_handlers(api: NinjaAPI) -> None:
    # Handlers take `Any`: ninja types them as receiving the exception or its class.
    def on_validation(request: HttpRequest, exc: Any) -> HttpResponse:
        fields = pydantic_fields(exc.errors, strip_source=True)
        return error_response(422, "invalid_request", _STATUS_DEFAULTS[422][1], fields)

    def on_service_validation(request: HttpRequest, exc: Any) -> HttpResponse:
        message, fields = django_fields(exc)
        return error_response(422, "invalid_data", message, fields)

    def on_not_found(request: HttpRequest, exc: Any) -> HttpResponse:
        code, message = _STATUS_DEFAULTS[404]
        return error_response(404, code, message)

    def on_http_error(request: HttpRequest, exc: Any) -> HttpResponse:
        if isinstance(exc.__cause__, UnsupportedMediaTypeError):
            # ninja reports any failure to parse the body as 400 "cannot parse", with ours
            # as the cause (kizuna.api.parser)
            return error_response(415, *_STATUS_DEFAULTS[415])
        if isinstance(exc.__cause__, NotUtf8Error):
            message = (
                "リクエスト本文を UTF-8 として読めません。JSON は文字コード UTF-8 で送ってください"
                "(Shift_JIS などは使えません)"
            )
            return error_response(400, "malformed_request", message)
        if isinstance(exc, ApiError):
            return error_response(exc.status_code, exc.code, exc.message, exc.fields, exc.extra)
        code, message = _STATUS_DEFAULTS.get(
            exc.status_code, ("error", "リクエストを処理できません")
        )
        return error_response(exc.status_code, code, message)

    def on_too_large(request: HttpRequest, exc: Any) -> HttpResponse:
        return too_large_response()

    def on_unexpected(request: HttpRequest, exc: Any) -> HttpResponse:
        # The traceback names the code that failed; request data stays out of the log.
        logger.exception("API error: %s %s", request.method, request.path)
        message = "サーバーで予期しないエラーが発生しました。時間をおいて再度お試しください"
        return error_response(500, "internal_error", message)

    api.add_exception_handler(NinjaValidationError, on_validation)
    api.add_exception_handler(DjangoValidationError, on_service_validation)
    api.add_exception_handler(Http404, on_not_found)
    api.add_exception_handler(ObjectDoesNotExist, on_not_found)
    api.add_exception_handler(HttpError, on_http_error)
    api.add_exception_handler(RequestDataTooBig, on_too_large)
    api.add_exception_handler(Exception, on_unexpected)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what}が見つかりません")
