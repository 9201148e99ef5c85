"""TOTP two-factor authentication for staff (RELIABILITY D4), on django-otp's TOTP devices.

A member of staff enrols on セキュリティ設定: Kizuna keeps one unconfirmed device whose secret
the page shows (QR code and text); the device counts only once a code from the phone has been
confirmed. A session is "verified" once a code was accepted in it (django-otp keeps that in the
session); `pending_step` tells the access middleware what a logged-in user still has to do.

Wrong codes are throttled by django-otp itself: after each failure the device refuses codes for
1, 2, 4, 8… seconds, counted in the database so a new login does not reset it. A code accepted
once is never accepted again (django-otp keeps the last accepted time step); such a reused code
is refused and counted like any wrong code, but `CodeCheck.reused` lets the page say why.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, cast

import django_otp
import segno
from django.db import transaction
from django.http import HttpRequest
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from kizuna.accounts.models import SecuritySettings, TwoFactorPolicy, User
from kizuna.core.audit import Actor, audit_record

DEVICE_NAME = "認証アプリ"


class Step(enum.Enum):
    """What a logged-in user must do before any other page opens."""

    VERIFY = "verify"  # has a confirmed device; this session has not entered a code yet
    ENROL = "enrol"  # two-factor is required for them and they have no device yet


def confirmed_device(user: User) -> TOTPDevice | None:
    device: TOTPDevice | None = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    return device


def pending_step(user: Any) -> Step | None:
    """None when the user may use Kizuna; otherwise the step still owed."""
    if not user.is_authenticated or user.is_verified():
        return None
    # Users loaded for a session by StaffBackend carry both answers; others are looked up.
    has_device = getattr(user, "has_two_factor", None)
    if has_device is None:
        has_device = confirmed_device(user) is not None
    if has_device:
        return Step.VERIFY
    if hasattr(user, "two_factor_policy"):
        policy = SecuritySettings(
            two_factor_policy=user.two_factor_policy or TwoFactorPolicy.OPTIONAL
        )
    else:
        policy = SecuritySettings.load()
    if policy.requires_two_factor(user):
        return Step.ENROL
    return None


def enrolment_device(user: User) -> TOTPDevice:
    """The unconfirmed device whose secret the enrolment page shows (created on first visit).

    The same secret is shown until it is confirmed, so reloading the page does not invalidate a
    QR code the user has already scanned.
    """
    device: TOTPDevice | None = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)
    return device


def secret_text(device: TOTPDevice) -> str:
    """The secret in base32, as authenticator apps take it when typed in, in groups of four."""
    secret = base64.b32encode(device.bin_key).decode("ascii").rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def qr_svg(device: TOTPDevice) -> str:
    """The otpauth:// URI as an inline SVG QR code, drawn on the server (nothing is fetched)."""
    svg: str = segno.make(device.config_url, error="m").svg_inline(scale=5, border=2)
    return svg


@dataclass(frozen=True)
class CodeCheck:
    accepted: bool
    retry_at: dt.datetime | None = None  # set when the device is throttled after failures
    reused: bool = False  # refused because this code was already accepted once


def _check(device: TOTPDevice, code: str) -> CodeCheck:
    allowed, info = device.verify_is_allowed()  # type: ignore[no-untyped-call]
    if not allowed:
        return CodeCheck(accepted=False, retry_at=(info or {}).get("locked_until"))
    # Full-width digits (a Japanese IME left on) and spaces are how people type codes; anything
    # else fails, and django-otp counts every failure, malformed or not, towards the throttle.
    code = unicodedata.normalize("NFKC", code).replace(" ", "").strip()
    if device.verify_token(code):  # type: ignore[no-untyped-call]
        return CodeCheck(accepted=True)
    return CodeCheck(accepted=False, reused=_already_used(device, code))


def _already_used(device: TOTPDevice, code: str) -> bool:
    """Whether a refused code is one the device would match at a time step already used.

    Only asked after django-otp refused the code (and counted the failure): it explains the
    refusal and never turns it into an acceptance.
    """
    if not code.isdigit() or device.last_t < 0:
        return False
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)  # type: ignore[no-untyped-call]
    totp.time = time.time()
    base = totp.drift
    for offset in range(-device.tolerance, device.tolerance + 1):
        totp.drift = base + offset
        if totp.t() <= device.last_t and totp.token() == int(code):  # type: ignore[no-untyped-call]
            return True
    return False


def verify_login(request: HttpRequest, code: str) -> CodeCheck:
    """Check the code of the logged-in user's confirmed device; on success verify the session."""
    user = request.user
    with transaction.atomic():
        # Locked, so parallel guesses queue and each sees the previous one's throttling.
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True).first()
        if device is None:
            return CodeCheck(accepted=False)
        result = _check(device, code)
    if result.accepted:
        _verify_session(request, device)
    return result


@transaction.atomic
def confirm_enrolment(request: HttpRequest, code: str) -> CodeCheck:
    """Activate the user's enrolment device when `code` matches it; the session is verified."""
    user = cast(User, request.user)  # the page is for logged-in staff only
    device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).first()
    if device is None:
        return CodeCheck(accepted=False)
    result = _check(device, code)
    if result.accepted:
        TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        audit_record(
            actor=Actor.of(user),
            action="two_factor.enrol",
            instance=user,
            customer_id=None,
            changes={"two_factor": [None, "TOTP"]},
        )
        _verify_session(request, device)
    return result


def _verify_session(request: HttpRequest, device: TOTPDevice) -> None:
    # A new session key once the second factor is in: an id seen before this point (e.g. on a
    # shared PC) cannot ride on the verified session.
    request.session.cycle_key()
    django_otp.login(request, device)  # type: ignore[no-untyped-call]


SELF_RESET_REFUSED = "自分の2段階認証はここではリセットできません。別の管理者に依頼してください。"


class SelfResetRefusedError(Exception):
    """Staff may not remove their own device: anyone at an unlocked, logged-in session could."""

    def __init__(self) -> None:
        super().__init__(SELF_RESET_REFUSED)


@transaction.atomic
def reset_two_factor(*, user: User, acting_user: Any) -> bool:
    """Remove every TOTP device of `user` (lost phone); they enrol again at their next login.

    Returns False when there was nothing to remove (no audit row then). Raises
    SelfResetRefusedError when `acting_user` is `user`: another admin has to do it.
    """
    if getattr(acting_user, "pk", None) is not None and acting_user.pk == user.pk:
        raise SelfResetRefusedError
    had_confirmed = TOTPDevice.objects.filter(user=user, confirmed=True).exists()
    TOTPDevice.objects.filter(user=user).delete()
    if not had_confirmed:
        return False
    audit_record(
        actor=Actor.of(acting_user),
        action="two_factor.reset",
        instance=user,
        customer_id=None,
        changes={"two_factor": ["TOTP", None]},
    )
    return True


POLICY_LOCKS_YOU_OUT = (
    "この設定にすると、あなた自身も2段階認証が必須になりますが、まだ設定していません。"
    "保存した直後から設定画面しか開けなくなるため、先に「セキュリティ設定」で2段階認証を"
    "設定してから選んでください。"
)


class PolicyLockoutError(Exception):
    """A policy that would require 2FA of the staff member setting it, who has no device yet:
    from their next request they could open nothing but the enrolment page (not even this
    setting, to undo it)."""

    def __init__(self) -> None:
        super().__init__(POLICY_LOCKS_YOU_OUT)


@transaction.atomic
def set_two_factor_policy(*, policy: str, acting_user: Any) -> SecuritySettings:
    SecuritySettings.load()
    settings_row = SecuritySettings.objects.select_for_update().get(
        pk=SecuritySettings.SINGLETON_ID
    )
    policy = TwoFactorPolicy(policy).value
    old = settings_row.two_factor_policy
    if old == policy:
        return settings_row
    if (
        isinstance(acting_user, User)
        and SecuritySettings(two_factor_policy=policy).requires_two_factor(acting_user)
        and confirmed_device(acting_user) is None
    ):
        raise PolicyLockoutError
    settings_row.two_factor_policy = policy
    settings_row.save()
    audit_record(
        actor=Actor.of(acting_user),
        action="security_settings.update",
        instance=settings_row,
        customer_id=None,
        changes={"two_factor_policy": [old, policy]},
    )
    return settings_row
