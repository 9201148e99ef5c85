"""Staff login security (RELIABILITY D4): throttling per user + IP and per IP, and TOTP 2FA.

Failures are POSTed to the real login page from addresses in the documentation ranges
(RFC 5737); 2FA codes are computed here from the secret the enrolment page shows, the way a
phone's authenticator app computes them.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice
from pytest_django import Settings

from kizuna.accounts.models import Role, SecuritySettings, TwoFactorPolicy, User
from kizuna.accounts.twofactor import set_two_factor_policy
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from tests.factories import PASSWORD, make_customer, make_user
from tests.test_api_common import full_access_client

pytestmark = pytest.mark.django_db

OFFICE = "192.0.2.10"
HOME = "198.51.100.7"
ATTACKER = "203.0.113.66"
LOCKED = "一時的にロックされています"


def login(client: Client, username: str, password: str, ip: str) -> Any:
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip
    )


def fail(client: Client, username: str, ip: str, times: int) -> None:
    for _ in range(times):
        response = login(client, username, "wrong-password", ip)
        assert response.status_code in (200, 429)


def is_logged_in(client: Client) -> bool:
    return client.get(reverse("web:home")).status_code == 200


def age_failures(minutes: int) -> None:
    """As if the failures happened `minutes` ago (the cool-off is measured from the last one)."""
    AccessAttempt.objects.update(attempt_time=timezone.now() - dt.timedelta(minutes=minutes))


# --- throttling --------------------------------------------------------------------------------


def test_five_failures_lock_the_user_from_that_ip_with_a_japanese_message() -> None:
    user = make_user(Role.OPERATOR)
    client = Client()
    for _ in range(4):
        response = login(client, user.username, "wrong-password", OFFICE)
        assert response.status_code == 200
        assert "ユーザー名またはパスワードが正しくありません" in response.content.decode()
    response = login(client, user.username, "wrong-password", OFFICE)
    assert response.status_code == 429
    html = response.content.decode()
    assert LOCKED in html
    retry_at = timezone.localtime() + dt.timedelta(minutes=15)
    shown = re.search(r"(\d{2}):(\d{2})以降にもう一度お試しください", html)
    assert shown is not None
    assert (int(shown[1]), int(shown[2])) in {
        (retry_at.hour, retry_at.minute),
        ((retry_at - dt.timedelta(minutes=1)).hour, (retry_at - dt.timedelta(minutes=1)).minute),
    }
    assert 'name="username"' in html  # still the login page, in Japanese
    # The right password does not get in while locked.
    response = login(client, user.username, PASSWORD, OFFICE)
    assert response.status_code == 429
    assert not is_logged_in(client)


def test_the_lock_is_per_user_and_ip_not_the_whole_office() -> None:
    locked, colleague = make_user(Role.OPERATOR), make_user(Role.OPERATOR)
    fail(Client(), locked.username, OFFICE, 5)
    # The same person from home, and a colleague from the office, still log in.
    from_home = Client()
    assert login(from_home, locked.username, PASSWORD, HOME).status_code == 302
    assert is_logged_in(from_home)
    office = Client()
    assert login(office, colleague.username, PASSWORD, OFFICE).status_code == 302
    assert is_logged_in(office)


def test_the_limit_comes_from_settings(settings: Settings) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    user = make_user(Role.OPERATOR)
    client = Client()
    fail(client, user.username, OFFICE, 2)
    assert login(client, user.username, "wrong-password", OFFICE).status_code == 429


def test_a_password_spray_from_one_ip_locks_that_ip(settings: Settings) -> None:
    settings.KIZUNA_LOGIN_IP_FAILURE_LIMIT = 8
    user = make_user(Role.OPERATOR)
    client = Client()
    # Different usernames each time: no single user reaches 5, the address reaches 8.
    for n in range(7):
        assert login(client, f"guess{n}", "password1", ATTACKER).status_code == 200
    assert login(client, "guess7", "password1", ATTACKER).status_code == 429
    # Even a real user with the right password is refused from that address…
    assert login(Client(), user.username, PASSWORD, ATTACKER).status_code == 429
    # …but not from anywhere else.
    assert login(Client(), user.username, PASSWORD, OFFICE).status_code == 302


def test_the_lock_ends_after_the_cool_off() -> None:
    user = make_user(Role.OPERATOR)
    client = Client()
    fail(client, user.username, OFFICE, 5)
    age_failures(14)
    assert login(client, user.username, PASSWORD, OFFICE).status_code == 429
    age_failures(16)
    assert login(client, user.username, PASSWORD, OFFICE).status_code == 302
    assert is_logged_in(client)


def test_an_admin_unlocks_on_the_security_page_and_it_is_audited(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    user = users[Role.OPERATOR]
    fail(Client(), user.username, OFFICE, 5)
    admin = client_for(Role.ADMIN)
    page = admin.get(reverse("security:staff")).content.decode()
    assert "ロック中" in page
    assert OFFICE in page
    attempt = AccessAttempt.objects.get(username=user.username)
    response = admin.post(reverse("security:staff"), {"action": "unlock", "id": attempt.pk})
    assert response.status_code == 302
    assert not AccessAttempt.objects.exists()
    row = AuditLog.objects.get(action="login_lock.release")
    assert row.actor_id == users[Role.ADMIN].pk
    assert row.changes == {"username": [user.username, None], "ip_address": [OFFICE, None]}
    client = Client()
    assert login(client, user.username, PASSWORD, OFFICE).status_code == 302


def test_the_axes_command_unlocks_too() -> None:
    user = make_user(Role.OPERATOR)
    fail(Client(), user.username, OFFICE, 5)
    call_command("axes_reset_username", user.username)
    assert login(Client(), user.username, PASSWORD, OFFICE).status_code == 302


def test_behind_a_proxy_the_forwarded_client_is_counted(settings: Settings) -> None:
    settings.KIZUNA_TRUSTED_PROXY_COUNT = 1
    user = make_user(Role.OPERATOR)
    client = Client()
    for _ in range(5):
        client.post(
            reverse("login"),
            {"username": user.username, "password": "wrong-password"},
            REMOTE_ADDR="127.0.0.1",
            # The left entry is whatever the client sent: it must not dodge the count.
            HTTP_X_FORWARDED_FOR=f"10.{_}.0.1, {ATTACKER}",
        )
    assert AccessAttempt.objects.get().ip_address == ATTACKER
    other = Client().post(
        reverse("login"),
        {"username": user.username, "password": PASSWORD},
        REMOTE_ADDR="127.0.0.1",
        HTTP_X_FORWARDED_FOR=OFFICE,
    )
    assert other.status_code == 302  # the proxy's own address is not what got locked


def test_api_keys_work_from_a_locked_out_address() -> None:
    customer = make_customer()
    fail(Client(), "someone", "127.0.0.1", 25)
    api = full_access_client()
    response = api.get(f"/api/v1/customers/{customer.pk}")
    assert response.status_code == 200


# --- TOTP enrolment ----------------------------------------------------------------------------


def code_for(secret_or_device: str | TOTPDevice, *, steps_ahead: int = 0) -> str:
    if isinstance(secret_or_device, TOTPDevice):
        key = secret_or_device.bin_key
    else:
        compact = secret_or_device.replace(" ", "")
        key = base64.b32decode(compact + "=" * (-len(compact) % 8))
    totp = TOTP(key)
    totp.time = timezone.now().timestamp() + 30 * steps_ahead
    return f"{totp.token():06d}"


def confirmed_device_for(user: User) -> TOTPDevice:
    device: TOTPDevice = TOTPDevice.objects.create(user=user, name="認証アプリ", confirmed=True)
    return device


def let_throttle_pass() -> None:
    TOTPDevice.objects.update(throttling_failure_timestamp=timezone.now() - dt.timedelta(hours=1))


def test_enrolment_shows_a_qr_code_and_secret_and_needs_a_confirming_code(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    client = client_for(Role.OPERATOR)
    html = client.get(reverse("security:account")).content.decode()
    assert "<svg" in html
    assert "未設定" in html
    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', html)
    assert secret is not None
    # Reloading shows the same secret, so a code scanned a moment ago still fits.
    assert secret[1] in client.get(reverse("security:account")).content.decode()

    response = client.post(reverse("security:account"), {"code": "000000"})
    assert "確認コードが正しくありません" in response.content.decode()
    assert not TOTPDevice.objects.filter(confirmed=True).exists()

    let_throttle_pass()
    response = client.post(reverse("security:account"), {"code": code_for(secret[1])})
    assert response.status_code == 302
    device = TOTPDevice.objects.get(user=users[Role.OPERATOR])
    assert device.confirmed
    audit = AuditLog.objects.get(action="two_factor.enrol")
    assert audit.actor_id == users[Role.OPERATOR].pk
    # The enrolling session counts as verified: no code prompt right after.
    assert is_logged_in(client)
    assert "有効" in client.get(reverse("security:account")).content.decode()


def test_a_full_width_code_from_a_japanese_keyboard_is_accepted(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    client = client_for(Role.MARKETER)
    client.get(reverse("security:account"))
    device = TOTPDevice.objects.get(user=users[Role.MARKETER])
    full_width = code_for(device).translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    client.post(reverse("security:account"), {"code": full_width})
    device.refresh_from_db()
    assert device.confirmed


# --- login with a device ----------------------------------------------------------------------


def test_login_with_a_device_asks_for_the_code_before_any_page(users: dict[Role, User]) -> None:
    user = users[Role.ADMIN]
    device = confirmed_device_for(user)
    customer = make_customer()
    client = Client()
    target = reverse("web:customer_detail", args=[customer.pk])
    response = client.post(
        reverse("login") + f"?next={target}",
        {"username": user.username, "password": PASSWORD, "next": target},
    )
    assert response.status_code == 302
    # Every page, Django admin included, waits for the code.
    for path in (target, reverse("web:home"), "/admin/"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith(reverse("login_verify") + "?next=")
    page = client.get(reverse("login_verify"), {"next": target}).content.decode()
    assert "確認コード" in page
    # and the code page offers no link that would only lead back to it
    assert reverse("security:account") not in page
    assert 'href="/admin/"' not in page
    assert reverse("logout") in page  # leaving is still possible

    response = client.post(reverse("login_verify"), {"code": code_for(device), "next": target})
    assert response.status_code == 302
    assert response["Location"] == target
    assert client.get(target).status_code == 200
    assert client.get("/admin/").status_code == 200


def test_a_wrong_code_is_refused_and_further_codes_are_throttled(users: dict[Role, User]) -> None:
    user = users[Role.OPERATOR]
    device = confirmed_device_for(user)
    client = Client()
    login(client, user.username, PASSWORD, OFFICE)
    wrong = f"{(int(code_for(device)) + 1) % 1_000_000:06d}"
    response = client.post(reverse("login_verify"), {"code": wrong})
    assert response.status_code == 200
    assert "確認コードが正しくありません" in response.content.decode()
    assert not is_logged_in(client)
    # Straight after a failure even the right code waits (1, 2, 4… seconds, kept in the DB).
    response = client.post(reverse("login_verify"), {"code": code_for(device)})
    assert "まで入力できません" in response.content.decode()
    assert not is_logged_in(client)
    device.refresh_from_db()
    assert device.throttling_failure_count >= 1
    let_throttle_pass()
    response = client.post(reverse("login_verify"), {"code": code_for(device)})
    assert response.status_code == 302
    assert is_logged_in(client)


def test_a_used_code_cannot_be_replayed(users: dict[Role, User]) -> None:
    user = users[Role.OPERATOR]
    device = confirmed_device_for(user)
    code = code_for(device)
    first, second = Client(), Client()
    login(first, user.username, PASSWORD, OFFICE)
    assert first.post(reverse("login_verify"), {"code": code}).status_code == 302
    login(second, user.username, PASSWORD, HOME)
    assert second.post(reverse("login_verify"), {"code": code}).status_code == 200
    assert not is_logged_in(second)


def test_the_code_page_sends_strangers_to_login_and_ignores_foreign_next(
    users: dict[Role, User],
) -> None:
    assert Client().get(reverse("login_verify"))["Location"] == reverse("login")
    user = users[Role.OPERATOR]
    device = confirmed_device_for(user)
    client = Client()
    login(client, user.username, PASSWORD, OFFICE)
    response = client.post(
        reverse("login_verify"), {"code": code_for(device), "next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("web:home")


# --- policy and reset -------------------------------------------------------------------------


def set_policy(admin: Client, policy: TwoFactorPolicy) -> Any:
    response = admin.post(
        reverse("security:staff"),
        {"action": "policy", "two_factor_policy": policy},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("security:staff")
    return response


def verified(client: Client, user: User) -> Client:
    """`client` logged in as `user` with a confirmed device whose code this session entered."""
    session = client.session
    session["otp_device_id"] = confirmed_device_for(user).persistent_id
    session.save()
    return client


def test_required_for_all_sends_staff_without_a_device_to_enrol(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    admin = verified(client_for(Role.ADMIN), users[Role.ADMIN])
    operator = client_for(Role.OPERATOR)
    saved = set_policy(admin, TwoFactorPolicy.ALL).content.decode()
    # the admin is told who will be sent to set it up
    assert "まだ設定していない3人" in saved
    assert users[Role.OPERATOR].username in saved
    assert SecuritySettings.load().two_factor_policy == TwoFactorPolicy.ALL
    audit = AuditLog.objects.get(action="security_settings.update")
    assert audit.changes == {"two_factor_policy": ["optional", "all"]}
    assert audit.actor_id == users[Role.ADMIN].pk

    for path in (reverse("web:home"), reverse("web:customer_search")):
        response = operator.get(path)
        assert response.status_code == 302
        assert response["Location"] == reverse("security:account")
    page = operator.get(reverse("security:account")).content.decode()
    assert "管理者の設定により、2段階認証を有効にするまで他の画面は開けません" in page
    # Logging out is still possible.
    assert operator.post(reverse("logout")).status_code == 302

    # Once enrolled, the pages open.
    device = TOTPDevice.objects.get(user=users[Role.OPERATOR])
    enrolled = client_for(Role.OPERATOR)
    assert enrolled.post(reverse("security:account"), {"code": code_for(device)}).status_code == 302
    assert is_logged_in(enrolled)


def test_required_for_admins_leaves_other_roles_alone(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    set_two_factor_policy(policy=TwoFactorPolicy.ADMINS, acting_user=Actor.system("test"))
    assert client_for(Role.OPERATOR).get(reverse("web:home")).status_code == 200
    admin = client_for(Role.ADMIN)
    assert admin.get(reverse("web:home"))["Location"] == reverse("security:account")
    assert client_for(Role.ADMIN).get("/admin/")["Location"] == reverse("security:account")


def test_an_admin_without_a_device_cannot_require_it_of_themselves(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    # given: an admin who has not set up 2FA
    admin = client_for(Role.ADMIN)
    for policy in (TwoFactorPolicy.ALL, TwoFactorPolicy.ADMINS):
        # when: they require it of everyone (or of admins)
        page = set_policy(admin, policy).content.decode()
        # then: refused, with what to do first; nothing changed, they can still work
        assert "先に「セキュリティ設定」で2段階認証を設定してから" in page
        assert SecuritySettings.load().two_factor_policy == TwoFactorPolicy.OPTIONAL
        assert admin.get(reverse("web:home")).status_code == 200
    assert not AuditLog.objects.filter(action="security_settings.update").exists()
    # once their own device is set up, the same choice is saved
    set_policy(verified(admin, users[Role.ADMIN]), TwoFactorPolicy.ADMINS)
    assert SecuritySettings.load().two_factor_policy == TwoFactorPolicy.ADMINS


def test_an_htmx_request_moves_the_whole_tab_to_the_code_page(users: dict[Role, User]) -> None:
    user = users[Role.OPERATOR]
    confirmed_device_for(user)
    client = Client()
    login(client, user.username, PASSWORD, OFFICE)
    response = client.get(
        reverse("web:customer_search"), {"q": "山田"}, headers={"HX-Request": "true"}
    )
    assert response["HX-Redirect"].startswith(reverse("login_verify"))


def test_an_admin_resets_a_lost_phone_and_it_is_audited(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    operator = users[Role.OPERATOR]
    confirmed_device_for(operator)
    admin = client_for(Role.ADMIN)
    page = admin.get(reverse("security:staff")).content.decode()
    assert "2段階認証をリセット" in page
    response = admin.post(
        reverse("security:staff"), {"action": "reset_two_factor", "id": operator.pk}
    )
    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=operator).exists()
    audit = AuditLog.objects.get(action="two_factor.reset")
    assert audit.actor_id == users[Role.ADMIN].pk
    assert audit.entity_id == str(operator.pk)
    assert audit.changes == {"two_factor": ["TOTP", None]}
    # The password alone gets in again (policy optional).
    client = Client()
    login(client, operator.username, PASSWORD, OFFICE)
    assert is_logged_in(client)


def test_resetting_someone_without_a_device_changes_nothing(
    client_for: Callable[[Role], Client], users: dict[Role, User]
) -> None:
    admin = client_for(Role.ADMIN)
    response = admin.post(
        reverse("security:staff"),
        {"action": "reset_two_factor", "id": users[Role.ANALYST].pk},
        follow=True,
    )
    assert "2段階認証を設定していません" in response.content.decode()
    assert not AuditLog.objects.filter(action="two_factor.reset").exists()


def test_bad_admin_input_is_a_japanese_message_not_a_500(
    client_for: Callable[[Role], Client],
) -> None:
    admin = client_for(Role.ADMIN)
    for data in (
        {"action": "policy", "two_factor_policy": "everyone-twice"},
        {"action": "unlock", "id": "abc"},
        {"action": "launch"},
    ):
        response = admin.post(reverse("security:staff"), data, follow=True)
        assert response.status_code == 200
        assert "alert-error" in response.content.decode()
    assert (
        admin.post(reverse("security:staff"), {"action": "unlock", "id": "999"}).status_code == 404
    )
    assert SecuritySettings.load().two_factor_policy == TwoFactorPolicy.OPTIONAL
