"""Fill an empty database with the demo shop's three years of history.

    from kizuna.demo.build import build_demo
    summary = build_demo(customers=20_000, seed=42, as_of=datetime.date(2025, 6, 30))

Customers are simulated and written `chunk_size` at a time (one transaction per chunk), so
memory stays flat from a thousand customers to a million. Each customer's history comes from
its own `random.Random`, seeded from (seed, customer number): the same seed and as_of give the
same data, whatever the chunk size and on SQLite or PostgreSQL alike. Nothing reads the clock
except Django's own `created_at`/`updated_at` bookkeeping columns.

What the data shows, and why, is in kizuna.demo.story.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
from collections.abc import Iterator
from dataclasses import dataclass, fields

from django.core.management.color import no_style
from django.db import DatabaseError, connections, models, transaction
from django.db.models import Max
from tqdm import tqdm

from kizuna.commerce.models import Order, OrderLine, OrderReversal, Product, Shipment
from kizuna.core.bulk import analyze
from kizuna.core.models import AuditLog
from kizuna.customers.models import (
    BehaviourEvent,
    Consent,
    ConsentEvent,
    Customer,
    Identity,
    Tag,
    TimelineEvent,
)
from kizuna.demo import story
from kizuna.demo.plan import Calendar
from kizuna.demo.rows import Ids, RowMaker, TaggedCustomer
from kizuna.demo.simulate import customer_rng, simulate_customer
from kizuna.loyalty.models import PointEntry
from kizuna.subscriptions.models import Subscription, SubscriptionDelivery
from kizuna.support.models import Contact

# Tables the demo writes from id 1 upwards: they must be empty. (Tags are reused by name and
# audit rows are appended after any existing ones, so those two may already hold rows.)
_MUST_BE_EMPTY: tuple[type[models.Model], ...] = (
    Customer, Identity, Consent, ConsentEvent, TimelineEvent, BehaviourEvent, Product, Order,
    OrderLine, Shipment, OrderReversal, Subscription, SubscriptionDelivery, PointEntry, Contact,
)  # fmt: skip
_WRITTEN: tuple[type[models.Model], ...] = (*_MUST_BE_EMPTY, Tag, TaggedCustomer, AuditLog)


class DemoDatabaseNotEmptyError(RuntimeError):
    """The demo only fills an empty database; it never mixes with real or earlier data."""


@dataclass(frozen=True)
class DemoSummary:
    """How many rows of each kind the build wrote."""

    customers: int = 0
    taggings: int = 0
    identities: int = 0
    consents: int = 0
    consent_events: int = 0
    subscriptions: int = 0
    orders: int = 0
    order_lines: int = 0
    shipments: int = 0
    reversals: int = 0
    deliveries: int = 0
    point_entries: int = 0
    contacts: int = 0
    behaviour_events: int = 0
    timeline_events: int = 0
    audit_logs: int = 0
    products: int = 0
    tags: int = 0

    def __str__(self) -> str:
        """The main counts as the person starting the demo reads them."""
        return (
            f"顧客 {self.customers:,}人・注文 {self.orders:,}件(明細 {self.order_lines:,}行)・"
            f"定期 {self.subscriptions:,}件・ポイント履歴 {self.point_entries:,}件・"
            f"問い合わせ {self.contacts:,}件・サイト行動 {self.behaviour_events:,}件"
        )


def build_demo(
    *,
    customers: int = 20_000,
    seed: int = 42,
    as_of: dt.date,
    progress: bool = False,
    chunk_size: int = 2_000,
    using: str = "default",
) -> DemoSummary:
    """Write the demo shop's history, ending on `as_of` (a JST date), into an empty database.

    Raises DemoDatabaseNotEmptyError when the database already holds customers, orders or
    products. A build that fails part-way leaves the chunks written so far: empty the database
    (`kizuna flush`) and build again.
    """
    if customers < 0:
        raise ValueError("customers must be zero or more")
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    _ensure_empty(using)
    cal = Calendar(as_of)
    with transaction.atomic(using=using):
        products = _create_products(using)
        tag_ids = _tags(using)
    last_audit = AuditLog.objects.using(using).aggregate(last=Max("id"))["last"] or 0
    ids = Ids(audit=last_audit)
    totals: dict[str, int] = {f.name: 0 for f in fields(DemoSummary)}
    try:
        with tqdm(
            total=customers, disable=not progress, unit="人", desc="デモデータ", dynamic_ncols=True
        ) as bar:
            for start in range(0, customers, chunk_size):
                stop = min(customers, start + chunk_size)
                with _no_gc_pauses():
                    maker = RowMaker(ids, cal, tag_ids)
                    for index in range(start, stop):
                        rng = customer_rng(seed, index)
                        maker.add(simulate_customer(rng, cal, index, ids.customer + 1), rng)
                    with transaction.atomic(using=using):
                        counts = maker.rows.write(using)
                    del maker  # the chunk's rows are garbage from here on
                for name, count in counts.items():
                    totals[name] += count
                bar.update(stop - start)
    except BaseException:
        # The chunks already committed stay: the application's own inserts must not collide
        # with them. (Best effort, so the original error is the one reported.)
        with contextlib.suppress(DatabaseError):
            _reset_sequences(using)
        raise
    _reset_sequences(using)
    analyze(_WRITTEN, using=using)
    totals["products"] = products
    totals["tags"] = len(tag_ids)
    return DemoSummary(**totals)


@contextlib.contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """Suspend the cyclic garbage collector while a chunk is built and written.

    A chunk holds ~100,000 young objects; the collector would walk all of them again and
    again as they pile up (a quarter of the build time). Stories contain reference cycles
    (a subscription and its orders), so the chunk's garbage is collected once at the end.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()


def _ensure_empty(using: str) -> None:
    if Customer.objects.using(using).exists():
        count = Customer.objects.using(using).count()
        raise DemoDatabaseNotEmptyError(
            f"データベースに顧客が既に {count:,} 件あります。デモデータは空のデータベースにだけ"
            "作成できます(`kizuna flush` で空にしてから実行してください)。"
        )
    busy = [m._meta.label for m in _MUST_BE_EMPTY if m._default_manager.using(using).exists()]
    if busy:
        raise DemoDatabaseNotEmptyError(
            "デモデータは空のデータベースにだけ作成できます。データがあるテーブル: "
            + ", ".join(busy)
        )


def _create_products(using: str) -> int:
    Product.objects.using(using).bulk_create(
        Product(
            id=spec.id,
            code=spec.code,
            name=spec.name,
            kind=spec.kind,
            category=spec.category,
            price=spec.price,
        )
        for spec in story.CATALOGUE
    )
    return len(story.CATALOGUE)


def _tags(using: str) -> dict[str, int]:
    """The demo's tags by name → id, reusing tags an administrator may already have made."""
    existing = dict(Tag.objects.using(using).filter(name__in=story.TAGS).values_list("name", "id"))
    last = Tag.objects.using(using).aggregate(last=Max("id"))["last"] or 0
    missing = [name for name in story.TAGS if name not in existing]
    created = [Tag(id=last + i, name=name) for i, name in enumerate(missing, start=1)]
    Tag.objects.using(using).bulk_create(created)
    existing.update({tag.name: tag.id for tag in created})
    return existing


def _reset_sequences(using: str) -> None:
    """Explicit ids leave PostgreSQL's sequences at 1: move them past the rows just written so
    the application's own inserts do not collide. (SQLite keeps track by itself.)"""
    connection = connections[using]
    statements = connection.ops.sequence_reset_sql(no_style(), list(_WRITTEN))
    if statements:
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
