"""An admin cannot turn off their own 2FA from セキュリティ管理 (docs/security.md, "Lost phone").

Anyone holding an unlocked, logged-in session could otherwise remove the second factor without
knowing the password or a code; another admin has to do it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from kizuna.accounts.models import Role, User
from kizuna.accounts.twofactor import SelfResetRefusedError, reset_two_factor
from kizuna.core.models import AuditLog
from tests.test_login_security import confirmed_device_for, verified

pytestmark = pytest.mark.django_db


def test_an_admin_posting_a_reset_of_their_own_device_is_refused(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    admin = users[Role.ADMIN]
    client = verified(client_for(Role.ADMIN), admin)
    response = client.post(
        reverse("security:staff"), {"action": "reset_two_factor", "id": admin.pk}, follow=True
    )
    assert "自分の2段階認証はここではリセットできません" in response.content.decode()
    assert TOTPDevice.objects.filter(user=admin, confirmed=True).exists()
    assert not AuditLog.objects.filter(action="two_factor.reset").exists()


def test_the_own_row_has_no_reset_button_but_others_do(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    admin = users[Role.ADMIN]
    client = verified(client_for(Role.ADMIN), admin)
    confirmed_device_for(users[Role.OPERATOR])
    page = client.get(reverse("security:staff")).content.decode()
    assert f'name="id" value="{users[Role.OPERATOR].pk}"' in page
    assert f'name="id" value="{admin.pk}"' not in page


def test_the_service_refuses_for_every_caller(users: dict[Role, User]) -> None:
    admin = users[Role.ADMIN]
    confirmed_device_for(admin)
    with pytest.raises(SelfResetRefusedError):
        reset_two_factor(user=admin, acting_user=admin)
    assert TOTPDevice.objects.filter(user=admin).exists()
    # Another admin still can (lost phone).
    other = User.objects.create_user(username="admin-2", password="x", role=Role.ADMIN)
    assert reset_two_factor(user=admin, acting_user=other)
    assert not TOTPDevice.objects.filter(user=admin).exists()
