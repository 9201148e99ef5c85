"""秘密鍵を再発行: an admin replaces a webhook sender's signing secret; the old one keeps
working for 24 hours, so the cart can be switched over without losing deliveries."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest
from django.test import Client
from django.utils import timezone

from kizuna.accounts.models import Role
from kizuna.core import webhooks
from kizuna.core.models import AuditLog, WebhookSource
from tests.test_api_common import assert_error
from tests.test_webhooks import ADMIN, deliver, order_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def source() -> tuple[WebhookSource, str]:
    return webhooks.webhook_source_create(name="EC-CUBE本店", slug="eccube", acting_user=ADMIN)


def rotate_url(source: WebhookSource) -> str:
    return f"/settings/api-keys/webhooks/{source.pk}/rotate/"


def test_rotating_shows_the_new_secret_once_and_both_secrets_work_for_a_day(
    client_for: Callable[[Role], Client], source: tuple[WebhookSource, str]
) -> None:
    sender, old = source
    admin = client_for(Role.ADMIN)
    confirm = admin.get(rotate_url(sender)).content.decode()
    assert "24時間" in confirm
    assert old not in confirm
    # when
    response = admin.post(rotate_url(sender))
    # then: redirected to the page showing the new secret once, and until when the old works
    assert response.status_code == 302
    page = admin.get(response["Location"]).content.decode()
    new = re.search(r'value="(whsec_[^"]+)"', page)
    assert new is not None
    assert new.group(1) != old
    assert "前の秘密鍵も" in page
    assert "まで受け付けます" in page
    assert "このページは" not in page
    assert deliver(new.group(1), order_event("evt_new")).status_code == 200
    assert deliver(old, order_event("evt_old")).status_code == 200
    listing = admin.get("/settings/api-keys/").content.decode()
    assert "旧秘密鍵は" in listing
    assert new.group(1) not in listing
    audit = AuditLog.objects.get(action="webhook_source.rotate")
    assert audit.actor_label == "admin-user"
    assert old not in str(audit.changes)
    assert new.group(1) not in str(audit.changes)


def test_the_old_secret_is_refused_after_24_hours(source: tuple[WebhookSource, str]) -> None:
    sender, old = source
    sender, new = webhooks.webhook_source_rotate(source=sender, acting_user=ADMIN)
    WebhookSource.objects.filter(pk=sender.pk).update(
        previous_secret_until=timezone.now() - dt.timedelta(seconds=1)
    )
    assert_error(deliver(old, order_event("evt_old")), 401, "invalid_signature")
    assert deliver(new, order_event("evt_new")).status_code == 200


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.MARKETER, Role.ANALYST])
def test_only_admins_may_rotate(
    client_for: Callable[[Role], Client], source: tuple[WebhookSource, str], role: Role
) -> None:
    sender, old = source
    assert client_for(role).post(rotate_url(sender)).status_code == 403
    assert WebhookSource.objects.get().secret == old


def test_a_revoked_sender_cannot_be_rotated(
    client_for: Callable[[Role], Client], source: tuple[WebhookSource, str]
) -> None:
    sender, old = source
    webhooks.webhook_source_revoke(source=sender, acting_user=ADMIN)
    assert client_for(Role.ADMIN).post(rotate_url(sender)).status_code == 404
    assert WebhookSource.objects.get().secret == old
