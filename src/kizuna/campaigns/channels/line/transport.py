"""LINE Messaging API push (POST {KIZUNA_LINE_API_BASE}/v2/bot/message/push).

The request carries `X-Line-Retry-Key`, a UUID fixed per outbox row: LINE accepts a key once
and answers a retry of an accepted request with 409, so a resend after a crash is not delivered
twice.
"""

from __future__ import annotations

import uuid

from django.conf import settings

from kizuna.campaigns.channels import Envelope, Receipt, TransportError
from kizuna.campaigns.channels.http import post_json, text_with_sender_block

PUSH_PATH = "/v2/bot/message/push"
MAX_TEXT = 5000
ALREADY_ACCEPTED = 409
_NAMESPACE = uuid.UUID("6f1f5a52-7c2e-4e4b-9a55-3d0c2a4f2b10")


def retry_key_for(outbox_id: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{settings.SECRET_KEY[:8]}:{outbox_id}"))


def configured() -> bool:
    return bool(settings.KIZUNA_LINE_CHANNEL_TOKEN)


class LineTransport:
    def open(self) -> None:
        return None

    def send(self, envelope: Envelope) -> Receipt:
        if not configured():
            raise TransportError("LINEのチャネルアクセストークンが未設定です", permanent=False)
        key = retry_key_for(envelope.message.pk)
        body = {
            "to": envelope.address,
            "messages": [{"type": "text", "text": text_with_sender_block(envelope, MAX_TEXT)}],
        }
        try:
            post_json(
                settings.KIZUNA_LINE_API_BASE + PUSH_PATH,
                body,
                {
                    "Authorization": f"Bearer {settings.KIZUNA_LINE_CHANNEL_TOKEN}",
                    "X-Line-Retry-Key": key,
                },
            )
        except TransportError as exc:
            if exc.status == ALREADY_ACCEPTED:
                return Receipt(provider_id=key)
            raise
        return Receipt(provider_id=key)

    def close(self) -> None:
        return None


def build() -> LineTransport:
    return LineTransport()
