"""The sender block every marketing message carries (特定電子メール法 4条, RELIABILITY S8):
sender name, postal address, complaint contact, the opt-out link and the statement that the
customer may opt out."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from django.conf import settings
from django.utils.html import escape

from kizuna.campaigns.models import DeliverySettings

RULE = "―" * 20


@dataclass(frozen=True)
class Sender:
    name: str
    address: str
    contact: str

    @property
    def complete(self) -> bool:
        return bool(self.name and self.address and self.contact)


def current_sender(row: DeliverySettings) -> Sender:
    """The sender the shop configured on the delivery page, else from the environment."""
    return Sender(
        name=row.sender_name or settings.KIZUNA_SENDER_NAME,
        address=row.sender_address or settings.KIZUNA_SENDER_ADDRESS,
        contact=row.sender_contact or settings.KIZUNA_SENDER_CONTACT,
    )


def _lines(sender: Sender, unsubscribe_url: str) -> list[str]:
    return [
        f"送信者: {sender.name}",
        f"住所: {sender.address}",
        f"お問い合わせ・苦情窓口: {sender.contact}",
        "今後このようなご案内が不要な方は、次のリンクから配信を停止できます。",
        f"配信停止: {unsubscribe_url}",
    ]


def text_block(sender: Sender, unsubscribe_url: str) -> str:
    return "\n".join(["", "", RULE, *_lines(sender, unsubscribe_url), RULE, ""])


def short_block(sender: Sender, unsubscribe_url: str) -> str:
    """The same facts for LINE and SMS, without rules."""
    return "\n".join(["", "", *_lines(sender, unsubscribe_url)])


def html_block(sender: Sender, unsubscribe_url: str) -> str:
    url = escape(unsubscribe_url)
    return f'{_html_head(sender)}配信停止: <a href="{url}">{url}</a></p></div>'


@functools.lru_cache(maxsize=8)
def _html_head(sender: Sender) -> str:
    """The block up to the per-recipient link: the same in every message, escaped once."""
    return (
        '<hr><div class="kizuna-sender" style="font-size:12px;color:#555">'
        f"<p>送信者: {escape(sender.name)}<br>"
        f"住所: {escape(sender.address)}<br>"
        f"お問い合わせ・苦情窓口: {escape(sender.contact)}</p>"
        "<p>今後このようなご案内が不要な方は、次のリンクから配信を停止できます。<br>"
    )


def append_html(html: str, block: str) -> str:
    """Put the block before </body> when the template has one, else at the end."""
    marker = html.lower().rfind("</body>")
    if marker == -1:
        return html + block
    return html[:marker] + block + html[marker:]
