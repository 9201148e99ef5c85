"""A page, not a blank screen, for a browser that opens an address meant for a button.

Actions such as saving the delivery settings, pausing delivery or logging out accept POST only.
Opened from a bookmark, the history or a pasted link, Django answers 405 with an empty body,
which the browser shows as a white page. This fills that body with a short Japanese page; the
status and the Allow header stay as they are. The API (machine clients, /api/), responses that
already have a body and clients that do not want HTML are left alone.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

API_PREFIX = "/api/"


class MethodNotAllowedPageMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code != 405
            or request.path_info.startswith(API_PREFIX)
            or response.streaming
            or response.content
            or not request.accepts("text/html")
        ):
            return response
        response.content = render_to_string("web/method_not_allowed.html", request=request)
        response["Content-Type"] = "text/html; charset=utf-8"
        return response
