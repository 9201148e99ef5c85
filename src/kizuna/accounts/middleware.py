"""Server-side enforcement of roles on every URL (RELIABILITY D2) and of the 2FA step (D4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django_htmx.http import HttpResponseClientRedirect

from kizuna.accounts.access import PUBLIC, allowed_roles
from kizuna.accounts.twofactor import Step, pending_step

# Django's own admin and static files enforce their own access.
_SELF_GUARDED_PREFIXES = ("/admin/", "/" + settings.STATIC_URL.lstrip("/"))
# The one page a user who must enrol in 2FA may open (besides public pages such as logout).
ENROL_URL_NAME = "security:account"
VERIFY_URL_NAME = "login_verify"


class RoleAccessMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: Any,
        view_kwargs: Any,
    ) -> HttpResponse | None:
        roles = allowed_roles(view_func)
        if roles == PUBLIC:
            return None
        # Before the admin's own guard: a password alone must not open Django admin either.
        step_response = self._two_factor_step(request)
        if step_response is not None:
            return step_response
        if request.path.startswith(_SELF_GUARDED_PREFIXES):
            return None
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if roles is None or not request.user.has_role(*roles):
            raise PermissionDenied
        return None

    @staticmethod
    def _two_factor_step(request: HttpRequest) -> HttpResponse | None:
        step = pending_step(request.user)
        target = None
        if step is Step.VERIFY:
            target = f"{reverse(VERIFY_URL_NAME)}?{urlencode({'next': request.get_full_path()})}"
        match = request.resolver_match
        if step is Step.ENROL and (match is None or match.view_name != ENROL_URL_NAME):
            target = reverse(ENROL_URL_NAME)
        if target is None:
            return None
        # An htmx request would paste the page into a fragment: move the whole tab instead.
        if getattr(request, "htmx", False):
            return HttpResponseClientRedirect(target)
        return HttpResponseRedirect(target)
