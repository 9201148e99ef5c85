"""パスワード変更: every member of staff changes their own password on the web (not only admins
in Django admin), in Japanese, audited, throttled like login, and staying logged in."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role, SecuritySettings, TwoFactorPolicy, User
from kizuna.core.models import AuditLog
from tests.factories import PASSWORD
from tests.test_login_security import OFFICE, confirmed_device_for, login, verified

pytestmark = pytest.mark.django_db

NEW = "sakura-hanami-2026-kizuna"
URL = "security:password_change"


def change(client: Client, old: str, new1: str, new2: str | None = None) -> str:
    response = client.post(
        reverse(URL),
        {"old_password": old, "new_password1": new1, "new_password2": new2 or new1},
        REMOTE_ADDR=OFFICE,
    )
    assert response.status_code in (200, 302)
    if response.status_code == 302:
        return str(response["Location"])
    return response.content.decode()


@pytest.mark.parametrize("role", list(Role))
def test_every_role_changes_their_own_password_and_stays_logged_in(
    role: Role, users: dict[Role, User]
) -> None:
    user = users[role]
    client = Client()
    login(client, user.username, PASSWORD, OFFICE)
    account = client.get(reverse("security:account")).content.decode()
    assert reverse(URL) in account  # reachable from セキュリティ設定
    page = client.get(reverse(URL)).content.decode()
    assert "現在のパスワード" in page
    assert "新しいパスワード" in page

    assert change(client, PASSWORD, NEW) == reverse("security:account")
    assert "パスワードを変更しました" in client.get(reverse("security:account")).content.decode()
    assert client.get(reverse("web:home")).status_code == 200  # still logged in
    user.refresh_from_db()
    assert user.check_password(NEW)
    assert not user.check_password(PASSWORD)
    audit = AuditLog.objects.get(action="user.update")
    assert audit.actor_id == user.pk
    assert audit.changes == {"password": [None, "changed"]}
    assert NEW not in str(audit.changes)

    # The new password is the one that logs in now.
    assert login(Client(), user.username, PASSWORD, OFFICE).status_code == 200
    assert login(Client(), user.username, NEW, OFFICE).status_code == 302


def test_a_wrong_current_password_is_a_form_error(users: dict[Role, User]) -> None:
    user = users[Role.OPERATOR]
    client = Client()
    login(client, user.username, PASSWORD, OFFICE)
    html = change(client, "not-my-password", NEW)
    assert "現在のパスワードが正しくありません" in html
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    assert not AuditLog.objects.filter(action="user.update").exists()


def test_the_password_rules_and_mismatch_are_explained_in_japanese(
    users: dict[Role, User],
) -> None:
    user = users[Role.MARKETER]
    client = Client()
    login(client, user.username, PASSWORD, OFFICE)
    assert "このパスワードは短すぎます" in change(client, PASSWORD, "abc12")
    assert "このパスワードは一般的すぎます" in change(client, PASSWORD, "password123")
    assert "一致しません" in change(client, PASSWORD, NEW, NEW + "x")
    assert "を入力してください" in change(client, "", "")
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_wrong_current_passwords_count_towards_the_login_lock(users: dict[Role, User]) -> None:
    user = users[Role.ANALYST]
    client = Client()
    login(client, user.username, PASSWORD, OFFICE)
    for _ in range(4):
        assert "現在のパスワードが正しくありません" in change(client, "guess", NEW)
    html = change(client, "guess", NEW)
    assert "パスワードを変更できません" in html
    assert AccessAttempt.objects.get(username=user.username).failures_since_start == 5
    # Locked now: even the right password is not checked (no password oracle) ...
    html = change(client, PASSWORD, NEW)
    assert "パスワードを変更できません" in html
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    # ... the page is still this page of a logged-in user, and a new login is locked too.
    assert client.get(reverse("web:home")).status_code == 200
    assert login(Client(), user.username, PASSWORD, OFFICE).status_code == 429


def test_a_session_with_2fa_stays_verified_after_the_change(users: dict[Role, User]) -> None:
    user = users[Role.ADMIN]
    client = Client()
    client.force_login(user)
    verified(client, user)
    assert client.get(reverse("web:home")).status_code == 200
    assert change(client, PASSWORD, NEW) == reverse("security:account")
    assert client.get(reverse("web:home")).status_code == 200


def test_the_forced_2fa_set_up_hides_links_that_lead_back_to_it(
    client_for: Callable[[Role], Client],
) -> None:
    SecuritySettings.objects.update_or_create(
        pk=SecuritySettings.SINGLETON_ID, defaults={"two_factor_policy": TwoFactorPolicy.ALL}
    )
    client = client_for(Role.MARKETER)
    assert client.get(reverse("web:home"))["Location"] == reverse("security:account")
    page = client.get(reverse("security:account")).content.decode()
    assert "2段階認証を有効にするまで他の画面は開けません" in page
    assert 'class="main-menu"' not in page
    assert reverse("web:customer_search") not in page
    assert reverse(URL) not in page
    assert 'href="/admin/"' not in page
    assert f'href="{reverse("web:home")}"' not in page  # not even the Kizuna name in the header
    assert reverse("logout") in page  # leaving is still possible


def test_the_2fa_code_page_offers_nothing_but_the_code_and_logout(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    confirmed_device_for(users[Role.ADMIN])
    client = client_for(Role.ADMIN)
    page = client.get(reverse("login_verify")).content.decode()
    assert 'name="code"' in page
    for bounced in ("web:home", "security:account", "admin:index"):
        assert f'href="{reverse(bounced)}"' not in page, bounced
    assert reverse("logout") in page


def test_the_menu_stays_on_the_settings_page_when_2fa_is_optional(
    client_for: Callable[[Role], Client],
) -> None:
    page = client_for(Role.ADMIN).get(reverse("security:account")).content.decode()
    assert 'class="main-menu"' in page
    assert 'href="/admin/"' in page
    assert f'href="{reverse("web:home")}"' in page
    assert reverse(URL) in page
