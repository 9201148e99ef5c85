"""Reloading the page that shows a new API key or webhook secret sends the create POST again:
that must not make a second working key, nor lose the sender's page to a "name taken" error.

The create forms carry a one-time `form_token` (kizuna.web.formtokens, shared with the CSV
import form); a resubmission is answered with a message and makes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from kizuna.accounts.models import ApiKey, Role
from kizuna.core.models import WebhookSource
from tests.pages import form_token

pytestmark = pytest.mark.django_db
KEY_URL = "/settings/api-keys/new/"
SOURCE_URL = "/settings/api-keys/webhooks/new/"
ALREADY_SENT = "このフォームはすでに送信済みです。キーの一覧を確かめてください"


def post_form(client: Client, url: str, data: dict[str, Any], **extra: Any) -> Any:
    """Open the form (as a browser does), send it with the token it was given, and follow
    the redirect to the page that shows the new secret."""
    return client.post(url, {**data, "form_token": form_token(client, url)}, follow=True, **extra)


def test_resending_the_key_form_makes_no_second_key(
    client_for: Callable[[Role], Client],
) -> None:
    admin = client_for(Role.ADMIN)
    data = {
        "name": "カート連携",
        "scopes": ["customers:read"],
        "form_token": form_token(admin, KEY_URL),
    }
    first = admin.post(KEY_URL, data, follow=True)
    assert re.search(r'value="(kzn_[^"]+)"', first.content.decode())
    again = admin.post(KEY_URL, data, follow=True)
    assert ALREADY_SENT in again.content.decode()
    assert ApiKey.objects.count() == 1


def test_resending_the_webhook_form_says_so_instead_of_name_taken(
    client_for: Callable[[Role], Client],
) -> None:
    admin = client_for(Role.ADMIN)
    data = {"name": "EC-CUBE本店", "slug": "eccube", "form_token": form_token(admin, SOURCE_URL)}
    admin.post(SOURCE_URL, data)
    again = admin.post(SOURCE_URL, data, follow=True).content.decode()
    assert ALREADY_SENT in again
    assert "この識別名はすでに使われています" not in again
    assert WebhookSource.objects.count() == 1


def test_a_form_opened_again_makes_a_second_key(client_for: Callable[[Role], Client]) -> None:
    admin = client_for(Role.ADMIN)
    for _ in range(2):
        response = post_form(admin, KEY_URL, {"name": "連携", "scopes": ["customers:read"]})
        assert response.status_code == 200
    assert ApiKey.objects.count() == 2


def test_a_post_without_a_known_token_creates_nothing(
    client_for: Callable[[Role], Client],
) -> None:
    admin = client_for(Role.ADMIN)
    response = admin.post(KEY_URL, {"name": "連携", "scopes": ["customers:read"]})
    assert "もう一度入力して送信してください" in response.content.decode()
    assert 'value="連携"' in response.content.decode()
    assert not ApiKey.objects.exists()


def test_the_create_post_redirects_and_the_secret_is_shown_once(
    client_for: Callable[[Role], Client],
) -> None:
    admin = client_for(Role.ADMIN)
    data = {"name": "カート連携", "scopes": ["customers:read"]}
    # when: the form is sent
    response = admin.post(KEY_URL, {**data, "form_token": form_token(admin, KEY_URL)})
    # then: the answer is a redirect (Back never asks to send the form again)...
    assert response.status_code == 302
    assert "kzn_" not in response.content.decode()
    shown = admin.get(response["Location"])
    assert shown["Cache-Control"].startswith("max-age=0")
    secret = re.search(r'value="(kzn_[^"]+)"', shown.content.decode())
    assert secret is not None
    # ...whose page shows the key once; a reload says it was shown
    reload = admin.get(response["Location"]).content.decode()
    assert secret.group(1) not in reload
    assert "このキーはすでに表示しました" in reload
    assert ApiKey.objects.count() == 1


def test_the_webhook_secret_is_shown_once_after_a_redirect(
    client_for: Callable[[Role], Client],
) -> None:
    admin = client_for(Role.ADMIN)
    data = {"name": "EC-CUBE本店", "slug": "eccube", "form_token": form_token(admin, SOURCE_URL)}
    response = admin.post(SOURCE_URL, data)
    assert response.status_code == 302
    secret = WebhookSource.objects.get().secret
    assert secret in admin.get(response["Location"]).content.decode()
    reload = admin.get(response["Location"]).content.decode()
    assert secret not in reload
    assert "この秘密鍵はすでに表示しました" in reload
