"""One-time form tokens: a form's POST, sent again by a reload or the back button, does its
work once.

Each rendering of a guarded form gets a fresh token, kept in the session under a key per form
(newest MAX_FORM_TOKENS only). The token maps to None until the form's POST has done its work,
then to what the view recorded (e.g. the run or key it made), so a resubmission can be told
apart from a first send and answered without doing the work again.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.http import HttpRequest

MAX_FORM_TOKENS = 20
FIELD = "form_token"
# Not in the session (never issued, or pushed out by newer forms).
UNKNOWN = object()


def issue_form_token(request: HttpRequest, session_key: str) -> str:
    """A token for one rendering of the form: put it in the form as `form_token`."""
    tokens: dict[str, Any] = request.session.get(session_key, {})
    token = secrets.token_urlsafe(16)
    tokens[token] = None
    # Only the newest forms: a tab opened longer ago than that is asked to fill it in again.
    request.session[session_key] = dict(list(tokens.items())[-MAX_FORM_TOKENS:])
    return token


def posted_form_token(request: HttpRequest, session_key: str) -> tuple[str, Any]:
    """The token this POST carries and what it maps to: UNKNOWN, None (not used yet), or what
    `record_form_token` stored when the form was sent before."""
    token = str(request.POST.get(FIELD, ""))
    tokens: dict[str, Any] = request.session.get(session_key, {})
    return token, tokens.get(token, UNKNOWN)


def record_form_token(request: HttpRequest, session_key: str, token: str, value: Any) -> None:
    """Mark the token used: a later POST with it gets `value` back from posted_form_token."""
    tokens: dict[str, Any] = request.session.get(session_key, {})
    tokens[token] = value
    request.session[session_key] = tokens
