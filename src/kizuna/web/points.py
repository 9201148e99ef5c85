"""Adjusting a customer's points from the customer page (「ポイントを調整する」).

The contact center grants goodwill points (お詫びポイント) or corrects a balance on the phone.
kizuna.loyalty.services.points_adjust does it — the ledger entry, its audit row and the
timeline line, the reason required, the balance never below zero — and this page is its form.
An operator may adjust at most KIZUNA_OPERATOR_POINTS_LIMIT points either way at a time (the
shop's rule for what the contact center decides on the spot); an admin up to
MAX_ADJUSTMENT. Granted points expire like earned ones: the form offers the usual expiry date
and the operator may choose another. The form carries a one-time token, so a double click
adjusts once.
"""

from __future__ import annotations

from typing import cast

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role, User
from kizuna.loyalty.selectors import points_balance
from kizuna.loyalty.services import points_adjust, points_expiry
from kizuna.web.customer_forms import customer_or_404, survivor_redirect
from kizuna.web.formtokens import issue_form_token, sent_before
from kizuna.web.http import HtmxHttpRequest, errors_onto, posted

ADJUST_ROLES = (Role.OPERATOR,)
# What an admin may enter at once: a larger correction is a data problem for an import or the API.
MAX_ADJUSTMENT = 1_000_000
REASON_MAX = 200
FORM_TOKENS_SESSION_KEY = "points_form_tokens"
STALE_FORM = (
    "この画面を開いてから時間が経ったため、受け付けませんでした。"
    "残高を確かめて、もう一度入力してください。"
)
ALREADY_SENT = "このフォームはすでに送信済みです。ポイントは一度だけ調整されています。"


class AdjustForm(forms.Form):
    amount = forms.IntegerField(
        label="調整ポイント",
        help_text="付与は 500、減算は -500 のように入力します。",
        error_messages={
            "required": "調整ポイントを入力してください",
            "invalid": "調整ポイントは整数で入力してください(例: 500、-500)",
        },
    )
    reason = forms.CharField(
        label="理由",
        max_length=REASON_MAX,
        help_text="例: 配送遅延のお詫び。ポイント履歴と監査ログに残ります。",
        error_messages={
            "required": "調整の理由を入力してください",
            "max_length": f"理由は{REASON_MAX}文字以内で入力してください",
        },
    )
    expires_on = forms.DateField(
        label="有効期限",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=(
            "付与(プラス)のときだけ使います。初期値は購入で貯まるポイントと同じ有効期限で、"
            "明日以降の日付に変えられます。空欄なら初期値になります。減算のときは使いません。"
        ),
        error_messages={"invalid": "有効期限は 2027-04-12 の形で入力してください"},
    )

    def __init__(self, *args: object, limit: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.limit = limit

    def clean_amount(self) -> int:
        amount = cast(int, self.cleaned_data["amount"])
        if amount == 0:
            raise ValidationError("調整ポイントに0は入力できません")
        if abs(amount) > self.limit:
            raise ValidationError(
                f"一度に調整できるのは±{self.limit:,}ptまでです。"
                "それを超える調整は管理者に依頼してください。"
            )
        return amount


def adjustment_limit(user: User) -> int:
    if user.has_role(Role.ADMIN):
        return MAX_ADJUSTMENT
    return min(int(settings.KIZUNA_OPERATOR_POINTS_LIMIT), MAX_ADJUSTMENT)


@allow_roles(*ADJUST_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def points_adjust_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET: the balance and the form. POST: adjust, then back to the customer's points."""
    customer = customer_or_404(pk)
    if moved := survivor_redirect(request, customer, "web:points_adjust"):
        return moved
    user = cast(User, request.user)
    form = AdjustForm(
        posted(request), limit=adjustment_limit(user), initial={"expires_on": points_expiry()}
    )
    if sent_before(request, form, FORM_TOKENS_SESSION_KEY, STALE_FORM):
        messages.info(request, ALREADY_SENT)
        return redirect(reverse("web:customer_detail", args=[pk]) + "#points")
    if request.method == "POST" and form.is_valid():
        amount = form.cleaned_data["amount"]
        try:
            entry = points_adjust(
                customer=customer,
                amount=amount,
                acting_user=user,
                reason=form.cleaned_data["reason"].strip(),
                # the date is prefilled, so a deduction posts one too: it does not apply there
                expires_on=form.cleaned_data["expires_on"] if amount > 0 else None,
            )
        except ValidationError as exc:
            errors_onto(form, exc)
        else:
            messages.success(
                request,
                f"ポイントを{entry.amount:+,}pt調整しました(残高 {entry.balance_after:,}pt)。",
            )
            return redirect(reverse("web:customer_detail", args=[pk]) + "#points")
    context = {
        "customer": customer,
        "form": form,
        "balance": points_balance(customer),
        "limit": form.limit,
        "form_token": issue_form_token(request, FORM_TOKENS_SESSION_KEY),
    }
    return render(request, "web/points/adjust.html", context, status=400 if form.errors else 200)
