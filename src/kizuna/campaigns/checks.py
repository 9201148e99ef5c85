"""`kizuna check --deploy`: what a production instance must not send customers.

Every marketing message carries an opt-out link built from KIZUNA_PUBLIC_URL (S5, S8). Left at
its default, or at any local or plain-http address, the legally required link would send
customers to their own computer or over an unencrypted connection.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}  # noqa: S104 - names, not a bind


@register(Tags.security, deploy=True)
def public_url_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    url = settings.KIZUNA_PUBLIC_URL
    parts = urlsplit(url)
    if parts.scheme == "https" and (parts.hostname or "") not in LOCAL_HOSTS:
        return []
    return [
        Warning(
            f"KIZUNA_PUBLIC_URL が {url} です。販促メッセージの配信停止リンク(法律で必要)は"
            "このアドレスを指します。",
            hint="お客様が開ける公開の https アドレス(例: https://crm.example.jp)を、"
            "画面とワーカーの両方に設定してください。",
            id="kizuna.W001",
        )
    ]
