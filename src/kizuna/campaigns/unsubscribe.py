"""One-click unsubscribe (RFC 8058, RELIABILITY S5): signed tokens and the withdrawal itself.

A token names a customer and a channel and is signed with the site's SECRET_KEY, so it cannot
be forged or pointed at someone else. It never expires: the law asks that an opt-out link in a
message keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.utils.html import escape

from kizuna.core.audit import Actor
from kizuna.customers.models import Consent, ConsentChannel, ConsentMethod, Customer
from kizuna.customers.services import consent_withdraw

_SALT = "kizuna.campaigns.unsubscribe"
# The channels a message can carry an opt-out link for.
UNSUBSCRIBABLE = {
    "email": ConsentChannel.EMAIL,
    "line": ConsentChannel.LINE,
    "sms": ConsentChannel.SMS,
}
_MAX_MERGE_HOPS = 10
# What `{{ unsubscribe_url }}` renders as when a scenario step is queued: the link is signed
# per recipient and channel, which only the delivery worker knows (`fill_unsubscribe_url`).
UNSUBSCRIBE_PLACEHOLDER = "{{unsubscribe_url}}"


class InvalidTokenError(Exception):
    """The link was altered, truncated, or does not name a channel one can opt out of."""


@dataclass(frozen=True)
class TokenClaim:
    customer_id: int
    channel: ConsentChannel


@dataclass(frozen=True)
class UnsubscribeResult:
    customer: Customer
    channel: ConsentChannel
    already: bool  # the customer had already opted out; nothing was written


def make_token(*, customer_id: int, channel: str) -> str:
    return signing.dumps({"c": customer_id, "ch": UNSUBSCRIBABLE[channel].value}, salt=_SALT)


def read_token(token: str) -> TokenClaim:
    try:
        data = signing.loads(token, salt=_SALT)
        return TokenClaim(customer_id=int(data["c"]), channel=ConsentChannel(data["ch"]))
    except (signing.BadSignature, KeyError, TypeError, ValueError) as exc:
        raise InvalidTokenError(str(exc)) from None


def unsubscribe_url(token: str) -> str:
    return f"{settings.KIZUNA_PUBLIC_URL}/u/{token}"


def fill_unsubscribe_url(content: dict[str, str], url: str) -> dict[str, str]:
    """`content` with the placeholder replaced by the recipient's one-click link (HTML-escaped
    in the HTML part). A message without a link — transactional, paper — gets an empty string,
    never the placeholder itself."""
    if not any(UNSUBSCRIBE_PLACEHOLDER in value for value in content.values()):
        return content
    return {
        key: value.replace(UNSUBSCRIBE_PLACEHOLDER, escape(url) if key == "html" else url)
        for key, value in content.items()
    }


def unsubscribe_mailto(token: str) -> str:
    address = settings.KIZUNA_UNSUBSCRIBE_MAILTO or _default_mailto()
    return f"mailto:{address}?subject={quote(token)}"


def _default_mailto() -> str:
    domain = settings.DEFAULT_FROM_EMAIL.rsplit("@", 1)[-1].strip(" >")
    return f"unsubscribe@{domain}"


def _current_record(customer: Customer) -> Customer:
    """The record a merged-away customer now lives in: its consents moved there too."""
    for _ in range(_MAX_MERGE_HOPS):
        if customer.merged_into_id is None:
            return customer
        customer = Customer.objects.get(pk=customer.merged_into_id)
    return customer


def _opted_out(consent: Consent | None) -> bool:
    return consent is not None and not consent.granted and consent.opted_out_at is not None


def already_stopped(claim: TokenClaim) -> bool:
    """Whether the customer the link was made for (or the record they were merged into) has
    already opted out of its channel: opening the link again must not ask them to stop what
    is stopped."""
    try:
        customer = _current_record(Customer.objects.get(pk=claim.customer_id))
    except Customer.DoesNotExist:
        return False
    return _opted_out(Consent.objects.filter(customer=customer, channel=claim.channel).first())


@transaction.atomic
def unsubscribe(*, token: str) -> UnsubscribeResult:
    """Withdraw the consent the token names. Idempotent: a second click writes nothing.

    The withdrawal goes through customers.services.consent_withdraw, so it is audited, kept as
    evidence and shown on the customer's timeline.
    """
    claim = read_token(token)
    try:
        customer = _current_record(Customer.objects.get(pk=claim.customer_id))
    except Customer.DoesNotExist:
        raise InvalidTokenError("customer not found") from None
    consent = (
        Consent.objects.select_for_update().filter(customer=customer, channel=claim.channel).first()
    )
    if _opted_out(consent):
        return UnsubscribeResult(customer=customer, channel=claim.channel, already=True)
    consent_withdraw(
        customer=customer,
        channel=claim.channel,
        method=ConsentMethod.UNSUBSCRIBE,
        acting_user=Actor.system("unsubscribe-link"),
    )
    return UnsubscribeResult(customer=customer, channel=claim.channel, already=False)
