"""APPI requests on the customer page: 「個人データを書き出す」 and 「個人データを削除(匿名化)」.

Both are POSTs (each writes an audit row; a GET never does). Erasure is irreversible, so its page
asks for a reason and for the customer ID typed again before kizuna.customers.privacy runs.
"""

from __future__ import annotations

import json
import unicodedata

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role
from kizuna.customers import privacy
from kizuna.customers.merge import final_survivor_id
from kizuna.customers.models import Customer
from kizuna.customers.services import is_erased
from kizuna.web.customer_forms import customer_or_404
from kizuna.web.http import HtmxHttpRequest, posted

# The contact center receives disclosure requests and hands the file to the customer; erasing
# cannot be undone, so only an admin (the shop's DPO) may do it.
EXPORT_ROLES = (Role.OPERATOR,)


@allow_roles(*EXPORT_ROLES)
@never_cache
@require_POST
def customer_export(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    customer = customer_or_404(pk)
    try:
        data = privacy.customer_export(customer, request.user)
    except privacy.PrivacyError as exc:
        for message in exc.messages:
            messages.error(request, message)
        return redirect("web:customer_detail", pk=pk)
    response = HttpResponse(
        json.dumps(data, ensure_ascii=False, indent=2), content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="kizuna-customer-{pk}.json"'
    return response


class EraseForm(forms.Form):
    reason = forms.CharField(
        label="削除の理由(請求の受付番号など)",
        max_length=privacy.REASON_MAX,
        help_text="監査ログに残ります。お客様の氏名や連絡先は書かないでください。",
        error_messages={
            "required": "削除の理由を入力してください",
            "max_length": f"{privacy.REASON_MAX}文字以内で入力してください",
        },
    )
    confirm = forms.CharField(
        label="確認のため顧客IDを入力",
        max_length=20,
        error_messages={"required": "顧客IDを入力してください"},
    )

    def __init__(self, *args: object, customer: Customer, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.customer = customer

    def clean_confirm(self) -> str:
        # Japanese input methods often type full-width digits (２): NFKC makes them 2.
        value = unicodedata.normalize("NFKC", str(self.cleaned_data["confirm"])).strip()
        if value != str(self.customer.pk):
            raise forms.ValidationError("入力された顧客IDがこの顧客と一致しません")
        return value


@allow_roles()
@never_cache
@require_http_methods(["GET", "POST"])
def customer_erase(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET: what erasure removes and keeps, and the form. POST: erase, then back to the page."""
    customer = customer_or_404(pk)
    form = EraseForm(posted(request), customer=customer)
    errors: list[str] = []
    if request.method == "POST" and form.is_valid():
        try:
            privacy.customer_erase(
                customer=customer, acting_user=request.user, reason=form.cleaned_data["reason"]
            )
        except privacy.SubscriptionsRunningError as exc:
            errors = [privacy.subscriptions_refusal(exc.running, on_screen=True)]
        except privacy.PrivacyError as exc:
            errors = exc.messages
        else:
            messages.success(request, f"顧客ID {pk} の個人データを削除(匿名化)しました。")
            return redirect("web:customer_detail", pk=pk)
    check = privacy.erasure_check(customer)
    context = {
        "customer": customer,
        # An absorbed record is erased through the record it lives in now: said up front.
        "survivor_id": final_survivor_id(customer),
        "form": form,
        "errors": errors,
        "erased": is_erased(customer),
        "person_ids": check.person_ids,
        "subscriptions": check.running_subscriptions,
        "candidates": check.open_candidates,
    }
    status = 422 if request.method == "POST" else 200
    return render(request, "web/privacy/erase_confirm.html", context, status=status)
