"""SMS through a generic HTTP provider (KIZUNA_SMS_API_URL, bearer KIZUNA_SMS_API_TOKEN).

The request body is `{"to": "+81…", "text": "…", "from": KIZUNA_SMS_SENDER,
"client_ref": "kizuna-<outbox id>"}`; `client_ref` lets a provider that deduplicates on it
drop a resend after a crash. Most Japanese SMS gateways accept this shape or need a few lines
of mapping here.
"""

from __future__ import annotations

from django.conf import settings

from kizuna.campaigns.channels import Envelope, Receipt, TransportError
from kizuna.campaigns.channels.http import post_json, text_with_sender_block

MAX_TEXT = 660  # 70 characters × the 10 segments Japanese carriers concatenate


def configured() -> bool:
    return bool(settings.KIZUNA_SMS_API_URL)


class SmsTransport:
    def open(self) -> None:
        return None

    def send(self, envelope: Envelope) -> Receipt:
        if not configured():
            raise TransportError("SMS送信APIのURLが未設定です", permanent=False)
        reference = f"kizuna-{envelope.message.pk}"
        headers = {}
        if settings.KIZUNA_SMS_API_TOKEN:
            headers["Authorization"] = f"Bearer {settings.KIZUNA_SMS_API_TOKEN}"
        body = {
            "to": envelope.address,
            "text": text_with_sender_block(envelope, MAX_TEXT),
            "from": settings.KIZUNA_SMS_SENDER,
            "client_ref": reference,
        }
        post_json(settings.KIZUNA_SMS_API_URL, body, headers)
        return Receipt(provider_id=reference)

    def close(self) -> None:
        return None


def build() -> SmsTransport:
    return SmsTransport()
