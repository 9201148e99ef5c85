"""Server-side enforcement of roles on every URL (RELIABILITY D2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from kizuna.accounts.access import PUBLIC, allowed_roles

# Django's own admin and static files enforce their own access.
_SELF_GUARDED_PREFIXES = ("/admin/", "/" + settings.STATIC_URL.lstrip("/"))


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
        if request.path.startswith(_SELF_GUARDED_PREFIXES):
            return None
        roles = allowed_roles(view_func)
        if roles == PUBLIC:
            return None
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if roles is None or not request.user.has_role(*roles):
            raise PermissionDenied
        return None
