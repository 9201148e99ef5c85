"""Two quick clicks on a guarded form's button are two concurrent requests. Each reads the
session before the other has written it back, so the session alone cannot tell the second
click from the first: the send must be claimed in the database (kizuna.web.formtokens).

The race is reproduced without threads: the second request is given the session as it was
before the first one finished, which is exactly what a concurrent request reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from kizuna.accounts.models import ApiKey, Role
from kizuna.commerce.models import ImportRun
from kizuna.core.models import WebhookSource
from tests.pages import form_token
from tests.test_apikeys_resubmit import ALREADY_SENT, KEY_URL, SOURCE_URL
from tests.test_import_web import _imports_in_tmp, post_import, upload
from tests.test_import_web import form_token as import_form_token

pytestmark = pytest.mark.django_db
__all__ = ["_imports_in_tmp"]  # the import page's fixture: uploads land in a temporary folder


def second_click(client: Client, send: Callable[[], Any]) -> Any:
    """Send twice, the second time with the session as it was before the first send."""
    before = dict(client.session.items())
    send()
    session = client.session
    session.clear()
    session.update(before)
    session.save()
    return send()


def test_a_double_click_on_create_key_makes_one_key(
    client_for: Callable[[Role], Client],
) -> None:
    admin = client_for(Role.ADMIN)
    data = {
        "name": "カート連携",
        "scopes": ["customers:read"],
        "form_token": form_token(admin, KEY_URL),
    }
    again = second_click(admin, lambda: admin.post(KEY_URL, data, follow=True))
    assert ALREADY_SENT in again.content.decode()
    assert ApiKey.objects.count() == 1


def test_a_double_click_on_create_sender_makes_one_sender(
    client_for: Callable[[Role], Client],
) -> None:
    admin = client_for(Role.ADMIN)
    data = {"name": "EC-CUBE本店", "slug": "eccube", "form_token": form_token(admin, SOURCE_URL)}
    again = second_click(admin, lambda: admin.post(SOURCE_URL, data, follow=True))
    assert ALREADY_SENT in again.content.decode()
    assert WebhookSource.objects.count() == 1


def test_a_double_click_on_import_starts_one_import(
    client_for: Callable[[Role], Client],
) -> None:
    marketer = client_for(Role.MARKETER)
    token = import_form_token(marketer)
    again = second_click(
        marketer,
        lambda: post_import(marketer, upload("eccube_orders_cp932.csv"), form_token=token),
    )
    run = ImportRun.objects.get()
    assert again.status_code == 302
    assert again["Location"] == f"/imports/{run.pk}/"
