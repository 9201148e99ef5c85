"""What the customer page's forms (edit, contacts, consents, points, APPI export and erasure)
share: finding the customer, and sending a record merged into another to the same form on the
record it lives in now."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect

from kizuna.customers.merge import final_survivor_id
from kizuna.customers.models import Customer


def customer_or_404(pk: int) -> Customer:
    customer = Customer.objects.filter(pk=pk).first()
    if customer is None:
        raise Http404("顧客が見つかりません")
    return customer


def survivor_redirect(
    request: HttpRequest, customer: Customer, url_name: str, *args: object
) -> HttpResponse | None:
    """The same page on the record a merged-away customer lives in now (the end of a chain of
    merges), with a note; None for a record that was not merged."""
    if customer.merged_into_id is None:
        return None
    survivor = final_survivor_id(customer)
    messages.info(
        request,
        f"顧客ID {customer.pk} は顧客ID {survivor} に統合されています。統合先の画面を開きました。",
    )
    return redirect(url_name, survivor, *args)
