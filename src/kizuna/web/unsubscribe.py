"""The opt-out link in every marketing message: /u/<token> (RELIABILITY S5, RFC 8058).

GET shows a confirmation page and never changes anything (mail scanners and link previews
open links). POST withdraws the consent: from the page's button, or straight from the mail
client's one-click unsubscribe, which sends no cookie and no CSRF token — the signed token is
the proof, so the view is CSRF-exempt. Public: the customer has no login.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from kizuna.accounts.access import public
from kizuna.campaigns.unsubscribe import InvalidTokenError, read_token, unsubscribe

CHANNEL_WORDS = {
    "email": "メールでのお知らせ",
    "line": "LINEでのお知らせ",
    "sms": "SMSでのお知らせ",
}


@public
@csrf_exempt
@never_cache
@require_http_methods(["GET", "POST"])
def unsubscribe_view(request: HttpRequest, token: str) -> HttpResponse:
    try:
        claim = read_token(token)
    except InvalidTokenError:
        return render(request, "web/unsubscribe/invalid.html", status=404)
    what = CHANNEL_WORDS.get(claim.channel.value, "お知らせ")
    if request.method == "GET":
        return render(request, "web/unsubscribe/confirm.html", {"what": what})
    try:
        result = unsubscribe(token=token)
    except InvalidTokenError:
        return render(request, "web/unsubscribe/invalid.html", status=404)
    return render(request, "web/unsubscribe/done.html", {"what": what, "already": result.already})
