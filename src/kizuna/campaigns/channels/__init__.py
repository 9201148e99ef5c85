"""Channel plug-ins: one small interface, one module per channel, one registry.

A transport delivers one prepared message and returns a `Receipt`, or raises `TransportError`:
`permanent=True` means retrying cannot help (the address does not exist, the customer blocked
the shop), `suppress=True` additionally puts the address on the suppression list.
Transports keep a connection open between `open()` and `close()`, so a batch reuses it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kizuna.campaigns.models import OutboxMessage
    from kizuna.campaigns.sender import Sender
    from kizuna.customers.models import Customer


class TransportError(Exception):
    def __init__(
        self, message: str, *, permanent: bool, suppress: bool = False, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.suppress = suppress
        self.status = status  # the HTTP status, for HTTP channels


@dataclass(frozen=True)
class Envelope:
    """Everything a transport needs for one message, resolved by the delivery worker."""

    message: OutboxMessage
    customer: Customer
    channel: str
    address: str  # e-mail, LINE user ID or E.164 phone; "" for paper and on-site channels
    content: dict[str, str]
    marketing: bool
    # Marketing e-mail, LINE and SMS: the signed opt-out token and the sender block (S5, S8).
    unsubscribe_token: str = ""
    sender: Sender | None = None


@dataclass(frozen=True)
class Receipt:
    """What the transport did: the provider's id for the message, or that the message joins
    the channel's open print/call list (done by the worker in the transaction that records it,
    so a list closed by staff never gains a message afterwards)."""

    provider_id: str = ""
    to_list: bool = False


class Transport(Protocol):
    def open(self) -> None: ...

    def send(self, envelope: Envelope) -> Receipt: ...

    def close(self) -> None: ...


KINDS = ("email", "line", "sms", "postal", "insert", "onsite", "call")


def transport_for(kind: str) -> Transport:
    """A new transport for channel `kind` (campaigns/channels/<kind>/transport.py)."""
    if kind not in KINDS:
        raise KeyError(f"unknown channel {kind!r}")
    module = importlib.import_module(f"kizuna.campaigns.channels.{kind}.transport")
    transport: Transport = module.build()
    return transport


def configured(kind: str) -> bool:
    """Whether channel `kind` can send at all: LINE and SMS need the shop's provider settings,
    the others need nothing beyond the worker. "Best channel" passes over a channel that is not
    configured, rather than pick one whose every message would wait and then fail."""
    module = importlib.import_module(f"kizuna.campaigns.channels.{kind}.transport")
    check = getattr(module, "configured", None)
    return True if check is None else bool(check())
