"""Staff roles: Django admin follows the admin role; inactive staff have no role at all."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.core.management import call_command

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


def test_createsuperuser_makes_an_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    # `kizuna createsuperuser` is Django's command; the role's default is オペレーター, which the
    # header badge showed for a user with every right
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-enough-passphrase-2026")
    call_command("createsuperuser", interactive=False, username="owner", email="owner@example.jp")
    owner = User.objects.get(username="owner")
    assert (owner.role, owner.get_role_display()) == (Role.ADMIN, "管理者")
    assert owner.is_staff
    assert User.objects.create_superuser("owner2", password="x").role == Role.ADMIN


def test_a_superuser_stays_admin_until_the_flag_is_cleared() -> None:
    user = make_user(Role.MARKETER)
    user.is_superuser = True
    user.save()
    user.refresh_from_db()
    assert user.role == Role.ADMIN
    user.role = Role.OPERATOR  # the role cannot say less than the flag grants
    user.save()
    user.refresh_from_db()
    assert user.role == Role.ADMIN
    user.is_superuser = False
    user.role = Role.OPERATOR
    user.save()
    user.refresh_from_db()
    assert (user.role, user.is_staff) == (Role.OPERATOR, False)


def test_existing_superusers_become_admins_by_the_migration() -> None:
    migration = importlib.import_module("kizuna.accounts.migrations.0004_superusers_are_admins")
    # given: a superuser saved before the role followed the flag
    owner = make_user(Role.ADMIN)
    User.objects.filter(pk=owner.pk).update(is_superuser=True, role=Role.OPERATOR, is_staff=True)
    operator = make_user(Role.OPERATOR)
    # when
    migration.superusers_are_admins(apps, None)
    # then
    owner.refresh_from_db()
    operator.refresh_from_db()
    assert owner.role == Role.ADMIN
    assert operator.role == Role.OPERATOR
