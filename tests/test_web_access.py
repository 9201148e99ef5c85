"""Who may open which page, for every URL the project has (deny by default, RELIABILITY D2).

The table below is the contract. A new page must declare its roles in code (or the middleware
answers 403) and be added here (or `test_every_page_is_in_the_access_table` fails).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.cache import cache
from django.template.loader import render_to_string
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from kizuna.accounts.access import PUBLIC, allowed_roles
from kizuna.accounts.models import Role, User
from kizuna.customers.models import Customer
from tests.factories import PASSWORD, make_customer

EVERYONE = frozenset(Role)
CUSTOMER_SCREENS = frozenset({Role.ADMIN, Role.OPERATOR, Role.MARKETER})
MARKETING = frozenset({Role.ADMIN, Role.MARKETER})
MARKETING_READ = frozenset({Role.ADMIN, Role.MARKETER, Role.ANALYST})
ADMIN_ONLY = frozenset({Role.ADMIN})
ANALYSIS_SETTINGS = frozenset({Role.ADMIN, Role.ANALYST})

# The REST API is public to the session middleware: it authenticates every call itself with
# scoped API keys or webhook signatures (tests/test_api_*.py, tests/test_webhooks.py).
API_ROUTES = [
    "api-root", "change_points", "create_customer", "create_subscription", "customer_webhook",
    "docs-asset", "get_customer", "get_points", "get_subscription", "ingest_events",
    "list_onsite_messages", "openapi-json", "openapi-view", "order_webhook", "search_customers",
    "update_customer", "update_subscription", "upsert_order", "upsert_orders_batch",
    "list_analytics_runs", "get_analytics_run", "list_analytics_segments", "list_analytics_kpis",
    "get_analytics_kpi", "get_customer_scores", "list_analytics_scores",
    "email_event_webhook", "export_customer", "erase_customer",
]  # fmt: skip

EXPECTED: dict[str, frozenset[Role] | None] = {
    # None: public (no login needed).
    "login": None,
    "logout": None,
    # The 2FA code step of login: public, the view itself sends anyone not half-logged-in away.
    "login_verify": None,
    "security:account": EVERYONE,
    "security:password_change": EVERYONE,
    "security:staff": ADMIN_ONLY,
    "web:home": EVERYONE,
    "web:customer_search": CUSTOMER_SCREENS,
    "web:customer_detail": CUSTOMER_SCREENS,
    "web:customer_orders": CUSTOMER_SCREENS,
    "web:customer_points": CUSTOMER_SCREENS,
    "web:customer_timeline": CUSTOMER_SCREENS,
    # Goodwill points and balance corrections: the contact center, within its limit.
    "web:points_adjust": frozenset({Role.ADMIN, Role.OPERATOR}),
    # Correcting a customer's 基本情報: the contact center's work, like cancelling a 定期.
    "web:customer_edit": frozenset({Role.ADMIN, Role.OPERATOR}),
    "web:identity_new": frozenset({Role.ADMIN, Role.OPERATOR}),
    "web:identity_remove": frozenset({Role.ADMIN, Role.OPERATOR}),
    # APPI requests: the contact center hands out the export; erasing is for admins (the DPO).
    "web:customer_export": frozenset({Role.ADMIN, Role.OPERATOR}),
    "web:customer_erase": ADMIN_ONLY,
    # Cancelling a 定期 subscription: the contact center takes cancellations.
    "web:subscription_cancel": frozenset({Role.ADMIN, Role.OPERATOR}),
    # …and the gentler changes the cancellation desk offers first.
    "web:subscription_pause": frozenset({Role.ADMIN, Role.OPERATOR}),
    "web:subscription_resume": frozenset({Role.ADMIN, Role.OPERATOR}),
    "web:subscription_next_delivery": frozenset({Role.ADMIN, Role.OPERATOR}),
    "web:subscription_cycle": frozenset({Role.ADMIN, Role.OPERATOR}),
    # The contact center records contacts and consent given or withdrawn on the phone.
    "web:contact_new": frozenset({Role.ADMIN, Role.OPERATOR}),
    "web:consent_change": frozenset({Role.ADMIN, Role.OPERATOR}),
    # The one-click unsubscribe link in every marketing mail (RFC 8058): no login.
    "unsubscribe:unsubscribe": None,
    "apikeys:index": ADMIN_ONLY,
    "apikeys:create": ADMIN_ONLY,
    "apikeys:create_source": ADMIN_ONLY,
    "apikeys:created": ADMIN_ONLY,
    "apikeys:source_created": ADMIN_ONLY,
    "apikeys:rotate_source": ADMIN_ONLY,
    "duplicates:queue": CUSTOMER_SCREENS,
    "duplicates:merge": CUSTOMER_SCREENS,
    "duplicates:dismiss": CUSTOMER_SCREENS,
    "duplicates:reopen": CUSTOMER_SCREENS,
    "duplicates:merge_detail": CUSTOMER_SCREENS,
    "duplicates:merge_undo": CUSTOMER_SCREENS,
    "imports:index": MARKETING,
    "imports:detail": MARKETING,
    "imports:status": MARKETING,
    "imports:errors": MARKETING,
    "imports:errors_csv": MARKETING,
    "outbox:dashboard": CUSTOMER_SCREENS,
    "outbox:download_list": CUSTOMER_SCREENS,
    "outbox:close_list": CUSTOMER_SCREENS,
    "outbox:reopen_list": CUSTOMER_SCREENS,
    "outbox:suppressions": MARKETING,
    "outbox:pause": ADMIN_ONLY,
    "outbox:settings": ADMIN_ONLY,
    # 送信キュー: marketers see the messages; cancelling and resending are the admin's, like
    # the pause switch they go with (the restore procedure, RELIABILITY D8).
    "outbox:queue": MARKETING,
    "outbox:queue_confirm": ADMIN_ONLY,
    "outbox:queue_action": ADMIN_ONLY,
    "segments:list": MARKETING,
    "segments:builder": MARKETING,
    "segments:count": MARKETING,
    "segments:create": MARKETING,
    "segments:delete": MARKETING,
    "segments:edit": MARKETING,
    "segments:export": MARKETING,
    "segments:preview": MARKETING,
    "scenarios:list": MARKETING_READ,
    "scenarios:detail": MARKETING_READ,
    "scenarios:lift": MARKETING_READ,
    "scenarios:counts": MARKETING_READ,
    "scenarios:create": MARKETING,
    "scenarios:edit": MARKETING,
    "scenarios:form_refresh": MARKETING,
    "scenarios:activate": MARKETING,
    "scenarios:pause": MARKETING,
    "scenarios:delete": MARKETING,
    "scenarios:archive": MARKETING,
    "scenarios:unarchive": MARKETING,
    "scenarios:backlog_confirm": MARKETING,
    "scenarios:backlog_discard": MARKETING,
    "scenarios:offers": MARKETING,
    "scenarios:offer_delete": MARKETING,
    "scenarios:templates": MARKETING,
    "scenarios:template_create": MARKETING,
    "scenarios:template_edit": MARKETING,
    "scenarios:template_delete": MARKETING,
    "scenarios:template_cancel_waiting": MARKETING,
    "scenarios:template_preview": MARKETING,
    "analytics:dashboard": MARKETING_READ,
    "analytics:repeat": MARKETING_READ,
    "analytics:cohorts": MARKETING_READ,
    "analytics:subscriptions": MARKETING_READ,
    "analytics:predictions": MARKETING_READ,
    "analytics:dynamics": MARKETING_READ,
    "analytics:fans": MARKETING_READ,
    "analytics:runs": MARKETING_READ,
    "analytics:run_start": MARKETING_READ,
    "analytics:run_nightly": MARKETING_READ,
    "analytics:run_progress": MARKETING_READ,
    "analytics:settings": ANALYSIS_SETTINGS,
    # The export holds customers' names: the roles that may see customers' data.
    "analytics:segment_export": MARKETING,
    **{f"api-v1:{name}": None for name in API_ROUTES},
}
PROTECTED = [name for name, roles in EXPECTED.items() if roles is not None]
# Pages whose only argument is a customer id: every allowed role must see them render.
OPENS_WITH_A_CUSTOMER = frozenset(
    {
        "web:home",
        "web:customer_search",
        "web:customer_detail",
        "web:customer_orders",
        "web:customer_points",
        "web:customer_timeline",
    }
)


@dataclass(frozen=True)
class Route:
    name: str
    converters: dict[str, str]  # argument name → converter ("int", "str", …)
    view: Callable[..., Any]


def _walk(patterns: list[Any], namespace: str = "", prefix: str = "") -> Iterator[Route]:
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            # Django admin guards itself (is_staff); static files are served by WhiteNoise.
            if route.startswith("admin/"):
                continue
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _walk(entry.url_patterns, inner, route)
        elif isinstance(entry, URLPattern):
            assert entry.name, f"URL {route!r} has no name"
            converters = {
                arg: type(conv).__name__.removesuffix("Converter").lower()
                for arg, conv in entry.pattern.converters.items()
            }
            yield Route(name=namespace + entry.name, converters=converters, view=entry.callback)


def all_routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns))


# Sample values for URL arguments. Access is decided before the view runs, so a page about an
# object that does not exist still answers 403 to a role that may not open it; allowed roles get
# the page (200), a 404 for the missing object, or 405 for a POST-only action, never 403.
SAMPLE_ARGS = {
    "str": "sample",
    "string": "sample",
    "slug": "sample",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


def url_for(name: str, customer: Customer) -> str:
    route = next(r for r in all_routes() if r.name == name)
    kwargs: dict[str, Any] = {}
    for arg, converter in route.converters.items():
        kwargs[arg] = customer.pk if converter == "int" else SAMPLE_ARGS[converter]
    return reverse(name, kwargs=kwargs)


@pytest.fixture
def customer(db: None) -> Customer:
    return make_customer()


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    cache.clear()


def test_every_view_declares_who_may_open_it() -> None:
    undeclared = [r.name for r in all_routes() if allowed_roles(r.view) is None]
    assert undeclared == [], "decorate these views with @allow_roles(...) or @public"


def test_every_page_is_in_the_access_table() -> None:
    assert sorted(r.name for r in all_routes()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_declarations_match_the_table(name: str) -> None:
    route = next(r for r in all_routes() if r.name == name)
    expected = EXPECTED[name]
    declared = allowed_roles(route.view)
    if expected is None:
        assert declared == PUBLIC
    else:
        assert declared == frozenset(role.value for role in expected)


@pytest.mark.parametrize("name", PROTECTED)
def test_anonymous_is_sent_to_login(client: Client, customer: Customer, name: str) -> None:
    url = url_for(name, customer)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("name", PROTECTED)
def test_each_role_gets_the_page_or_403(
    client_for: Callable[[Role], Client], customer: Customer, name: str, role: Role
) -> None:
    allowed = EXPECTED[name]
    assert allowed is not None
    response = client_for(role).get(url_for(name, customer))
    if role in allowed and name in OPENS_WITH_A_CUSTOMER:
        assert response.status_code == 200, f"{role} should open {name}"
    elif role in allowed:
        # Without arguments nothing can be missing: the page renders, or is a POST-only action.
        takes_arguments = bool(next(r for r in all_routes() if r.name == name).converters)
        reachable = (200, 404, 405) if takes_arguments else (200, 405)
        assert response.status_code in reachable, f"{role} should reach {name}"
    else:
        assert response.status_code == 403, f"{role} must not open {name}"
        assert "このページは開けません" in response.content.decode()


def test_403_names_the_role(client_for: Callable[[Role], Client]) -> None:
    response = client_for(Role.ANALYST).get(reverse("web:customer_search"), {"q": "山田"})
    assert response.status_code == 403
    assert "アナリストの役割では、このページを開くことはできません" in response.content.decode()


def test_inactive_user_is_refused(users: dict[Role, User], customer: Customer) -> None:
    user = users[Role.OPERATOR]
    client = Client()
    client.force_login(user)
    user.is_active = False
    user.save()
    response = client.get(reverse("web:customer_detail", args=[customer.pk]))
    assert response.status_code in (302, 403)


# --- login and logout -------------------------------------------------------------------------


def test_login_page_is_japanese_and_public(client: Client, db: None) -> None:
    response = client.get(reverse("login"), headers={"Accept-Language": "en"})
    html = response.content.decode()
    assert response.status_code == 200
    assert '<html lang="ja">' in html
    assert "ログイン" in html
    assert "ユーザー名" in html
    assert "パスワード" in html


def test_login_with_password_lands_on_home(client: Client, users: dict[Role, User]) -> None:
    response = client.post(
        reverse("login"), {"username": "operator-user", "password": PASSWORD}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("web:home")
    assert "お客様を探す" in response.content.decode()


def test_login_follows_next(client: Client, users: dict[Role, User], customer: Customer) -> None:
    target = reverse("web:customer_detail", args=[customer.pk])
    response = client.post(
        reverse("login") + f"?next={target}",
        {"username": "operator-user", "password": PASSWORD, "next": target},
    )
    assert response.status_code == 302
    assert response["Location"] == target


def test_wrong_password_is_refused_in_japanese(client: Client, users: dict[Role, User]) -> None:
    response = client.post(
        reverse("login"),
        {"username": "operator-user", "password": "wrong"},
        headers={"Accept-Language": "en"},
    )
    assert response.status_code == 200
    assert "ユーザー名またはパスワードが正しくありません" in response.content.decode()


def test_empty_login_form_errors_are_japanese(client: Client, db: None) -> None:
    response = client.post(reverse("login"), {}, headers={"Accept-Language": "en"})
    assert "入力してください" in response.content.decode()
    assert "This field" not in response.content.decode()


def test_django_s_own_form_errors_are_japanese_for_an_english_browser(
    client_for: Callable[[Role], Client],
) -> None:
    # A browser set to English still gets Japanese, not a mix ("This field is required."
    # beside the app's Japanese): on a form of the app and on a filter given an unknown value.
    client = client_for(Role.ADMIN)
    english = {"Accept-Language": "en-US,en;q=0.9"}
    settings_page = client.post(
        reverse("analytics:settings"), {"cpm_lapse_days": ""}, headers=english
    )
    html = settings_page.content.decode()
    assert "このフィールドは必須です" in html
    assert "This field" not in html
    queue = client.get(reverse("outbox:queue"), {"status": "foo"}, headers=english).content
    assert "正しく選択してください" in queue.decode()
    assert "Select a valid choice" not in queue.decode()


@pytest.mark.parametrize(
    ("url_name", "message"),
    [
        ("analytics:settings", "このフィールドは必須です"),
        ("apikeys:create", "名前を入力してください"),
    ],
)
def test_a_form_posted_without_any_field_says_what_is_missing(
    client_for: Callable[[Role], Client], url_name: str, message: str
) -> None:
    # A client that posts nothing (a script, a form whose fields were lost) gets the same
    # field messages as someone who left every field empty, not a bare form without a word.
    response = client_for(Role.ADMIN).post(reverse(url_name), {})
    assert message in response.content.decode()


def test_logged_in_user_skips_the_login_page(client_for: Callable[[Role], Client]) -> None:
    response = client_for(Role.OPERATOR).get(reverse("login"))
    assert response.status_code == 302
    assert response["Location"] == reverse("web:home")


def test_expired_session_during_htmx_sends_the_tab_to_login(client: Client, db: None) -> None:
    response = client.get(
        reverse("login") + "?next=/customers/%3Fq%3Dx",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/customers/?q=x"},
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("login") + "?next=%2Fcustomers%2F%3Fq%3Dx"


def test_logout_is_post_only(client_for: Callable[[Role], Client]) -> None:
    client = client_for(Role.OPERATOR)
    assert client.get(reverse("logout")).status_code == 405
    assert client.get(reverse("web:home")).status_code == 200  # still logged in
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert client.get(reverse("web:home")).status_code == 302


def test_every_page_offers_logout_as_a_form(client_for: Callable[[Role], Client]) -> None:
    html = client_for(Role.OPERATOR).get(reverse("web:home")).content.decode()
    assert f'method="post" action="{reverse("logout")}"' in html
    assert "ログアウト" in html


# --- admin ------------------------------------------------------------------------------------


def test_admin_role_reaches_django_admin(client_for: Callable[[Role], Client]) -> None:
    assert client_for(Role.ADMIN).get("/admin/").status_code == 200


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.MARKETER, Role.ANALYST])
def test_other_roles_are_sent_to_admin_login(
    client_for: Callable[[Role], Client], role: Role
) -> None:
    response = client_for(role).get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_admin_link_only_for_admins(client_for: Callable[[Role], Client]) -> None:
    assert "管理画面" in client_for(Role.ADMIN).get("/").content.decode()
    assert "管理画面" not in client_for(Role.OPERATOR).get("/").content.decode()


# --- not found --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["web:customer_detail", "web:customer_orders", "web:customer_points", "web:customer_timeline"],
)
def test_unknown_customer_is_404_in_japanese(
    client_for: Callable[[Role], Client], name: str
) -> None:
    response = client_for(Role.OPERATOR).get(reverse(name, args=[999_999]))
    assert response.status_code == 404
    html = response.content.decode()
    assert "ページが見つかりません" in html
    assert '<html lang="ja">' in html


def test_unknown_url_is_404_in_japanese(client: Client, db: None) -> None:
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "ページが見つかりません" in response.content.decode()


def test_500_page_is_japanese_and_standalone() -> None:
    html = render_to_string("500.html")
    assert "システムエラーが発生しました" in html
    assert '<html lang="ja">' in html


# --- home -------------------------------------------------------------------------------------


def test_home_shows_counts_to_every_role(
    client_for: Callable[[Role], Client], customer: Customer
) -> None:
    for role in Role:
        cache.clear()
        html = client_for(role).get(reverse("web:home")).content.decode()
        assert "顧客数" in html
        assert "今月の注文数" in html
        assert "継続中の定期" in html


def test_analyst_home_has_no_customer_search(client_for: Callable[[Role], Client]) -> None:
    html = client_for(Role.ANALYST).get(reverse("web:home")).content.decode()
    assert 'name="q"' not in html
    html = client_for(Role.OPERATOR).get(reverse("web:home")).content.decode()
    assert 'name="q"' in html
