"""同梱物 (inserts): no transport call. The message joins the open insert list, which the warehouse
downloads (with the order number the insert goes into) and staff close when it is packed.
"""

from __future__ import annotations

from kizuna.campaigns.channels import Envelope, Receipt


class InsertListTransport:
    def open(self) -> None:
        return None

    def send(self, envelope: Envelope) -> Receipt:
        return Receipt(to_list=True)

    def close(self) -> None:
        return None


def build() -> InsertListTransport:
    return InsertListTransport()
