"""What the HTTP text channels (LINE, SMS) share: a small JSON-over-HTTPS client and the
message text with the sender block the law asks for."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from kizuna.campaigns import sender as sender_block
from kizuna.campaigns.channels import Envelope, TransportError
from kizuna.campaigns.unsubscribe import unsubscribe_url

TIMEOUT_SECONDS = 15
TOO_MANY_REQUESTS = 429
SERVER_ERROR_FLOOR = 500


def post_json(url: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    """POST `body` as JSON and return the status; raise TransportError when it failed.

    Throttling (429), server errors (5xx) and network failures are worth retrying; any other
    4xx means the request itself is wrong and will stay wrong.
    """
    if not url.startswith(("https://", "http://")):
        raise TransportError(f"送信先URLが設定されていません: {url!r}", permanent=False)
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url,
        data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
        headers={"Content-Type": "application/json; charset=utf-8", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        retry = exc.code == TOO_MANY_REQUESTS or exc.code >= SERVER_ERROR_FLOOR
        detail = exc.read(500).decode("utf-8", "replace")
        raise TransportError(
            f"HTTP {exc.code}: {detail}", permanent=not retry, status=exc.code
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise TransportError(f"接続できません: {exc}", permanent=False) from exc


def text_with_sender_block(envelope: Envelope, limit: int) -> str:
    """The message's text, marketing messages ending with the short sender block (S8).

    A text that does not fit in `limit` characters with the block is refused (a permanent
    failure, shown on the delivery page), never cut: a shortened message can lose its point, a
    date or a link, and a long sender block once made the cut remove the wrong end."""
    block = ""
    if envelope.marketing and envelope.sender is not None:
        block = sender_block.short_block(
            envelope.sender, unsubscribe_url(envelope.unsubscribe_token)
        )
    text = str(envelope.content["text"])
    if len(text) + len(block) > limit:
        raise TransportError(
            f"本文と送信者表示で{limit:,}文字を超えます(本文{len(text):,}文字・送信者表示"
            f"{len(block):,}文字)。テンプレートか配信ルールの送信者表示を短くしてください",
            permanent=True,
        )
    return text + block
