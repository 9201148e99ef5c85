"""Call lists: no transport call. The message joins the open call list the contact center
downloads (phone, name, reason, script) and closes when the calls are assigned.
"""

from __future__ import annotations

from kizuna.campaigns.channels import Envelope, Receipt


class CallListTransport:
    def open(self) -> None:
        return None

    def send(self, envelope: Envelope) -> Receipt:
        return Receipt(to_list=True)

    def close(self) -> None:
        return None


def build() -> CallListTransport:
    return CallListTransport()
