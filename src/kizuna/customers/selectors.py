"""Read paths for the operator's customer view: search and the customer page.

Every query here is shaped for 1,000,000 customers: exact lookups go through unique indexes,
name and kana searches are prefix ranges on indexed keys, and histories are read one page at a
time through the (customer, time) indexes. Nothing here logs its input; search terms are PII.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Generic, TypeVar

from django.core.paginator import Page
from django.db.models import Max, Model, Prefetch, Q, QuerySet, prefetch_related_objects

from kizuna.commerce.models import Order, OrderLine
from kizuna.core import jp
from kizuna.core.paging import Paginator
from kizuna.customers.models import (
    REMOVABLE_IDENTITY_KINDS,
    SENT_TO_NEWEST_KINDS,
    Consent,
    ConsentChannel,
    Customer,
    Identity,
    IdentityKind,
    TimelineEvent,
    newest_first,
)
from kizuna.loyalty.models import PointEntry
from kizuna.subscriptions.models import (
    DeliveryStatus,
    Subscription,
    SubscriptionDelivery,
    SubscriptionStatus,
)
from kizuna.support.models import Contact

T = TypeVar("T")
M = TypeVar("M", bound=Model)

# Past the last code point, so `key < prefix + _TOP` bounds a prefix range. Name and kana keys
# compare by code point (SQLite BINARY, PostgreSQL collation "C"), which makes this exact.
_TOP = "\U0010ffff"

# Longer input is never a name, a phone number or an ID; cutting it keeps a pasted paragraph
# from turning into a pointless range scan.
MAX_QUERY_LENGTH = 100

ORDERS_PER_PAGE = 10
POINTS_PER_PAGE = 20
TIMELINE_PER_PAGE = 20
RECENT_CONTACTS = 10
RECENT_DELIVERIES = 6

_PHONE_KINDS = (IdentityKind.PHONE, IdentityKind.PBX_CALLER)
_ID_KINDS = (IdentityKind.CART_MEMBER, IdentityKind.LINE_USER, IdentityKind.CHAT)


def record_version(customer: Customer) -> str:
    """The version of a customer's record: it changes with every save (updated_at, to the
    microsecond). The API sends it as the ETag; the web edit form carries it, so a change
    made by someone else since the form was opened is not overwritten unseen."""
    assert customer.updated_at is not None  # noqa: S101 - a stored customer has one
    return f"{customer.pk}-{int(customer.updated_at.timestamp() * 1_000_000)}"


# --- search ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchTerms:
    """What one search box entry can mean. Every non-empty field is one indexed lookup."""

    phone: str = ""  # E.164
    email: str = ""
    identifier: str = ""  # order number, cart member ID or LINE user ID, in NFKC
    kana_prefix: str = ""
    name_prefix: str = ""
    # Two words may be typed given name first (「七海 高橋」): the same key with the words swapped.
    swapped_kana_prefix: str = ""
    swapped_name_prefix: str = ""
    # One word may be a given name alone (「七海」, 「ナナミ」): a prefix of the given name keys.
    given_kana_prefix: str = ""
    given_name_prefix: str = ""

    def __bool__(self) -> bool:
        return any((self.phone, self.email, self.identifier, self.kana_prefix, self.name_prefix))


# A 顧客ID is a 64-bit integer at most: longer digit strings (a pasted card or slip number)
# are not looked up as one.
_MAX_ID_DIGITS = 18
_LINK_SCHEME = re.compile(r"^(?:tel|mailto):\s*", re.IGNORECASE)


def parse_query(query: str) -> SearchTerms:
    """Read a search box entry as every kind of key it could be."""
    # A NUL byte (pasted, or typed into a URL) is never part of a key, and PostgreSQL refuses
    # it in a query: every caller (the search page, the template preview) would answer 500.
    text = jp.clean_text(query.replace("\x00", ""))[:MAX_QUERY_LENGTH]
    # A number or address copied from a link (a softphone's tel:…, a mail client's mailto:…).
    text = _LINK_SCHEME.sub("", text, count=1)
    if not text:
        return SearchTerms()
    if "@" in text:
        try:
            # The key without the address check, so an address stored before the check
            # existed is still found.
            return SearchTerms(email=jp.email_key(text))
        except jp.NormalisationError:
            return SearchTerms()
    phone = ""
    if any(ch.isdigit() for ch in text):
        try:
            phone = jp.normalize_phone(text)
        except jp.NormalisationError:
            phone = ""
    # Order numbers, cart member IDs, LINE user IDs and chat IDs are ASCII without spaces, so
    # "山田 花子" and "やまだ" cost no ID lookups.
    identifier = (
        jp.normalize_identifier(text)
        if " " not in text and any(ch.isascii() and ch.isalnum() for ch in text)
        else ""
    )
    words = text.split()
    if jp.is_kana(text):
        kana = jp.normalize_kana(text)
        return SearchTerms(
            phone=phone,
            identifier=identifier,
            kana_prefix=kana,
            swapped_kana_prefix=_swapped(words, jp.normalize_kana),
            given_kana_prefix=kana if len(words) == 1 else "",
        )
    if phone or not any(unicodedata.category(ch).startswith("L") for ch in text):
        return SearchTerms(phone=phone, identifier=identifier)
    name = jp.name_key(text)
    return SearchTerms(
        phone=phone,
        identifier=identifier,
        name_prefix=name,
        swapped_name_prefix=_swapped(words, jp.name_key),
        given_name_prefix=name if len(words) == 1 else "",
    )


def _swapped(words: list[str], key: Callable[[str], str]) -> str:
    """The key of two words read the other way round (「七海 高橋」 as 高橋七海), or "" when
    there are not exactly two words or the swap reads the same."""
    if len(words) != 2:
        return ""
    swapped = key(words[1] + words[0])
    return "" if swapped == key(words[0] + words[1]) else swapped


def _prefix(column: str, prefix: str) -> Q:
    # A range, not LIKE/icontains: both backends walk the B-tree index from `prefix` and stop
    # at the first key past it.
    return Q(**{f"{column}__gte": prefix, f"{column}__lt": prefix + _TOP})


def _identifier_variants(identifier: str) -> list[str]:
    """An order number or member ID as typed, and as carts usually store it: in capitals
    (typed kz00185926 for KZ00185926) and without hyphens (KZ-00185926 read off a slip where
    the cart prints one). Each is an exact, indexed lookup; the stored value never changes."""
    if not identifier:
        return []
    upper = identifier.upper()
    return list(dict.fromkeys((identifier, upper, upper.replace("-", ""))))


def _order_number_variants(ids: list[str]) -> list[str]:
    """The typed IDs, and each as Shopify names its orders: Shopify exports order 1001 as
    "#1001" (kept as exported, so a re-import matches), while the shop reads and types 1001.
    A number typed with its "#" is looked up as typed only: another cart's 1001 is another
    order."""
    return list(dict.fromkeys([*ids, *(f"#{i}" for i in ids if not i.startswith("#"))]))


def _exact_hits(terms: SearchTerms) -> list[int]:
    """Customer ids matched exactly by 顧客ID, an identity or an order number, strongest match
    first."""
    clauses: list[Q] = []
    if terms.phone:
        clauses.append(Q(kind__in=_PHONE_KINDS, value=terms.phone))
    if terms.email:
        clauses.append(Q(kind=IdentityKind.EMAIL, value=terms.email))
    ids = _identifier_variants(terms.identifier)
    if ids:
        clauses.append(Q(kind__in=_ID_KINDS, value__in=ids))
    rank: dict[str, int] = {
        kind: i for i, kind in enumerate((*_PHONE_KINDS, IdentityKind.EMAIL, *_ID_KINDS))
    }
    found: list[tuple[int, int]] = []
    if clauses:
        identities = Identity.objects.filter(reduce(operator.or_, clauses))
        found += [
            (rank[kind], customer_id)
            for kind, customer_id in identities.values_list("kind", "customer_id")
        ]
    if ids:
        orders = Order.objects.filter(number__in=_order_number_variants(ids))
        found += [
            (len(rank), customer_id) for customer_id in orders.values_list("customer_id", flat=True)
        ]
    # Kizuna's own 顧客ID, as every page labels a record (「顧客ID 1776」): first, being exact.
    if terms.identifier.isdigit() and len(terms.identifier) <= _MAX_ID_DIGITS:
        own = Customer.objects.filter(pk=int(terms.identifier)).values_list("pk", flat=True)
        found += [(-1, customer_id) for customer_id in own]
    return list(dict.fromkeys(customer_id for _, customer_id in sorted(found)))


def customer_search(query: str, *, limit: int) -> list[Customer]:
    """Customers matching a search box entry, at most `limit`, in this order:

    1. exact hits: 顧客ID, phone, e-mail, member/LINE/chat ID, order number;
    2. name or kana prefix matches, family name first (「高橋 七海」, 「高橋」);
    3. two words the other way round, given name first (「七海 高橋」);
    4. for one word, given name or reading prefix matches (「七海」, 「ナナミ」).

    Each group fills only the room the groups before it left, and is one range scan of an
    index stopped after that many rows. A kana group is in kana order. When a kanji prefix
    matches more than the room, which customers are returned follows the name key (or the
    given name key), not the kana; they are then shown in kana order. The page asks the
    operator to narrow the search when more than `limit` match.
    """
    terms = parse_query(query)
    if not terms or limit <= 0:
        return []
    exact_ids = _exact_hits(terms)[:limit]
    by_id = Customer.objects.in_bulk(exact_ids) if exact_ids else {}
    results = [by_id[pk] for pk in exact_ids if pk in by_id]
    if terms.kana_prefix:
        groups = [
            ("kana_key", terms.kana_prefix),
            ("kana_key", terms.swapped_kana_prefix),
            ("given_kana_key", terms.given_kana_prefix),
        ]
    else:
        groups = [
            ("name_key", terms.name_prefix),
            ("name_key", terms.swapped_name_prefix),
            ("given_name_key", terms.given_name_prefix),
        ]
    for column, prefix in groups:
        room = limit - len(results)
        if room <= 0:
            break
        if prefix:
            results += _prefix_matches(column, prefix, room, exclude=[c.pk for c in results])
    return results


def _prefix_matches(column: str, prefix: str, room: int, *, exclude: list[int]) -> list[Customer]:
    """The first `room` customers whose `column` starts with `prefix`, in kana order.

    The index on `column` is walked in its own order so the scan stops after `room` rows;
    ordering by kana here would sort every match first (「山」 alone matches tens of
    thousands). A record merged into another is found through the survivor, not on its own.
    """
    matches = Customer.objects.filter(_prefix(column, prefix), merged_into__isnull=True)
    if exclude:
        matches = matches.exclude(pk__in=exclude)
    page = list(matches.order_by(column, "id")[:room])
    return page if column == "kana_key" else sorted(page, key=lambda c: (c.kana_key, c.pk))


@dataclass(frozen=True)
class CustomerRow:
    """One line of the search results list."""

    customer: Customer
    phone: str
    email: str
    last_ordered_at: dt.datetime | None


def customer_rows(customers: Sequence[Customer]) -> list[CustomerRow]:
    """The search list's columns for `customers`, in two queries whatever their number."""
    if not customers:
        return []
    prefetch_related_objects(list(customers), "identities")
    last_orders: dict[int, dt.datetime] = {
        row["customer_id"]: row["last"]
        for row in Order.objects.filter(customer_id__in=[c.pk for c in customers])
        .values("customer_id")
        .annotate(last=Max("ordered_at"))
        .order_by()
    }
    rows = []
    for customer in customers:
        identities = sorted(customer.identities.all(), key=lambda i: i.pk)
        # The e-mail column shows the address mail goes to (IDENTITY_NEWEST_FIRST); a phone
        # has no one such number (SMS takes the newest mobile, a call any), so the first given.
        rows.append(
            CustomerRow(
                customer=customer,
                phone=jp.format_phone(_first_value(identities, IdentityKind.PHONE)),
                email=jp.nfkc(
                    _first_value(newest_first(identities), IdentityKind.EMAIL, as_typed=True)
                ),
                last_ordered_at=last_orders.get(customer.pk),
            )
        )
    return rows


def _first_value(
    identities: Iterable[Identity], kind: IdentityKind, *, as_typed: bool = False
) -> str:
    """The first identity of `kind` in `identities`: its key, or the address as typed (keeping
    its capitals).

    A list is read down a column, so it shows every number and address the same way (phones
    as 090-1234-5678, addresses in half-width), whatever the cart or the customer typed; the
    customer page shows each as it was entered."""
    for identity in identities:
        if identity.kind == kind:
            return (identity.display_value if as_typed else "") or identity.value
    return ""


# --- the customer page ----------------------------------------------------------------------


def customer_profile(pk: int) -> Customer | None:
    """The customer with tags, identities and consents loaded, or None when there is none."""
    return (
        Customer.objects.prefetch_related(
            "tags",
            Prefetch("identities", queryset=Identity.objects.order_by("kind", "id")),
            "consents",
        )
        .filter(pk=pk)
        .first()
    )


@dataclass(frozen=True)
class IdentityGroup:
    kind: IdentityKind
    identities: list[Identity]  # newest first

    @property
    def removable(self) -> bool:
        """Staff may take it off the record (services.identity_remove)."""
        return self.kind in REMOVABLE_IDENTITY_KINDS

    @property
    def sent_to(self) -> Identity | None:
        """The one messages go to, when the customer has several of this kind: an operator
        who added a new address sees that it took over."""
        if self.kind in SENT_TO_NEWEST_KINDS and len(self.identities) > 1:
            return self.identities[0]
        return None


def identity_groups(customer: Customer) -> list[IdentityGroup]:
    """The customer's identities grouped by kind, kinds in their declared order, each group
    newest first: last observed first (Identity.observed_at), as messages pick them."""
    identities = newest_first(customer.identities.all())
    return [
        IdentityGroup(kind=kind, identities=group)
        for kind in IdentityKind
        if (group := [i for i in identities if i.kind == kind])
    ]


@dataclass(frozen=True)
class ConsentRow:
    channel: ConsentChannel
    consent: Consent | None

    @property
    def state(self) -> str:
        """同意 / 配信停止 / 未同意: what an operator must respect before contacting."""
        if self.consent is None:
            return "none"
        if self.consent.granted:
            return "granted"
        if self.consent.opted_out_at is not None:
            return "opted_out"
        return "none"


def consent_rows(customer: Customer) -> list[ConsentRow]:
    """One row per channel, including channels the customer never answered for."""
    by_channel = {c.channel: c for c in customer.consents.all()}
    return [ConsentRow(channel=ch, consent=by_channel.get(ch)) for ch in ConsentChannel]


def orders_page(customer: Customer, page: str | int | None) -> Page[Order]:
    """One page of the customer's orders, newest first, with lines, shipments and reversals."""
    orders = (
        Order.objects.filter(customer=customer)
        .select_related("subscription_delivery")
        .prefetch_related(
            Prefetch("lines", queryset=OrderLine.objects.select_related("product").order_by("id")),
            "shipments",
            "reversals",
        )
        .order_by("-ordered_at", "-id")
    )
    return Paginator(orders, ORDERS_PER_PAGE).get_page(page)


def points_page(customer: Customer, page: str | int | None) -> Page[PointEntry]:
    entries = PointEntry.objects.filter(customer=customer).order_by("-seq")
    return Paginator(entries, POINTS_PER_PAGE).get_page(page)


@dataclass
class Window(Generic[T]):
    """A page without a total: one row past the page tells whether there is a next one.

    The timeline is the longest history a customer has, and a page never needs its size, so
    this skips Paginator's COUNT.
    """

    items: list[T]
    number: int
    has_next: bool
    per_page: int = TIMELINE_PER_PAGE

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_other_pages(self) -> bool:
        return self.has_next or self.has_previous

    @property
    def next_page_number(self) -> int:
        return self.number + 1

    @property
    def previous_page_number(self) -> int:
        return self.number - 1

    @property
    def start_index(self) -> int:
        return (self.number - 1) * self.per_page + 1 if self.items else 0


# Far past any customer's history (20 million events), far below a 64-bit row offset.
MAX_PAGE = 1_000_000


def page_number(value: str | int | None) -> int:
    """A page number from a query string; anything unreadable is page 1. A window pages
    without a count, so nothing else caps the number: an offset past a 64-bit integer is a
    database error (a 500), where any page past the end shows an empty page."""
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return 1
    return min(max(number, 1), MAX_PAGE)


def window(queryset: QuerySet[M], page: str | int | None, per_page: int) -> Window[M]:
    number = page_number(page)
    offset = (number - 1) * per_page
    rows = list(queryset[offset : offset + per_page + 1])
    if not rows and number > 1:
        # Past the end (an old link, a typed ?page=): the last page, as Paginator.get_page
        # does. Only then is the history counted.
        number = max(1, -(-queryset.count() // per_page))
        offset = (number - 1) * per_page
        rows = list(queryset[offset : offset + per_page + 1])
    return Window(
        items=rows[:per_page], number=number, has_next=len(rows) > per_page, per_page=per_page
    )


def timeline_page(customer: Customer, page: str | int | None) -> Window[TimelineEvent]:
    events = TimelineEvent.objects.filter(customer=customer).order_by("-occurred_at", "-id")
    return window(events, page, TIMELINE_PER_PAGE)


def next_delivery_sequence(delivery_count: int, latest: SubscriptionDelivery | None) -> int:
    """The number (n回目) the subscription's next delivery carries, given its latest delivery.

    A skipped delivery keeps its number but is no box delivered, so お届け回数 (`delivery_count`)
    falls behind the numbers once a delivery is skipped. The next number is therefore read from
    the deliveries, as the deliveries table, the orders and the timeline show them; only a
    subscription with no delivery yet counts from `delivery_count`.
    """
    if latest is None:
        return delivery_count + 1
    if latest.status == DeliveryStatus.SCHEDULED:
        return latest.sequence
    return latest.sequence + 1


def coming_delivery(deliveries: Iterable[SubscriptionDelivery]) -> SubscriptionDelivery | None:
    """The first of these deliveries already ordered and not delivered yet (受注済・未出荷, or
    出荷済 on its way), or None.

    That box comes first whatever the subscription's `next_delivery_on` says (the date the next
    order will be made for): asked 「次はいつ届く?」, the answer is its day. It comes even after
    a cancellation, unless its order is cancelled in the cart."""
    coming = [
        d
        for d in deliveries
        if d.order_id is not None and d.status in (DeliveryStatus.SCHEDULED, DeliveryStatus.SHIPPED)
    ]
    return min(coming, key=lambda d: d.sequence) if coming else None


def subscriptions_for(customer: Customer) -> list[Subscription]:
    """The customer's subscriptions, running ones first, each with its latest deliveries in
    `recent_deliveries` (newest first, at most RECENT_DELIVERIES), and its next delivery: the
    number in `next_delivery_sequence`, the day in `next_delivery_day` and, when that box is
    already ordered, the delivery in `coming_delivery` (see coming_delivery: an ordered box
    comes before the date of the next order, and even after a cancellation)."""
    status_rank = {
        SubscriptionStatus.ACTIVE: 0,
        SubscriptionStatus.PAUSED: 1,
        SubscriptionStatus.CANCELLED: 2,
    }
    subscriptions: list[Subscription] = list(
        Subscription.objects.filter(customer=customer)
        .select_related("product")
        .prefetch_related(
            Prefetch(
                "deliveries",
                queryset=SubscriptionDelivery.objects.select_related("order").order_by("-sequence")[
                    :RECENT_DELIVERIES
                ],
                # A sliced prefetch must land in its own attribute (Django refuses the manager).
                to_attr="recent_deliveries",
            )
        )
        .order_by("-started_on", "-id")
    )
    for sub in subscriptions:
        # These attributes are set at run time (the Prefetch's `to_attr`, then here), so the
        # model's type knows none of them.
        recent: list[SubscriptionDelivery] = sub.recent_deliveries  # type: ignore[attr-defined]
        coming = coming_delivery(recent)
        day: dt.date | None
        sub.coming_delivery = coming  # type: ignore[attr-defined]
        if coming is not None:
            sequence, day = coming.sequence, coming.scheduled_on
        else:
            sequence = next_delivery_sequence(sub.delivery_count, recent[0] if recent else None)
            day = sub.next_delivery_on
        sub.next_delivery_sequence = sequence  # type: ignore[attr-defined]
        sub.next_delivery_day = day  # type: ignore[attr-defined]
    subscriptions.sort(key=lambda s: status_rank.get(SubscriptionStatus(s.status), 3))
    return subscriptions


def recent_contacts(customer: Customer) -> list[Contact]:
    return list(
        Contact.objects.filter(customer=customer)
        .select_related("operator", "order")
        .order_by("-occurred_at", "-id")[:RECENT_CONTACTS]
    )
