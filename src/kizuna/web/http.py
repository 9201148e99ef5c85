"""Request helpers shared by the pages: typing for views that read django-htmx's
`request.htmx`, the data a form is bound to, reading a number typed into a form, a service's
refusal put on its form, and the answer to a confirmed delete."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect
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


def posted(request: HttpRequest) -> QueryDict | None:
    """The data a form is bound to: the POST body on a POST, even an empty one, and nothing on
    a GET. (`request.POST or None` would leave a form posted without fields unbound, so it
    answers "not valid" without a single message.)"""
    return request.POST if request.method == "POST" else None


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


def confirmed_delete(
    request: HttpRequest,
    instance: Any,
    *,
    what: str,
    delete: Callable[[Any], None],
    refused: type[Exception],
    back: str,
    listing: str,
) -> HttpResponse:
    """The answer to a 削除 form (segments, scenarios, templates, offers): delete `instance`
    only once 「削除してよい」 was ticked — the server checks, not only the browser — with the
    domain's refusal (`refused`, carrying `.messages`) shown on its page `back`, and a plain
    message, never a 404, when a second tab finds it already gone. `what` names the kind."""
    if instance is None:
        messages.info(request, f"この{what}はすでに削除されています。")
        return redirect(listing)
    if request.POST.get("sure") != "1":
        # Deleting cannot be undone: one click on the wrong button must not do it.
        messages.error(
            request,
            "削除するには「削除してよい」にチェックを入れてから押してください"
            f"(削除した{what}は元に戻せません)。",
        )
        return redirect(back)
    try:
        delete(instance)
    except refused as exc:
        messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
        return redirect(back)
    messages.success(request, f"{what}「{instance.name}」を削除しました。")
    return redirect(listing)


def errors_onto(form: forms.Form, exc: ValidationError) -> None:
    """A service's refusal on the form that asked: each error keyed by a field the form has
    under that field, every other one above the form (the input stays as typed)."""
    for name, errors in exc.update_error_dict({}).items():
        for error in errors:
            form.add_error(name if name in form.fields else None, error)
