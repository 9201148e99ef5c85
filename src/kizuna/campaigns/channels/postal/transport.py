"""Postal DM: no transport call. The message joins the open 郵送DM list, which staff download
(CSV or Excel, with the address fields a printer needs) and close when it goes to print.
"""

from __future__ import annotations

from kizuna.campaigns.channels import Envelope, Receipt


class PostalListTransport:
    def open(self) -> None:
        return None

    def send(self, envelope: Envelope) -> Receipt:
        return Receipt(to_list=True)

    def close(self) -> None:
        return None


def build() -> PostalListTransport:
    return PostalListTransport()
