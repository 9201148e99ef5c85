"""On-site messages (web接客): no transport call. A sent message is stored for the shop's site,
which fetches it for the logged-in member through GET /api/v1/onsite/messages."""

from __future__ import annotations

from kizuna.campaigns.channels import Envelope, Receipt


class OnsiteTransport:
    def open(self) -> None:
        return None

    def send(self, envelope: Envelope) -> Receipt:
        return Receipt()

    def close(self) -> None:
        return None


def build() -> OnsiteTransport:
    return OnsiteTransport()
