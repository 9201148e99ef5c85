"""A body for the 405 answers Django and django-ninja give with none (or a bare English one).

Actions such as saving the delivery settings, pausing delivery or logging out accept POST only.
Opened from a bookmark, the history or a pasted link, Django answers 405 with an empty body,
which the browser shows as a white page: a browser gets a short Japanese page instead. An API
client calling a route with the wrong method got django-ninja's plain-text "Method not allowed";
it gets the API's own JSON error (kizuna.api.errors) like every other API error. The status and
the Allow header stay as they are; a response that already has a page or JSON is left alone.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from kizuna.api.errors import error_response, status_error

API_PREFIX = "/api/"


class MethodNotAllowedPageMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code != 405 or response.streaming:
            return response
        if request.path_info.startswith(API_PREFIX):
            if response.get("Content-Type", "").startswith("application/json"):
                return response
            answer = error_response(405, *status_error(405))
            answer["Allow"] = response.get("Allow", "")
            return answer
        if response.content or not request.accepts("text/html"):
            return response
        response.content = render_to_string("web/method_not_allowed.html", request=request)
        response["Content-Type"] = "text/html; charset=utf-8"
        return response
