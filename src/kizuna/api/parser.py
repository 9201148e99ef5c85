"""Reading request bodies: JSON only, recognised by its Content-Type.

The API documents every request body as `application/json`. A body sent as `text/plain` (or a
form, or with no Content-Type) was read as JSON all the same, so a client that got its
headers wrong never learnt it. Such a body is now refused with 415 (`unsupported_media_type`)
before it is read, and a body whose bytes are not UTF-8 (JSON's encoding; a cart sending
Shift_JIS) gets a 400 that says so rather than "not JSON"; the error handlers in
kizuna.api.errors give the answers.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.datastructures import MultiValueDict
from ninja.parser import Parser
from ninja.types import DictStrAny

from kizuna.api.query import refuse_unknown

MEDIA_TYPE = "application/json"


class UnsupportedMediaTypeError(Exception):
    """The body is not declared as JSON."""


class NotUtf8Error(Exception):
    """The body's bytes are not UTF-8 (a Shift_JIS body, whatever its charset says)."""


def is_json(content_type: str) -> bool:
    """application/json, or a JSON-based type (application/…+json); parameters such as
    charset do not matter (JSON is UTF-8)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == MEDIA_TYPE or (kind.startswith("application/") and kind.endswith("+json"))


class JsonParser(Parser):
    def parse_body(self, request: HttpRequest) -> DictStrAny:
        # Ninja turns any exception raised here into a 400 whose cause is this one;
        # kizuna.api.errors answers 415 when it sees that cause.
        if not is_json(request.META.get("CONTENT_TYPE", "")):
            raise UnsupportedMediaTypeError
        try:
            request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise NotUtf8Error from None
        return super().parse_body(request)

    def parse_querydict(
        self, data: MultiValueDict[str, Any], list_fields: list[str], request: HttpRequest
    ) -> DictStrAny:
        # Read after authentication: a caller without a valid key learns nothing of the
        # parameters (kizuna.api.query).
        refuse_unknown(request, data.keys())
        return super().parse_querydict(data, list_fields, request)
