"""Changing a 定期 subscription from the customer page: 「解約する」, and the gentler changes the
contact center offers first — 休止する/再開する, 次回お届け日を変更する, 周期を変更する.

Customers call the contact center to stop their subscription, and an erasure request (APPI) is
refused while one still delivers: staff need a way to cancel without the cart or the API. A
confirmation page asks for the reason (the shop's churn analysis reads it) and an optional note,
then kizuna.subscriptions.services.subscription_cancel does it, with its audit and timeline rows.
The other changes each have a confirmation page of the same shape (one view, `_change_view`,
and one template); the services (subscription_pause, _resume, _update) check, audit and write
the timeline, and their refusals are shown on the form.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from kizuna.core import jp
from kizuna.subscriptions.models import (
    CancelReason,
    CycleKind,
    DeliveryStatus,
    Subscription,
    SubscriptionDelivery,
    SubscriptionStatus,
)
from kizuna.subscriptions.services import (
    cancelled_already,
    subscription_cancel,
    subscription_pause,
    subscription_resume,
    subscription_update,
)
from kizuna.web.http import HtmxHttpRequest, errors_onto, posted

# The contact center takes cancellations (and admins); marketers read the page but do not
# change a customer's contract.
CANCEL_ROLES = (Role.OPERATOR,)
NOTE_MAX = 1000


class CancelForm(forms.Form):
    reason = forms.ChoiceField(
        label="解約理由",
        choices=[("", "選んでください"), *CancelReason.choices],
        error_messages={
            "required": "解約理由を選んでください",
            "invalid_choice": "解約理由を一覧から選んでください",
        },
    )
    note = forms.CharField(
        label="解約メモ(任意)",
        required=False,
        max_length=NOTE_MAX,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="お客様から伺った事情など。",
        error_messages={"max_length": f"{NOTE_MAX}文字以内で入力してください"},
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("reason") == CancelReason.OTHER and not data.get("note", "").strip():
            self.add_error("note", "「その他」を選んだときは、解約メモに理由を書いてください")
        return data


def _subscription_or_404(pk: int, sub_pk: int) -> Subscription:
    found = (
        Subscription.objects.select_related("product", "customer")
        .filter(pk=sub_pk, customer_id=pk)
        .first()
    )
    if found is None:
        raise Http404("定期購入が見つかりません")
    return found


def _coming(subscription: Subscription) -> list[SubscriptionDelivery]:
    """Deliveries already ordered and not delivered yet: a cancellation does not stop them
    (only cancelling the order in the cart does), so the confirmation page says so."""
    return list(
        subscription.deliveries.filter(
            order__isnull=False, status__in=[DeliveryStatus.SCHEDULED, DeliveryStatus.SHIPPED]
        )
        .select_related("order")
        .order_by("sequence")
    )


def _still_coming(delivery: SubscriptionDelivery) -> str:
    number = delivery.order.number if delivery.order is not None else "—"
    what = f"{delivery.sequence}回目(注文 {number})"
    if delivery.status == DeliveryStatus.SHIPPED:
        return f"{what}はすでに出荷済みのため、解約してもお届けされます。"
    return (
        f"{what}はすでに受注済みのため、解約してもお届けされます。"
        "止める場合はカートで注文をキャンセルしてください。"
    )


@allow_roles(*CANCEL_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def subscription_cancel_view(request: HtmxHttpRequest, pk: int, sub_pk: int) -> HttpResponse:
    """GET: the subscription and the form, to confirm. POST: cancel, then back to the page."""
    subscription = _subscription_or_404(pk, sub_pk)
    form = CancelForm(posted(request))
    errors: list[str] = []
    if request.method == "POST" and form.is_valid():
        try:
            subscription_cancel(
                subscription=subscription,
                reason=CancelReason(form.cleaned_data["reason"]),
                note=form.cleaned_data["note"].strip(),
                acting_user=request.user,
            )
        except ValidationError as exc:
            errors = exc.messages
        else:
            messages.success(
                request, f"定期購入 #{subscription.pk}({subscription.product.name})を解約しました。"
            )
            return redirect(reverse("web:customer_detail", args=[pk]) + "#subscriptions")
    coming = _coming(subscription)
    context = {
        "coming": coming[0] if coming else None,
        "still_coming": [_still_coming(delivery) for delivery in coming],
        "customer": subscription.customer,
        "subscription": subscription,
        "form": form,
        "errors": errors,
        "cancelled": subscription.status == SubscriptionStatus.CANCELLED,
    }
    status = 200 if request.method == "GET" else (409 if errors else 422)
    return render(request, "web/subscriptions/cancel_confirm.html", context, status=status)


# --- The gentler changes: pause, resume, next delivery date, cycle ------------------------------

DATE_WIDGET = forms.DateInput(attrs={"type": "date"})
DATE_ERRORS = {"required": "日付を入力してください", "invalid": "日付を正しく入力してください"}


class PauseForm(forms.Form):
    until = forms.DateField(
        label="休止期限(この日に次のお届けを再開します)",
        widget=DATE_WIDGET,
        help_text="明日以降の日付を選んでください。",
        error_messages=DATE_ERRORS,
    )


class NextDeliveryForm(forms.Form):
    next_delivery_on = forms.DateField(
        label="次回お届け予定日",
        widget=DATE_WIDGET,
        help_text="今日以降の日付を選んでください。",
        error_messages=DATE_ERRORS,
    )


class CycleForm(forms.Form):
    cycle_kind = forms.ChoiceField(
        label="周期の種類",
        choices=CycleKind.choices,
        error_messages={"required": "周期の種類を選んでください"},
    )
    cycle_days = forms.IntegerField(
        label="周期(日数ごとの場合、7〜180日)",
        required=False,
        error_messages={"invalid": "日数を数字で入力してください"},
    )
    monthly_day = forms.IntegerField(
        label="毎月のお届け日(毎月指定日の場合、1〜28日)",
        required=False,
        error_messages={"invalid": "日にちを数字で入力してください"},
    )


def _pause(sub: Subscription, data: dict[str, Any], user: Any) -> str:
    moving = sub.status == SubscriptionStatus.PAUSED
    subscription_pause(subscription=sub, until=data["until"], acting_user=user)
    what = "休止期限を変更しました" if moving else "休止しました"
    return f"{jp.format_date(data['until'])}まで{what}"


def _resume(sub: Subscription, data: dict[str, Any], user: Any) -> str:
    subscription_resume(
        subscription=sub, next_delivery_on=data["next_delivery_on"], acting_user=user
    )
    return f"再開しました(次回お届け予定日 {jp.format_date(data['next_delivery_on'])})"


def _next_delivery(sub: Subscription, data: dict[str, Any], user: Any) -> str:
    day = data["next_delivery_on"]
    subscription_update(subscription=sub, changes={"next_delivery_on": day}, acting_user=user)
    return f"次回お届け予定日を{jp.format_date(day)}に変更しました"


def _cycle(sub: Subscription, data: dict[str, Any], user: Any) -> str:
    kind = data["cycle_kind"]
    changes: dict[str, Any] = {"cycle_kind": kind}
    if kind == CycleKind.DAYS:
        changes["cycle_days"] = data.get("cycle_days")
    else:
        changes["monthly_day"] = data.get("monthly_day")
    sub = subscription_update(subscription=sub, changes=changes, acting_user=user)
    return f"周期を「{sub.cycle_label}」に変更しました"


@dataclass(frozen=True)
class _Change:
    title: str
    url_name: str
    form: type[forms.Form]
    button: str
    explain: str
    # Why the change does not apply to the subscription as it is (None: it does).
    refuse: Callable[[Subscription], str | None]
    initial: Callable[[Subscription], dict[str, Any]]
    apply: Callable[[Subscription, dict[str, Any], Any], str]


def _refuse_cancelled(sub: Subscription) -> str | None:
    if sub.status == SubscriptionStatus.CANCELLED:
        return f"{cancelled_already(sub)}。変更はできません。"
    return None


def _refuse_unless_paused(sub: Subscription) -> str | None:
    if sub.status != SubscriptionStatus.PAUSED:
        return (
            _refuse_cancelled(sub) or "この定期購入は休止中ではないため、再開の必要はありません。"
        )
    return None


def _refuse_unless_active(sub: Subscription) -> str | None:
    if sub.status == SubscriptionStatus.PAUSED:
        return (
            "この定期購入は休止中です。お届け日を変えるには「休止期限を変更する」を使ってください。"
        )
    return _refuse_cancelled(sub)


def _tomorrow() -> dt.date:
    return timezone.localdate() + dt.timedelta(days=1)


CHANGES = {
    "pause": _Change(
        title="定期購入の休止",
        url_name="web:subscription_pause",
        form=PauseForm,
        button="休止する",
        explain=(
            "休止期限の日まで、お届けを止めます。期限の日が次回お届け予定日になり、"
            "そこから元の周期でお届けを再開します。休止中の定期はいつでも「再開する」で"
            "早めに戻せます。"
        ),
        refuse=_refuse_cancelled,
        initial=lambda sub: {"until": sub.paused_until},
        apply=_pause,
    ),
    "resume": _Change(
        title="定期購入の再開",
        url_name="web:subscription_resume",
        form=NextDeliveryForm,
        button="再開する",
        explain="休止を終えて、指定した次回お届け予定日から元の周期でお届けします。",
        refuse=_refuse_unless_paused,
        initial=lambda sub: {
            "next_delivery_on": max(sub.paused_until or _tomorrow(), timezone.localdate())
        },
        apply=_resume,
    ),
    "next_delivery": _Change(
        title="次回お届け日の変更",
        url_name="web:subscription_next_delivery",
        form=NextDeliveryForm,
        button="次回お届け日を変更する",
        explain=(
            "次のお届けを早めたり遅らせたり(1回分とばす場合も)できます。"
            "その後は新しい日から元の周期でお届けします。"
        ),
        refuse=_refuse_unless_active,
        initial=lambda sub: {"next_delivery_on": sub.next_delivery_on},
        apply=_next_delivery,
    ),
    "cycle": _Change(
        title="お届け周期の変更",
        url_name="web:subscription_cycle",
        form=CycleForm,
        button="周期を変更する",
        explain="次回お届け予定日はそのままで、その後のお届けが新しい周期になります。",
        refuse=_refuse_cancelled,
        initial=lambda sub: {
            "cycle_kind": sub.cycle_kind,
            "cycle_days": sub.cycle_days,
            "monthly_day": sub.monthly_day,
        },
        apply=_cycle,
    ),
}


def _not_changed(delivery: SubscriptionDelivery) -> str:
    number = delivery.order.number if delivery.order is not None else "—"
    what = f"{delivery.sequence}回目(注文 {number})"
    if delivery.status == DeliveryStatus.SHIPPED:
        return f"{what}はすでに出荷済みのため、この変更に関係なくお届けされます。"
    return (
        f"{what}はすでに受注済みのため、この変更に関係なくお届けされます。"
        "止める・日を変える場合はカートで注文を変更してください。"
    )


def _change_view(request: HtmxHttpRequest, pk: int, sub_pk: int, key: str) -> HttpResponse:
    """GET: the subscription and the form, to confirm. POST: the service makes the change, then
    back to the page; its refusals are shown on the form with what was typed."""
    change = CHANGES[key]
    subscription = _subscription_or_404(pk, sub_pk)
    refused = change.refuse(subscription)
    form = change.form(posted(request), initial=change.initial(subscription))
    errors: list[str] = []
    if request.method == "POST" and refused:
        errors = [refused]
    elif request.method == "POST" and form.is_valid():
        try:
            done = change.apply(subscription, form.cleaned_data, request.user)
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                errors_onto(form, exc)
            else:
                errors = exc.messages
        else:
            name = subscription.product.name
            messages.success(request, f"定期購入 #{subscription.pk}({name})を{done}。")
            return redirect(reverse("web:customer_detail", args=[pk]) + "#subscriptions")
    context = {
        "change": change,
        "refused": refused,
        "still_coming": [_not_changed(delivery) for delivery in _coming(subscription)],
        "coming": next(iter(_coming(subscription)), None),
        "customer": subscription.customer,
        "subscription": subscription,
        "form": form,
        "errors": errors,
        "cancelled": subscription.status == SubscriptionStatus.CANCELLED,
    }
    status = 200 if request.method == "GET" else (409 if errors else 422)
    return render(request, "web/subscriptions/change_confirm.html", context, status=status)


def _view(key: str) -> Callable[..., HttpResponse]:
    @allow_roles(*CANCEL_ROLES)
    @never_cache
    @require_http_methods(["GET", "POST"])
    def view(request: HtmxHttpRequest, pk: int, sub_pk: int) -> HttpResponse:
        return _change_view(request, pk, sub_pk, key)

    view.__name__ = f"subscription_{key}_view"
    view.__doc__ = CHANGES[key].title
    return view


subscription_pause_view = _view("pause")
subscription_resume_view = _view("resume")
subscription_next_delivery_view = _view("next_delivery")
subscription_cycle_view = _view("cycle")
