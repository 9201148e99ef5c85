"""E-mail over real SMTP through Django's SMTP backend (settings: KIZUNA_SMTP_*).

Each message carries a Message-ID derived from its outbox id, so if the worker is killed after
the server accepted a message but before the send was recorded, the one resend carries the
same Message-ID and the duplicate is recognisable (docs/automation.md, "Running workers").

Django's backend opens, secures and authenticates the connection. The message itself is
written by `mime_bytes`, a lean writer for the one shape Kizuna sends (multipart/alternative,
UTF-8 text and HTML): Python's general-purpose email generator spends about 3 ms per message
folding and re-encoding headers, as much as the SMTP exchange itself, and delivery throughput
is measured against a bare smtplib loop (bench/automation/delivery.py). Any other configured
backend (console, file…) gets the same message through Django's EmailMultiAlternatives.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import secrets
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend
from django.utils.crypto import salted_hmac
from django.utils.html import linebreaks

from kizuna.campaigns import sender as sender_block
from kizuna.campaigns.channels import Envelope, Receipt, TransportError
from kizuna.campaigns.unsubscribe import unsubscribe_mailto, unsubscribe_url

PERMANENT_FLOOR = 500


# Why the SMTP server could not be reached, as the admin who set KIZUNA_SMTP_* reads it on the
# 配信状況 page: what to check, in Japanese, rather than "[Errno 111] Connection refused".
# First match wins (an SSL error is an OSError too).
_CONNECTION_PROBLEMS: tuple[tuple[type[BaseException], str], ...] = (
    (
        smtplib.SMTPAuthenticationError,
        "ユーザー名かパスワードが違います(KIZUNA_SMTP_USER・KIZUNA_SMTP_PASSWORD)",
    ),
    (
        ConnectionRefusedError,
        "接続を拒否されました。ホスト名・ポート番号と、サーバーが動いているかを確かめてください",
    ),
    (socket.gaierror, "ホスト名が見つかりません(KIZUNA_SMTP_HOST)"),
    (
        TimeoutError,
        "サーバーが応答しません(時間切れ)。ホスト名・ポート番号とネットワークを確かめてください",
    ),
    (
        ssl.SSLError,
        "暗号化(TLS/SSL)の設定がサーバーと合いません(KIZUNA_SMTP_TLS・KIZUNA_SMTP_SSL)",
    ),
    (smtplib.SMTPServerDisconnected, "サーバーが接続を切りました。しばらくして再送されます"),
)


def connection_problem(exc: BaseException) -> str:
    """`exc` in the words of _CONNECTION_PROBLEMS; anything else in the library's own."""
    return next((why for kind, why in _CONNECTION_PROBLEMS if isinstance(exc, kind)), str(exc))


# RFC 5322: a line may not exceed 998 octets; a longer body line needs base64.
MAX_LINE = 998


def message_id_for(outbox_id: int) -> str:
    """Stable for one outbox row; the installation tag keeps two shops' ids apart."""
    tail = _installation_tail(settings.SECRET_KEY, settings.DEFAULT_FROM_EMAIL)
    return f"<kizuna.{outbox_id}.{tail}>"


@functools.lru_cache(maxsize=16)
def _installation_tail(secret: str, from_email: str) -> str:
    """`tag@domain` of every Message-ID: the same for all messages of one installation, so
    the HMAC and the address parsing are done once, not per message."""
    tag = salted_hmac("kizuna.campaigns.message-id", "installation", secret=secret).hexdigest()
    domain = parseaddr(from_email)[1].rpartition("@")[2] or "localhost"
    return f"{tag[:12]}@{domain}"


@dataclass(frozen=True)
class Composed:
    """One e-mail, decided: what every serialisation of it must contain."""

    subject: str
    text: str
    html: str
    to: str
    headers: dict[str, str]  # Message-ID and, for marketing, the List-Unsubscribe pair


def compose(envelope: Envelope) -> Composed:
    content = envelope.content
    text = content["text"]
    html = content.get("html") or linebreaks(text, autoescape=True)
    headers = {"Message-ID": message_id_for(envelope.message.pk)}
    if envelope.marketing:
        token = envelope.unsubscribe_token
        url = unsubscribe_url(token)
        if envelope.sender is not None:
            text += sender_block.text_block(envelope.sender, url)
            html = sender_block.append_html(html, sender_block.html_block(envelope.sender, url))
        # RFC 8058: one-click unsubscribe by an HTTPS POST, plus the mailto fallback (S5).
        headers["List-Unsubscribe"] = f"<{url}>, <{unsubscribe_mailto(token)}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # A line break in a header would start a new header (header injection).
    subject = " ".join(content["subject"].split())
    return Composed(subject=subject, text=text, html=html, to=envelope.address, headers=headers)


def build_message(envelope: Envelope) -> EmailMultiAlternatives:
    """The message as Django's EmailMultiAlternatives (for non-SMTP backends)."""
    composed = compose(envelope)
    message = EmailMultiAlternatives(
        subject=composed.subject,
        body=composed.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[composed.to],
        headers=composed.headers,
    )
    message.attach_alternative(composed.html, "text/html")
    return message


@functools.lru_cache(maxsize=256)
def _header_value(value: str) -> str:
    """A header value as RFC 2047 encoded-words when it is not ASCII (subjects repeat, so
    the encoding is cached)."""
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(linesep="\r\n")


@functools.lru_cache(maxsize=16)
def _from_header(from_email: str) -> tuple[str, str]:
    name, address = parseaddr(from_email)
    return formataddr((name, address), charset="utf-8"), address


def _part(content_type: str, body: str) -> bytes:
    raw = "\r\n".join(body.splitlines()).encode("utf-8") + b"\r\n"
    if max(map(len, raw.split(b"\r\n"))) <= MAX_LINE:
        encoding, payload = "8bit", raw
    else:
        encoding = "base64"
        payload = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    head = f'Content-Type: {content_type}; charset="utf-8"\r\nContent-Transfer-Encoding: {encoding}'
    return head.encode("ascii") + b"\r\n\r\n" + payload


def mime_bytes(composed: Composed, from_email: str) -> tuple[str, bytes]:
    """(envelope sender, message bytes) for an SMTP connection."""
    from_header, from_address = _from_header(from_email)
    boundary = f"=_kizuna_{secrets.token_hex(12)}"
    headers = {
        "From": from_header,
        "To": composed.to,
        "Subject": _header_value(composed.subject),
        "Date": formatdate(usegmt=True),
        **{
            name: value.replace(", <", ",\r\n <") if name == "List-Unsubscribe" else value
            for name, value in composed.headers.items()
        },
        "MIME-Version": "1.0",
        "Content-Type": f'multipart/alternative; boundary="{boundary}"',
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    marker = f"--{boundary}".encode("ascii")
    data = b"".join(
        [
            head.encode("ascii"),
            b"\r\n",
            marker + b"\r\n",
            _part("text/plain", composed.text),
            marker + b"\r\n",
            _part("text/html", composed.html),
            marker + b"--\r\n",
        ]
    )
    return from_address, data


class EmailTransport:
    def __init__(self, backend: BaseEmailBackend | None = None) -> None:
        self.backend = backend or get_connection(fail_silently=False)

    def open(self) -> None:
        # The connection opens with the first message, so a batch with no e-mail costs nothing.
        return None

    def _connection(self, backend: SmtpBackend) -> smtplib.SMTP:
        if backend.connection is None:
            try:
                backend.open()
            except (OSError, smtplib.SMTPException) as exc:
                self._reset()
                raise TransportError(
                    f"SMTPサーバーに接続できません: {connection_problem(exc)}", permanent=False
                ) from exc
        connection: smtplib.SMTP | None = backend.connection
        if connection is None:
            raise TransportError("SMTPサーバーに接続できません", permanent=False)
        return connection

    def send(self, envelope: Envelope) -> Receipt:
        composed = compose(envelope)
        message_id = composed.headers["Message-ID"]
        if not isinstance(self.backend, SmtpBackend):
            self.backend.send_messages([build_message(envelope)])
            return Receipt(provider_id=message_id)
        if not composed.to.isascii() or "\n" in composed.to or "\r" in composed.to:
            raise TransportError("この宛先には送れません(英数字以外の文字)", permanent=True)
        sender, data = mime_bytes(composed, settings.DEFAULT_FROM_EMAIL)
        connection = self._connection(self.backend)
        try:
            connection.sendmail(sender, [composed.to], data)
        except smtplib.SMTPRecipientsRefused as exc:
            self._reset()
            code = min((code for code, _ in exc.recipients.values()), default=0)
            permanent = code >= PERMANENT_FLOOR
            raise TransportError(
                f"宛先が拒否されました ({code})", permanent=permanent, suppress=permanent
            ) from exc
        except smtplib.SMTPResponseException as exc:
            self._reset()
            # 5xx for the message itself (content, policy) is final, but the address may be
            # fine: fail this message without suppressing the address. A refused sender is
            # our own configuration and worth retrying once it is fixed.
            permanent = exc.smtp_code >= PERMANENT_FLOOR and not isinstance(
                exc, smtplib.SMTPSenderRefused
            )
            raise TransportError(
                f"SMTPエラー {exc.smtp_code}: {exc.smtp_error!r}", permanent=permanent
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            self._reset()
            raise TransportError(
                f"SMTP送信に失敗しました: {connection_problem(exc)}", permanent=False
            ) from exc
        return Receipt(provider_id=message_id)

    def _reset(self) -> None:
        # Django's close() forgets the connection even when QUIT fails, so the next message
        # opens a fresh one whatever state the old one was in.
        with contextlib.suppress(OSError, smtplib.SMTPException):
            self.backend.close()

    def close(self) -> None:
        self._reset()


def build() -> EmailTransport:
    return EmailTransport()
