"""Who may open which page: each view declares it; undeclared views are closed (deny by default).

    @allow_roles(Role.OPERATOR, Role.MARKETER)
    def customer_detail(request, pk): ...

Admins may open every page; `public` marks the few pages open without login (login itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from kizuna.accounts.models import Role

F = TypeVar("F", bound=Callable[..., Any])

ACCESS_ATTR = "kizuna_allowed_roles"
PUBLIC = frozenset({"__public__"})


def allow_roles(*roles: Role) -> Callable[[F], F]:
    allowed = frozenset({Role.ADMIN.value, *(role.value for role in roles)})

    def decorate(view: F) -> F:
        setattr(view, ACCESS_ATTR, allowed)
        return view

    return decorate


def public(view: F) -> F:
    setattr(view, ACCESS_ATTR, PUBLIC)
    return view


def allowed_roles(view: Callable[..., Any]) -> frozenset[str] | None:
    """The roles a view admits, PUBLIC, or None when the view declared nothing."""
    for candidate in (view, getattr(view, "view_class", None), getattr(view, "cls", None)):
        if candidate is not None and hasattr(candidate, ACCESS_ATTR):
            value: frozenset[str] = getattr(candidate, ACCESS_ATTR)
            return value
    return None
