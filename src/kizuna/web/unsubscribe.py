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
from kizuna.campaigns.models import DeliverySettings
from kizuna.campaigns.sender import current_sender
from kizuna.campaigns.unsubscribe import (
    InvalidTokenError,
    already_stopped,
    read_token,
    unsubscribe,
)

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
    # The page is Kizuna's, but the customer knows the shop: name it, and its contact.
    sender = current_sender(DeliverySettings.load())
    try:
        claim = read_token(token)
    except InvalidTokenError:
        return render(request, "web/unsubscribe/invalid.html", {"sender": sender}, status=404)
    context = {"what": CHANNEL_WORDS.get(claim.channel.value, "お知らせ"), "sender": sender}
    if request.method == "GET":
        if already_stopped(claim):
            return render(request, "web/unsubscribe/done.html", {**context, "already": True})
        return render(request, "web/unsubscribe/confirm.html", context)
    try:
        result = unsubscribe(token=token)
    except InvalidTokenError:
        return render(request, "web/unsubscribe/invalid.html", {"sender": sender}, status=404)
    return render(request, "web/unsubscribe/done.html", {**context, "already": result.already})
