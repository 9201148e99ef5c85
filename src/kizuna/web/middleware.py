"""A body for the 404 and 405 answers that have none fit for who asked.

Actions such as saving the delivery settings, pausing delivery or logging out accept POST only.
Opened from a bookmark, the history or a pasted link, Django answers 405 with an empty body,
which the browser shows as a white page: a browser gets a short Japanese page instead. An API
client calling a route with the wrong method got django-ninja's plain-text "Method not allowed";
it gets the API's own JSON error (kizuna.api.errors) like every other API error, and so does an
address under /api/ that no route has (the site's HTML 404 page before). The status and the
Allow header stay as they are; a response that already has a page or JSON is left alone.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import Resolver404, resolve

from kizuna.api.errors import error_response, status_error

API_PREFIX = "/api/"


class ErrorBodyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code not in (404, 405) or response.streaming:
            return response
        if request.path_info.startswith(API_PREFIX):
            if response.get("Content-Type", "").startswith("application/json"):
                return response
            # An address no API route has (a typo, a trailing slash), or a method the route
            # does not take: the API's own error shape, not the site's HTML page.
            code, message = status_error(response.status_code)
            if response.status_code == 404 and (hint := _slash_hint(request.path_info)):
                message = f"このURLのAPIはありません。{hint}"
            answer = error_response(response.status_code, code, message)
            if "Allow" in response:
                answer["Allow"] = response["Allow"]
            return answer
        if response.status_code != 405:
            return response
        if response.content or not request.accepts("text/html"):
            return response
        response.content = render_to_string("web/method_not_allowed.html", request=request)
        response["Content-Type"] = "text/html; charset=utf-8"
        return response


def _slash_hint(path: str) -> str | None:
    """What to change when the address is a route but for its trailing slash: the API's routes
    end without one (`/api/v1/customers`), the browser's habit and many clients add it."""
    other = path.removesuffix("/") if path.endswith("/") else path + "/"
    try:
        resolve(other)
    except Resolver404:
        return None
    return (
        "URLの末尾の / を外してください" if path.endswith("/") else "URLの末尾に / を付けてください"
    )
