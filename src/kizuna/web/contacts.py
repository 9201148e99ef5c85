"""The contact center on the customer page: recording a contact (「問い合わせを記録」) and changing
a channel's consent (「配信停止にする」/「同意を記録する」).

Operators take calls; what the customer asked and what they agreed to or refused must be kept
where the next operator sees it. The services do the checks (kizuna.support.services.contact_record,
kizuna.customers.services.consent_grant / consent_withdraw) with their timeline and audit rows;
these views are their forms. Each form carries a one-time token, so a double click or a reload
records once. An erased record takes nothing; a record merged into another sends the operator to
the record it lives in now.
"""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role
from kizuna.campaigns.consent_checks import unreachable_reason
from kizuna.customers.models import ConsentChannel, ConsentMethod
from kizuna.customers.services import consent_grant, consent_withdraw, is_erased
from kizuna.support.models import Contact, ContactChannel, Direction
from kizuna.support.services import BODY_MAX, REASON_MAX, SUMMARY_MAX, contact_record
from kizuna.web.customer_forms import customer_or_404, survivor_redirect
from kizuna.web.formtokens import issue_form_token, sent_before
from kizuna.web.http import HtmxHttpRequest, errors_onto, posted

# The contact center records contacts and consent given or withdrawn on the phone (and admins);
# marketers read the customer page, analysts never change anything.
CONTACT_ROLES = (Role.OPERATOR,)
CONSENT_ROLES = (Role.OPERATOR,)

FORM_TOKENS_SESSION_KEY = "contact_form_tokens"
STALE_FORM = (
    "このフォームは古くなっています(別の画面で新しいフォームを開いた、またはログインし直した"
    "など)。内容を確かめて、もう一度送信してください。"
)
ALREADY_SENT = "このフォームはすでに送信済みです。記録は一度だけ保存されています。"
ERASED = "この顧客の個人データは削除(匿名化)済みのため、記録できません。"
REASONS_SHOWN = 30
REASONS_SINCE = dt.timedelta(days=180)
DATETIME_INPUT = "%Y-%m-%dT%H:%M"

# How the customer agreed, as the operator confirms it: the consent method the law's evidence
# names (特定電子メール法), and the form recorded with it.
GRANT_METHODS = {
    ConsentMethod.PHONE.value: ("電話で口頭の同意をいただいた", "コールセンター(電話)"),
    ConsentMethod.PAPER.value: ("はがき・申込用紙で同意をいただいた", "はがき・申込用紙"),
}


class ContactForm(forms.Form):
    channel = forms.ChoiceField(
        label="チャネル",
        choices=ContactChannel.choices,
        error_messages={"invalid_choice": "チャネルを一覧から選んでください"},
    )
    direction = forms.ChoiceField(
        label="方向",
        choices=Direction.choices,
        error_messages={"invalid_choice": "方向を一覧から選んでください"},
    )
    occurred_at = forms.DateTimeField(
        label="日時",
        input_formats=[DATETIME_INPUT, "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=DATETIME_INPUT),
        error_messages={
            "required": "日時を入力してください",
            "invalid": "日時は「2024-04-01 10:30」の形で入力してください",
        },
    )
    reason = forms.CharField(
        label="問い合わせ理由(任意)",
        required=False,
        widget=forms.TextInput(attrs={"list": "contact-reasons", "maxlength": REASON_MAX}),
        help_text="一覧から選ぶと、お店の中で同じ言い方にそろいます。",
    )
    summary = forms.CharField(
        label="要約",
        required=False,
        widget=forms.TextInput(attrs={"maxlength": SUMMARY_MAX, "size": 60}),
        help_text=f"{SUMMARY_MAX}文字まで。顧客画面の一覧に表示されます。",
    )
    body = forms.CharField(
        label="内容(任意)",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 6, "maxlength": BODY_MAX}),
        help_text=f"{BODY_MAX:,}文字まで。",
    )


class GrantForm(forms.Form):
    method = forms.ChoiceField(
        label="同意の方法",
        choices=[("", "選んでください"), *((k, v[0]) for k, v in GRANT_METHODS.items())],
        error_messages={
            "required": "お客様がどのように同意されたかを選んでください",
            "invalid_choice": "同意の方法を一覧から選んでください",
        },
    )
    wording_version = forms.CharField(
        label="案内した同意文言(版)",
        max_length=50,
        help_text="お客様に読み上げた、またはご記入いただいた同意文言の版(例: 電話案内 2024年4月版)。",
        error_messages={
            "required": "案内した同意文言(版)を入力してください",
            "max_length": "50文字以内で入力してください",
        },
    )


def recent_reasons(limit: int = REASONS_SHOWN) -> list[str]:
    """Reasons recorded in the shop lately, most used first: offered while typing."""
    since = timezone.now() - REASONS_SINCE
    rows = (
        Contact.objects.filter(occurred_at__gte=since)
        .exclude(reason="")
        .values_list("reason", flat=True)
    )
    counts: dict[str, int] = {}
    for reason in rows.iterator():
        counts[reason] = counts.get(reason, 0) + 1
    return sorted(counts, key=lambda r: (-counts[r], r))[:limit]


@allow_roles(*CONTACT_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def contact_new(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET: the form (日時 now). POST: record the contact, then back to the customer page."""
    customer = customer_or_404(pk)
    moved = survivor_redirect(request, customer, "web:contact_new")
    if moved is not None:
        return moved
    erased = is_erased(customer)
    initial = {
        "channel": ContactChannel.PHONE,
        "direction": Direction.INBOUND,
        "occurred_at": timezone.localtime().replace(second=0, microsecond=0),
    }
    form = ContactForm(posted(request), initial=initial)
    back = reverse("web:customer_detail", args=[pk]) + "#contacts"
    if sent_before(request, form, FORM_TOKENS_SESSION_KEY, STALE_FORM):
        messages.info(request, ALREADY_SENT)
        return redirect(back)
    if request.method == "POST" and form.is_valid() and not erased:
        data = form.cleaned_data
        try:
            contact_record(
                customer=customer,
                channel=ContactChannel(data["channel"]),
                direction=Direction(data["direction"]),
                summary=data["summary"],
                body=data["body"],
                reason=data["reason"],
                at=data["occurred_at"],
                acting_user=request.user,
            )
        except ValidationError as exc:
            errors_onto(form, exc)
        else:
            messages.success(request, "問い合わせを記録しました。")
            return redirect(back)
    context = {
        "customer": customer,
        "form": form,
        "erased": erased,
        "erased_message": ERASED,
        "reasons": recent_reasons(),
        "form_token": issue_form_token(request, FORM_TOKENS_SESSION_KEY),
    }
    status = 200 if request.method == "GET" else 422
    return render(request, "web/contacts/contact_form.html", context, status=status)


@allow_roles(*CONSENT_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def consent_change(request: HtmxHttpRequest, pk: int, channel: str, action: str) -> HttpResponse:
    """GET: what will change, and for a grant how the customer agreed. POST: change it, then
    back to the customer page."""
    if channel not in ConsentChannel.values or action not in ("grant", "withdraw"):
        raise Http404("配信チャネルが見つかりません")
    customer = customer_or_404(pk)
    moved = survivor_redirect(request, customer, "web:consent_change", channel, action)
    if moved is not None:
        return moved
    erased = is_erased(customer)
    granting = action == "grant"
    label = ConsentChannel(channel).label
    form: forms.Form = GrantForm(posted(request)) if granting else forms.Form(posted(request))
    back = reverse("web:customer_detail", args=[pk]) + "#consents"
    if sent_before(request, form, FORM_TOKENS_SESSION_KEY, STALE_FORM):
        messages.info(request, ALREADY_SENT)
        return redirect(back)
    if request.method == "POST" and form.is_valid() and not erased:
        try:
            if granting:
                method = form.cleaned_data["method"]
                consent_grant(
                    customer=customer,
                    channel=ConsentChannel(channel),
                    method=ConsentMethod(method),
                    source_form=GRANT_METHODS[method][1],
                    wording_version=form.cleaned_data["wording_version"].strip(),
                    acting_user=request.user,
                )
            else:
                consent_withdraw(
                    customer=customer,
                    channel=ConsentChannel(channel),
                    method=ConsentMethod.STAFF,
                    acting_user=request.user,
                )
        except ValidationError as exc:
            errors_onto(form, exc)
        else:
            done = "同意を記録しました" if granting else "配信停止にしました"
            messages.success(request, f"{label}の{done}。")
            return redirect(back)
    current = customer.consents.filter(channel=channel).first()
    context = {
        # Recorded anyway (it is the customer's word), but nothing would be sent: say so first.
        "unreachable": unreachable_reason(customer, ConsentChannel(channel)) if granting else None,
        "customer": customer,
        "form": form,
        "granting": granting,
        "channel": channel,
        "action": action,
        "label": label,
        "current": current,
        "erased": erased,
        "erased_message": ERASED,
        "form_token": issue_form_token(request, FORM_TOKENS_SESSION_KEY),
    }
    status = 200 if request.method == "GET" else 422
    return render(request, "web/contacts/consent_confirm.html", context, status=status)
