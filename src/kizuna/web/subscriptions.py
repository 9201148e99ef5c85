"""Cancelling a 定期 subscription from the customer page (「解約する」).

Customers call the contact center to stop their subscription, and an erasure request (APPI) is
refused while one still delivers: staff need a way to cancel without the cart or the API. A
confirmation page asks for the reason (the shop's churn analysis reads it) and an optional note,
then kizuna.subscriptions.services.subscription_cancel does it, with its audit and timeline rows.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role
from kizuna.subscriptions.models import (
    CancelReason,
    DeliveryStatus,
    Subscription,
    SubscriptionDelivery,
    SubscriptionStatus,
)
from kizuna.subscriptions.services import subscription_cancel
from kizuna.web.http import HtmxHttpRequest, posted

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
