"""Staff roles: Django admin follows the admin role; inactive staff have no role at all."""

from __future__ import annotations

import pytest

from kizuna.accounts.models import Role, User
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def test_only_admins_get_into_django_admin() -> None:
    assert make_user(Role.ADMIN).is_staff
    for role in (Role.MARKETER, Role.OPERATOR, Role.ANALYST):
        assert not make_user(role).is_staff


def test_demoting_an_admin_closes_django_admin() -> None:
    user = make_user(Role.ADMIN)
    user.role = Role.OPERATOR
    user.save()
    user.refresh_from_db()
    assert not user.is_staff


def test_roles_are_checked_exactly() -> None:
    operator = make_user(Role.OPERATOR)
    assert operator.has_role(Role.OPERATOR, Role.MARKETER)
    assert not operator.has_role(Role.ANALYST)


def test_a_deactivated_user_has_no_role() -> None:
    user: User = make_user(Role.ADMIN)
    user.is_active = False
    user.save()
    assert not user.has_role(Role.ADMIN)
