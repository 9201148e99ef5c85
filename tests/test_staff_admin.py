"""Staff accounts in Django admin: a 管理者 (not a superuser) adds staff, changes roles,
disables leavers, resets passwords and reads the audit log; the last admin cannot be lost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from kizuna.accounts.models import Role, User
from kizuna.core.models import AuditLog
from tests.factories import make_user

LIST = "/admin/accounts/user/"
ADD = "/admin/accounts/user/add/"
AUDIT = "/admin/core/auditlog/"
NEW_PASSWORD = "kizuna-Staff-2026!"


def change_url(user: User) -> str:
    return f"/admin/accounts/user/{user.pk}/change/"


def change_data(user: User, **fields: Any) -> dict[str, Any]:
    """The change form as an admin would post it, with `fields` changed."""
    data: dict[str, Any] = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "role": user.role,
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "last_login_0": "",
        "last_login_1": "",
    }
    active = fields.pop("is_active", user.is_active)
    if active:
        data["is_active"] = "on"
    data.update(fields)
    return data


@pytest.mark.django_db
def test_admin_role_manages_staff_and_reads_audit_log(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    client = client_for(Role.ADMIN)
    assert not users[Role.ADMIN].is_superuser
    index = client.get("/admin/").content.decode()
    assert "パーミッションがありません" not in index
    assert LIST in index
    assert AUDIT in index
    for url in (LIST, ADD, change_url(users[Role.OPERATOR]), AUDIT):
        assert client.get(url).status_code == 200, url
    password_url = f"/admin/accounts/user/{users[Role.OPERATOR].pk}/password/"
    assert client.get(password_url).status_code == 200


@pytest.mark.django_db
def test_admin_role_cannot_delete_staff_or_change_the_audit_log(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    client = client_for(Role.ADMIN)
    operator = users[Role.OPERATOR]
    response = client.post(f"/admin/accounts/user/{operator.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert User.objects.filter(pk=operator.pk).exists()
    assert client.get("/admin/core/auditlog/add/").status_code == 403


@pytest.mark.django_db
def test_admin_role_cannot_make_a_superuser(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    client = client_for(Role.ADMIN)
    operator = users[Role.OPERATOR]
    response = client.post(change_url(operator), change_data(operator, is_superuser="on"))
    assert response.status_code == 302
    operator.refresh_from_db()
    assert not operator.is_superuser


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.MARKETER, Role.ANALYST])
@pytest.mark.django_db
def test_other_roles_get_no_staff_admin(
    client_for: Callable[[Role], Client], users: dict[Role, User], role: Role
) -> None:
    client = client_for(role)
    for url in (LIST, ADD, change_url(users[Role.OPERATOR]), AUDIT):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/")
    assert not users[role].has_perm("accounts.change_user")


@pytest.mark.django_db
def test_disabled_admin_gets_no_staff_admin(users: dict[Role, User]) -> None:
    admin = users[Role.ADMIN]
    admin.is_active = False
    admin.save()
    assert not admin.has_perm("accounts.change_user")
    assert not admin.has_module_perms("accounts")


@pytest.mark.django_db
def test_superuser_still_manages_everything() -> None:
    root = User.objects.create_superuser(username="root", password=NEW_PASSWORD)
    client = Client()
    client.force_login(root)
    for url in (LIST, ADD, change_url(root), AUDIT, "/admin/customers/customer/"):
        assert client.get(url).status_code == 200, url


@pytest.mark.parametrize(
    "change", [{"role": Role.OPERATOR.value}, {"is_active": False}], ids=["role", "active"]
)
@pytest.mark.django_db
def test_the_last_admin_cannot_lower_or_disable_themselves(change: dict[str, Any]) -> None:
    admin = make_user(Role.ADMIN, username="only-admin")
    client = Client()
    client.force_login(admin)
    before = AuditLog.objects.count()
    response = client.post(change_url(admin), change_data(admin, **change))
    assert response.status_code == 200
    assert "有効な管理者が1人もいなくなるため、この変更はできません" in response.content.decode()
    admin.refresh_from_db()
    assert admin.role == Role.ADMIN
    assert admin.is_active
    assert AuditLog.objects.count() == before


@pytest.mark.django_db
def test_the_last_superuser_cannot_untick_active() -> None:
    root = User.objects.create_superuser(username="root", password=NEW_PASSWORD)
    client = Client()
    client.force_login(root)
    data = change_data(root, is_superuser="on", is_staff="on", is_active=False)
    response = client.post(change_url(root), data)
    assert "有効な管理者が1人もいなくなるため" in response.content.decode()
    root.refresh_from_db()
    assert root.is_active


@pytest.mark.django_db
def test_an_admin_may_be_lowered_while_another_remains(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    other = make_user(Role.ADMIN, username="second-admin")
    client = client_for(Role.ADMIN)
    response = client.post(change_url(other), change_data(other, role=Role.MARKETER.value))
    assert response.status_code == 302
    other.refresh_from_db()
    assert other.role == Role.MARKETER
    assert not other.is_staff
    row = AuditLog.objects.get(action="user.update", entity_id=str(other.pk))
    assert row.actor_id == users[Role.ADMIN].pk
    assert row.changes == {"role": ["admin", "marketer"]}


@pytest.mark.django_db
def test_creating_staff_writes_an_audit_row(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    client = client_for(Role.ADMIN)
    response = client.post(
        ADD,
        {
            "username": "new-operator",
            "usable_password": "true",
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
            "role": Role.OPERATOR.value,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    created = User.objects.get(username="new-operator")
    assert created.role == Role.OPERATOR
    assert created.is_active
    assert not created.is_superuser
    row = AuditLog.objects.get(action="user.create", entity_id=str(created.pk))
    assert row.actor_label == users[Role.ADMIN].username
    assert row.changes["role"] == [None, "operator"]
    assert row.changes["username"] == [None, "new-operator"]
    assert NEW_PASSWORD not in str(row.changes)
    assert created.password not in str(row.changes)


@pytest.mark.django_db
def test_disabling_staff_and_resetting_a_password_are_audited(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    client = client_for(Role.ADMIN)
    operator = users[Role.OPERATOR]
    response = client.post(
        f"/admin/accounts/user/{operator.pk}/password/",
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "set_usable_password": "true"},
    )
    assert response.status_code == 302
    operator.refresh_from_db()
    assert operator.check_password(NEW_PASSWORD)
    response = client.post(change_url(operator), change_data(operator, is_active=False))
    assert response.status_code == 302
    operator.refresh_from_db()
    assert not operator.is_active
    rows = AuditLog.objects.filter(action="user.update", entity_id=str(operator.pk)).order_by("pk")
    assert [row.changes for row in rows] == [
        {"password": [None, "changed"]},
        {"is_active": [True, False]},
    ]
    assert all(NEW_PASSWORD not in str(row.changes) for row in rows)


@pytest.mark.django_db
def test_admin_role_cannot_change_a_superuser(
    client_for: Callable[[Role], Client],
) -> None:
    root = User.objects.create_superuser(username="root", password=NEW_PASSWORD)
    client = client_for(Role.ADMIN)
    assert client.get(change_url(root)).status_code == 200  # view only
    response = client.post(
        f"/admin/accounts/user/{root.pk}/password/",
        {"password1": NEW_PASSWORD + "x", "password2": NEW_PASSWORD + "x"},
    )
    assert response.status_code == 403
    root.refresh_from_db()
    assert root.check_password(NEW_PASSWORD)
