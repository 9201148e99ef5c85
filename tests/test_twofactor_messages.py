"""What the 2FA code pages say when they refuse a code: a reused code is told apart from a
wrong one (and is still refused and counted)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from kizuna.accounts.models import Role, User
from tests.factories import PASSWORD
from tests.test_login_security import (
    HOME,
    OFFICE,
    code_for,
    confirmed_device_for,
    is_logged_in,
    let_throttle_pass,
    login,
)

pytestmark = pytest.mark.django_db

REUSED = (
    "この確認コードはすでに使われました。認証アプリに次のコードが表示されるまでお待ちください。"
)
WRONG = "確認コードが正しくありません"


def test_a_reused_code_says_it_was_already_used(users: dict[Role, User]) -> None:
    user = users[Role.OPERATOR]
    device = confirmed_device_for(user)
    code = code_for(device)
    first, second = Client(), Client()
    login(first, user.username, PASSWORD, OFFICE)
    assert first.post(reverse("login_verify"), {"code": code}).status_code == 302

    login(second, user.username, PASSWORD, HOME)
    response = second.post(reverse("login_verify"), {"code": code})
    assert response.status_code == 200
    html = response.content.decode()
    assert REUSED in html
    assert WRONG not in html
    # Still refused, and counted towards the throttle like any other failure.
    assert not is_logged_in(second)
    device.refresh_from_db()
    assert device.throttling_failure_count == 1

    # The next code from the app goes in.
    let_throttle_pass()
    response = second.post(reverse("login_verify"), {"code": code_for(device, steps_ahead=1)})
    assert response.status_code == 302
    assert is_logged_in(second)


def test_a_wrong_code_still_says_it_is_wrong(users: dict[Role, User]) -> None:
    user = users[Role.OPERATOR]
    device = confirmed_device_for(user)
    first = Client()
    login(first, user.username, PASSWORD, OFFICE)
    assert first.post(reverse("login_verify"), {"code": code_for(device)}).status_code == 302
    second = Client()
    login(second, user.username, PASSWORD, HOME)
    wrong = f"{(int(code_for(device)) + 1) % 1_000_000:06d}"
    html = second.post(reverse("login_verify"), {"code": wrong}).content.decode()
    assert WRONG in html
    assert REUSED not in html


def test_a_device_never_used_says_wrong_not_reused(users: dict[Role, User]) -> None:
    user = users[Role.ANALYST]
    TOTPDevice.objects.filter(user=user).delete()
    device = confirmed_device_for(user)
    client = Client()
    login(client, user.username, PASSWORD, OFFICE)
    html = client.post(reverse("login_verify"), {"code": "abc"}).content.decode()
    assert WRONG in html
    device.refresh_from_db()
    assert device.last_t == -1
