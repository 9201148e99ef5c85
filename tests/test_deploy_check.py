"""Deployment settings and CSRF (RELIABILITY D5; docs/security.md).

`kizuna check --deploy` runs in a fresh process, because settings are read from the environment
once, at start-up: KIZUNA_ENV=production with a secret key and host names must pass with no
warning at all, and the development defaults must not (or the check proves nothing).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from pytest_django import Settings

from kizuna.accounts.models import Role, User
from kizuna.customers.models import Customer
from tests.factories import PASSWORD, make_customer
from tests.test_web_access import EXPECTED, all_routes, url_for

TEMPLATES = Path(__file__).resolve().parent.parent / "src" / "kizuna"

# Views that take a POST without a CSRF token, each for a stated reason. Everything else must
# refuse one. The API is matched by namespace: every route under it authenticates each call
# itself (API key or webhook signature) and never by the session cookie, so a browser's cookie
# cannot be ridden (test_the_api_ignores_the_session_cookie).
CSRF_EXEMPT_NAMESPACES = {"api-v1": "REST API: API keys (Bearer) and webhook HMAC signatures"}
CSRF_EXEMPT = {
    "unsubscribe:unsubscribe": (
        "RFC 8058 one-click unsubscribe: mail providers POST without cookies; the signed token "
        "in the URL is the proof, and the POST only withdraws consent"
    ),
}
# The customer's unsubscribe page posts to the exempt view above, from a browser that may have
# no session at all.
FORMS_WITHOUT_TOKEN = {"web/templates/web/unsubscribe/confirm.html"}
CSRF_FAILURE_TEXT = "画面の有効期限が切れました"


def is_exempt(name: str) -> bool:
    return name in CSRF_EXEMPT or name.split(":", 1)[0] in CSRF_EXEMPT_NAMESPACES


def run_kizuna(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KIZUNA_", "DJANGO_")) and key not in ("SECRET_KEY", "DEBUG")
    }
    base.pop("ALLOWED_HOSTS", None)
    return subprocess.run(  # noqa: S603 - our own interpreter and CLI
        [sys.executable, "-m", "kizuna", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def production_env(tmp_path: Path) -> dict[str, str]:
    return {
        "KIZUNA_ENV": "production",
        "KIZUNA_DATA_DIR": str(tmp_path),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "crm.example.jp",
        "KIZUNA_PUBLIC_URL": "https://crm.example.jp",
    }


# --- check --deploy ---------------------------------------------------------------------------


def test_check_deploy_is_clean_with_production_settings(production_env: dict[str, str]) -> None:
    result = run_kizuna(production_env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_development_defaults_are_not_deployable(tmp_path: Path) -> None:
    result = run_kizuna(
        {"KIZUNA_DATA_DIR": str(tmp_path)}, "check", "--deploy", "--fail-level", "WARNING"
    )
    assert result.returncode != 0
    found = set(re.findall(r"security\.W\d+", result.stdout + result.stderr))
    # No HSTS, no HTTPS redirect, cookies sent over plain HTTP.
    assert {"security.W004", "security.W008", "security.W012", "security.W016"} <= found


@pytest.mark.parametrize("public_url", [None, "http://crm.example.jp", "https://localhost:8000"])
def test_opt_out_links_that_customers_cannot_open_are_not_deployable(
    production_env: dict[str, str], public_url: str | None
) -> None:
    # Every marketing message's legally required opt-out link starts with KIZUNA_PUBLIC_URL.
    env = {**production_env}
    if public_url is None:
        env.pop("KIZUNA_PUBLIC_URL")  # the default: http://127.0.0.1:8000
    else:
        env["KIZUNA_PUBLIC_URL"] = public_url
    result = run_kizuna(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "kizuna.W001" in result.stdout + result.stderr


def test_production_settings_can_be_loosened_explicitly(production_env: dict[str, str]) -> None:
    # e.g. a staging box without HTTPS: possible, but check --deploy says what is missing.
    env = {**production_env, "KIZUNA_SSL_REDIRECT": "false"}
    result = run_kizuna(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W008" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SECRET_KEY": ""}, "では SECRET_KEY が必要です"),
        ({"ALLOWED_HOSTS": None}, "では ALLOWED_HOSTS が必要です"),
        ({"DEBUG": "true"}, "DEBUG を有効にできません"),
        ({"KIZUNA_ENV": "prod"}, "KIZUNA_ENV は development か production にしてください"),
    ],
)
def test_production_refuses_to_start_half_configured(
    production_env: dict[str, str], change: dict[str, str | None], message: str
) -> None:
    env = {**production_env}
    for key, value in change.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = value
    result = run_kizuna(env, "check")
    assert result.returncode != 0
    assert message in result.stderr
    # the reason, not a Python traceback
    assert result.stderr.startswith("エラー: 設定を確かめてください:")
    assert "Traceback" not in result.stderr


# --- CSRF -------------------------------------------------------------------------------------


def test_only_the_documented_views_are_csrf_exempt() -> None:
    exempt = {r.name for r in all_routes() if getattr(r.view, "csrf_exempt", False)}
    undocumented = {name for name in exempt if not is_exempt(name)}
    assert undocumented == set(), "CSRF-exempt views must be listed in CSRF_EXEMPT with a reason"
    assert set(CSRF_EXEMPT) <= exempt


@pytest.fixture
def customer(db: None) -> Customer:
    return make_customer()


@pytest.fixture
def csrf_admin(users: dict[Role, User]) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(users[Role.ADMIN])
    return client


@pytest.mark.parametrize("name", sorted(name for name in EXPECTED if not is_exempt(name)))
def test_every_post_without_a_csrf_token_is_refused(
    csrf_admin: Client, customer: Customer, name: str
) -> None:
    # As an admin (every page is open to them) and, for the public pages, as a stranger.
    clients = (
        [csrf_admin]
        if EXPECTED[name] is not None
        else [csrf_admin, Client(enforce_csrf_checks=True)]
    )
    for client in clients:
        response = client.post(url_for(name, customer), {"confirm": "1", "action": "x"})
        assert response.status_code == 403, name
        assert CSRF_FAILURE_TEXT in response.content.decode(), name


def test_the_same_post_with_its_token_gets_through(users: dict[Role, User]) -> None:
    # The control for the test above: it is the missing token that is refused.
    client = Client(enforce_csrf_checks=True)
    page = client.get(reverse("login"))
    token = page.cookies["csrftoken"].value
    response = client.post(
        reverse("login"),
        {"username": "operator-user", "password": PASSWORD, "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302


def test_the_api_ignores_the_session_cookie(csrf_admin: Client, db: None) -> None:
    # Why the API may be CSRF-exempt: a logged-in admin's browser cookie gives it nothing.
    response = csrf_admin.post(
        "/api/v1/customers", {"identities": {}}, content_type="application/json"
    )
    assert response.status_code == 401


def test_every_post_form_in_the_templates_carries_the_token() -> None:
    missing = []
    for template in sorted(TEMPLATES.rglob("templates/**/*.html")):
        if str(template.relative_to(TEMPLATES)) in FORMS_WITHOUT_TOKEN:
            continue
        html = template.read_text(encoding="utf-8")
        for form in re.findall(r"<form\b[^>]*>.*?</form>", html, flags=re.S | re.I):
            opening = form[: form.index(">") + 1]
            if re.search(r'method="post"', opening, flags=re.I) and "csrf_token" not in form:
                missing.append(f"{template.relative_to(TEMPLATES)}: {opening}")
    assert missing == []


def test_admin_login_is_csrf_protected_too(db: None) -> None:
    response = Client(enforce_csrf_checks=True).post(
        "/admin/login/", {"username": "x", "password": "y"}
    )
    assert response.status_code == 403


def test_production_cookies_and_headers(
    settings: Settings, client_for: Callable[[Role], Client]
) -> None:
    # What KIZUNA_ENV=production turns on, seen on a real response (settings as it sets them).
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    client = client_for(Role.OPERATOR)
    assert client.get(reverse("web:home"))["Location"].startswith("https://")
    response = client.get(reverse("web:home"), secure=True)
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
