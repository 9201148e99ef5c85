"""One-time form tokens: a form's POST, sent again by a reload, the back button or a second
click, does its work once.

Each rendering of a guarded form gets a fresh token, kept in the session under a key per form
(newest MAX_FORM_TOKENS only): a token the session never issued is refused as a stale form.
Sending the form claims its token by inserting a `FormSubmission` row. The session alone cannot
be the claim: two quick clicks are two concurrent requests that both read the session before
either writes it back, and both would see the token unused. The unique key lets exactly one of
them insert; the other learns the form was already sent, and (once the first has finished)
what it made.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from django import forms
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from kizuna.core.models import FormSubmission

MAX_FORM_TOKENS = 20
FIELD = "form_token"


def issue_form_token(request: HttpRequest, session_key: str) -> str:
    """A token for one rendering of the form: put it in the form as `form_token`."""
    tokens: dict[str, Any] = request.session.get(session_key, {})
    token = secrets.token_urlsafe(16)
    tokens[token] = None
    # Only the newest forms: a tab opened longer ago than that is asked to fill it in again.
    request.session[session_key] = dict(list(tokens.items())[-MAX_FORM_TOKENS:])
    return token


def posted_form_token(request: HttpRequest, session_key: str) -> str | None:
    """The token this POST carries, or None when this session did not issue it (never, or it
    was pushed out by newer forms): the form is stale and must be filled in again."""
    token = str(request.POST.get(FIELD, ""))
    tokens: dict[str, Any] = request.session.get(session_key, {})
    return token if token in tokens else None


def claim_form_token(token: str, variant: str = "") -> tuple[bool, Any]:
    """Claim the token for this send. (True, None) when this is the first send; (False, what
    the first send recorded) otherwise, the recorded value being None while it is still at
    work.

    `variant` tells apart sends of one rendering that are meant as different work (the import
    form sent back with another file is a new import, not a second click).
    """
    key = f"{token}:{variant}" if variant else token
    now = timezone.now()
    try:
        # A transaction of its own, so the claim is visible to every other request at once.
        with transaction.atomic():
            FormSubmission.objects.create(key=key, created_at=now)
    except IntegrityError:
        earlier = FormSubmission.objects.filter(key=key).values_list("result", flat=True)
        return False, earlier.first()
    # A token outlives neither its session nor the session's list of newest forms; rows older
    # than a session cannot be sent again and are forgotten here (an indexed range delete).
    forget_before = now - dt.timedelta(seconds=settings.SESSION_COOKIE_AGE)
    FormSubmission.objects.filter(created_at__lt=forget_before).delete()
    return True, None


def record_form_token(token: str, value: Any, variant: str = "") -> None:
    """What the first send made: a later send of the token gets it from claim_form_token."""
    key = f"{token}:{variant}" if variant else token
    FormSubmission.objects.filter(key=key).update(result=value)


def sent_before(request: HttpRequest, form: forms.Form, session_key: str, stale: str) -> bool:
    """For a view whose form makes one thing per rendering: whether this POST's form was sent
    before (a reload, a second click). A valid first send claims the form's token; a token the
    session does not know adds `stale` to the form's errors instead (nothing is done)."""
    if request.method != "POST":
        return False
    token = posted_form_token(request, session_key)
    if token is None:
        form.add_error(None, stale)
        return False
    if not form.is_valid():
        return False
    first, _ = claim_form_token(token)
    return not first
