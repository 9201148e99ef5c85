"""Request helpers shared by the pages: typing for views that read django-htmx's
`request.htmx`, and reading a number typed into a form."""

from __future__ import annotations

import re
import unicodedata

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails

# A Japanese IME in kana mode turns the minus key into "ー", and text pasted from documents
# often carries the minus sign "−": both are read as a minus. NFKC has already made "－" a "-".
_INTEGER_RE = re.compile(r"([-−ー]?)([0-9]+)")


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def wants_fragment(request: HtmxHttpRequest) -> bool:
    """True when htmx asked for a part of a page.

    A history-restore request also carries HX-Request, but it rebuilds the whole page after a
    cache miss, so it gets the full page.
    """
    return bool(request.htmx) and not request.htmx.history_restore_request


def int_or_text(raw: str | None) -> int | str:
    """A whole number typed into a form as int (full-width digits and thousands commas too);
    anything else as typed, so the validator says in Japanese what is wrong and the form shows
    the input again.

    Negative numbers are numbers: a step may come days *before* its anchor, and a negative age
    or count must reach the validator's range message rather than "not a number".
    """
    text = unicodedata.normalize("NFKC", raw or "").strip().replace(",", "")
    match = _INTEGER_RE.fullmatch(text)
    if match is None:
        return raw or ""
    try:
        number = int(match[2])
    except ValueError:  # longer than int() reads (4,300 digits): no value anyone means
        return raw or ""
    return -number if match[1] else number
