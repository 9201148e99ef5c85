"""Query parameters an operation does not know are refused, not dropped.

django-ninja keeps only the parameters a `Query[...]` schema declares and ignores the rest, so
a typo such as `?emial=…` or `?segmnet=…` would run the search unfiltered and answer with every
customer instead of an error. docs/ingest.md promises 422 for an unknown item; this keeps it
for query strings as the schemas' `extra="forbid"` does for bodies.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.http import HttpRequest
from ninja import Schema

from kizuna.api.errors import error_response, status_error

View = TypeVar("View", bound=Callable[..., Any])
UNKNOWN = "この項目は指定できません"


def known_query(schema: type[Schema]) -> Callable[[View], View]:
    """For `@decorate_view(known_query(TheQuerySchema))`: ninja wraps its own view with it, after
    reading the operation's signature, so the check runs before the parameters are read."""
    names = {field.alias or name for name, field in schema.model_fields.items()}

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            unknown = sorted(set(request.GET) - names)
            if unknown:
                code, message = status_error(422)
                return error_response(422, code, message, dict.fromkeys(unknown, UNKNOWN))
            return view(request, *args, **kwargs)

        return cast(View, wrapper)

    return decorate
