"""Login security screens (RELIABILITY D4): the 2FA code at login, each member of staff's own
セキュリティ設定 (TOTP enrolment) and パスワード変更, and the admins' セキュリティ管理 (policy,
2FA reset, unlocks).

The rules live in kizuna.accounts (twofactor.py, throttling.py); these views read the input,
call them and render. Every change an admin makes here is audited there.
"""

from __future__ import annotations

from typing import Any, cast

from axes.models import AccessAttempt
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, get_user_model, update_session_auth_hash
from django.contrib.auth.forms import PasswordChangeForm
from django.contrib.auth.password_validation import password_validators_help_texts
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods
from django_otp.plugins.otp_totp.models import TOTPDevice

from kizuna.accounts.access import allow_roles, public
from kizuna.accounts.admin import PASSWORD_CHANGED
from kizuna.accounts.models import SecuritySettings, TwoFactorPolicy, User
from kizuna.accounts.throttling import recent_failed_logins, unlock_login
from kizuna.accounts.twofactor import (
    CodeCheck,
    PolicyLockoutError,
    SelfResetRefusedError,
    Step,
    confirm_enrolment,
    confirmed_device,
    enrolment_device,
    pending_step,
    qr_svg,
    reset_two_factor,
    secret_text,
    set_two_factor_policy,
    verify_login,
)
from kizuna.core.audit import Actor, audit_record
from kizuna.web.http import posted
from kizuna.web.views import STAFF_ROLES, LoginForm


class CodeForm(forms.Form):
    code = forms.CharField(
        label="確認コード(6桁)",
        max_length=20,
        error_messages={"required": "確認コードを入力してください。"},
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "autofocus": True,
                "spellcheck": "false",
            }
        ),
    )


class PolicyForm(forms.Form):
    two_factor_policy = forms.ChoiceField(
        label="2段階認証",
        choices=TwoFactorPolicy.choices,
        widget=forms.RadioSelect,
        error_messages={"invalid_choice": "選べない設定です。", "required": "選んでください。"},
    )


class OwnPasswordForm(PasswordChangeForm):
    """Django's password change (its AUTH_PASSWORD_VALIDATORS included), with the current
    password checked through the login throttle: wrong guesses here count as failed logins of
    this username from this address, so the page is no unlimited way to test passwords."""

    error_messages = {
        **PasswordChangeForm.error_messages,
        "password_incorrect": "現在のパスワードが正しくありません。もう一度入力してください。",
        "password_mismatch": "確認用に入力した新しいパスワードが一致しません。",
    }
    field_order = ["old_password", "new_password1", "new_password2"]

    def __init__(self, request: HttpRequest, data: Any = None) -> None:
        super().__init__(request.user, data)
        self.request = request
        self.fields["old_password"].label = "現在のパスワード"
        self.fields["new_password2"].label = "新しいパスワード(確認のためもう一度)"
        self.fields["new_password1"].help_text = ""  # the page lists the rules itself
        for field in self.fields.values():
            field.error_messages["required"] = f"{field.label}を入力してください。"

    def clean_old_password(self) -> str:
        password: str = self.cleaned_data["old_password"]
        request = self.request
        checked = authenticate(request, username=self.user.get_username(), password=password)
        # Locked (now or by this failure): say so here instead of axes' login page.
        locked = bool(getattr(request, "axes_locked_out", False))
        request.axes_locked_out = False  # type: ignore[attr-defined]
        if locked:
            until = timezone.now() + settings.AXES_COOLOFF_TIME
            raise ValidationError(
                "パスワードの入力に続けて失敗したため、"
                f"{timezone.localtime(until):%H:%M}までパスワードを変更できません"
                "(ログインにも同じ制限がかかります)。急ぐ場合は管理者にロックの解除を"
                "依頼してください。",
                code="locked",
            )
        if checked is None or checked.pk != self.user.pk:
            raise ValidationError(
                self.error_messages["password_incorrect"], code="password_incorrect"
            )
        return password


def _local_time(value: Any) -> str:
    return f"{timezone.localtime(value):%H:%M:%S}"


def _refused(result: CodeCheck) -> str:
    if result.retry_at is not None:
        return (
            "確認コードの入力に続けて失敗したため、"
            f"{_local_time(result.retry_at)}まで入力できません。少し待ってから入力してください。"
        )
    if result.reused:
        return (
            "この確認コードはすでに使われました。"
            "認証アプリに次のコードが表示されるまでお待ちください。"
        )
    return "確認コードが正しくありません。認証アプリに表示されている6桁の数字を入力してください。"


def _safe_next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Any
) -> HttpResponse:
    """The login page saying the login is locked and until when (AXES_LOCKOUT_CALLABLE).

    Every try during the lockout counts as a failure and restarts the cool-off, so the time
    shown is the cool-off from now.
    """
    until = timezone.now() + settings.AXES_COOLOFF_TIME
    username = request.POST.get("username", "")
    context = {
        "form": LoginForm(request, initial={"username": username}),
        "next": request.POST.get("next", ""),
        "lockout_message": (
            "ログインに続けて失敗したため、このアカウントは一時的にロックされています。"
            f"{timezone.localtime(until):%H:%M}以降にもう一度お試しください"
            "(それまでの間にログインを試すと、待ち時間が延びます)。"
            "急ぐ場合は管理者にロックの解除を依頼してください。"
        ),
    }
    return render(request, "web/login.html", context, status=429)


@public
@never_cache
@require_http_methods(["GET", "POST"])
def verify(request: HttpRequest) -> HttpResponse:
    """The second step of login for staff with a confirmed authenticator app."""
    if not request.user.is_authenticated:
        return redirect("login")
    if pending_step(request.user) is not Step.VERIFY:
        return redirect(_safe_next(request))
    form = CodeForm(posted(request))
    if request.method == "POST" and form.is_valid():
        result = verify_login(request, form.cleaned_data["code"])
        if result.accepted:
            return redirect(_safe_next(request))
        form.add_error("code", _refused(result))
    context = {"form": form, "next": request.POST.get("next") or request.GET.get("next", "")}
    return render(request, "web/security/verify.html", context)


@allow_roles(*STAFF_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def account(request: HttpRequest) -> HttpResponse:
    """セキュリティ設定: the user's own 2FA status, and enrolment while they have none."""
    user = cast(User, request.user)  # the page is for logged-in staff only
    device = confirmed_device(user)
    context: dict[str, Any] = {
        "device": device,
        "required": pending_step(user) is Step.ENROL,
    }
    if device is None:
        form = CodeForm(posted(request))
        if request.method == "POST" and form.is_valid():
            result = confirm_enrolment(request, form.cleaned_data["code"])
            if result.accepted:
                messages.success(
                    request, "2段階認証を有効にしました。次回のログインから確認コードが必要です。"
                )
                return redirect("security:account")
            form.add_error("code", _refused(result))
        pending = enrolment_device(user)
        context.update({"form": form, "qr_svg": qr_svg(pending), "secret": secret_text(pending)})
    return render(request, "web/security/account.html", context)


@allow_roles(*STAFF_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def password_change(request: HttpRequest) -> HttpResponse:
    """パスワード変更: every member of staff changes their own password (current one first)."""
    user = cast(User, request.user)  # the page is for logged-in staff only
    form = OwnPasswordForm(request, posted(request))
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            form.save()
            audit_record(
                actor=Actor.of(user),
                action="user.update",
                instance=user,
                customer_id=None,
                changes=PASSWORD_CHANGED,
            )
        # This session stays logged in; the user's other sessions end with the old password.
        update_session_auth_hash(request, form.user)
        messages.success(
            request,
            "パスワードを変更しました。次回のログインから新しいパスワードを使ってください。",
        )
        return redirect("security:account")
    context = {"form": form, "rules": password_validators_help_texts()}
    return render(request, "web/security/password.html", context)


def _staff_action(request: HttpRequest) -> None:
    action = request.POST.get("action")
    target = str(request.POST.get("id", ""))
    if action == "policy":
        form = PolicyForm(request.POST)
        if form.is_valid():
            try:
                row = set_two_factor_policy(
                    policy=form.cleaned_data["two_factor_policy"], acting_user=request.user
                )
            except PolicyLockoutError as refused:
                messages.error(request, str(refused))
                return
            messages.success(request, "2段階認証の設定を保存しました。" + _enrolment_due(row))
        else:
            messages.error(request, "2段階認証の設定を選び直してください。")
        return
    if not target.isdigit():
        messages.error(request, "対象が指定されていません。")
        return
    if action == "reset_two_factor":
        staff = get_object_or_404(User, pk=int(target))
        try:
            done = reset_two_factor(user=staff, acting_user=request.user)
        except SelfResetRefusedError as refused:
            messages.error(request, str(refused))
            return
        if done:
            messages.success(
                request,
                f"{staff.username} の2段階認証をリセットしました。次回ログイン時に設定し直せます。",
            )
        else:
            messages.error(request, f"{staff.username} は2段階認証を設定していません。")
    elif action == "unlock":
        attempt = get_object_or_404(AccessAttempt, pk=int(target))
        unlock_login(attempt=attempt, acting_user=request.user)
        messages.success(
            request,
            f"{attempt.username or '(未入力)'}({attempt.ip_address})のログイン制限を解除しました。",
        )
    else:
        messages.error(request, "操作が正しくありません。")


def _enrolment_due(row: SecuritySettings) -> str:
    """Who the saved policy sends to the enrolment page on their next request, said so the
    admin can tell them before they are surprised."""
    confirmed = TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True)
    without = get_user_model().objects.filter(is_active=True).exclude(Exists(confirmed))
    due = [user.username for user in without.order_by("username") if row.requires_two_factor(user)]
    if not due:
        return ""
    shown = "、".join(due[:10]) + (f" ほか{len(due) - 10}人" if len(due) > 10 else "")
    return f"まだ設定していない{len(due)}人({shown})は、次の操作で2段階認証の設定画面に移ります。"


@allow_roles()
@never_cache
@require_http_methods(["GET", "POST"])
def staff(request: HttpRequest) -> HttpResponse:
    """セキュリティ管理 (admins): who has 2FA, the policy, and logins locked by failures."""
    if request.method == "POST":
        _staff_action(request)
        return redirect("security:staff")
    confirmed = TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True)
    people = (
        get_user_model()
        .objects.filter(is_active=True)
        .annotate(has_two_factor=Exists(confirmed))
        .order_by("username")
    )
    row = SecuritySettings.load()
    context = {
        "policy_form": PolicyForm(initial={"two_factor_policy": row.two_factor_policy}),
        "people": people,
        "failures": recent_failed_logins(),
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "ip_failure_limit": settings.KIZUNA_LOGIN_IP_FAILURE_LIMIT,
        "lockout_minutes": int(settings.AXES_COOLOFF_TIME.total_seconds() // 60),
    }
    return render(request, "web/security/staff.html", context)
