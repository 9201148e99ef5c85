"""The operator's screens: login, home, customer search and the customer page.

Views stay thin: read and bound the input, call the selectors, render. Paginated sections and
the live search answer htmx with a fragment and plain browsers with the whole page.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView, LogoutView
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render, resolve_url
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseClientRedirect

from kizuna.accounts.access import allow_roles, public
from kizuna.accounts.models import Role, User
from kizuna.campaigns.automation.selectors import RECENT_ENROLLMENTS, customer_enrollments
from kizuna.commerce.models import Order
from kizuna.customers import selectors
from kizuna.customers.merge import final_survivor_id
from kizuna.customers.models import Customer
from kizuna.customers.services import is_erased
from kizuna.loyalty.selectors import points_balance
from kizuna.subscriptions.models import Subscription, SubscriptionStatus
from kizuna.web import customer_edit as customer_edit_views
from kizuna.web import privacy as privacy_views
from kizuna.web import subscriptions as subscription_views
from kizuna.web.http import HtmxHttpRequest, wants_fragment

# Analysts work on aggregates; the customer screens show personal data, so they are not here.
# Those screens are also `never_cache`: call-center PCs are shared, and personal data must not
# stay in the browser's cache after a logout.
CUSTOMER_ROLES = (Role.OPERATOR, Role.MARKETER)
STAFF_ROLES = (Role.OPERATOR, Role.MARKETER, Role.ANALYST)

HOME_COUNTS_SECONDS = 300


class LoginForm(AuthenticationForm):
    """Django's login form with its messages fixed in Japanese.

    LocaleMiddleware would otherwise follow the browser, and staff PCs are not always set to
    Japanese.
    """

    error_messages = {
        "invalid_login": "ユーザー名またはパスワードが正しくありません。",
        "inactive": "このアカウントは利用停止されています。管理者にお問い合わせください。",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        required = {"required": "入力してください。"}
        self.fields["username"].label = "ユーザー名"
        self.fields["username"].error_messages.update(required)
        self.fields["password"].label = "パスワード"
        self.fields["password"].error_messages.update(required)
        self.fields["username"].widget = forms.TextInput(
            attrs={"autofocus": True, "autocomplete": "username", "autocapitalize": "none"}
        )


@public
class KizunaLoginView(LoginView):
    template_name = "web/login.html"
    form_class = LoginForm
    redirect_authenticated_user = True

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # An htmx request whose session expired was redirected here; answering with the login
        # form would paste it into the search results. Send the whole tab to login instead.
        htmx_request = cast(HtmxHttpRequest, request)
        if wants_fragment(htmx_request):
            back = htmx_request.htmx.current_url_abs_path or resolve_url(
                settings.LOGIN_REDIRECT_URL
            )
            return HttpResponseClientRedirect(f"{resolve_url('login')}?{urlencode({'next': back})}")
        return super().get(request, *args, **kwargs)


# Public so that a click on ログアウト after the session expired still lands on the login page
# instead of a login redirect back to a POST-only URL. Django 5 accepts POST only here.
@public
class KizunaLogoutView(LogoutView):
    pass


def _home_counts() -> dict[str, int]:
    """顧客数, 今月の注文数, 継続中の定期, cached for a few minutes.

    Orders have no index on their date alone, so counting this month's orders reads the whole
    table; a short cache keeps the landing page instant at a million customers.
    """
    month_start = timezone.localtime().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    key = f"kizuna:web:home-counts:{month_start:%Y-%m}"

    def compute() -> dict[str, int]:
        return {
            "customers": Customer.objects.count(),
            "orders_this_month": Order.objects.filter(ordered_at__gte=month_start).count(),
            "active_subscriptions": Subscription.objects.filter(
                status=SubscriptionStatus.ACTIVE
            ).count(),
        }

    counts: dict[str, int] | None = cache.get(key)
    if counts is None:
        counts = compute()
        cache.set(key, counts, HOME_COUNTS_SECONDS)
    return counts


@allow_roles(*STAFF_ROLES)
@require_GET
def home(request: HtmxHttpRequest) -> HttpResponse:
    return render(
        request,
        "web/home.html",
        {"counts": _home_counts(), "month": timezone.localdate(), "query": ""},
    )


@allow_roles(*CUSTOMER_ROLES)
@never_cache
@require_GET
def customer_search(request: HtmxHttpRequest) -> HttpResponse:
    # The query is PII: it is used, never logged.
    query = request.GET.get("q", "").strip()[: selectors.MAX_QUERY_LENGTH]
    limit: int = settings.KIZUNA_SEARCH_LIMIT
    found = selectors.customer_search(query, limit=limit + 1) if query else []
    context = {
        "query": query,
        "rows": selectors.customer_rows(found[:limit]),
        "has_more": len(found) > limit,
        "limit": limit,
    }
    template = "web/_search_results.html" if wants_fragment(request) else "web/search.html"
    response = render(request, template, context)
    patch_vary_headers(response, ("HX-Request",))
    return response


def _customer_or_404(pk: int) -> Customer:
    customer = selectors.customer_profile(pk)
    if customer is None:
        raise Http404("顧客が見つかりません")
    return customer


@allow_roles(*CUSTOMER_ROLES)
@never_cache
@require_GET
def customer_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    customer = _customer_or_404(pk)
    orders = selectors.orders_page(customer, 1)
    subscriptions = selectors.subscriptions_for(customer)
    context = {
        "customer": customer,
        "identity_groups": selectors.identity_groups(customer),
        "consents": selectors.consent_rows(customer),
        "orders": orders,
        "subscriptions": subscriptions,
        "active_subscriptions": sum(
            1 for s in subscriptions if s.status == SubscriptionStatus.ACTIVE
        ),
        "balance": points_balance(customer),
        "points": selectors.points_page(customer, 1),
        "timeline": selectors.timeline_page(customer, 1),
        "contacts": selectors.recent_contacts(customer),
        "enrollments": customer_enrollments(customer),
        "enrollments_limit": RECENT_ENROLLMENTS,
        "contacts_limit": selectors.RECENT_CONTACTS,
        "erased": is_erased(customer),
        # Where an absorbed record's export and erasure are done: the end of a chain of merges.
        "survivor_id": final_survivor_id(customer),
        "can_export": cast(User, request.user).has_role(Role.ADMIN, *privacy_views.EXPORT_ROLES),
        "can_erase": cast(User, request.user).has_role(Role.ADMIN),
        # Merged-away and erased records are not edited (the edit page says why).
        "can_edit_profile": not customer.merged_into_id
        and not is_erased(customer)
        and cast(User, request.user).has_role(Role.ADMIN, *customer_edit_views.EDIT_ROLES),
        "can_cancel_subscriptions": cast(User, request.user).has_role(
            Role.ADMIN, *subscription_views.CANCEL_ROLES
        ),
    }
    return render(request, "web/customer_detail.html", context)


def _section(
    request: HtmxHttpRequest, customer: Customer, section: str, context: dict[str, Any]
) -> HttpResponse:
    """A paginated section: the fragment for htmx, else a page of its own (works without JS)."""
    context = {"customer": customer, "section": section, **context}
    if wants_fragment(request):
        response = render(request, f"web/_{section}.html", context)
    else:
        response = render(request, "web/customer_section.html", context)
    patch_vary_headers(response, ("HX-Request",))
    return response


@allow_roles(*CUSTOMER_ROLES)
@never_cache
@require_GET
def customer_orders(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    customer = _customer_or_404(pk)
    orders = selectors.orders_page(customer, request.GET.get("page"))
    return _section(request, customer, "orders", {"orders": orders})


@allow_roles(*CUSTOMER_ROLES)
@never_cache
@require_GET
def customer_points(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    customer = _customer_or_404(pk)
    context = {
        "points": selectors.points_page(customer, request.GET.get("page")),
        "balance": points_balance(customer),
    }
    return _section(request, customer, "points", context)


@allow_roles(*CUSTOMER_ROLES)
@never_cache
@require_GET
def customer_timeline(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    customer = _customer_or_404(pk)
    timeline = selectors.timeline_page(customer, request.GET.get("page"))
    return _section(request, customer, "timeline", {"timeline": timeline})
