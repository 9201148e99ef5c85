"""Identity resolution: which customer does incoming data (a CSV row, an API call, a webhook)
belong to?

Matching is on normalised identities only, strongest first: the cart's member ID, then e-mail,
then phone. A match is certain enough to attach the data. Weaker evidence — the same name kana
and postal code, an identity already held by another record — never merges anything by itself:
it is proposed as a DuplicateCandidate for staff to review (merge and undo live in merge.py).

`customers_resolve_many` resolves a whole chunk (an import batch, an API batch) in a constant
number of statements: it reads every identity the chunk mentions at once, decides in Python —
request by request, in order, so a new customer met twice in one chunk is created once — and
then inserts the new customers, identities, audit and timeline rows with one bulk insert each
(kizuna.core.bulk: executemany on SQLite, COPY on PostgreSQL). `customer_resolve` is its one-request case.

Two requests about the same new customer can run at once (a cart retrying, two imports). Both
find nothing and insert the same identity; the unique (kind, value) index lets one win. The
loser rolls its chunk back to a savepoint, reads the identities again — the winner's are
committed by then — and decides again, so it attaches to the winner's customer.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from kizuna.core import jp
from kizuna.core.audit import AUDIT_COLUMNS, Actor, audit_values, diff
from kizuna.core.bulk import insert_instances, insert_rows, read_datetime, reserve_ids
from kizuna.core.fetch import instances_where_in
from kizuna.core.models import AuditLog
from kizuna.core.races import retry_lost_race, unique_clash
from kizuna.customers.models import (
    Customer,
    DuplicateCandidate,
    Identity,
    IdentityKind,
    TimelineEvent,
    TimelineKind,
)
from kizuna.customers.services import (
    ERASED_NAME,
    customer_prepare,
    erased_among,
    normalize_identity,
)
from kizuna.customers.timeline import TIMELINE_COLUMNS, timeline_values

MATCH_ORDER = (IdentityKind.CART_MEMBER, IdentityKind.EMAIL, IdentityKind.PHONE)
PROFILE_MATCHES = 5  # existing records proposed per new customer on name kana + postal code


@dataclass(frozen=True)
class Resolution:
    customer: Customer
    created: bool
    # The data was older than what the matched customer holds (ResolveRequest.stale): nothing
    # was attached or proposed.
    stale: bool = False


@dataclass(frozen=True)
class ResolveRequest:
    """Who some incoming data is about: identities to match on, the profile for a new record.

    `stale`, when given, is asked about the existing customer the identities match, before
    anything is attached: True means the data is older than what that customer holds (a cart
    event delivered out of order), and then none of its identities is attached — the newest
    e-mail address is where messages go, and an old one must not take over again — and no
    duplicate is proposed. A customer created for the data is never asked: nothing is older.
    It may read and lock the customer's row; it is called while the chunk is being decided,
    so it is for one-request resolutions (a webhook), not for bulk ones.

    `observed_at`: when the source said the customer has these identities (an order's
    ordered_at, a cart event's time); None is now. A new identity carries it as its
    Identity.observed_at, and one the customer already holds moves forward to it when it is
    later — messages go to the identity of a kind observed last, so an old order's address
    attached today does not take over from the address the customer gave since.
    """

    identities: Mapping[IdentityKind, str]
    profile: Mapping[str, Any] = field(default_factory=dict)
    stale: Callable[[Customer], bool] | None = None
    observed_at: dt.datetime | None = None


def customer_resolve(
    *,
    identities: Mapping[IdentityKind, str],
    profile: Mapping[str, Any],
    acting_user: Any,
    source: str,
    stale: Callable[[Customer], bool] | None = None,
    observed_at: dt.datetime | None = None,
) -> Resolution:
    """The customer these identities belong to, created from `profile` when none matches.

    Identities the customer does not have yet are added when free; one that belongs to another
    record is left alone and the two records are proposed as duplicates. With `stale` (see
    ResolveRequest), data older than the matched customer attaches and proposes nothing.
    `observed_at`: when the source said it (ResolveRequest.observed_at).
    Raises ValidationError for an identity or profile that cannot be stored.
    """
    request = ResolveRequest(
        identities=identities, profile=profile, stale=stale, observed_at=observed_at
    )
    (result,) = customers_resolve_many([request], acting_user=acting_user, source=source)
    if isinstance(result, ValidationError):
        raise result
    return result


def customers_resolve_many(
    requests: Sequence[ResolveRequest], *, acting_user: Any, source: str
) -> list[Resolution | ValidationError]:
    """Resolve each request as `customer_resolve` would, one after another, in a constant
    number of statements. A request that cannot be stored gets its ValidationError in its
    place and writes nothing; the others are resolved."""
    actor = Actor.of(acting_user)
    # Several importers on the same new customers race on the unique (kind, value) identity.
    return retry_lost_race(
        lambda: _Chunk(requests, actor=actor, source=source).resolve(),
        lost=unique_clash("identity_unique_kind_value", "customers_identity"),
    )


@functools.lru_cache(maxsize=16384)  # repeat customers in an import; phonenumbers is slow
def _normalised(kind: IdentityKind, value: str) -> str:
    return normalize_identity(kind, value)


@dataclass
class _NewIdentity:
    customer: Customer
    kind: IdentityKind
    key: str
    display: str
    observed_at: dt.datetime


class _Chunk:
    """One attempt at resolving a chunk: read, decide in order, then write in bulk."""

    def __init__(self, requests: Sequence[ResolveRequest], *, actor: Actor, source: str) -> None:
        self.requests = requests
        self.actor = actor
        self.source = source
        self.owner: dict[tuple[str, str], Customer] = {}  # (kind, normalised value) → customer
        # (kind, normalised value) → when that stored identity was last observed, and the
        # later moments the chunk observed it at (written by `_write`).
        self.observed: dict[tuple[str, str], dt.datetime] = {}
        self.later: dict[tuple[str, str], dt.datetime] = {}
        self.created: dict[tuple[str, str], _NewIdentity] = {}
        self.now = timezone.now()
        self.held: dict[int, set[str]] = defaultdict(set)  # id(customer) → kinds it holds
        self.new_customers: list[tuple[Customer, dict[str, Any]]] = []
        self.new_identities: list[_NewIdentity] = []
        self.proposals: list[tuple[Customer, Customer, str]] = []

    def resolve(self) -> list[Resolution | ValidationError]:
        keyed = [self._keys(request) for request in self.requests]
        self._read([keys for keys in keyed if isinstance(keys, dict)])
        results: list[Resolution | ValidationError] = []
        for request, keys in zip(self.requests, keyed, strict=True):
            if isinstance(keys, ValidationError):
                results.append(keys)
                continue
            try:
                results.append(self._decide(request, keys))
            except ValidationError as exc:
                results.append(exc)
        self._write()
        return results

    # -- reading ---------------------------------------------------------------------------

    @staticmethod
    def _keys(request: ResolveRequest) -> dict[IdentityKind, tuple[str, str]] | ValidationError:
        """{kind: (normalised, as given)} for the identities present, in the request's order."""
        try:
            return {
                IdentityKind(kind): (_normalised(IdentityKind(kind), value), value)
                for kind, value in request.identities.items()
                if value and value.strip()
            }
        except ValidationError as exc:
            return exc

    def _read(self, keyed: list[dict[IdentityKind, tuple[str, str]]]) -> None:
        """Every identity the chunk mentions, with its customer, and what kinds those hold."""
        wanted: dict[str, set[str]] = defaultdict(set)
        for keys in keyed:
            for kind, (key, _value) in keys.items():
                wanted[kind.value].add(key)
        if not wanted:
            return
        # Every identity of every customer owning one of them, in one query: the owners, and
        # which kinds those customers hold (for `_stronger_conflict`). Read as plain values,
        # with one instance per customer (not one per identity).
        groups = sorted(wanted.items())
        params = [x for kind_value, values in groups for x in (kind_value, *values)]
        with connection.cursor() as cursor:
            cursor.execute(_held_sql(tuple(len(values) for _, values in groups)), params)
            held = cursor.fetchall()
        customers = {c.pk: c for c in instances_where_in(Customer, "id", {row[0] for row in held})}
        for customer_id, held_kind, value, observed_at in held:
            customer = customers[customer_id]
            self.owner[(held_kind, value)] = customer
            self.observed[(held_kind, value)] = read_datetime(observed_at, connection.timezone)
            self.held[id(customer)].add(held_kind)

    # -- deciding (in Python, in request order) ----------------------------------------------

    def _decide(
        self, request: ResolveRequest, keys: dict[IdentityKind, tuple[str, str]]
    ) -> Resolution:
        owners = {
            kind: self.owner[(kind.value, key)]
            for kind, (key, _value) in keys.items()
            if (kind.value, key) in self.owner
        }
        matched_kind = next((kind for kind in MATCH_ORDER if kind in owners), None)
        if matched_kind is None and owners:  # a weaker kind (LINE, chat…) still identifies
            matched_kind = next(iter(owners))
        customer = owners[matched_kind] if matched_kind is not None else None
        conflict = self._stronger_conflict(customer, matched_kind, keys, owners)
        if customer is not None and conflict is None and request.stale and request.stale(customer):
            # Older than what this customer holds: decided before anything is attached to it.
            return Resolution(customer=customer, created=False, stale=True)
        if customer is not None and matched_kind is not None and conflict is not None:
            # e.g. a family sharing one landline: same phone, but a different cart member ID
            # or e-mail than the record holds. Another person, most likely; staff confirm.
            probable = customer
            customer = self._new_customer(request.profile)
            self.proposals.append(
                (
                    customer,
                    probable,
                    f"同じ{IdentityKind(matched_kind).label}で{IdentityKind(conflict).label}が異なる",
                )
            )
        created = customer is None or conflict is not None
        if customer is None:
            customer = self._new_customer(request.profile)
        # A date ahead of the clock (a cart's clock running fast) would outrank every later
        # address: taken as now.
        observed_at = min(request.observed_at or self.now, self.now)
        for kind, (key, value) in keys.items():
            owner = owners.get(kind)
            if owner is None:
                new = _NewIdentity(customer, kind, key, jp.nfkc(value), observed_at)
                self.new_identities.append(new)
                self.created[(kind.value, key)] = new
                self.owner[(kind.value, key)] = customer
                self.held[id(customer)].add(kind.value)
            elif owner is not customer:
                self.proposals.append((customer, owner, f"同じ{kind.label}で別の顧客"))
            elif request.observed_at is not None:
                self._observed_again((kind.value, key), observed_at)
        return Resolution(customer=customer, created=created)

    def _observed_again(self, key: tuple[str, str], at: dt.datetime) -> None:
        """The customer's identity, said again by dated data (a newer order with the address
        the customer changed back to): it moves forward when that is later. Undated data (a
        member file) leaves a known identity's date alone, as before."""
        new = self.created.get(key)
        if new is not None:
            new.observed_at = max(new.observed_at, at)
        elif at > self.later.get(key, self.observed[key]):
            self.later[key] = at

    def _stronger_conflict(
        self,
        customer: Customer | None,
        matched_kind: IdentityKind | None,
        keys: Mapping[IdentityKind, tuple[str, str]],
        owners: Mapping[IdentityKind, Customer],
    ) -> IdentityKind | None:
        """A stronger identity in the input that is new, where the matched record already
        holds a different one of that kind."""
        if customer is None or matched_kind not in MATCH_ORDER:
            return None
        for kind in MATCH_ORDER[: MATCH_ORDER.index(matched_kind)]:
            if kind in keys and kind not in owners and kind.value in self.held[id(customer)]:
                return kind
        return None

    def _new_customer(self, profile: Mapping[str, Any]) -> Customer:
        customer, fields = customer_prepare(profile)  # raises before anything is decided
        self.new_customers.append((customer, fields))
        return customer

    # -- writing -----------------------------------------------------------------------------

    def _write(self) -> None:
        """Insert the chunk's new customers and identities with their audit and timeline rows
        as plain rows (kizuna.core.bulk): a customer and its identities are four to eight rows,
        and building them through the ORM cost several times what storing them does."""
        now = timezone.now()
        insert_instances([customer for customer, _ in self.new_customers])
        # In one order everywhere, so two chunks inserting the same identities wait on each
        # other instead of deadlocking.
        identities = sorted(self.new_identities, key=lambda new: (new.kind, new.key))
        identity_ids = reserve_ids(Identity, len(identities))
        insert_rows(
            Identity,
            ("id", "customer_id", "kind", "value", "display_value", "source", "observed_at"),
            [
                (
                    pk,
                    new.customer.pk,
                    new.kind.value,
                    new.key,
                    new.display,
                    self.source,
                    new.observed_at,
                )
                for pk, new in zip(identity_ids, identities, strict=True)
            ],
            now=now,
        )
        self._write_observed(now)
        audit: list[tuple[Any, ...]] = []
        timeline: list[tuple[Any, ...]] = []
        for customer, fields in self.new_customers:
            audit.append(
                audit_values(
                    actor=self.actor,
                    action="customer.create",
                    entity=Customer,
                    entity_id=customer.pk,
                    customer_id=customer.pk,
                    changes=diff({}, fields),
                    at=now,
                )
            )
            timeline.append(
                timeline_values(
                    customer_id=customer.pk,
                    kind=TimelineKind.PROFILE,
                    title="顧客登録",
                    occurred_at=customer.registered_at,
                    ref=customer,
                )
            )
        for pk, new in zip(identity_ids, identities, strict=True):
            audit.append(
                audit_values(
                    actor=self.actor,
                    action="identity.add",
                    entity=Identity,
                    entity_id=pk,
                    customer_id=new.customer.pk,
                    changes={"kind": [None, new.kind.value], "value": [None, new.key]},
                    at=now,
                )
            )
        insert_rows(AuditLog, AUDIT_COLUMNS, audit, now=now)
        insert_rows(TimelineEvent, TIMELINE_COLUMNS, timeline, now=now)
        self._propose(self.proposals + self._profile_proposals())

    def _write_observed(self, now: dt.datetime) -> None:
        """Move the identities dated data observed later forward: one UPDATE, executemany'd
        for all of them, never backwards (another chunk may have moved one further since)."""
        if not self.later:
            return
        quote = connection.ops.quote_name
        columns = {f.name: quote(f.column) for f in Identity._meta.concrete_fields}
        at, kind, value = columns["observed_at"], columns["kind"], columns["value"]
        sql = (
            f"UPDATE {quote(Identity._meta.db_table)} SET {at} = %s, {columns['updated_at']} = %s"  # noqa: S608 - names from the model
            f" WHERE {kind} = %s AND {value} = %s AND {at} < %s"
        )
        adapt = connection.ops.adapt_datetimefield_value
        stamp = adapt(now)
        rows = [
            (adapt(moment), stamp, held_kind, key, adapt(moment))
            for (held_kind, key), moment in sorted(self.later.items())
        ]
        with connection.cursor() as cursor:
            cursor.executemany(sql, rows)

    def _profile_proposals(self) -> list[tuple[Customer, Customer, str]]:
        """Same name kana and postal code as another record: probably the same person who
        bought again with a new e-mail address. Compared against the records stored before the
        chunk (one query) and the ones created earlier in it."""
        keyed = [
            customer
            for customer, _ in self.new_customers
            if customer.kana_key and customer.postal_code
        ]
        if not keyed:
            return []
        others: dict[tuple[str, str], list[Customer]] = defaultdict(list)
        new_ids = {customer.pk for customer in keyed}
        for pk, postal, kana in _same_postal_and_kana({(c.postal_code, c.kana_key) for c in keyed}):
            same = others[(kana, postal)]
            if pk not in new_ids and len(same) < PROFILE_MATCHES:
                same.append(Customer(pk=pk))
        proposals: list[tuple[Customer, Customer, str]] = []
        for customer in keyed:
            same = others[(customer.kana_key, customer.postal_code)]
            for other in same[:PROFILE_MATCHES]:
                proposals.append((customer, other, "氏名カナと郵便番号が一致"))
            same.append(customer)  # later new customers of the chunk see this one
        return proposals

    def _propose(self, proposals: list[tuple[Customer, Customer, str]]) -> None:
        """Queue each pair once (the first reason stands; a pair already queued, or decided,
        is left as it is — the unique pair index ignores it, even if proposed concurrently).
        A pair with an erased record is never queued: an anonymous record is not merged."""
        pairs: dict[tuple[int, int], str] = {}
        for a, b, reason in proposals:
            if a.pk != b.pk:
                pairs.setdefault((min(a.pk, b.pk), max(a.pk, b.pk)), reason)
        new = {customer.pk for customer, _ in self.new_customers}
        erased = _erased({pk for pair in pairs for pk in pair} - new)
        pairs = {pair: reason for pair, reason in pairs.items() if not erased.intersection(pair)}
        # Plain rows (kizuna.core.bulk): an import of a file full of namesakes proposes
        # tens of thousands of pairs, and bulk_create compiled a statement per hundred.
        insert_rows(
            DuplicateCandidate,
            ("customer_a_id", "customer_b_id", "reason"),
            [(a, b, reason) for (a, b), reason in pairs.items()],
            ignore_conflicts=True,
        )


def _erased(ids: set[int]) -> set[int]:
    """The erased records among `ids`, read now from the database: the chunk read its owners
    before, and an erasure may have run since. Every erased record carries ERASED_NAME."""
    named = [
        pk
        for chunk in _slices(sorted(ids))
        for pk in Customer.objects.filter(pk__in=chunk, family_name=ERASED_NAME).values_list(
            "pk", flat=True
        )
    ]
    return erased_among(named)


def _slices(ids: list[int], size: int = 500) -> list[list[int]]:
    # SQLite caps the number of parameters in one statement.
    return [ids[start : start + size] for start in range(0, len(ids), size)]


@functools.lru_cache(maxsize=64)
def _held_sql(shape: tuple[int, ...]) -> str:
    """All identities (customer_id, kind, value, observed_at) of the customers holding one of some
    identities, asked for as groups of one kind and its values; `shape` is the number of
    values in each group. The parameters are each group's kind followed by its values.

    Plain SQL, built once per shape: compiled by the ORM, this read cost a one-order API call
    more CPU than anything else in it (see kizuna.core.fetch)."""
    quote = connection.ops.quote_name
    table = quote(Identity._meta.db_table)
    columns = {f.name: quote(f.column) for f in Identity._meta.concrete_fields}
    customer, kind, value = columns["customer"], columns["kind"], columns["value"]
    observed_at = columns["observed_at"]
    owning = " OR ".join(
        f"({kind} = %s AND {value} IN ({', '.join(['%s'] * count)}))" for count in shape
    )
    return (
        f"SELECT {customer}, {kind}, {value}, {observed_at} FROM {table} WHERE {customer} IN"  # noqa: S608 - names from the model
        f" (SELECT {customer} FROM {table} WHERE {owning})"
    )


def _same_postal_and_kana(pairs: set[tuple[str, str]]) -> list[tuple[int, str, str]]:
    """(id, postal code, kana key) of the live records with one of these (postal code, kana
    key) pairs, in id order.

    A join with the pairs as a VALUES list, so each pair is one search of the
    customer_postal_kana index on SQLite and PostgreSQL alike. The ORM can only say this as
    two IN lists — every record of any of the chunk's names in any of its postal codes, which
    grows with the customer base — or as one OR term per pair, whose building costs more
    than the search.
    """
    if not pairs:
        return []
    quote = connection.ops.quote_name
    values = ", ".join(["(%s, %s)"] * len(pairs))
    # No ORDER BY: with one, SQLite builds a throwaway index over the whole table instead of
    # searching customer_postal_kana; the few rows are sorted here.
    sql = (
        "SELECT c.id, c.postal_code, c.kana_key"  # noqa: S608 - our own SQL
        f" FROM (VALUES {values}) AS v CROSS JOIN {quote(Customer._meta.db_table)} AS c"
        " WHERE c.postal_code = v.column1 AND c.kana_key = v.column2"
        " AND c.merged_into_id IS NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for pair in sorted(pairs) for value in pair])
        return sorted(cursor.fetchall())
