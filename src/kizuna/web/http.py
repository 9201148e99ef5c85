"""Request typing for views that read django-htmx's `request.htmx`."""

from __future__ import annotations

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def wants_fragment(request: HtmxHttpRequest) -> bool:
    """True when htmx asked for a part of a page.

    A history-restore request also carries HX-Request, but it rebuilds the whole page after a
    cache miss, so it gets the full page.
    """
    return bool(request.htmx) and not request.htmx.history_restore_request
