"""Settings → API keys and webhook senders: admins create keys (secret shown once) and revoke."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.test import Client

from kizuna.accounts.models import ApiKey, Role
from kizuna.core.models import AuditLog, WebhookSource
from tests.test_api_common import ApiClient, assert_error
from tests.test_apikeys_resubmit import post_form

pytestmark = pytest.mark.django_db
PAGES = ["/settings/api-keys/", "/settings/api-keys/new/", "/settings/api-keys/webhooks/new/"]


@pytest.mark.parametrize("url", PAGES)
@pytest.mark.parametrize("role", [Role.OPERATOR, Role.MARKETER, Role.ANALYST])
def test_only_admins_may_open_the_settings(
    client_for: Callable[[Role], Client], url: str, role: Role
) -> None:
    assert client_for(role).get(url).status_code == 403
    assert (
        client_for(role).post(url, {"name": "x", "scopes": ["customers:read"]}).status_code == 403
    )
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_is_sent_to_login(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_empty_list_explains_what_to_do(client_for: Callable[[Role], Client]) -> None:
    html = client_for(Role.ADMIN).get("/settings/api-keys/").content.decode()
    assert "APIキーはまだありません" in html
    assert "Webhook送信元はまだありません" in html


def test_create_a_key_shows_the_secret_once_and_it_works(
    client_for: Callable[[Role], Client], users: dict[Role, object]
) -> None:
    admin = client_for(Role.ADMIN)
    # when
    response = post_form(
        admin, "/settings/api-keys/new/", {"name": "カート連携", "scopes": ["customers:read"]}
    )
    # then: the page shows the key, which opens the API with its scope only
    html = response.content.decode()
    assert response.status_code == 200
    secret = re.search(r'value="(kzn_[^"]+)"', html)
    assert secret is not None
    assert "今だけ表示されます" in html
    assert response["Cache-Control"].startswith("max-age=0")
    api = ApiClient(secret.group(1))
    assert_error(api.get("/api/v1/customers/1"), 404)
    assert_error(api.post("/api/v1/customers", {}), 403, "missing_scope")
    # and the list shows it without the secret
    listing = admin.get("/settings/api-keys/").content.decode()
    key = ApiKey.objects.get()
    assert "カート連携" in listing
    assert key.prefix in listing
    assert secret.group(1) not in listing
    assert "顧客の参照" in listing
    assert key.created_by == users[Role.ADMIN]
    assert AuditLog.objects.filter(action="api_key.create", actor_label="admin-user").exists()


def test_form_errors_are_japanese_and_keep_the_input(client_for: Callable[[Role], Client]) -> None:
    response = post_form(client_for(Role.ADMIN), "/settings/api-keys/new/", {"name": "LINE連携"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "権限を1つ以上選んでください。" in html
    assert 'value="LINE連携"' in html
    assert not ApiKey.objects.exists()


def test_revoke_a_key(client_for: Callable[[Role], Client]) -> None:
    admin = client_for(Role.ADMIN)
    html = post_form(
        admin, "/settings/api-keys/new/", {"name": "旧連携", "scopes": ["customers:read"]}
    ).content.decode()
    secret = re.search(r'value="(kzn_[^"]+)"', html)
    assert secret is not None
    key = ApiKey.objects.get()
    response = admin.post(
        "/settings/api-keys/", {"action": "revoke_key", "id": str(key.pk)}, follow=True
    )
    assert "APIキー「旧連携」を失効させました。" in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditLog.objects.filter(action="api_key.revoke", entity_id=str(key.pk)).exists()
    assert_error(ApiClient(secret.group(1)).get("/api/v1/customers/1"), 401)


def test_add_a_webhook_sender_shows_its_secret_and_urls(
    client_for: Callable[[Role], Client],
) -> None:
    admin = client_for(Role.ADMIN)
    response = post_form(
        admin, "/settings/api-keys/webhooks/new/", {"name": "EC-CUBE本店", "slug": "eccube"}
    )
    html = response.content.decode()
    source = WebhookSource.objects.get()
    assert source.secret in html
    assert "/api/v1/webhooks/eccube/orders" in html
    assert "/api/v1/webhooks/eccube/email-events" in html  # for the mail service's bounces
    listing = admin.get("/settings/api-keys/").content.decode()
    assert "EC-CUBE本店" in listing
    assert source.secret not in listing


def test_a_taken_webhook_name_is_refused(client_for: Callable[[Role], Client]) -> None:
    admin = client_for(Role.ADMIN)
    post_form(admin, "/settings/api-keys/webhooks/new/", {"name": "本店", "slug": "eccube"})
    response = post_form(
        admin, "/settings/api-keys/webhooks/new/", {"name": "2号店", "slug": "eccube"}
    )
    assert "この識別名はすでに使われています" in response.content.decode()
    assert WebhookSource.objects.count() == 1
    # A revoked sender's identifier stays its own: the refusal says so and suggests another.
    source = WebhookSource.objects.get()
    admin.post("/settings/api-keys/", {"action": "revoke_source", "id": str(source.pk)})
    again = post_form(
        admin, "/settings/api-keys/webhooks/new/", {"name": "新本店", "slug": "eccube"}
    )
    assert "失効した送信元「本店」が使っていたため使えません" in again.content.decode()
    assert "「eccube-2」など別の識別名" in again.content.decode()
    assert WebhookSource.objects.count() == 1


def test_revoke_a_webhook_sender(client_for: Callable[[Role], Client]) -> None:
    admin = client_for(Role.ADMIN)
    post_form(admin, "/settings/api-keys/webhooks/new/", {"name": "本店", "slug": "eccube"})
    source = WebhookSource.objects.get()
    admin.post("/settings/api-keys/", {"action": "revoke_source", "id": str(source.pk)})
    source.refresh_from_db()
    assert source.revoked_at is not None


def test_revoke_needs_post_and_a_known_id(client_for: Callable[[Role], Client]) -> None:
    admin = client_for(Role.ADMIN)
    assert (
        admin.post("/settings/api-keys/", {"action": "revoke_key", "id": "999"}).status_code == 404
    )
    response = admin.post("/settings/api-keys/", {"action": "revoke_key"}, follow=True)
    assert "対象が指定されていません。" in response.content.decode()


def test_the_new_senders_page_says_exactly_how_to_sign(
    client_for: Callable[[Role], Client],
) -> None:
    admin = client_for(Role.ADMIN)
    response = post_form(
        admin, "/settings/api-keys/webhooks/new/", {"name": "EC-CUBE本店", "slug": "eccube"}
    )
    html = response.content.decode()
    assert "X-Kizuna-Signature: sha256=&lt;16進&gt;" in html
    assert "小文字の16進" in html
    assert "X-Kizuna-Timestamp: &lt;" in html
    assert "5分を超えて" in html
    assert "秘密鍵の文字列全体" in html
    assert "<code>whsec_</code> も含めて" in html
    assert 'href="/api/v1/docs"' in html
