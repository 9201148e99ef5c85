"""Query parameters an operation does not know are refused, not dropped.

django-ninja keeps only the parameters a `Query[...]` schema declares and ignores the rest, so
a typo such as `?emial=…` or `?segmnet=…` would run the search unfiltered and answer with every
customer instead of an error. docs/ingest.md promises 422 for an unknown item; this keeps it
for query strings as the schemas' `extra="forbid"` does for bodies.

The check runs where ninja reads the query string (kizuna.api.parser), after the API key:
a decorator around the operation would answer 422 to a caller that has no valid key, and
every error but 401 waits for authentication.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from django.http import HttpRequest
from ninja import Schema
from ninja.errors import ValidationError

View = TypeVar("View", bound=Callable[..., Any])
_KNOWN_ATTR = "_kizuna_known_query"


def known_query(schema: type[Schema]) -> Callable[[View], View]:
    """For `@decorate_view(known_query(TheQuerySchema))`: marks the request with the names the
    operation reads; `refuse_unknown` checks them when the parameters are read."""
    names = frozenset(field.alias or name for name, field in schema.model_fields.items())

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            setattr(request, _KNOWN_ATTR, names)
            return view(request, *args, **kwargs)

        return cast(View, wrapper)

    return decorate


def refuse_unknown(request: HttpRequest, given: Iterable[str]) -> None:
    """Raise the 422 (`extra_forbidden`, 「この項目は指定できません」) naming each query
    parameter the operation does not know."""
    known: frozenset[str] | None = getattr(request, _KNOWN_ATTR, None)
    if known is None:
        return
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValidationError(
            [{"type": "extra_forbidden", "loc": ("query", name), "msg": ""} for name in unknown]
        )
